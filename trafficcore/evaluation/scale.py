"""Region scale: what each step of the product costs at N signalised sites, with its peak memory.

    python -m trafficcore.evaluation.scale --sites 40,500,2000 [--workdir /tmp/tc-scale] [--keep]
        [--json docs/results/scale.json] [--plot docs/scale_growth.png] [--skip api,update]
    python -m trafficcore.evaluation.scale --report docs/results/scale.json [--plot PNG]   # table of a past run

For each N, in a fresh store under the work folder (deleted afterwards unless --keep):

1. import: `trafficcore demo --sites N` (the region generator, `trafficcore.data.region`; 4 weeks);
2. panel: the dataset read into memory, and the neighbour matrix every model's windows use;
3. train: a language model of the shipped model's architecture on a timing-size recipe (`timing_recipe`: a
   few hundred steps over `TIMING_ROWS` random issue times of the training week, not a model to judge by its
   accuracy), registered and promoted, so that it is the serving model from here on, as a trained model would
   be in production;
4. forecasts: every detector at one issue time, by the serving model (that language model), by gradient
   boosting fitted on the spot as the dashboard fits it, and by the historical average (what serves a dataset
   before any model is trained); cold (first call) and warm (median of `WARM_CALLS` more issue times);
5. explanation: the serving model's explanation of one forecast (first, then the median of four more);
6. dashboard: Streamlit AppTest over app.py (`tests/bench_scale_pages.py`, a checkout's script: the package
   never imports Streamlit): the Forecast map's first view and interactions, the page's data preparation,
   a site search, Site detail and Signal what-if;
7. API: `python -m trafficcore.api.bench load` (GET /forecast for one site each, 20 concurrent clients);
8. update: `trafficcore update` (continual fine-tuning of the serving model on the readings after its data);
9. the store's size on disk.

Every step runs in its own process: wall times are measured inside it, and its peak memory is the maximum
resident set of that process (`getrusage` of the child; for the API, of the server). A step that fails is
reported with its exit status and the end of its output, and the others still run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from trafficcore import config

DATASET = "region"
#: Requests of the API load step, and update steps: enough for p95 and a real fine-tune, short on 2 cores.
API_REQUESTS = 600
UPDATE_STEPS = 100
STEP_TIMEOUT_S = 3600
#: Forecasts of every detector after the first, one interval apart; the warm figure is their median (a language
#: model encodes the sentences new at each issue time, so single calls vary).
WARM_CALLS = 8
#: Issue times the timing LM learns from (and half as many validate it): a day and three quarters of a week.
TIMING_ROWS = 168
STEPS = ("import", "panel", "train", "forecast", "explain", "dashboard", "api", "update")
MARK = "SCALE_RESULT "


def timing_recipe():
    """The shipped model's architecture (late fusion over event text, frozen 2-layer encoder) on a few hundred
    steps drawn at random: the forecast and explanation costs do not depend on how long it trained. The text
    phase keeps its last weights even where they do not beat the numeric path (`keep_start` off), so that the
    text path runs in every forecast, as in the shipped model: the costlier case is the one measured."""
    from trafficcore.models.lm import RECIPES

    return RECIPES["demo"].with_changes(
        phases={"numeric": {"sampler": "random", "samples": 65_536, "epochs": None, "steps": 256, "max_steps": None},
                "text": {"steps": 40, "samples": 40 * 256, "evals": 2, "keep_start": False}},
        name="scale-timing", val_samples=2048, eval_samples=1024)


# ---------------------------------------------------------------------------------------------- in-process steps
def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _panel(db: str):
    from trafficcore.data.panel import load_panel
    from trafficcore.data.store import Store

    return load_panel(Store(db, read_only=True), DATASET)


def step_panel(db: str, work: str) -> dict:
    from trafficcore.data.windows import WindowSpec

    t0 = time.perf_counter()
    panel = _panel(db)
    load_s = time.perf_counter() - t0
    spec = WindowSpec()
    t0 = time.perf_counter()
    panel.neighbour_matrix(spec.n_neighbours, spec.neighbour_method)
    return {"panel_load_s": load_s, "neighbours_s": time.perf_counter() - t0, "intervals": len(panel.times),
            "detectors": int(panel.values.shape[1]), "panel_mb": panel.values.nbytes / 2**20}


def step_train(db: str, work: str) -> dict:
    from trafficcore.data.store import Store
    from trafficcore.evaluation.protocols import standard_split
    from trafficcore.live import registry
    from trafficcore.models.files import read_config
    from trafficcore.models.lm import LMForecaster

    panel = _panel(db)
    model = LMForecaster(recipe=timing_recipe(), seed=0, device="cpu", progress=False)
    split = standard_split(panel, model.spec)
    # a random share of the issue times: the fit builds every sample of its rows first (2 GB per week at 8,000
    # detectors, for training and for validation), and a timing model needs no more than these
    rng = np.random.default_rng(0)
    train = np.sort(rng.choice(split.train, min(TIMING_ROWS, len(split.train)), replace=False))
    val = np.sort(rng.choice(split.val, min(TIMING_ROWS // 2, len(split.val)), replace=False))
    t0 = time.perf_counter()
    model.fit(panel, train, val)
    fit_s = time.perf_counter() - t0
    out = Path(work) / "lm"
    model.save(out)
    run = registry.register(Store(db), DATASET, "lm", out, model.metrics, read_config(out), promote=True)
    mae = float(np.mean([v["mae"] for v in model.metrics["val"].values()]))
    return {"train_s": fit_s, "val_mae": mae, "run_id": run, "transformer_used": model.metrics["transformer_used"]}


def _forecast_all(model, panel, row: int, nb) -> int:
    """Every detector's forecast at one issue row, as the API and the dashboard compute it."""
    from trafficcore.data.windows import build_samples
    from trafficcore.models.base import forecast_frame

    samples = build_samples(panel, np.array([row]), None, model.spec, neighbour_idx=nb)
    return len(forecast_frame(panel, samples, model.predict_samples(panel, samples)))


