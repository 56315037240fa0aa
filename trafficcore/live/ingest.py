"""Taking live readings in, and re-issuing forecasts for the detectors they touched.

`ingest_observations` is the one way readings enter a live dataset (the HTTP endpoint, the folder
watcher and replay all call it). Why it is built the way it is:

- **Everything is checked before anything is written.** A batch with one bad cell is refused whole
  with a `DataError` naming the source, the row and the column, so the sender can fix and resend it
  without wondering which half arrived.
- **Idempotent.** A reading is keyed by (detector, interval start); sending it twice stores it once.
  A whole batch is also recognised by the sha256 of its normalised content in `ingest_log`, so a
  resent batch (a retry after a timeout, a file dropped twice) writes nothing and says so.
- **Late data is normal.** A detector that was offline delivers its backlog later; older readings
  are upserted like any other and counted as `late`, never dropped.
- **One transaction**: the readings and the log row are committed together, so a crash can neither
  lose a logged batch nor log a batch that was not stored.

`refresh_forecasts` re-issues forecasts at the newest complete interval with the dataset's current
model (`trafficcore.live.serving.serving_model`). Loading the panel and the model is what costs time,
so both are cached in-process: a new batch ingested here patches the cached panel in place, and a
change made by another process (seen through a cheap stamp query) reloads it.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from trafficcore.data.panel import Panel, load_panel
from trafficcore.data.schema import FORECAST_COLUMNS
from trafficcore.data.store import Store
from trafficcore.data.validate import (
    MAX_LIVE_GAP,
    check_known,
    check_time_window,
    check_unique,
    check_values,
    parse_local_times,
    to_numbers,
)
from trafficcore.errors import DataError

REQUIRED = ("detector_id", "ts", "value")
#: A frame may carry each record's row number (as its sender counts rows) for error messages.
ROW_COLUMN = "row"
LIVE_RUN_PREFIX = "live:"
log = logging.getLogger(__name__)


@dataclass
class IngestResult:
    """What one batch did. `written` counts new or changed readings; `late` those older than the
    detector's newest stored reading; a `duplicate_batch` was seen before and wrote nothing."""

    batch_id: str
    dataset: str
    source: str
    received: int
    written: int
    late: int
    duplicate_batch: bool
    detectors: list[str] = field(default_factory=list)
    first_ts: pd.Timestamp | None = None
    last_ts: pd.Timestamp | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("first_ts", "last_ts"):
            d[k] = None if d[k] is None else pd.Timestamp(d[k]).isoformat()
        return d


# ----------------------------------------------------------------------------------------------- validation
def _remap(err: DataError, rows: np.ndarray) -> DataError:
    """The same error with its positional row replaced by the sender's row number."""
    row = None if err.row is None else int(rows[err.row]) if 0 <= err.row < len(rows) else err.row
    return DataError(err.file, err.message, row=row, column=err.column)


def validate_batch(store: Store, dataset: str, frame: pd.DataFrame, source: str = "api",
                   first_row: int = 1, con=None) -> tuple[pd.DataFrame, dict]:
    """The batch as clean (detector_id, ts, value) rows without exact repeats, and the dataset's info.

    Rows in messages are `frame[ROW_COLUMN]` where given, else `first_row` for the first record. `con`: an
    open connection to use (ingest validates and writes over one connection: opening one costs milliseconds).
    """
    if con is None:
        with store.connect() as own:
            return validate_batch(store, dataset, frame, source, first_row, own)
    if not isinstance(frame, pd.DataFrame):
        raise DataError(source, f"expected a table of readings, got {type(frame).__name__}")
    for c in REQUIRED:
        if c not in frame.columns:
            raise DataError(source, f"missing required column {c!r}; found {list(frame.columns)}", column=c)
    extra = [c for c in frame.columns if c not in (*REQUIRED, ROW_COLUMN)]
    if extra:
        raise DataError(source, f"unknown column {extra[0]!r}; a reading has {list(REQUIRED)}", column=extra[0])
    if frame.empty:
        raise DataError(source, "no readings in the batch")
    found = con.execute("SELECT * FROM datasets WHERE dataset = ?", [dataset]).df()
    if found.empty:
        raise DataError(source, f"unknown dataset {dataset!r}", column="dataset")
    info = found.iloc[0].to_dict()
    rows = (frame[ROW_COLUMN].to_numpy(dtype=np.int64) if ROW_COLUMN in frame.columns
            else first_row + np.arange(len(frame), dtype=np.int64))
    df = frame[list(REQUIRED)].reset_index(drop=True)
    try:
        ids = df["detector_id"].astype("string").str.strip().fillna("")
        blank = (ids == "").to_numpy()
        if blank.any():
            raise DataError(source, "detector_id is missing", row=int(np.flatnonzero(blank)[0]), column="detector_id")
        known = {r[0] for r in con.execute("SELECT detector_id FROM detectors WHERE dataset = ?", [dataset]).fetchall()}
        check_known(ids, known, source, "detector_id", 0)
        ts = parse_local_times(df["ts"], source, "ts", 0)
        value = to_numbers(df["value"], source, "value", 0, non_negative=True)
        clean = pd.DataFrame({"detector_id": ids.astype(object), "ts": ts, "value": value.astype(float)})
        _check_grid(con, dataset, clean, int(info["interval_s"]), source)
        _check_window(con, dataset, clean, source)
        clean = check_unique(clean, ["detector_id", "ts"], "value", source, 0)
    except DataError as e:
        raise _remap(e, rows) from None
    return clean.reset_index(drop=True), info


