"""Incident response on the demo city, measured: how fast, and whether its effect has the sign the generator planted.

    python -m trafficcore.live.incident_bench [--model DIR] [--timed 12] [--signals 4]

Generates the default demo city (seed 0, 8 weeks; the generator also returns what its events did to every
detector and interval) into a temporary store, takes the model that serves it (the shipped language model)
and analyses every event the incident list offers:

- **direction** (per event kind): over the intervals of the view where the planted events moved a detector by
  more than 3 vehicles, the share where "with minus without" has the planted sign, and the correlation of the
  two over all intervals of the view. The generator's counterfactual removes every event, so where two events
  overlap the planted effect is theirs together; few do;
- **speed**: wall time of `incident_effect` (forecasts, then signals retimed) for `--timed` events spread over
  the list, after one warm-up call (the encoder's first sentences), as median and maximum; wall time and the
  process's CPU time (all its threads), which says more than wall time on a machine shared with other jobs.

Prints two tables; measured figures go to docs/LIVE.md, not into code.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

PLANTED_MIN = 3.0


def _planted(truth, frame: pd.DataFrame) -> np.ndarray:
    rows = truth.times.get_indexer(pd.to_datetime(frame["target_ts"]))
    col = {d: i for i, d in enumerate(truth.detector_ids)}
    cols = np.array([col[d] for d in frame["detector_id"]])
    return (truth.expected - truth.without_events)[rows, cols]


def run(model_dir: str | None, timed: int, signals: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    from trafficcore.data import demo
    from trafficcore.data.panel import load_panel
    from trafficcore.data.store import Store
    from trafficcore.live import incident as inc
    from trafficcore.live.serving import load_saved, serving_model

    tables, truth = demo.generate_with_truth(seed=0, weeks=8)
    with tempfile.TemporaryDirectory(prefix="trafficcore-incident-bench-") as tmp:
        store = Store(Path(tmp) / "demo.duckdb")
        store.ingest("demo", tables)
        panel = load_panel(store, "demo")
        model = load_saved(model_dir) if model_dir else serving_model(store, "demo").model
    events = inc.incident_list(panel, model.spec.history_steps)
    inc.incident_effect(model, panel, inc.from_event(panel, events["event_id"].iloc[0]), max_signals=0)  # warm-up
    rows = []
    for eid in events["event_id"]:
        res = inc.incident_effect(model, panel, inc.from_event(panel, eid), max_signals=0)
        f = res.forecast
        planted = _planted(truth, f)
        diff = (f["p50_with"] - f["p50_without"]).to_numpy()
        big = np.abs(planted) > PLANTED_MIN
        ok = diff.std() > 0 and planted.std() > 0
        rows.append({"kind": res.incident.kind, "event_id": eid, "intervals": int(big.sum()),
                     "agree": int((np.sign(diff[big]) == np.sign(planted[big])).sum()),
                     "corr": float(np.corrcoef(diff, planted)[0, 1]) if ok else np.nan})
    per = pd.DataFrame(rows)
    direction = per.groupby("kind").agg(events=("event_id", "size"), intervals=("intervals", "sum"),
                                        agree=("agree", "sum"), mean_corr=("corr", "mean"))
    direction.loc["all"] = [len(per), per["intervals"].sum(), per["agree"].sum(), per["corr"].mean()]
    direction["agree_pct"] = 100 * direction["agree"] / direction["intervals"].clip(lower=1)
    pick = np.unique(np.linspace(0, len(events) - 1, max(1, timed)).round().astype(int))
    times = []
    for eid in events["event_id"].iloc[pick]:
        t0, c0 = time.perf_counter(), time.process_time()
        res = inc.incident_effect(model, panel, inc.from_event(panel, eid), max_signals=signals)
        times.append({**res.seconds, "wall": time.perf_counter() - t0, "cpu": time.process_time() - c0,
                      "signals_n": len(res.signals),
                      "detectors": res.forecast["detector_id"].nunique()})
    t = pd.DataFrame(times)
    speed = pd.DataFrame({"median": t.median(), "max": t.max()}).T
    return direction.reset_index(), speed


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="saved model folder (default: the one serving the demo city)")
    ap.add_argument("--timed", type=int, default=12, help="events timed with their signals retimed")
    ap.add_argument("--signals", type=int, default=4, help="signals retimed per event (as the page does)")
    args = ap.parse_args(argv)
    direction, speed = run(args.model, args.timed, args.signals)
    pd.set_option("display.width", 160)
    print("Planted direction: intervals where the generator's events moved a detector by more than "
          f"{PLANTED_MIN:g} vehicles, and the share where with-minus-without has that sign")
    print(direction.round({"mean_corr": 2, "agree_pct": 1}).to_string(index=False))
    print(f"\nSpeed of incident_effect over {args.timed} events (seconds: forecasts, signals retimed, total, wall "
          "and CPU time of the call):")
    print(speed.round(2).to_string())


if __name__ == "__main__":
    main()
