"""The live-monitoring check on real data: `python -m trafficcore.live.replay_check --db PATH --dataset scats`.

Replays a stretch of a dataset (default: its last 7 days) into a live copy with the model that serves it
(`trafficcore replay`'s machinery), computing the monitoring alerts (accuracy decay, band coverage,
detector drift) after every interval, then prints:

1. live accuracy per horizon (`trafficcore.live.monitor`, scored as the readings arrived) beside the
   benchmark scorer's numbers on the same stored forecasts (`evaluation.benchmark.score_standard`);
   the bar is agreement within 0.1 %;
2. every monitoring alert raised during the replay (none is the bar on a normal week), with the
   extremes of the trailing-24 h MAE against the validation MAE and of the coverage, i.e. how far the
   week stayed from the thresholds;
3. with `--shift DETECTOR --factor 0.5 --shift-at T`: the readings of one detector scaled from T on
   (a planted level shift), and after how many intervals of shifted data `detector_drift` named it
   (the bar: within 2 hours).

A benchmark command, not a test: it takes minutes on SCATS. Numbers go to docs/LIVE.md.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from trafficcore import config
from trafficcore.data.store import Store, open_duckdb


def equality_table(store: Store, dataset: str) -> pd.DataFrame:
    """Per horizon: the monitor's MAE, WAPE and coverage over every scored hour, and the benchmark scorer's on the
    same stored live forecasts and readings."""
    from trafficcore.evaluation.benchmark import score_standard
    from trafficcore.live import monitor

    pairs = store.query(
        """SELECT f.run_id, f.detector_id, f.issued_at, f.horizon_min, f.p10, f.p50, f.p90, o.value
           FROM forecasts f LEFT JOIN observations o
             ON o.dataset = f.dataset AND o.detector_id = f.detector_id AND o.ts = f.target_ts
           WHERE f.dataset = ? AND f.run_id LIKE 'live:%'""", [dataset])
    span = store.query("SELECT min(hour_ts) AS a, max(hour_ts) AS b FROM forecast_accuracy WHERE dataset = ?",
                       [dataset]).iloc[0]
    hours = int((span["b"] - span["a"]) / pd.Timedelta(hours=1)) + 1
    live = monitor.accuracy(store, dataset, hours, ["horizon_min"], end=span["b"]).set_index("horizon_min")
    hs = sorted(pairs["horizon_min"].unique())
    wide = pairs.pivot_table(index=["run_id", "detector_id", "issued_at"], columns="horizon_min",
                             values=["p10", "p50", "p90", "value"], dropna=False)
    q = np.stack([wide[p][hs].to_numpy() for p in ("p10", "p50", "p90")], axis=-1)
    y = wide["value"][hs].to_numpy()
    spec = type("Spec", (), {"horizons_min": hs})
    bench = {r["horizon_min"]: r for r in score_standard("served", spec, y, q)}
    rows = []
    for h in hs:
        b, lv = bench[h], live.loc[h]
        rows.append({"horizon_min": h, "live_mae": lv["mae"], "bench_mae": b["mae"],
                     "rel_diff": abs(lv["mae"] - b["mae"]) / b["mae"], "live_wape": lv["wape"], "bench_wape": b["wape"],
                     "live_coverage": lv["coverage_p10_p90"], "bench_coverage": b["coverage_p10_p90"],
                     "live_n": int(lv["n"]), "bench_n": int(b["n"])})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> None:
    from trafficcore.live import monitor
    from trafficcore.live.alerts import DEFAULTS, MONITOR_KINDS, current_alerts
    from trafficcore.live.replay import replay

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", default=None)
    ap.add_argument("--dataset", default="scats")
    ap.add_argument("--from", dest="start", default=None, help="first interval (default: 7 days before the end)")
    ap.add_argument("--to", dest="end", default=None, help="stop before this time (default: after the newest reading)")
    ap.add_argument("--into", default=None, help="the live copy (default: <dataset>-check)")
    ap.add_argument("--shift", default=None, help="detector whose readings are scaled (a planted level shift)")
    ap.add_argument("--factor", type=float, default=0.5)
    ap.add_argument("--shift-at", default=None, help="first scaled reading (default: the middle of the replay)")
    ap.add_argument("--keep", action="store_true", help="keep the live copy")
    args = ap.parse_args(argv)
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass
    store = Store(config.db_path(args.db))
    newest = pd.Timestamp(store.query("SELECT max(ts) AS t FROM observations WHERE dataset = ?",
                                      [args.dataset])["t"].iloc[0])
    interval = pd.Timedelta(seconds=int(store.dataset_info(args.dataset)["interval_s"]))
    end = pd.Timestamp(args.end) if args.end else newest + interval
    start = pd.Timestamp(args.start) if args.start else end - pd.Timedelta(days=7)
    into = args.into or f"{args.dataset}-check"
    shift_at = pd.Timestamp(args.shift_at) if args.shift_at else start + (end - start) / 2
    shift_at = start + ((shift_at - start) // interval) * interval

    def plant(feed: pd.DataFrame) -> pd.DataFrame:
        if args.shift is None:
            return feed
        if args.shift not in set(feed["detector_id"]):
            raise SystemExit(f"--shift {args.shift!r}: no such detector in the replayed readings")
        hit = (feed["detector_id"] == args.shift) & (feed["ts"] >= shift_at)
        return feed.assign(value=np.where(hit, np.round(feed["value"] * args.factor), feed["value"]))

    raised: dict[tuple, dict] = {}
    fired_at: pd.Timestamp | None = None

    def on_step(step, i, n) -> None:
        nonlocal fired_at
        found = current_alerts(store, into, kinds=MONITOR_KINDS)
        for a in found.itertuples(index=False):
            key = (a.kind, a.detector_id)
            if key not in raised:
                raised[key] = {"first": step.ts, "message": a.message, "count": 0}
            raised[key]["count"] += 1
            if args.shift and a.kind == "detector_drift" and a.detector_id == args.shift and fired_at is None:
                fired_at = step.ts
        if i % 96 == 0 or i == n - 1:
            print(f"  {step.ts:%Y-%m-%d %H:%M}  interval {i + 1}/{n}  ({time.perf_counter() - t0:.0f} s)", flush=True)

    keeper = open_duckdb(store.path)  # one connection held: the replay's many short ones then cost ~1 ms each
    t0 = time.perf_counter()
    try:
        res = replay(store, args.dataset, start, end, speed=0, into=into, alerts=False, on_step=on_step,
                     feed_filter=plant)
        wall = time.perf_counter() - t0
        run = monitor.serving_run(store, into)
        ref = monitor.reference(store, into, run)
        fed = sum(s.written for s in res.steps)
        print(f"\nreplayed {args.dataset} {start} .. {end - interval} into {into}: {len(res.steps)} intervals, "
              f"{fed:,} readings, {wall:.0f} s ({wall / max(1, len(res.steps)):.2f} s per interval, monitoring "
              f"alerts after each); served by {run} ({ref['display_name']}, validation MAE "
              f"{ref['val_mae'] if ref['val_mae'] is None else round(ref['val_mae'], 3)})")
        if args.shift:
            print(f"planted: {args.shift} readings x {args.factor} from {shift_at}")

        eq = equality_table(store, into)
        print("\n| horizon | live MAE | benchmark scorer MAE | rel. diff | live WAPE | bench WAPE | live cov. | "
              "bench cov. | n live | n bench |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in eq.itertuples(index=False):
            print(f"| {r.horizon_min} | {r.live_mae:.4f} | {r.bench_mae:.4f} | {r.rel_diff:.2e} | {r.live_wape:.2%} | "
                  f"{r.bench_wape:.2%} | {r.live_coverage:.1%} | {r.bench_coverage:.1%} | {r.live_n:,} | "
                  f"{r.bench_n:,} |")
        print(f"largest relative difference {eq['rel_diff'].max():.2e} (bar: 1e-3)")

        th = dict(DEFAULTS)
        roll = monitor.rolling(store, into, run, int(th["rolling_hours"]), int((end - start) / pd.Timedelta(hours=1)))
        roll = roll[roll["hours_scored"] >= int(th["min_hours"])]
        if len(roll):
            ratio = roll["mae"] / ref["val_mae"] if ref["val_mae"] else None
            print(f"\ntrailing {int(th['rolling_hours'])} h, hours with >= {int(th['min_hours'])} h scored: MAE "
                  f"{roll['mae'].min():.3f} .. {roll['mae'].max():.3f}"
                  + (f" ({ratio.min() - 1:+.1%} .. {ratio.max() - 1:+.1%} against validation; alert above "
                     f"{th['decay_margin']:+.0%} for {int(th['decay_hours'])} h)" if ratio is not None else "")
                  + f"; coverage {roll['coverage_p10_p90'].min():.1%} .. {roll['coverage_p10_p90'].max():.1%} (alert "
                    f"outside {th['coverage_low']:.0%}-{th['coverage_high']:.0%} for {int(th['coverage_hours'])} h)")
        print(f"\nmonitoring alerts raised during the replay: {len(raised)}")
        for (kind, det), v in sorted(raised.items(), key=lambda kv: kv[1]["first"]):
            print(f"  {v['first']:%Y-%m-%d %H:%M}  {kind}  {det or '-'}  ({v['count']} intervals): {v['message']}")
        if args.shift:
            if fired_at is None:
                print(f"\n{args.shift}: detector_drift never raised")
            else:
                k = int((fired_at - shift_at) / interval) + 1
                print(f"\n{args.shift}: detector_drift raised at {fired_at:%Y-%m-%d %H:%M}, after {k} intervals "
                      f"({k * interval / pd.Timedelta(minutes=1):.0f} min) of shifted readings (bar: 120 min)")
    finally:
        keeper.close()
        if not args.keep:
            store.drop_dataset(into)


if __name__ == "__main__":
    main()