def _check_grid(con, dataset: str, df: pd.DataFrame, interval_s: int, source: str) -> None:
    """Every ts starts an interval of the dataset's grid: anchored at its first stored reading, else midnight."""
    anchor = con.execute("SELECT min(ts) FROM observations WHERE dataset = ?", [dataset]).fetchone()[0]
    base = pd.Timestamp(anchor).value if pd.notna(anchor) else 0
    step = interval_s * 1_000_000_000
    off = (df["ts"].to_numpy().astype("datetime64[ns]").astype(np.int64) - base) % step != 0
    if off.any():
        i = int(np.flatnonzero(off)[0])
        raise DataError(source, f"{df['ts'].iloc[i]} is not the start of a {interval_s} s interval of "
                                f"dataset {dataset!r}", row=i, column="ts")


def _check_window(con, dataset: str, df: pd.DataFrame, source: str) -> None:
    """Refuse readings far from the stored ones, and readings beyond their measure's bound.

    Why: the panel every model reads is dense from the first to the newest reading, so one reading
    stamped years away (a typo, a unit mix-up, a hostile client) would make every later panel load
    allocate years of empty intervals and take the server and the dashboard down. Backfill further
    back is an import (`trafficcore import long`), not a live reading. The rules are the imports' own
    (`validate.check_time_window`, `validate.check_values`), with the live week in place of a year.
    """
    stored = con.execute("SELECT min(ts), max(ts) FROM observations WHERE dataset = ?", [dataset]).fetchone()
    check_time_window(df["ts"], source, "ts", 0, stored, MAX_LIVE_GAP, dataset)
    det = con.execute("SELECT detector_id, measure, interval_s FROM detectors WHERE dataset = ?", [dataset]).df()
    info_interval = con.execute("SELECT interval_s FROM datasets WHERE dataset = ?", [dataset]).fetchone()[0]
    measure = df["detector_id"].map(dict(zip(det["detector_id"], det["measure"], strict=True))).fillna("volume")
    interval = df["detector_id"].map(dict(zip(det["detector_id"], det["interval_s"], strict=True)))
    check_values(df["value"], measure, interval.fillna(info_interval).to_numpy(dtype=float), source, "value", 0)


def batch_id(df: pd.DataFrame) -> str:
    """sha256 of the batch's readings sorted by key: the same readings in any order give the same id."""
    s = df.sort_values(["detector_id", "ts"], kind="stable")
    h = hashlib.sha256()
    h.update("\x1f".join(s["detector_id"].astype(str)).encode())
    h.update(s["ts"].to_numpy().astype("datetime64[ns]").astype(np.int64).tobytes())
    h.update((s["value"].to_numpy(dtype=np.float64) + 0.0).tobytes())  # + 0.0 turns -0.0 into 0.0
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------- writing
_WRITE_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def write_lock(store: Store) -> threading.Lock:
    """One writer at a time per store file within this process (DuckDB would abort one of two conflicting
    transactions; a server's threads queue here instead)."""
    key = str(store.path.resolve())
    with _LOCKS_GUARD:
        return _WRITE_LOCKS.setdefault(key, threading.Lock())


