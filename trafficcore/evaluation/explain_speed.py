"""How long does an explanation take? The benchmark behind issue 4's bar (<= 2 s warm per explanation).

For each model, explain `--n` forecasts (seeded-random detectors and issue times of the last week of
the data, horizons cycling through the model's) and report:

- `first`: the first call, which also pays for warm-up (the model's first forward pass, profiles);
- `warm`: every further call with a new (detector, issue time, horizon), median / p95 / max;
- `cached`: the same calls again, answered from the per (model, panel, detector, issue time, horizon,
  note) cache in `trafficcore.explain`;
- `players`: words of the context text plus numeric groups, which is what the permutation cost grows with;
- `with words`: the warm calls whose context has any text (a model that reads only event text has none
  for most forecasts, and those calls are the cheap ones), and their median.

Models are saved folders (`--model DIR`, repeatable) and/or `--gbt` (the gradient-boosting baseline,
fitted here on the dataset as the dashboard does, TreeSHAP). Prints a markdown table; `--json OUT`
also writes it.

Run: `python -m trafficcore.evaluation.explain_speed --db DB --dataset demo --model data/demo_model --gbt`.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import pandas as pd

from trafficcore.data.panel import Panel, load_panel
from trafficcore.data.store import Store
from trafficcore.explain import explain


def cases(panel: Panel, model, n: int, seed: int = 0) -> list[tuple[str, pd.Timestamp, int]]:
    """`n` seeded (detector, issue time, horizon) triples from the last 7 days that have full history."""
    rng = np.random.default_rng(seed)
    per_day = int(pd.Timedelta(days=1) / panel.interval)
    hsteps = int(max(model.spec.horizons_min) / (panel.interval / pd.Timedelta(minutes=1)))
    lo = max(model.spec.history_steps, len(panel.times) - 7 * per_day)
    rows = rng.integers(lo, len(panel.times) - hsteps, size=n)
    dets = rng.integers(0, len(panel.detectors), size=n)
    hz = list(model.spec.horizons_min)
    ids = panel.detectors["detector_id"].astype(str).to_numpy()
    return [(ids[d], panel.times[r], int(hz[i % len(hz)])) for i, (d, r) in enumerate(zip(dets, rows, strict=True))]


def measure(model, panel: Panel, n: int) -> dict:
    """Timings (seconds) of `n` explanations of `model`, then of the same ones from the cache."""
    todo = cases(panel, model, n)
    cpu0, times, players, words = time.process_time(), [], [], []
    for det, at, h in todo:
        t = time.perf_counter()
        e = explain(model, panel, det, at, h)
        times.append(time.perf_counter() - t)
        players.append(len(e.tokens) + len(e.features))
        words.append(len(e.tokens))
    cpu = (time.process_time() - cpu0) / n
    t = time.perf_counter()
    for det, at, h in todo:
        explain(model, panel, det, at, h)
    cached = (time.perf_counter() - t) / n
    warm = np.array(times[1:]) if n > 1 else np.array(times)
    with_words = np.array(times)[1:][np.array(words[1:]) > 0] if n > 1 else np.array([])
    return {"n": n, "first_s": times[0], "warm_median_s": float(np.median(warm)),
            "warm_p95_s": float(np.percentile(warm, 95)), "warm_max_s": float(warm.max()), "cpu_s_per_call": cpu,
            "cached_s": cached, "players_median": float(np.median(players)),
            "with_words": int(with_words.size),
            "with_words_median_s": float(np.median(with_words)) if with_words.size else float("nan")}


def main() -> None:  # pragma: no cover - a benchmark command, run by hand
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", required=True)
    ap.add_argument("--dataset", default="demo")
    ap.add_argument("--model", action="append", default=[], help="saved model folder (repeatable)")
    ap.add_argument("--gbt", action="store_true", help="also the gradient-boosting baseline, fitted here")
    ap.add_argument("--n", type=int, default=40, help="explanations per model")
    ap.add_argument("--json", help="write the results here")
    a = ap.parse_args()
    from trafficcore.live.fallback import fit_baseline
    from trafficcore.models import load_model

    panel = load_panel(Store(a.db, read_only=True), a.dataset)
    models = [(m, load_model(m)) for m in a.model]
    if a.gbt:
        models.append(("gbt (fitted here)", fit_baseline("gbt", panel)[0]))
    rows = []
    for name, model in models:
        rows.append({"model": name, **measure(model, panel, a.n)})
    print(f"{a.dataset}: {len(panel.detectors)} detectors; {os.cpu_count()} CPUs; "
          f"load average {os.getloadavg()[0]:.1f}")
    print("| model | n | first (s) | warm median (s) | warm p95 (s) | warm max (s) | CPU s/call | cached | players "
          "| with words: n, median (s) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['n']} | {r['first_s']:.2f} | {r['warm_median_s']:.3f} | {r['warm_p95_s']:.3f} | "
              f"{r['warm_max_s']:.3f} | {r['cpu_s_per_call']:.3f} | {r['cached_s'] * 1e3:.3f} ms | "
              f"{r['players_median']:.0f} | {r['with_words']}, {r['with_words_median_s']:.3f} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"dataset": a.dataset, "results": rows}, f, indent=2)


if __name__ == "__main__":  # pragma: no cover
    main()