def step_forecast(db: str, work: str, which: str) -> dict:
    from trafficcore.data.store import Store
    from trafficcore.live.fallback import fit_baseline
    from trafficcore.live.serving import serving_model

    panel = _panel(db)
    t0 = time.perf_counter()
    if which == "serving":
        serving = serving_model(Store(db, read_only=True), DATASET)
        model, name = serving.model, serving.display_name
    else:
        model, _ = fit_baseline(which, panel)
        name = which
    prepare_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    nb = panel.neighbour_matrix(int(model.spec.n_neighbours), str(model.spec.neighbour_method))
    nb_s = time.perf_counter() - t0
    last = len(panel.times) - 8  # issue times with their targets inside the data, one interval apart
    times, rows = [], 0
    for k in range(1 + WARM_CALLS):
        t0 = time.perf_counter()
        rows = _forecast_all(model, panel, last - k, nb)
        times.append(time.perf_counter() - t0)
    return {"model": name, "prepare_s": prepare_s, "neighbours_s": nb_s, "first_s": times[0],
            "warm_s": float(np.median(times[1:])), "warm_max_s": float(max(times[1:])), "rows": rows,
            "horizons": len(model.spec.horizons_min), "detectors": int(panel.values.shape[1])}


def step_explain(db: str, work: str) -> dict:
    from trafficcore.data.store import Store
    from trafficcore.evaluation.explain_speed import cases
    from trafficcore.explain import explain
    from trafficcore.live.serving import serving_model

    panel = _panel(db)
    model = serving_model(Store(db, read_only=True), DATASET).model
    times = []
    for det, at, h in cases(panel, model, 5, seed=0):
        t0 = time.perf_counter()
        explain(model, panel, det, at, h)
        times.append(time.perf_counter() - t0)
    return {"first_s": times[0], "warm_s": float(np.median(times[1:])), "max_s": float(max(times[1:]))}


IN_PROCESS = {
    "panel": step_panel,
    "train": step_train,
    "forecast_serving": lambda db, work: step_forecast(db, work, "serving"),
    "forecast_gbt": lambda db, work: step_forecast(db, work, "gbt"),
    "forecast_ha": lambda db, work: step_forecast(db, work, "historical_average"),
    "explain": step_explain,
}


# ---------------------------------------------------------------------------------------------- the driver
def _run(cmd: list[str], env: dict, timeout_s: float, result_file: Path | None = None) -> dict:
    """Run one step's process; its result (JSON after MARK on stdout, or `result_file`), wall time and peak RSS."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        return {"ok": False, "error": f"timed out after {timeout_s:.0f} s", "tail": out[-1500:]}
    wall = time.perf_counter() - t0
    res: dict = {"ok": proc.returncode == 0, "wall_s": wall}
    for line in out.splitlines():
        if line.startswith(MARK):
            res.update(json.loads(line[len(MARK):]))
    if result_file is not None and result_file.exists():
        res.update(json.loads(result_file.read_text()))
    if proc.returncode != 0:
        res.update({"error": f"exit status {proc.returncode}", "tail": out[-1500:]})
    return res


def _child_peak_mb(cmd: list[str], env: dict, timeout_s: float, result_file: Path | None = None) -> dict:
    """`_run` in a fresh interpreter that reports the peak RSS of its one child (the step)."""
    wrapper = [sys.executable, "-m", "trafficcore.evaluation.scale", "--measure", "--timeout", str(timeout_s), "--",
               *cmd]
    res = _run(wrapper, env, timeout_s + 60)
    if result_file is not None and result_file.exists():
        res.update(json.loads(result_file.read_text()))
    return res


def measure_child(cmd: list[str], timeout_s: float) -> int:
    """(--measure) Run `cmd`, pass its output through, then print its wall time and peak RSS after MARK."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(MARK + json.dumps({"wall_s": wall, "peak_rss_mb": peak, "rc": proc.returncode}), flush=True)
    return proc.returncode