def ingest_observations(store: Store, dataset: str, frame: pd.DataFrame, source: str = "api",
                        first_row: int = 1, file_sha256: str | None = None, score: bool = True) -> IngestResult:
    """Validate a batch of readings (detector_id, ts, value) and upsert it in one transaction.

    Raises `DataError` (source, row, column) and writes nothing when any reading is bad. See the
    module docstring for idempotency and late data. `file_sha256`: the digest of the file the batch
    came from (the watcher's key, logged in its own column: `source` is free text a client chooses).
    With `score`, the live forecasts whose targets the new readings observe are scored afterwards
    (`trafficcore.live.monitor`; a failure there is logged, the batch stays stored).
    """
    t0 = time.perf_counter()
    with write_lock(store), store.connect() as con:
        try:
            clean, _ = validate_batch(store, dataset, frame, source, first_row, con)
        except DataError as e:
            log.info("ingest_rejected", extra={"dataset": dataset, "source": source, "received": _length(frame),
                                               "row": e.row, "column": e.column, "error": e.message})
            raise
        bid = batch_id(clean)
        result = IngestResult(
            batch_id=bid, dataset=dataset, source=source, received=len(frame), written=0, late=0,
            duplicate_batch=False, detectors=sorted(clean["detector_id"].unique().tolist()),
            first_ts=pd.Timestamp(clean["ts"].min()), last_ts=pd.Timestamp(clean["ts"].max()),
        )
        con.execute("BEGIN TRANSACTION")
        try:
            seen = con.execute("SELECT 1 FROM ingest_log WHERE dataset = ? AND batch_id = ?", [dataset, bid]).fetchone()
            if seen:
                con.execute("ROLLBACK")
                result.duplicate_batch = True
                _log_batch(result, time.perf_counter() - t0)
                return result
            con.register("_incoming", clean)
            changed = con.execute(
                """SELECT i.detector_id, i.ts, i.value, (i.ts < m.newest) AS late, o.value IS NOT NULL AS existed
                   FROM _incoming i
                   LEFT JOIN observations o ON o.dataset = $1 AND o.detector_id = i.detector_id AND o.ts = i.ts
                   LEFT JOIN (SELECT detector_id, max(ts) AS newest FROM observations
                              WHERE dataset = $1 AND detector_id IN (SELECT detector_id FROM _incoming)
                              GROUP BY detector_id) m ON m.detector_id = i.detector_id
                   WHERE o.value IS NULL OR o.value <> i.value""",
                [dataset],
            ).df()
            con.unregister("_incoming")
            if len(changed):
                con.register("_changed", changed)
                if changed["existed"].any():  # new readings (the usual live case) need no delete
                    con.execute(
                        """DELETE FROM observations t WHERE t.dataset = ? AND EXISTS
                           (SELECT 1 FROM _changed c WHERE c.existed AND c.detector_id = t.detector_id
                                                        AND c.ts = t.ts)""",
                        [dataset],
                    )
                con.execute("INSERT INTO observations (dataset, detector_id, ts, value) "
                            "SELECT ?, detector_id, ts, value FROM _changed", [dataset])
                con.unregister("_changed")
            con.execute(
                "INSERT INTO ingest_log (dataset, batch_id, source, received_at, rows, first_ts, last_ts, "
                "file_sha256) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [dataset, bid, source, datetime.now(UTC).replace(tzinfo=None), len(clean),
                 result.first_ts.to_pydatetime(), result.last_ts.to_pydatetime(), file_sha256],
            )
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        if len(changed):
            _LIVE.patch(store, dataset, changed[["detector_id", "ts", "value"]], con)
            if score:
                from trafficcore.live.monitor import score_quietly

                score_quietly(store, dataset, sorted(changed["detector_id"].unique()), changed["ts"].min(),
                              changed["ts"].max(), con=con)
    result.written = len(changed)
    result.late = int(changed["late"].fillna(False).astype(bool).sum()) if len(changed) else 0
    _log_batch(result, time.perf_counter() - t0)
    return result


def _length(frame) -> int | None:
    try:
        return len(frame)
    except TypeError:
        return None


def _log_batch(result: IngestResult, seconds: float) -> None:
    """One structured log line per batch taken in (see `trafficcore.logs`)."""
    log.info("ingest_batch", extra={**result.to_dict(), "detectors": len(result.detectors),
                                    "seconds": round(seconds, 4)})


