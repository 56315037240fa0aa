"""Timing the live path on a real store: `python -m trafficcore.live.bench --db PATH --dataset scats`.

The bar (issue 7): ingesting one SCATS-sized day (140 detectors x 96 intervals) takes at most 1 s. The
benchmark never touches the dataset itself: it builds a scratch copy (`<dataset>-bench`) holding the
readings before the chosen day (as `trafficcore replay` does), then times, on that copy:

- the whole day as one batch (validation, dedup against the store, one transaction, the ingest log);
- the same batch resent (recognised as a duplicate, nothing written);
- each interval as its own batch (what a live feed sends), median and worst;
- forecasts re-issued for all detectors after an interval (model already loaded), and the alerts (the
  first call, after a new interval, and a repeated call with nothing new).

The copy is dropped afterwards unless `--keep`. Numbers are wall-clock seconds on this machine.
"""

from __future__ import annotations

import argparse
import statistics
import time

import pandas as pd

from trafficcore import config
from trafficcore.data.store import Store


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def run(store: Store, dataset: str, day=None, intervals: int = 16, keep: bool = False, repeats: int = 3) -> list[dict]:
    """Rows of (step, seconds, note); see the module docstring."""
    from trafficcore.live.alerts import current_alerts
    from trafficcore.live.ingest import ingest_observations, refresh_forecasts
    from trafficcore.live.replay import prepare

    newest = store.query("SELECT max(ts) AS t FROM observations WHERE dataset = ?", [dataset])["t"].iloc[0]
    day = pd.Timestamp(day) if day is not None else pd.Timestamp(newest).normalize() - pd.Timedelta(days=1)
    feed = store.observations(dataset, start=day, end=day + pd.Timedelta(days=1))
    scratch = f"{dataset}-bench"
    rows = []
    try:
        n_det = feed["detector_id"].nunique()
        n_int = feed["ts"].nunique()
        runs = []
        for _ in range(repeats):  # each on a fresh copy, so every run writes the whole day
            prepare(store, dataset, scratch, day)
            t, res = _timed(lambda: ingest_observations(store, scratch, feed, source="bench"))
            runs.append(t)
        rows.append({"step": f"ingest one day as one batch ({len(feed):,} readings: {n_det} detectors x {n_int} "
                             f"intervals), median of {repeats}", "seconds": statistics.median(runs),
                     "note": f"{res.written:,} written; runs " + ", ".join(f"{r:.3f}" for r in runs)})
        t, res = _timed(lambda: ingest_observations(store, scratch, feed, source="bench"))
        rows.append({"step": "the same day resent", "seconds": t, "note": f"duplicate batch: {res.duplicate_batch}"})

        prepare(store, dataset, scratch, day)
        times = sorted(feed["ts"].unique())[:intervals]
        per = []
        for ts in times:
            t, res = _timed(lambda ts=ts: ingest_observations(store, scratch, feed[feed["ts"] == ts], source="bench"))
            per.append(t)
        rows.append({"step": f"ingest one interval ({n_det} readings), median of {len(per)}",
                     "seconds": statistics.median(per), "note": f"worst {max(per):.3f} s"})
        t, fc = _timed(lambda: refresh_forecasts(store, scratch, None))
        rows.append({"step": "re-issue forecasts, all detectors (first call: loads or fits the model)", "seconds": t,
                     "note": f"{len(fc):,} forecasts"})
        warm = []
        for ts in times[-3:]:
            ingest_observations(store, scratch, feed[feed["ts"] == ts].assign(value=lambda d: d["value"] + 1),
                                source="bench")
            t, fc = _timed(lambda: refresh_forecasts(store, scratch, None))
            warm.append(t)
        rows.append({"step": "re-issue forecasts, all detectors (model loaded), median of 3",
                     "seconds": statistics.median(warm), "note": str(fc["run_id"].iloc[0])})
        t, alerts = _timed(lambda: current_alerts(store, scratch))
        rows.append({"step": "current alerts (first call: builds the sites' default plans)", "seconds": t,
                     "note": f"{len(alerts)} alerts"})
        ts = times[-1] + pd.Timedelta(seconds=int(store.dataset_info(dataset)["interval_s"]))
        ingest_observations(store, scratch, feed[feed["ts"] == ts], source="bench")
        refresh_forecasts(store, scratch, None)
        t, alerts = _timed(lambda: current_alerts(store, scratch))
        rows.append({"step": "current alerts after the next interval and its forecasts", "seconds": t,
                     "note": f"{len(alerts)} alerts"})
        t, alerts = _timed(lambda: current_alerts(store, scratch))
        rows.append({"step": "current alerts again, nothing new (a page polling)", "seconds": t,
                     "note": f"{len(alerts)} alerts"})
    finally:
        if not keep:
            store.drop_dataset(scratch)
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", default=None, help="DuckDB store (default: $TRAFFICCORE_DB or data/trafficcore.duckdb)")
    ap.add_argument("--dataset", default="scats")
    ap.add_argument("--day", default=None, help="the day to ingest (default: the last complete day)")
    ap.add_argument("--intervals", type=int, default=16, help="single-interval batches to time")
    ap.add_argument("--repeats", type=int, default=3, help="times the whole-day ingest is timed")
    ap.add_argument("--keep", action="store_true", help="keep the scratch copy <dataset>-bench")
    args = ap.parse_args(argv)
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass
    store = Store(config.db_path(args.db))
    rows = run(store, args.dataset, args.day, args.intervals, args.keep, args.repeats)
    width = max(len(r["step"]) for r in rows)
    print(f"| {'step':<{width}} | seconds | note")
    print(f"|{'-' * (width + 2)}|---------|-----")
    for r in rows:
        print(f"| {r['step']:<{width}} | {r['seconds']:7.3f} | {r['note']}")


if __name__ == "__main__":
    main()
