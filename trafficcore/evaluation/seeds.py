"""Several seeds of one benchmark: mean ± sd per model and horizon, and paired intervals against gbt.

`run_seeds(store, dataset, protocol, models, seeds)` runs `run_benchmark` once per seed. A model whose
constructor takes a seed (by name, or through ``**kwargs`` as the LM's config does) is trained once per
seed; a deterministic one (persistence, seasonal naive, historical average) is trained once, on the first
seed, and reported with ``n_seeds`` = 1 and sd 0 (its errors are reused when it is paired with each seed
of a seeded model). Under ``cold-start`` the seed also draws the held-out sites, so every model runs on
every seed there.

The report (`trafficcore benchmark --seeds 0,1,2 --json OUT.json`)::

    {"dataset", "protocol", "run_date" (ISO 8601, UTC), "seeds", "deterministic": [models run once],
     "split": {...the first seed's...},
     "results":  [{"model", "horizon_min", "mae", "mae_sd", "rmse", "rmse_sd", ..., "n_seeds"}, ...]  (means),
     "intervals": [{"model", "reference", "horizon_min", "metric": "mae", "mean", "lo", "hi",
                    "share_below_zero", "n", ...}, ...],
     "bootstrap": {"block_hours", "block_len", "replicates", "seed", "level", "pairing"},
     "per_seed": [{"seed", "models", "results", "timing", "wall_s"}, ...],
     "ablations": [], "timing": {"load_s", "total_s", "wall_s_per_seed"}}

"results" holds the seed means under the same keys as a one-seed report, so anything that reads a
report reads this one too; the "_sd" fields and "intervals" are extra.

Interval: for each seed, the model's and gbt's absolute P50 errors on the same (issue time, detector,
horizon) samples are subtracted; the differences of all seeds are pooled (an issue time's block carries
every seed's and every detector's samples) and resampled by `bootstrap.paired_interval`. Its mean is the
difference of the seed-mean MAEs.
"""

from __future__ import annotations

import datetime as dt
import inspect
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from trafficcore.data.store import Store
from trafficcore.evaluation import bootstrap
from trafficcore.evaluation.benchmark import (
    BenchmarkError,
    SampleErrors,
    _clean,
    _takes_seed,
    load_dataset,
    run_benchmark,
)
from trafficcore.models import registry

REFERENCE = "gbt"
SUMMARY_METRICS = ("mae", "rmse", "wape", "coverage_p10_p90", "pinball")


def takes_seed(name: str) -> bool:
    """Whether the model's constructor takes a seed: by name, or through **kwargs (the LM's config has one)."""
    try:
        return _takes_seed(inspect.signature(registry.model_class(name)).parameters)
    except (KeyError, ImportError):
        return False