# ----------------------------------------------------------------------------------------------- live cache
@dataclass
class _Entry:
    panel: Panel | None = None
    stamp: tuple | None = None


class LiveCache:
    """Per (store file, dataset): the panel, kept fresh cheaply (see module docstring)."""

    def __init__(self):
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._lock = threading.RLock()

    def _entry(self, store: Store, dataset: str) -> _Entry:
        return self._entries.setdefault((str(store.path.resolve()), dataset), _Entry())

    @staticmethod
    def _stamp(store: Store, dataset: str, con=None) -> tuple:
        if con is None:
            with store.connect() as own:
                return LiveCache._stamp(store, dataset, own)
        row = con.execute(
            """SELECT (SELECT count(*) FROM observations WHERE dataset = $1) AS n,
                      (SELECT max(ts) FROM observations WHERE dataset = $1) AS newest,
                      (SELECT count(*) FROM ingest_log WHERE dataset = $1) AS batches,
                      (SELECT count(*) FROM detectors WHERE dataset = $1) AS detectors""",
            [dataset],
        ).df().iloc[0]
        return tuple(row.tolist())

    def panel(self, store: Store, dataset: str) -> Panel:
        """The dataset's panel, reloaded only when the store changed behind this process's back."""
        with self._lock:
            e = self._entry(store, dataset)
            stamp = self._stamp(store, dataset)
            if e.panel is None or e.stamp != stamp:
                e.panel, e.stamp = load_panel(store, dataset), stamp
            return e.panel

    def patch(self, store: Store, dataset: str, rows: pd.DataFrame, con=None) -> None:
        """Write freshly ingested readings into the cached panel (or drop it when they do not fit)."""
        with self._lock:
            e = self._entries.get((str(store.path.resolve()), dataset))
            if e is None or e.panel is None:
                return
            patched = _patched(e.panel, rows)
            if patched is None:
                e.panel = e.stamp = None
            else:
                e.panel, e.stamp = patched, self._stamp(store, dataset, con)

    def replace_events(self, store: Store, dataset: str, con=None) -> None:
        """Put the dataset's current events into the cached panel (after a batch of events,
        `trafficcore.live.events`): a new Panel object, so models that cache per panel read them."""
        from trafficcore.data.event_match import readable

        with self._lock:
            e = self._entries.get((str(store.path.resolve()), dataset))
            if e is None or e.panel is None:
                return
            p = e.panel
            if con is None:
                events = store.events(dataset)
            else:
                events = con.execute("SELECT * EXCLUDE (dataset) FROM events WHERE dataset = ? ORDER BY start_ts",
                                     [dataset]).df()
            out = Panel(dataset=p.dataset, info=p.info, times=p.times, detectors=p.detectors, values=p.values,
                        sites=p.sites, events=readable(events), weather=p.weather, adjacency=p.adjacency, note=p.note)
            out._neighbours = p._neighbours  # depends on detectors only
            e.panel, e.stamp = out, self._stamp(store, dataset, con)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


def _patched(panel: Panel, rows: pd.DataFrame) -> Panel | None:
    """A panel with `rows` written in (grown at the end if needed); None when a reload is simpler."""
    if not len(panel.times):
        return None
    cols = panel.detectors["detector_id"].tolist()
    index = {d: i for i, d in enumerate(cols)}
    c = rows["detector_id"].map(index)
    if c.isna().any():
        return None
    step = panel.interval.value
    r = (rows["ts"].to_numpy().astype("datetime64[ns]").astype(np.int64) - panel.times[0].value) // step
    if (r < 0).any():
        return None
    values, times = panel.values, panel.times
    need = int(r.max()) + 1
    if need > len(times):
        values = np.vstack([values, np.full((need - len(times), values.shape[1]), np.nan, np.float32)])
        times = pd.date_range(times[0], periods=need, freq=panel.interval)
    else:
        values = values.copy()
    values[r, c.to_numpy(dtype=np.int64)] = rows["value"].to_numpy(dtype=np.float32)
    out = Panel(dataset=panel.dataset, info=panel.info, times=times, detectors=panel.detectors, values=values,
                sites=panel.sites, events=panel.events, weather=panel.weather, adjacency=panel.adjacency,
                note=panel.note)
    out._neighbours = panel._neighbours  # depends on detectors only
    return out


