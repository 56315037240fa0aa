"""Training and batch forecasting on 1 and on N `torchrun` ranks: how long each takes, and how far apart they are.

    python -m trafficcore.training.dist_bench --dataset demo --preset docs/examples/recipe_numeric.json \\
        --ranks 1,2 --shards 2 [--at "2025-10-20 08:00"] [--observations-parquet DIR] [--db DB] [--out DIR]

For each rank count the real commands run through `torchrun` (CPU, gloo, a local c10d rendezvous): `train
--shards S`, then `forecast` with the model it trained. One row per rank count: the wall time of each command
(process start-up and loading included), the fit time the model records, the predict time the forecast run
records, and the largest difference of its forecasts and of its weights from the first rank count's. Same
shards and a recipe without dropout give the same model on any rank count (docs/SCALE.md, "Beyond one
machine"), so the differences are float rounding. Writes the forecasts and model runs to the store, like the
commands do.
"""

from __future__ import annotations

import argparse
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


def torchrun(nproc: int, args: list[str], timeout: float | None = None) -> tuple[float, str]:
    """Run `python -m trafficcore.training.cli ARGS` on `nproc` local ranks; (wall seconds, stdout)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", str(nproc),
           "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{_free_port()}",
           "-m", "trafficcore.training.cli", *args]
    t0 = time.perf_counter()
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ})
    wall = time.perf_counter() - t0
    if run.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({run.returncode}):\n{(run.stdout + run.stderr)[-3000:]}")
    return wall, run.stdout


def measure(db: Path, dataset: str, preset: str, ranks: list[int], shards: int, at: str, out: Path,
            parquet: Path | None = None, device: str = "cpu") -> list[dict]:
    import numpy as np
    from safetensors.numpy import load_file

    from trafficcore.data.store import Store

    common = ["--db", str(db)] + ([] if parquet is None else ["--observations-parquet", str(parquet)])
    rows, first = [], None
    for n in ranks:
        model = out / f"ranks{n}"
        t_train, _ = torchrun(n, ["train", "--dataset", dataset, "--preset", preset, "--shards", str(shards),
                                  "--out", str(model), "--device", device, "--no-progress", "--no-keep-state",
                                  *common])
        t_fc, text = torchrun(n, ["forecast", "--dataset", dataset, "--model", str(model), "--at", at, *common])
        run_id = re.search(r"forecast (fc-\S+):", text).group(1)
        store = Store(db, read_only=True)
        fc = store.query("SELECT * FROM forecasts WHERE run_id = ?", [run_id]).drop(columns=["run_id"])
        run = json.loads(store.query("SELECT metrics_json FROM model_runs WHERE run_id = ?", [run_id]).iloc[0, 0])
        cfg = json.loads((model / "config.json").read_text())
        weights = load_file(str(model / "model.safetensors"))
        row = {"ranks": n, "shards": shards, "train_command_s": round(t_train, 1),
               "fit_s": cfg["metrics"]["fit_wall_s"], "steps": sum(p["steps"] for p in cfg["metrics"]["phases"]),
               "forecast_command_s": round(t_fc, 1), "predict_s": round(run["predict_s"], 3),
               "forecasts": len(fc), "val_mae_60": cfg["metrics"]["val"][max(cfg["metrics"]["val"], key=int)]["mae"]}
        if first is None:
            first = (fc, weights)
        else:
            row["max_abs_diff_p50"] = float(np.abs(fc["p50"].to_numpy() - first[0]["p50"].to_numpy()).max())
            row["max_abs_diff_p10_p90"] = float(max(np.abs(fc[q].to_numpy() - first[0][q].to_numpy()).max()
                                                    for q in ("p10", "p90")))
            row["max_abs_diff_weights"] = float(max(np.abs(weights[k] - first[1][k]).max() for k in weights))
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    head = ("| ranks | shards | train command (s) | fit (s) | steps | forecast command (s) | predict (s) | "
            "forecasts | val MAE 60 min | max abs diff P50 vs first | P10/P90 | weights |")
    lines = [head, "|" + "---:|" * (head.count("|") - 1)]
    for r in rows:
        diff = [f"{r[k]:.2g}" if k in r else "-" for k in ("max_abs_diff_p50", "max_abs_diff_p10_p90",
                                                            "max_abs_diff_weights")]
        lines.append(f"| {r['ranks']} | {r['shards']} | {r['train_command_s']} | {r['fit_s']} | {r['steps']} | "
                     f"{r['forecast_command_s']} | {r['predict_s']} | {r['forecasts']:,} | {r['val_mae_60']:.3f} | "
                     + " | ".join(diff) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--preset", default="docs/examples/recipe_numeric.json")
    ap.add_argument("--ranks", default="1,2", help="rank counts to run, comma-separated (each divides --shards)")
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--at", default="latest", help="forecast issue time")
    ap.add_argument("--db", type=Path, default=None)
    ap.add_argument("--observations-parquet", type=Path, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=Path("runs/dist_bench"))
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    a = ap.parse_args(argv)
    from trafficcore import config

    ranks = [int(x) for x in a.ranks.split(",")]
    rows = measure(config.db_path(a.db), a.dataset, a.preset, ranks, a.shards, a.at, a.out, a.observations_parquet,
                   a.device)
    print(table(rows))
    if a.json:
        a.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