def parse_seeds(text: str) -> list[int]:
    """'0,1,2' -> [0, 1, 2]; distinct integers, in the order given."""
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise BenchmarkError(f"--seeds takes comma-separated integers, got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise BenchmarkError(f"--seeds needs distinct integers, got {text!r}")
    return seeds


def summarise(per_seed: list[dict]) -> list[dict]:
    """Mean and sd (over seeds, ddof 1; 0 with one run) per model and horizon, in first-seen order."""
    groups: dict[tuple[str, int], list[dict]] = {}
    for run in per_seed:
        for r in run["results"]:
            groups.setdefault((r["model"], int(r["horizon_min"])), []).append(r)
    out = []
    for (model, h), rows in groups.items():
        row: dict = {"model": model, "horizon_min": h, "n_seeds": len(rows)}
        for m in SUMMARY_METRICS:
            vals = np.array([r[m] for r in rows if r.get(m) is not None], dtype=np.float64)
            row[m] = float(vals.mean()) if vals.size else None
            row[f"{m}_sd"] = float(vals.std(ddof=1)) if vals.size > 1 else (0.0 if vals.size else None)
        row["n"] = rows[0].get("n")
        out.append(row)
    return out


def _keys(e: SampleErrors) -> np.ndarray:
    return e.issue_idx.astype(np.int64) * 1_000_000 + e.detector_idx  # fewer than a million detectors


def paired_differences(a: SampleErrors, b: SampleErrors, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """|error| of `a` minus that of `b` on their common samples at `horizon`, and those samples' issue rows."""
    ja, jb = a.horizons_min.index(horizon), b.horizons_min.index(horizon)
    _, ia, ib = np.intersect1d(_keys(a), _keys(b), assume_unique=True, return_indices=True)
    return a.abs_err[ia, ja] - b.abs_err[ib, jb], a.issue_idx[ia]


def intervals(errors: dict[int, dict[str, SampleErrors]], seeds: list[int], reference: str, block_len: int,
              replicates: int, rng_seed: int) -> list[dict]:
    """Per model other than `reference` and per horizon: the paired block-bootstrap interval of its MAE minus the
    reference's."""
    first = seeds[0]

    def errs(model: str, seed: int) -> SampleErrors | None:
        return errors.get(seed, {}).get(model) or errors.get(first, {}).get(model)

    models = list(errors.get(first, {}))
    if reference not in models:
        return []
    out = []
    for m in models:
        if m == reference:
            continue
        for h in errors[first][m].horizons_min:
            if h not in errors[first][reference].horizons_min:
                continue
            parts = [paired_differences(errs(m, s), errs(reference, s), h) for s in seeds
                     if errs(m, s) is not None and errs(reference, s) is not None]
            diff = np.concatenate([p[0] for p in parts])
            issue = np.concatenate([p[1] for p in parts])
            if not np.isfinite(diff).any():
                continue
            ci = bootstrap.paired_interval(diff, issue, block_len, replicates=replicates, seed=rng_seed)
            out.append({"model": m, "reference": reference, "horizon_min": int(h), "metric": "mae", **ci})
    return out


def run_seeds(
    store: Store,
    dataset: str,
    protocol: str,
    models: list[str],
    seeds: list[int],
    *,
    model_kwargs: dict[str, dict] | None = None,
    measure: str | None = None,
    cold_start_fraction: float = 0.2,
    block_hours: float = bootstrap.DEFAULT_BLOCK_HOURS,
    replicates: int = bootstrap.DEFAULT_REPLICATES,
    bootstrap_seed: int = bootstrap.DEFAULT_SEED,
    reference: str = REFERENCE,
    on_step: Callable[[str], None] | None = None,
    save_dir: Path | None = None,
    load_dir: Path | None = None,
) -> dict:
    """Run the benchmark once per seed (deterministic models once) and summarise; see the module docstring.

    `save_dir` / `load_dir`: as `run_benchmark`'s, one subfolder per seed (`seed0`, `seed1`, ...)."""
    t_start = time.perf_counter()
    run_date = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    models = [m.strip() for m in models if m.strip()]
    loaded = load_dataset(store, dataset, measure)
    load_s = time.perf_counter() - t_start
    once = [] if protocol == "cold-start" else [m for m in models if not takes_seed(m)]
    per_seed, errors = [], {}
    for i, seed in enumerate(seeds):
        names = models if i == 0 else [m for m in models if m not in once]
        if not names:
            continue
        t0 = time.perf_counter()
        errors[seed] = {}
        rep = run_benchmark(store, dataset, protocol, names, seed=seed, model_kwargs=model_kwargs,
                            cold_start_fraction=cold_start_fraction, on_step=on_step, loaded=loaded,
                            errors=errors[seed], save_dir=None if save_dir is None else Path(save_dir) / f"seed{seed}",
                            load_dir=None if load_dir is None else Path(load_dir) / f"seed{seed}")
        per_seed.append({"seed": seed, "models": names, "split": rep["split"], "results": rep["results"],
                         "timing": rep["timing"]["models"], "wall_s": time.perf_counter() - t0})
    split = per_seed[0]["split"]
    block_len = bootstrap.block_len_for(float(split["interval_s"]), block_hours)
    cis = intervals(errors, seeds, reference, block_len, replicates, bootstrap_seed) if errors[seeds[0]] else []
    report = {
        "dataset": dataset,
        "protocol": protocol,
        "run_date": run_date,
        "seeds": list(seeds),
        "deterministic": once,
        "split": split,
        "results": summarise(per_seed),
        "intervals": cis,
        "bootstrap": {"block_hours": block_hours, "block_len": block_len, "replicates": replicates,
                      "seed": bootstrap_seed, "level": 0.95, "metric": "mae", "reference": reference,
                      "pairing": "same issue time, detector and horizon; differences of all seeds pooled; "
                                 "blocks of consecutive issue times carry every detector"},
        "per_seed": [{k: v for k, v in r.items() if k != "split"} for r in per_seed],
        "ablations": [],
        "timing": {"load_s": load_s, "total_s": time.perf_counter() - t_start,
                   "wall_s_per_seed": {str(r["seed"]): r["wall_s"] for r in per_seed}},
    }
    return _clean(report)


def seeds_table(report: dict) -> str:
    """Mean ± sd per model and horizon, then the intervals against the reference, as GitHub markdown."""
    det = set(report.get("deterministic") or [])
    out = [f"**{report['dataset']}**, protocol `{report['protocol']}`, seeds {report['seeds']}, "
           f"run {report['run_date']}",
           "", "| model | horizon (min) | MAE | RMSE | P10-P90 coverage (%) | seeds |", "|---|---|---|---|---|---|"]

    def pm(r, m, scale=1.0, digits=3):
        v, sd = r.get(m), r.get(f"{m}_sd")
        return "-" if v is None else f"{scale * v:.{digits}f} ± {scale * (sd or 0.0):.{digits}f}"

    for r in report["results"]:
        n = f"{r['n_seeds']}" + (" (deterministic)" if r["model"] in det else "")
        out.append(f"| {r['model']} | {r['horizon_min']} | {pm(r, 'mae')} | {pm(r, 'rmse')} | "
                   f"{pm(r, 'coverage_p10_p90', 100.0, 1)} | {n} |")
    if report.get("intervals"):
        b = report["bootstrap"]
        out += ["", f"MAE minus {b['reference']}'s, paired moving-block bootstrap ({b['block_hours']:g}-hour blocks = "
                f"{b['block_len']} issue times, {b['replicates']} replicates, RNG seed {b['seed']}); negative = better "
                f"than {b['reference']}", "",
                "| model | horizon (min) | difference | 95% interval | replicates below 0 |", "|---|---|---|---|---|"]
        for c in report["intervals"]:
            out.append(f"| {c['model']} | {c['horizon_min']} | {c['mean']:+.3f} | [{c['lo']:+.3f}, {c['hi']:+.3f}] | "
                       f"{100 * c['share_below_zero']:.0f}% |")
    return "\n".join(out)