_LIVE = LiveCache()


def live_panel(store: Store, dataset: str) -> Panel:
    """The cached, up-to-date panel of a dataset (shared by forecasts and alerts)."""
    return _LIVE.panel(store, dataset)


def live_model(store: Store, dataset: str) -> tuple[object, dict]:
    """The dataset's serving forecaster and its description (`serving.serving_model`, which caches loaded
    models by folder and file version, and refits its fallback baseline once a day of readings)."""
    from trafficcore.live.serving import serving_model

    served = serving_model(store, dataset)
    return served.model, served.info()


# ----------------------------------------------------------------------------------------------- forecasts
def run_id_for(model, info: dict) -> str:
    """`live:<model-name>`: one run per model, so a promoted model's forecasts are told apart."""
    name = info.get("run_id") or info.get("model") or getattr(model, "name", "model")
    return f"{LIVE_RUN_PREFIX}{name}"


#: Share of the recently reporting detectors an interval needs to count as complete (see `issue_time`).
COMPLETE_SHARE = 0.9


def issue_time(panel: Panel, detector_ids: list[str] | None = None, at=None) -> pd.Timestamp:
    """Just after the newest *complete* interval of the detectors (all when None), or `at` floored onto
    the grid when that is earlier.

    An interval is complete when at least COMPLETE_SHARE of the detectors that reported during the day
    up to their newest reading have a reading in it. A live feed fills the newest interval detector by
    detector; forecasting from a half-filled one would read the missing values as gaps. This is the one
    rule for "now": re-issued forecasts, the API's default issue time and the Live page all use it.
    """
    cols = slice(None) if not detector_ids else [panel.column(d) for d in detector_ids]
    seen = np.isfinite(panel.values[:, cols]).reshape(len(panel.times), -1)
    rows = np.flatnonzero(seen.any(axis=1))
    if not rows.size:
        raise DataError(panel.dataset, "no readings yet for the detectors to forecast from", column="detector_id")
    end = int(rows[-1]) + 1
    recent = seen[max(0, end - int(pd.Timedelta(days=1) / panel.interval)):end]
    active = recent.any(axis=0)
    need = max(1, int(np.ceil(COMPLETE_SHARE * active.sum())))
    complete = np.flatnonzero(recent[:, active].sum(axis=1) >= need)
    newest = panel.times[end - len(recent) + int(complete[-1])] + panel.interval
    if at is None:
        return newest
    at = pd.Timestamp(at)
    floored = panel.times[0] + ((at - panel.times[0]) // panel.interval) * panel.interval
    return min(floored, newest)


def refresh_forecasts(store: Store, dataset: str, detector_ids=None, at=None) -> pd.DataFrame:
    """Re-issue forecasts for `detector_ids` (all when None or empty) at the newest complete interval,
    write them to `forecasts` under run `live:<model>`, and return the Forecast frame (with run_id)."""
    from trafficcore.data.windows import build_samples
    from trafficcore.models.base import forecast_frame

    t0 = time.perf_counter()
    model, info = live_model(store, dataset)
    panel = live_panel(store, dataset)
    ids = list(dict.fromkeys(detector_ids)) if detector_ids is not None and len(detector_ids) else None
    issued = issue_time(panel, ids, at)
    row = panel.index_of(issued)
    if row < model.spec.history_steps:
        raise DataError(dataset, f"too little history before {issued} to forecast "
                                 f"({model.spec.history_steps} intervals needed)", column="ts")
    dets = None if ids is None else np.array([panel.column(d) for d in ids], dtype=np.int64)
    samples = build_samples(panel, np.array([row]), dets, model.spec)
    fc = forecast_frame(panel, samples, model.predict_samples(panel, samples))
    run_id = run_id_for(model, info)
    out = fc[FORECAST_COLUMNS].copy()
    out.insert(0, "run_id", run_id)
    with write_lock(store):
        store.write_frame("forecasts", out, dataset)
    if len(out) and panel.times[-1] >= out["target_ts"].min():  # targets already observed (a late issue, a
        from trafficcore.live.monitor import score_quietly  # partly delivered interval) are scored at once

        score_quietly(store, dataset, sorted(out["detector_id"].unique()), out["target_ts"].min(),
                      out["target_ts"].max())
    log.info("forecasts_issued", extra={"dataset": dataset, "run_id": run_id, "issued_at": issued,
                                        "detectors": int(out["detector_id"].nunique()), "rows": len(out),
                                        "seconds": round(time.perf_counter() - t0, 4)})
    return out


def missing_forecasts(store: Store, dataset: str, detector_ids) -> tuple[list[str], pd.Timestamp]:
    """The detectors among `detector_ids` without a live forecast issued at (or after) their newest complete
    interval, and that issue time.

    Why: readings and the forecasts re-issued from them are two transactions. A crash between the two
    leaves readings whose forecasts were never issued, and the resent batch or file is then a duplicate
    that writes nothing; the duplicate path asks this to re-issue what is missing.
    """
    panel = live_panel(store, dataset)
    known = set(panel.detectors["detector_id"])
    ids = [d for d in dict.fromkeys(detector_ids) if d in known]
    if not ids:
        return [], pd.NaT
    issued = issue_time(panel, ids)
    have = set(store.query(
        "SELECT DISTINCT detector_id FROM forecasts WHERE dataset = ? AND run_id LIKE 'live:%' AND issued_at >= ?",
        [dataset, issued.to_pydatetime()],
    )["detector_id"])
    return [d for d in ids if d not in have], issued


def reissue_missing(store: Store, dataset: str, detector_ids) -> pd.DataFrame | None:
    """Issue the forecasts `missing_forecasts` finds missing (None when none were); see there for why."""
    missing, issued = missing_forecasts(store, dataset, detector_ids)
    if not missing:
        return None
    return refresh_forecasts(store, dataset, missing, at=issued)


# ----------------------------------------------------------------------------------------------- for pages and the API
def latest_forecasts(store: Store, dataset: str) -> pd.DataFrame:
    """The newest live forecasts of every detector (its most recent issue time), with site_id; sorted.

    Each detector's newest issue time is found first (an aggregate), then only its rows are ranked: ranking
    every stored live forecast took 0.6 s after a week of service on SCATS, on every Live page refresh.
    """
    return store.query(
        """WITH newest AS (SELECT detector_id, max(issued_at) AS issued_at FROM forecasts
                           WHERE dataset = $1 AND run_id LIKE 'live:%' GROUP BY detector_id)
           SELECT f.run_id, f.detector_id, d.site_id, f.issued_at, f.target_ts, f.horizon_min, f.p10, f.p50, f.p90
           FROM forecasts f JOIN newest n ON n.detector_id = f.detector_id AND n.issued_at = f.issued_at
           LEFT JOIN detectors d ON d.dataset = f.dataset AND d.detector_id = f.detector_id
           WHERE f.dataset = $1 AND f.run_id LIKE 'live:%'
           QUALIFY row_number() OVER (PARTITION BY f.detector_id, f.horizon_min ORDER BY f.run_id DESC) = 1
           ORDER BY d.site_id, f.detector_id, f.horizon_min""",
        [dataset],
    )


def live_status(store: Store, dataset: str) -> dict:
    """What the live side knows: newest reading, batches of readings taken in (event batches are counted
    apart, `trafficcore.live.events`), the last one, newest live forecast."""
    row = store.query(
        """SELECT (SELECT max(ts) FROM observations WHERE dataset = $1) AS newest_reading,
                  (SELECT count(*) FROM ingest_log WHERE dataset = $1 AND kind IS NULL) AS batches,
                  (SELECT max(received_at) FROM ingest_log WHERE dataset = $1 AND kind IS NULL) AS last_batch_at,
                  (SELECT arg_max(source, received_at) FROM ingest_log WHERE dataset = $1 AND kind IS NULL)
                      AS last_batch_source,
                  (SELECT arg_max(rows, received_at) FROM ingest_log WHERE dataset = $1 AND kind IS NULL)
                      AS last_batch_rows,
                  (SELECT max(issued_at) FROM forecasts WHERE dataset = $1 AND run_id LIKE 'live:%') AS last_issue,
                  (SELECT arg_max(run_id, issued_at) FROM forecasts WHERE dataset = $1 AND run_id LIKE 'live:%')
                      AS live_run""",
        [dataset],
    ).iloc[0].to_dict()
    out = {}
    for k, v in row.items():
        out[k] = None if v is None or (not isinstance(v, str) and pd.isna(v)) else v
    out["batches"] = int(out["batches"] or 0)
    return out
