"""`trafficcore replay`: feed stored history into a copy of a dataset as if it were arriving live.

For demos and tests of the live path without a live feed. The copy (`SRC-live` by default) gets the
source's static tables (sites, detectors, adjacency, events, weather; the dataset record, marked as
a replay in its description), its readings before `--from`, and the registered model version that
serves the source (promoted for the copy as `<run id>@<copy>`; the shipped model and the fitted
baseline apply to the copy by themselves); then each interval's readings go
through `ingest_observations` exactly as the API or the folder watcher would send them, at the pace
`interval / speed` (speed 60: a 15-minute interval every 15 s; speed 0: as fast as possible),
re-issuing forecasts and re-computing alerts after each. Starting a replay into an existing copy
starts it over (the copy is rebuilt), so a replay is repeatable; a target that exists and is not a replay
is refused rather than overwritten.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd

from trafficcore.data.schema import COLUMNS, LOADED_TABLES
from trafficcore.data.store import Store
from trafficcore.errors import DataError, TrafficCoreError

STATIC_TABLES = tuple(t for t in LOADED_TABLES if t != "observations")


@dataclass
class ReplayStep:
    """One fed interval: its time, the ingest result, and what the live side made of it."""

    ts: pd.Timestamp
    written: int
    forecasts: int
    alerts: int
    seconds: float


@dataclass
class ReplayResult:
    source: str
    into: str
    start: pd.Timestamp
    end: pd.Timestamp | None
    copied: dict[str, int] = field(default_factory=dict)
    steps: list[ReplayStep] = field(default_factory=list)
    stopped: bool = False


def prepare(store: Store, src: str, into: str, start) -> dict[str, int]:
    """(Re)build dataset `into` from `src`: static tables and readings before `start`, in one transaction."""
    if into == src:
        raise DataError(into, "the replay must go into another dataset than its source", column="into")
    if not into or not into.replace("_", "").replace("-", "").isalnum():
        raise DataError(into, f"dataset name must be letters, digits, '-' or '_': {into!r}", column="into")
    try:
        info = store.dataset_info(src)
    except KeyError:
        raise DataError(src, f"unknown dataset {src!r}", column="dataset") from None
    start = pd.Timestamp(start)
    served = _serving_version(store, src)
    existing = store.query("SELECT description FROM datasets WHERE dataset = ?", [into])
    if len(existing) and not str(existing["description"].iloc[0] or "").startswith("Replay of "):
        raise DataError(into, f"dataset {into!r} exists and is not a replay; a replay rebuilds its target, so "
                              "choose another --into", column="into")
    counts: dict[str, int] = {}
    with store.transaction() as con:
        for table in COLUMNS:
            if "dataset" in COLUMNS[table]:
                con.execute(f"DELETE FROM {table} WHERE dataset = ?", [into])
        desc = f"Replay of {src} from {start:%Y-%m-%d %H:%M} (fed as if live). {info.get('description') or ''}"
        con.execute("INSERT INTO datasets SELECT * REPLACE (? AS dataset, ? AS description) FROM datasets "
                    "WHERE dataset = ?", [into, desc.strip(), src])
        for table in STATIC_TABLES:
            n = con.execute(f"INSERT INTO {table} SELECT * REPLACE (? AS dataset) FROM {table} WHERE dataset = ?",
                            [into, src]).fetchone()[0]
            counts[table] = int(n)
        n = con.execute("INSERT INTO observations SELECT * REPLACE (? AS dataset) FROM observations "
                        "WHERE dataset = ? AND ts < ?", [into, src, start.to_pydatetime()]).fetchone()[0]
        counts["observations"] = int(n)
        counts["model_runs"] = _carry_model(con, src, into, served)
    from trafficcore.live.registry import forget_lookups

    forget_lookups()
    return counts


def _serving_version(store: Store, src: str) -> str | None:
    """The registered version serving `src` (`trafficcore.live.serving`, nothing loaded), or None when the shipped
    model or an on-the-spot baseline serves it (those apply to the copy by themselves)."""
    from trafficcore.live.serving import candidates

    first = next((c for c in candidates(store, src) if c.kind == "saved"), None)
    return first.run_id if first is not None and first.run_id else None


def _carry_model(con, src: str, into: str, run_id: str | None) -> int:
    """Register the version serving `src` for `into` too, promoted, as `<run id>@<into>` (parent: the original):
    the replay is served by the model that serves its source, and its live accuracy is that model's."""
    if run_id is None:
        return 0
    now = pd.Timestamp.now().floor("us").to_pydatetime()
    con.execute("""INSERT INTO model_runs SELECT * REPLACE (? AS run_id, ? AS dataset, true AS promoted,
                   'promoted' AS status, ? AS promoted_at, ? AS parent_run_id) FROM model_runs WHERE run_id = ?""",
                [f"{run_id}@{into}", into, now, run_id, run_id])
    return 1


def replay(
    store: Store,
    src: str,
    start,
    end=None,
    speed: float = 60.0,
    into: str | None = None,
    forecasts: bool = True,
    alerts: bool = True,
    on_step: Callable[[ReplayStep, int, int], None] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    sleep: Callable[[float], None] = time.sleep,
    feed_filter: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
) -> ReplayResult:
    """Copy `src` into `into` up to `start`, then feed its readings in [start, end) interval by interval.

    `on_step(step, i, n)` is called after each interval (progress bars). KeyboardInterrupt or `should_stop`
    ends the replay between intervals; every fed interval is committed whole. `feed_filter` may alter the
    readings to feed (detector_id, ts, value) before the replay starts: a fault planted for a check.
    """
    from trafficcore.live.alerts import current_alerts
    from trafficcore.live.ingest import ingest_observations, refresh_forecasts

    if speed < 0:
        raise DataError("--speed", f"speed must be 0 (as fast as possible) or positive, got {speed!r}", column="speed")
    into = into or f"{src}-live"
    start = pd.Timestamp(start)
    end = None if end is None else pd.Timestamp(end)
    if end is not None and end <= start:
        raise DataError("--to", f"--to {end} is not after --from {start}", column="to")
    result = ReplayResult(src, into, start, end)
    result.copied = prepare(store, src, into, start)
    feed = store.observations(src, start=start, end=end)
    if feed_filter is not None:
        feed = feed_filter(feed)
    if feed.empty:
        raise DataError(src, f"no readings of {src!r} from {start}" + (f" to {end}" if end is not None else ""),
                        column="ts")
    interval_s = int(store.dataset_info(src)["interval_s"])
    pace = interval_s / speed if speed > 0 else 0.0
    groups = list(feed.groupby("ts", sort=True))
    t_next = time.monotonic()
    try:
        for i, (ts, frame) in enumerate(groups):
            if should_stop():
                result.stopped = True
                break
            t0 = time.perf_counter()
            res = ingest_observations(store, into, frame.reset_index(drop=True), source=f"replay:{src}")
            n_fc = n_alerts = 0
            if forecasts and res.written:
                try:
                    n_fc = len(refresh_forecasts(store, into, res.detectors))
                except (TrafficCoreError, ValueError):
                    n_fc = 0  # too little history yet: the first intervals of a replay from the very start
            if alerts:
                n_alerts = len(current_alerts(store, into))
            step = ReplayStep(pd.Timestamp(ts), res.written, n_fc, n_alerts, time.perf_counter() - t0)
            result.steps.append(step)
            if on_step is not None:
                on_step(step, i, len(groups))
            if pace and i + 1 < len(groups):
                t_next += pace
                wait = t_next - time.monotonic()
                if wait > 0:
                    sleep(wait)
    except KeyboardInterrupt:
        result.stopped = True
    return result