def run_size(n_sites: int, workdir: Path, skip: set[str], log=print) -> dict:
    """Every step for one N; returns {step: result}."""
    work = workdir / f"n{n_sites}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    db = str(work / "store.duckdb")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRAFFICCORE_DB": db, "PYTHONPATH": str(config.PROJECT_ROOT)
           + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else "")}
    py = sys.executable
    out: dict = {"sites": n_sites}

    def step(name: str, cmd: list[str], result_file: Path | None = None, timeout_s: float = STEP_TIMEOUT_S) -> dict:
        if name in skip or name.split("_")[0] in skip:
            return {}
        load = os.getloadavg()[0]
        res = _child_peak_mb(cmd, env, timeout_s, result_file)
        res["load_avg"] = round(load, 2)
        out[name] = res
        status = "ok" if res.get("ok") else f"FAILED ({res.get('error')})"
        log(f"  N={n_sites:<5} {name:<18} {res.get('wall_s', float('nan')):8.1f} s  "
            f"{res.get('peak_rss_mb', float('nan')):8.0f} MB  {status}")
        if not res.get("ok") and res.get("tail"):
            log("    " + res["tail"].strip().replace("\n", "\n    ")[-1200:])
        return res

    step("import", [py, "-m", "trafficcore.cli", "demo", "--sites", str(n_sites), "--db", db])
    if not Path(db).exists():
        return out
    out["store_mb"] = sum(p.stat().st_size for p in work.glob("store.duckdb*")) / 2**20
    for name in ("panel", "train", "forecast_serving", "forecast_gbt", "forecast_ha", "explain"):
        step(name, [py, "-m", "trafficcore.evaluation.scale", "--step", name, "--db", db, "--work", str(work)])
    pages = config.PROJECT_ROOT / "tests" / "bench_scale_pages.py"
    if pages.exists():
        browser = ["--browser"] if Path("/usr/bin/chromium").exists() else []
        step("dashboard", [py, str(pages), "--db", db, "--dataset", DATASET, "--json", str(work / "pages.json"),
                           *browser], work / "pages.json")
    else:
        out["dashboard"] = {"ok": False, "error": f"{pages} is absent (the dashboard step needs a checkout)"}
    step("api", [py, "-m", "trafficcore.api.bench", "load", "--db", db, "--dataset", DATASET, "--clients", "20",
                 "--requests", str(API_REQUESTS), "--json", str(work / "api.json")], work / "api.json")
    step("update", [py, "-m", "trafficcore.cli", "update", "--dataset", DATASET, "--steps", str(UPDATE_STEPS),
                    "--no-progress", "--db", db, "--out", str(work / "update"), "--json", str(work / "update.json")],
         work / "update.json")
    return out


