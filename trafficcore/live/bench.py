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

`--part monitor` (issue 16's bars) times live accuracy on a fresh copy: the day's forecasts are stored first as
if served (the serving model at every issue time of the day), then the day's readings arrive as one batch, which
scores them (ingest with and without scoring, and the scoring alone); then a Live page refresh: the store reads
its fragment makes (status, alerts of every kind, latest forecasts, the accuracy section), warm, and the whole page
rerun through Streamlit's AppTest.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
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


def _served_day(store: Store, dataset: str, scratch: str, day: pd.Timestamp) -> pd.DataFrame:
    """The serving model's forecasts at every issue time of `day` (from the source's readings), as live run rows
    of `scratch`: what a day of live service would have stored."""
    from trafficcore.data.panel import load_panel
    from trafficcore.data.windows import build_samples
    from trafficcore.live.ingest import live_model, run_id_for
    from trafficcore.models.base import forecast_frame

    model, info = live_model(store, scratch)
    panel = load_panel(store, dataset)
    rows = [panel.index_of(t) for t in pd.date_range(day, day + pd.Timedelta(days=1), freq=panel.interval,
                                                     inclusive="left") if t in panel.times]
    rows = [r for r in rows if r >= model.spec.history_steps]
    samples = build_samples(panel, np.array(rows), None, model.spec)
    fc = forecast_frame(panel, samples, model.predict_samples(panel, samples))
    return fc.assign(run_id=run_id_for(model, info))[["run_id", *fc.columns]]


def monitor_rows(store: Store, dataset: str, day, repeats: int = 3, page: bool = True) -> list[dict]:
    """Rows of (step, seconds, note) for live accuracy and the Live page (see the module docstring)."""
    from trafficcore.live import monitor
    from trafficcore.live.ingest import ingest_observations
    from trafficcore.live.replay import prepare

    day = pd.Timestamp(day).normalize()
    feed = store.observations(dataset, start=day, end=day + pd.Timedelta(days=1))
    scratch = f"{dataset}-bench"
    rows: list[dict] = []
    try:
        prepare(store, dataset, scratch, day)
        served = _served_day(store, dataset, scratch, day)
        with_score, without, alone = [], [], []
        for _ in range(repeats):
            for scoring, out in ((False, without), (True, with_score)):
                prepare(store, dataset, scratch, day)
                store.write_frame("forecasts", served, scratch)
                t, res = _timed(lambda scoring=scoring: ingest_observations(store, scratch, feed, source="bench",
                                                                            score=scoring))
                out.append(t)
            t, pairs = _timed(lambda: monitor.score(store, scratch, None, day, day + pd.Timedelta(hours=23)))
            alone.append(t)
        rows.append({"step": f"ingest one day as one batch ({len(feed):,} readings), scoring included, median of "
                             f"{repeats}", "seconds": statistics.median(with_score),
                     "note": f"{pairs:,} served forecasts scored; runs " + ", ".join(f"{r:.3f}" for r in with_score)})
        rows.append({"step": f"the same without scoring, median of {repeats}", "seconds": statistics.median(without),
                     "note": "runs " + ", ".join(f"{r:.3f}" for r in without)})
        rows.append({"step": f"scoring the day alone (monitor.score, {len(served):,} stored forecasts), median of "
                             f"{repeats}", "seconds": statistics.median(alone),
                     "note": "runs " + ", ".join(f"{r:.3f}" for r in alone)})

        rows += page_rows(store, scratch, repeats, page)
    finally:
        store.drop_dataset(scratch)
    return rows


def page_rows(store: Store, dataset: str, repeats: int = 3, page: bool = True) -> list[dict]:
    """The Live page's reads of `dataset` (first and warm), and the page itself through AppTest when `page`."""
    from trafficcore.live.alerts import current_alerts
    from trafficcore.live.ingest import latest_forecasts, live_status
    from trafficcore.ui.monitor import accuracy_view

    def refresh():  # what the Live page's fragment reads, with the store held open as the page does
        with store.held():
            live_status(store, dataset)
            current_alerts(store, dataset)
            latest_forecasts(store, dataset)
            return accuracy_view(store, dataset)

    n = store.query("SELECT sum(n) AS n FROM forecast_accuracy WHERE dataset = ?", [dataset])["n"].iloc[0]
    rows = []
    t, _ = _timed(refresh)
    rows.append({"step": f"Live page reads of {dataset}, first time (alerts build the sites' default plans)",
                 "seconds": t, "note": f"status, alerts of every kind, latest forecasts, accuracy section; "
                                       f"{int(n or 0):,} served forecasts scored in the store"})
    warm = []
    for _ in range(max(repeats, 5)):
        t, view = _timed(refresh)
        warm.append(t)
    day_mae = view.headline.get("24h", {}).get("mae", float("nan"))
    rows.append({"step": f"Live page reads per refresh, median of {len(warm)}", "seconds": statistics.median(warm),
                 "note": f"worst {max(warm):.3f} s; served MAE, last 24 h: {day_mae:.3f}"})
    if page:
        rows += _page_rows(store, dataset, repeats)
    return rows


def _page_rows(store: Store, dataset: str, repeats: int) -> list[dict]:
    """The Live page rerun through AppTest (what one refresh costs the server, Streamlit included)."""
    import os

    from streamlit.testing.v1 import AppTest

    app = str(config.PROJECT_ROOT / "app.py")
    old = os.environ.get("TRAFFICCORE_DB")
    os.environ["TRAFFICCORE_DB"] = str(store.path)
    try:
        at = AppTest.from_file(app, default_timeout=300)
        at.query_params.update({"dataset": dataset})
        at.run()
        t, _ = _timed(lambda: at.switch_page("pages/live.py").run())
        runs = []
        for _ in range(max(repeats, 3)):
            t_i, _ = _timed(at.run)
            runs.append(t_i)
        errors = [e.value for e in at.exception] + [e.value for e in at.error]
    finally:
        if old is None:
            os.environ.pop("TRAFFICCORE_DB", None)
        else:
            os.environ["TRAFFICCORE_DB"] = old
    return [{"step": "Live page, first view (AppTest)", "seconds": t, "note": "errors: " + ("; ".join(map(str, errors))
                                                                                          or "none")},
            {"step": f"Live page rerun (AppTest), median of {len(runs)}", "seconds": statistics.median(runs),
             "note": "runs " + ", ".join(f"{r:.3f}" for r in runs)}]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", default=None, help="DuckDB store (default: $TRAFFICCORE_DB or data/trafficcore.duckdb)")
    ap.add_argument("--dataset", default="scats")
    ap.add_argument("--day", default=None, help="the day to ingest (default: the last complete day)")
    ap.add_argument("--intervals", type=int, default=16, help="single-interval batches to time")
    ap.add_argument("--repeats", type=int, default=3, help="times the whole-day ingest is timed")
    ap.add_argument("--keep", action="store_true", help="keep the scratch copy <dataset>-bench")
    ap.add_argument("--part", choices=("all", "ingest", "monitor"), default="all",
                    help="ingest: the ingest, forecast and alert timings; monitor: live accuracy and the Live page")
    ap.add_argument("--no-page", action="store_true", help="with monitor: skip the AppTest run of the Live page")
    ap.add_argument("--live", default=None, help="with monitor: also time the Live page on this existing live "
                                                 "dataset (e.g. a week replayed by trafficcore.live.replay_check)")
    args = ap.parse_args(argv)
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass
    store = Store(config.db_path(args.db))
    rows = []
    if args.part in ("all", "ingest"):
        rows += run(store, args.dataset, args.day, args.intervals, args.keep, args.repeats)
    if args.part in ("all", "monitor"):
        newest = store.query("SELECT max(ts) AS t FROM observations WHERE dataset = ?", [args.dataset])["t"].iloc[0]
        day = args.day or pd.Timestamp(newest).normalize() - pd.Timedelta(days=1)
        rows += monitor_rows(store, args.dataset, day, args.repeats, page=not args.no_page)
        if args.live:
            rows += page_rows(store, args.live, args.repeats, page=not args.no_page)
    width = max(len(r["step"]) for r in rows)
    print(f"| {'step':<{width}} | seconds | note")
    print(f"|{'-' * (width + 2)}|---------|-----")
    for r in rows:
        print(f"| {r['step']:<{width}} | {r['seconds']:7.3f} | {r['note']}")


if __name__ == "__main__":
    main()
