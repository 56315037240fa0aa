"""Training and batch forecasting on 1 and on N `torchrun` ranks: how long each takes, and how far apart they are.

    python -m trafficcore.training.dist_bench --dataset demo --preset docs/examples/recipe_numeric.json \\
        --runs 1:1,2:1 --shards 2 [--reordered] [--at "2025-10-20 08:00"] [--observations-parquet DIR] [--db DB]

Each run (`ranks:threads`: torchrun ranks, CPU threads per rank) runs the real commands through `torchrun`
(CPU, gloo, a local c10d rendezvous): `train --shards S`, then `forecast` with the model it trained. One row per
run: the wall time of each command (process start-up and loading included), the fit time the model records,
the predict time the forecast run records, and the largest difference of its forecasts and of its weights from
the first run's. Same shards and a recipe without dropout give the same model on any rank count up to float
rounding (docs/SCALE.md, "Beyond one machine"); `--reordered` adds a run on 1 rank whose batches hold the same
samples in reverse order, which shows how far float rounding alone moves a model over the same steps. Writes
the forecasts and model runs to the store, like the commands do. `--loads 2,4,8` first times what one rank reads
(the whole network's panel against one shard's, from the table and from `--observations-parquet`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(nproc: int, args: list[str], timeout: float | None = None, threads: int | None = None
             ) -> tuple[float, str]:
    """Run `python -m trafficcore.training.cli ARGS` on `nproc` local ranks (`threads` CPU threads each);
    (wall seconds, stdout)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", str(nproc),
           "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{_free_port()}",
           "-m", "trafficcore.training.cli", *args]
    t0 = time.perf_counter()
    env = {**os.environ}
    if threads is not None:
        env.update(TRAFFICCORE_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    wall = time.perf_counter() - t0
    if run.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({run.returncode}):\n{(run.stdout + run.stderr)[-3000:]}")
    return wall, run.stdout


def measure(db: Path, dataset: str, preset: str, runs: list[tuple[int, int]], shards: int, at: str, out: Path,
            parquet: Path | None = None, device: str = "cpu", reordered: bool = False) -> list[dict]:
    """One row per run (see the module docstring); `reordered`: one more, in this process, 1 rank and 1 thread
    with each batch's samples in reverse order (`reversed_batches`): how far float rounding alone moves it."""
    common = ["--db", str(db)] + ([] if parquet is None else ["--observations-parquet", str(parquet)])
    rows: list[dict] = []
    first: tuple | None = None
    for n, threads in runs:
        model = out / f"ranks{n}_threads{threads}"
        t_train, _ = torchrun(n, ["train", "--dataset", dataset, "--preset", preset, "--shards", str(shards),
                                  "--out", str(model), "--device", device, "--no-progress", "--no-keep-state",
                                  *common], threads=threads)
        t_fc, text = torchrun(n, ["forecast", "--dataset", dataset, "--model", str(model), "--at", at, *common],
                              threads=threads)
        run_id = re.search(r"forecast (fc-\S+):", text).group(1)
        row, first = _row(db, f"{n} x {threads} thread(s)", shards, model, run_id, t_train, t_fc, first)
        rows.append(row)
    if reordered:
        from trafficcore.training.cli import _forecast, _train

        os.environ["TRAFFICCORE_THREADS"] = "1"
        model = out / "reordered"
        t0 = time.perf_counter()
        with reversed_batches():
            _train(dataset, model, "lm", preset, device, db, None, None, 0, None, None, False, False, shards, parquet)
        t_train = time.perf_counter() - t0
        t0 = time.perf_counter()
        run_id = str(_forecast(dataset, at, model, db, parquet)["run_id"].iloc[0])
        rows.append(_row(db, "1 x 1 thread, each batch reversed", shards, model, run_id, t_train,
                         time.perf_counter() - t0, first)[0])
    return rows


@contextlib.contextmanager
def reversed_batches():
    """Within the block every training batch holds the same samples in reverse order: the same optimiser steps,
    their sums taken in another order (a change of float rounding and nothing else)."""
    from trafficcore.training import engine

    original = engine.SampleTask.indices
    engine.SampleTask.indices = lambda self, index, batch_size: original(self, index, batch_size)[::-1].copy()
    try:
        yield
    finally:
        engine.SampleTask.indices = original


def _row(db: Path, label: str, shards: int, model: Path, run_id: str, t_train: float, t_fc: float,
         first: tuple | None) -> tuple[dict, tuple]:
    import numpy as np
    from safetensors.numpy import load_file

    from trafficcore.data.store import Store

    store = Store(db, read_only=True)
    fc = store.query("SELECT * FROM forecasts WHERE run_id = ?", [run_id]).drop(columns=["run_id"])
    run = json.loads(store.query("SELECT metrics_json FROM model_runs WHERE run_id = ?", [run_id]).iloc[0, 0])
    cfg = json.loads((model / "config.json").read_text())
    weights = load_file(str(model / "model.safetensors"))
    val = cfg["metrics"]["val"]
    row = {"run": label, "shards": shards, "train_command_s": round(t_train, 1), "fit_s": cfg["metrics"]["fit_wall_s"],
           "steps": sum(p["steps"] for p in cfg["metrics"]["phases"]), "forecast_command_s": round(t_fc, 1),
           "predict_s": round(run["predict_s"], 3), "forecasts": len(fc),
           "val_mae_longest": val[max(val, key=int)]["mae"]}
    if first is None:
        return row, (fc, weights)
    ref_fc, ref_w = first
    row["max_abs_diff_p50"] = float(np.abs(fc["p50"].to_numpy() - ref_fc["p50"].to_numpy()).max())
    row["max_abs_diff_p10_p90"] = float(max(np.abs(fc[q].to_numpy() - ref_fc[q].to_numpy()).max()
                                            for q in ("p10", "p90")))
    row["max_abs_diff_weights"] = float(max(np.abs(weights[k] - ref_w[k]).max() for k in weights))
    return row, first


def loads(db: Path, dataset: str, parquet: Path | None, shard_counts: list[int], repeats: int = 3) -> list[dict]:
    """What one rank reads: the panel of the whole network against shard 0's panel for each shard count, from the
    DuckDB table and (with `parquet`) from the Parquet files: best of `repeats` load times, the detectors read
    (own + neighbours) and the panel's size; from Parquet also the row groups the readings scan."""
    import re as _re

    import pandas as pd

    from trafficcore.data.panel import VALUES_SQL, load_panel
    from trafficcore.data.shard import load_shard
    from trafficcore.data.store import Store

    sources = [("DuckDB table", Store(db, read_only=True, observations_parquet=None))]
    if parquet is not None:
        sources.append(("Parquet files", Store(db, read_only=True, observations_parquet=parquet)))
    rows = []
    for name, store in sources:
        if name == "DuckDB table" and store.observations_parquet is not None:
            continue  # TRAFFICCORE_OBSERVATIONS_PARQUET is set: this handle would read the files too
        for n in [0, *shard_counts]:
            best = float("inf")
            for _ in range(repeats):
                t0 = time.perf_counter()
                panel = load_panel(store, dataset) if n == 0 else load_shard(store, dataset, [0], n)
                best = min(best, time.perf_counter() - t0)
            row = {"source": name, "panel": "whole network" if n == 0 else f"shard 0 of {n}",
                   "detectors_read": len(panel.detectors), "own": len(panel.detectors if n == 0 else panel.shard.owned),
                   "load_s": round(best, 3), "panel_mb": round(panel.values.nbytes / 2**20, 1)}
            if name == "Parquet files":
                with store.connect() as con:
                    con.register("_sel", pd.DataFrame({"detector_id": panel.detectors["detector_id"],
                                                       "col": range(len(panel.detectors))}))
                    t = panel.times[0].to_pydatetime()
                    params = [t, int(panel.interval.total_seconds() * 1e6), len(panel.detectors), dataset, t]
                    plan = con.execute("EXPLAIN ANALYZE " + VALUES_SQL, params).fetchall()[0][1]
                got = _re.search(r"Row Groups Scanned: (\d+) / (\d+)", plan)
                row["row_groups"] = f"{got.group(1)} / {got.group(2)}" if got else "?"
            rows.append(row)
    return rows


def loads_table(rows: list[dict]) -> str:
    head = "| source | panel | own detectors | detectors read | load (s, best of 3) | panel (MB) | row groups scanned |"
    lines = [head, "|---|---|" + "---:|" * 5]
    for r in rows:
        lines.append(f"| {r['source']} | {r['panel']} | {r['own']} | {r['detectors_read']} | {r['load_s']} | "
                     f"{r['panel_mb']} | {r.get('row_groups', '-')} |")
    return "\n".join(lines)


def table(rows: list[dict]) -> str:
    head = ("| run (ranks x threads) | shards | train command (s) | fit (s) | steps | forecast command (s) | "
            "predict (s) | forecasts | val MAE, longest horizon | max abs diff P50 vs first | P10/P90 | weights |")
    lines = [head, "|---|" + "---:|" * (head.count("|") - 2)]
    for r in rows:
        diff = [f"{r[k]:.2g}" if k in r else "-" for k in ("max_abs_diff_p50", "max_abs_diff_p10_p90",
                                                            "max_abs_diff_weights")]
        lines.append(f"| {r['run']} | {r['shards']} | {r['train_command_s']} | {r['fit_s']} | {r['steps']} | "
                     f"{r['forecast_command_s']} | {r['predict_s']} | {r['forecasts']:,} | "
                     f"{r['val_mae_longest']:.3f} | " + " | ".join(diff) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--preset", default="docs/examples/recipe_numeric.json")
    ap.add_argument("--runs", default="1:1,2:1",
                    help="ranks:threads per run, comma-separated (each rank count divides --shards); '' for none")
    ap.add_argument("--loads", default="", help="also time one rank's panel load for these shard counts (e.g. 2,4,8)")
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--at", default="latest", help="forecast issue time")
    ap.add_argument("--db", type=Path, default=None)
    ap.add_argument("--observations-parquet", type=Path, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=None, help="folder for the models (default: a new temporary one)")
    ap.add_argument("--reordered", action="store_true",
                    help="add a run on 1 rank with each batch's samples reversed (float rounding alone)")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    a = ap.parse_args(argv)
    from trafficcore import config

    if a.out is None:
        import tempfile

        a.out = Path(tempfile.mkdtemp(prefix="dist_bench-"))
    out: dict = {}
    if a.loads:
        out["loads"] = loads(config.db_path(a.db), a.dataset, a.observations_parquet,
                             [int(x) for x in a.loads.split(",")])
        print(loads_table(out["loads"]))
    if a.runs:
        runs = [(int(r), int(t)) for r, t in (x.split(":") for x in a.runs.split(","))]
        out["runs"] = measure(config.db_path(a.db), a.dataset, a.preset, runs, a.shards, a.at, a.out,
                              a.observations_parquet, a.device, a.reordered)
        print(table(out["runs"]))
        print(f"models in {a.out}")
    if a.json:
        a.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