# ---------------------------------------------------------------------------------------------- reporting
#: (label, step, key, unit, bar at N = 2,000 or None): the figures of the growth table and plot.
FIGURES = (
    ("import (demo --sites)", "import", "wall_s", "s", 90.0),
    ("panel load", "panel", "panel_load_s", "s", 10.0),
    ("neighbour matrix", "panel", "neighbours_s", "s", None),
    ("train LM (timing recipe)", "train", "train_s", "s", None),
    ("forecast all, serving LM, warm", "forecast_serving", "warm_s", "s", 3.0),
    ("forecast all, serving LM, slowest warm", "forecast_serving", "warm_max_s", "s", None),
    ("forecast all, serving LM, first", "forecast_serving", "first_s", "s", None),
    ("gbt fit (dashboard's light fit)", "forecast_gbt", "prepare_s", "s", None),
    ("forecast all, gbt, warm", "forecast_gbt", "warm_s", "s", None),
    ("historical average fit", "forecast_ha", "prepare_s", "s", None),
    ("forecast all, hist. average, warm", "forecast_ha", "warm_s", "s", None),
    ("explanation, warm", "explain", "warm_s", "s", 2.0),
    ("map: first view in chromium, from streamlit run", "dashboard", "browser_first_map_s", "s", 10.0),
    ("map: first view in chromium, from opening the page", "dashboard", "browser_first_map_after_open_s", "s", None),
    ("map: first view (AppTest)", "dashboard", "map_first_s", "s", 10.0),
    ("map: with the model's forecasts", "dashboard", "map_model_s", "s", None),
    ("map: change horizon", "dashboard", "map_horizon_s", "s", 1.0),
    ("map: zoom into an area", "dashboard", "map_area_s", "s", 1.0),
    ("map: site search", "dashboard", "site_search_s", "s", 1.0),
    ("map: data preparation", "dashboard", "map_prep_s", "s", None),
    ("map: deck JSON", "dashboard", "deck_kb", "KB", None),
    ("site detail: first", "dashboard", "site_first_s", "s", None),
    ("site detail: rerun", "dashboard", "site_rerun_s", "s", 1.0),
    ("signal what-if: first", "dashboard", "signal_first_s", "s", None),
    ("signal what-if: rerun", "dashboard", "signal_rerun_s", "s", 1.0),
    ("API /forecast p50", "api", "p50_ms", "ms", None),
    ("API /forecast p95 (20 clients)", "api", "p95_ms", "ms", 200.0),
    ("API cold first request", "api", "cold_ms", "ms", None),
    ("trafficcore update", "update", "wall_s", "s", None),
    ("store size", None, "store_mb", "MB", None),
    ("peak RSS: import", "import", "peak_rss_mb", "MB", None),
    ("peak RSS: dashboard (AppTest)", "dashboard", "peak_rss_mb", "MB", None),
    ("peak RSS: API server", "api", "server_peak_rss_mb", "MB", None),
    ("peak RSS: dashboard + API", None, "dash_api_rss_mb", "MB", 8192.0),
)


def figure(result: dict, step: str | None, key: str) -> float | None:
    if step is None and key == "dash_api_rss_mb":
        a = figure(result, "dashboard", "peak_rss_mb")
        b = figure(result, "api", "server_peak_rss_mb")
        return None if a is None or b is None else a + b
    src = result if step is None else result.get(step, {})
    v = src.get(key) if isinstance(src, dict) else None
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def detectors_of(result: dict) -> int | None:
    d = result.get("panel", {}).get("detectors")
    return int(d) if d else None


def slope(a: float | None, b: float | None, da: int | None, db: int | None) -> float | None:
    """Growth exponent between two sizes: log(cost ratio) / log(detector ratio) (1 = linear)."""
    if not a or not b or not da or not db or a <= 0 or b <= 0 or da == db:
        return None
    return math.log(b / a) / math.log(db / da)


def growth_table(results: list[dict]) -> str:
    """Markdown: one row per figure, one column per N, and the growth exponent between the two largest N."""
    results = sorted(results, key=lambda r: r["sites"])
    head = "| cost | " + " | ".join(f"N = {r['sites']:,} ({detectors_of(r) or '?':,} det.)" for r in results)
    head += " | growth exponent, last two N | bar at N = 2,000 |\n|---|" + "---:|" * len(results) + "---:|---|\n"
    rows = []
    for label, step, key, unit, bar in FIGURES:
        vals = [figure(r, step, key) for r in results]
        if all(v is None for v in vals):
            continue
        cells = [_fmt(v, unit) for v in vals]
        k = slope(vals[-2], vals[-1], detectors_of(results[-2]), detectors_of(results[-1])) if len(results) > 1 \
            else None
        bar_txt = "" if bar is None else f"<= {_fmt(bar, unit)}" + (
            "" if vals[-1] is None or results[-1]["sites"] != 2000 else (" met" if vals[-1] <= bar else " **missed**"))
        rows.append(f"| {label} | " + " | ".join(cells) + f" | {'' if k is None else f'{k:.2f}'} | {bar_txt} |")
    return head + "\n".join(rows) + "\n"


def _fmt(v: float | None, unit: str) -> str:
    if v is None:
        return "n/a"
    if unit == "MB":
        return f"{v / 1024:.2f} GB" if v >= 1024 else f"{v:.0f} MB"
    if unit == "KB":
        return f"{v:,.0f} KB"
    if unit == "ms":
        return f"{v:,.0f} ms"
    return f"{v:.2f} s" if v < 10 else f"{v:.1f} s"


def plot(results: list[dict], path: Path) -> None:
    """Log-log plot of the main costs against detectors, with a linear-growth guide."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = sorted(results, key=lambda r: r["sites"])
    d = [detectors_of(r) for r in results]
    keep = ("import", "panel_load_s", "forecast_serving", "explain", "browser_first_map_s", "map_horizon_s",
            "p95_ms", "update", "store_mb")
    fig, ax = plt.subplots(figsize=(8.5, 5.5))
    for label, step, key, unit, _ in FIGURES:
        if not ((step in keep and key in ("wall_s", "warm_s")) or key in keep):
            continue
        pts = [(x, figure(r, step, key)) for x, r in zip(d, results, strict=True)]
        pts = [(x, y / (1000 if unit == "ms" else 1)) for x, y in pts if x and y]
        if len(pts) > 1:
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, marker="o", label=f"{label} ({'s' if unit == 'ms' else unit})")
    if all(d):
        x0, x1 = min(d), max(d)
        ax.plot([x0, x1], [1.0, x1 / x0], "k--", lw=1, label="linear in detectors (from 1 at the smallest N)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(d, [f"{x:,}" for x in d])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("detectors (N sites x ~4 approaches)")
    ax.set_ylabel("cost (seconds; MB for the store)")
    ax.set_title("trafficcore cost against region size (2-core CPU)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------- command line
def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--measure"]:
        i = argv.index("--")
        timeout = float(argv[argv.index("--timeout") + 1]) if "--timeout" in argv[:i] else STEP_TIMEOUT_S
        return measure_child(argv[i + 1:], timeout)
    ap = argparse.ArgumentParser(prog="python -m trafficcore.evaluation.scale", description=__doc__.split("\n\n")[0])
    ap.add_argument("--sites", default="40,500,2000", help="comma-separated region sizes")
    ap.add_argument("--workdir", type=Path, default=None, help="folder for the stores (default: a temporary one)")
    ap.add_argument("--keep", action="store_true", help="keep the stores")
    ap.add_argument("--json", type=Path, default=None, help="write every measured figure here")
    ap.add_argument("--plot", type=Path, default=None, help="write the log-log growth plot (PNG) here")
    ap.add_argument("--skip", default="", help=f"comma-separated steps to leave out: {', '.join(STEPS)}")
    ap.add_argument("--report", type=Path, default=None, help="measure nothing: print the table (and --plot) of "
                                                              "a JSON written by an earlier run")
    ap.add_argument("--step", choices=sorted(IN_PROCESS), help=argparse.SUPPRESS)
    ap.add_argument("--db", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.step:
        res = IN_PROCESS[a.step](a.db, a.work)
        res["peak_rss_self_mb"] = _rss_mb()
        print(MARK + json.dumps(res), flush=True)
        return 0
    if a.report:
        results = json.loads(a.report.read_text())["results"]
        print(growth_table(results))
        if a.plot:
            plot(results, a.plot)
            print(f"wrote {a.plot}")
        return 0
    try:
        sizes = [int(s) for s in a.sites.split(",") if s.strip()]
    except ValueError:
        print(f"error: --sites {a.sites!r} is not a comma-separated list of whole numbers", file=sys.stderr)
        return 2
    skip = {s.strip() for s in a.skip.split(",") if s.strip()}
    unknown = skip - set(STEPS)
    if unknown:
        print(f"error: --skip {sorted(unknown)[0]!r} is not a step; steps: {', '.join(STEPS)}", file=sys.stderr)
        return 2
    workdir = a.workdir or Path(tempfile.mkdtemp(prefix="tc-scale-"))
    results = []
    try:
        for n in sizes:
            print(f"N = {n} sites (work folder {workdir / f'n{n}'})", flush=True)
            results.append(run_size(n, workdir, skip, log=lambda s: print(s, flush=True)))
            if a.json:
                _write_json(a.json, results)
    finally:
        if not a.keep:  # only what this run made: the n<N> folders, and the work folder if it was a temporary one
            for n in sizes:
                shutil.rmtree(workdir / f"n{n}", ignore_errors=True)
            if a.workdir is None:
                shutil.rmtree(workdir, ignore_errors=True)
    print()
    print(growth_table(results))
    if a.json:
        _write_json(a.json, results)
        print(f"wrote {a.json}")
    if a.plot:
        plot(results, a.plot)
        print(f"wrote {a.plot}")
    return 0


def _write_json(path: Path, results: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
            "command": "python -m trafficcore.evaluation.scale " + " ".join(sys.argv[1:])}
    path.write_text(json.dumps({**meta, "results": results}, indent=2, default=str))


if __name__ == "__main__":
    sys.exit(main())
