"""Incidents, work zones and events taken in live, and the forecasts they change re-issued at once.

`ingest_events` is the one way events enter a live dataset (`trafficcore events ingest`, its folder
watcher and the API's `POST /events` all call it). It follows the readings' rules
(`trafficcore.live.ingest`) and reuses their machinery:

- **All or nothing.** A feed is parsed and checked whole before anything is written
  (`trafficcore.data.loaders.event_feeds`); a bad value refuses it with the file and the row or JSON path.
- **Idempotent.** An event is keyed by its id. A batch is logged in `ingest_log` (kind "events") under
  the sha256 of its events' content, so a feed sent again (polled twice, a file dropped twice) is a
  `duplicate_batch` and writes nothing; a file's bytes are logged too, for the watcher. Within a new
  batch, an event whose content is unchanged is not rewritten.
- **Updates and cancellations by id.** An event whose content changed replaces its row. A status of
  "ended" (a cleared crash, an archived Open511 event, a completed work zone) ends it: its end becomes
  the time the feed says it was updated, else the dataset's current time, never later than planned. A
  "cancelled" event is kept, marked, and no model reads it (`event_match.readable`). An Open511 event
  with several intervals is a family of rows (`id#1`, `id#2`...): its new version replaces the family.
- **One transaction** for the events and their log row, under the store's in-process write lock.

Every event is placed at the nearest site within the matching radius (`site_id`), and the detectors it
concerns are found by the rule the model reads events by (`trafficcore.data.event_match`). After a batch,
`refresh_for_events` re-issues the forecasts of the detectors whose context changed *now*: those near an
event (its old or new version) that a forecast issued now reads, with the model's own radius and
horizon; the rest would get the same forecast again.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from trafficcore.data.event_match import distances_km, in_effect, near_matrix, readable
from trafficcore.data.loaders.event_feeds import EVENT_COLUMNS, EventRows, parse_document, read_event_file
from trafficcore.data.store import Store
from trafficcore.data.windows import WindowSpec
from trafficcore.errors import DataError, TrafficCoreError

#: What ingest_log.kind says for a batch of events.
LOG_KIND = "events"
#: Columns whose change makes an event "updated" (`updated_ts` and `source` alone do not).
CONTENT = ["start_ts", "end_ts", "lat", "lon", "site_id", "kind", "text", "road", "status", "geometry_wkt"]
#: Suffixes of the files the folder watcher takes.
SUFFIXES = (".csv", ".csv.gz", ".json", ".json.gz", ".geojson", ".geojson.gz")


@dataclass
class EventIngestResult:
    """What one batch did: `new`, `updated`, `ended` and `cancelled` events written (`written`, their sum with
    `removed` rows of a family), `unchanged` ones; a `duplicate_batch` was seen before and wrote nothing.
    `detectors`: those near any written event (old or new version), by the default matching radius."""

    batch_id: str
    dataset: str
    source: str
    format: str
    received: int
    written: int = 0
    new: int = 0
    updated: int = 0
    ended: int = 0
    cancelled: int = 0
    removed: int = 0
    unchanged: int = 0
    duplicate_batch: bool = False
    events: list[str] = field(default_factory=list)
    detectors: list[str] = field(default_factory=list)
    #: the written rows and the stored versions they replaced (for `refresh_for_events`)
    touched: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=EVENT_COLUMNS), repr=False)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("touched")
        return d


# ----------------------------------------------------------------------------------------------- helpers
def dataset_timezone(store: Store, dataset: str, source: str = "events") -> str:
    """The dataset's IANA zone (feeds' UTC times are converted to it); an unknown dataset is a DataError."""
    found = store.query("SELECT timezone FROM datasets WHERE dataset = ?", [dataset])
    if found.empty:
        raise DataError(source, f"unknown dataset {dataset!r}", column="dataset")
    return str(found["timezone"].iloc[0] or "UTC")


def batch_id(frame: pd.DataFrame) -> str:
    """sha256 of the events' content (ids and `CONTENT`, sorted by id): the same feed sent again has the same id,
    whatever its order and whenever the feed says it was generated."""
    cols = ["event_id", *[c for c in CONTENT if c != "site_id"]]
    s = frame.sort_values("event_id", kind="stable")[cols]
    return hashlib.sha256(s.to_json(orient="values", date_format="iso", date_unit="us").encode()).hexdigest()


def _detectors(con, dataset: str) -> pd.DataFrame:
    return con.execute(
        """SELECT d.detector_id, d.site_id, d.road, coalesce(d.lat, s.lat) AS lat, coalesce(d.lon, s.lon) AS lon
           FROM detectors d LEFT JOIN sites s ON s.dataset = d.dataset AND s.site_id = d.site_id
           WHERE d.dataset = ? ORDER BY d.site_id, d.detector_id""", [dataset]).df()


def _now(con, dataset: str, tz: str) -> pd.Timestamp:
    """The dataset's "now": the end of its newest reading's interval (the wall clock where it has none)."""
    # fetchall, not fetchone: DuckDB refuses to register a frame while a result is left unread
    newest, step = con.execute(
        "SELECT (SELECT max(ts) FROM observations WHERE dataset = $1), "
        "(SELECT interval_s FROM datasets WHERE dataset = $1)", [dataset]).fetchall()[0]
    if newest is None:
        return pd.Timestamp.now(tz=tz).tz_localize(None).floor("min")
    return pd.Timestamp(newest) + pd.Timedelta(seconds=int(step or 0))


def _nearest_sites(det: pd.DataFrame, km: np.ndarray, radius_km: float) -> np.ndarray:
    """Each event's site: that of its nearest detector, within `radius_km` (None beyond). Detectors sit a few
    metres up their site's legs, so this is the nearest site, from distances ingest needs anyway."""
    out = np.full(km.shape[1], None, dtype=object)
    if not km.size:
        return out
    far = np.nan_to_num(km, nan=np.inf)
    best = far.argmin(axis=0)
    ok = far[best, np.arange(km.shape[1])] <= radius_km
    out[ok] = det["site_id"].to_numpy(dtype=object)[best[ok]]
    return out


def _same(a: pd.Series, b: pd.Series) -> np.ndarray:
    """Element-wise equality with nulls equal to nulls (timestamps to the microsecond, as stored)."""
    if pd.api.types.is_datetime64_any_dtype(a) or pd.api.types.is_datetime64_any_dtype(b):
        x = pd.to_datetime(a).to_numpy(dtype="datetime64[us]")
        y = pd.to_datetime(b).to_numpy(dtype="datetime64[us]")
        return (x == y) | (np.isnat(x) & np.isnat(y))
    if pd.api.types.is_float_dtype(a) and pd.api.types.is_float_dtype(b):
        x, y = a.to_numpy(dtype=float), b.to_numpy(dtype=float)
        return (x == y) | (np.isnan(x) & np.isnan(y))
    nulls = (a.isna() | b.isna()).to_numpy()
    eq = a.astype(object).to_numpy() == b.astype(object).to_numpy()
    return (a.isna() & b.isna()).to_numpy() | (eq & ~nulls)


def _resolve_endings(new: pd.DataFrame, old: pd.DataFrame, now: pd.Timestamp) -> pd.DataFrame:
    """Ended events get their end: when the feed last updated them, else the end already stored for an event
    that had ended before, else `now`; never after the planned end nor before the start."""
    out = new.copy()
    ended = (out["status"] == "ended").to_numpy()
    if not ended.any():
        return out
    prev = old.set_index("event_id") if not old.empty else None
    for i in np.flatnonzero(ended):
        r = out.iloc[i]
        at = r["updated_ts"]
        if pd.isna(at) and prev is not None and r["event_id"] in prev.index:
            p = prev.loc[r["event_id"]]
            if p["status"] == "ended" and pd.notna(p["end_ts"]):
                at = p["end_ts"]
        if pd.isna(at):
            at = now
        end = at if pd.isna(r["end_ts"]) else min(pd.Timestamp(r["end_ts"]), pd.Timestamp(at))
        out.iat[i, out.columns.get_loc("end_ts")] = max(pd.Timestamp(end), pd.Timestamp(r["start_ts"]))
    return out


# ----------------------------------------------------------------------------------------------- ingest
def ingest_events(store: Store, dataset: str, rows: EventRows, source: str = "api",
                  file_sha256: str | None = None, radius_km: float | None = None) -> EventIngestResult:
    """Write a parsed feed (`event_feeds.read_event_file` / `parse_document`) in one transaction; see the module
    docstring. Raises `DataError` and writes nothing for an unknown dataset."""
    from trafficcore.live.ingest import _LIVE, write_lock

    radius = WindowSpec().event_radius_km if radius_km is None else float(radius_km)
    frame = rows.frame.reset_index(drop=True)
    result = EventIngestResult(batch_id="", dataset=dataset, source=source, format=rows.format, received=len(frame))
    with write_lock(store), store.connect() as con:
        info = next(iter(con.execute("SELECT timezone FROM datasets WHERE dataset = ?", [dataset]).fetchall()), None)
        if info is None:
            raise DataError(source, f"unknown dataset {dataset!r}", column="dataset")
        if frame.empty:
            return result
        result.batch_id = bid = batch_id(frame)
        det = _detectors(con, dataset)
        km = distances_km(det["lat"].to_numpy(dtype=float), det["lon"].to_numpy(dtype=float), frame)
        frame["site_id"] = _nearest_sites(det, km, radius)
        con.execute("BEGIN TRANSACTION")
        try:
            if con.execute("SELECT 1 FROM ingest_log WHERE dataset = ? AND batch_id = ?", [dataset, bid]).fetchall():
                con.execute("ROLLBACK")
                result.duplicate_batch = True
                return result
            ids = frame["event_id"].tolist()
            fam = [i.split("#", 1)[0] for i in ids if i.startswith(rows.families)] if rows.families else []
            old = con.execute(
                "SELECT * EXCLUDE (dataset) FROM events WHERE dataset = ? AND (event_id IN (SELECT unnest(?)) "
                "OR split_part(event_id, '#', 1) IN (SELECT unnest(?)))", [dataset, ids, fam]).df()
            incoming = _resolve_endings(frame, old, _now(con, dataset, info[0]))
            prev = old.set_index("event_id").reindex(incoming["event_id"])
            exists = prev["kind"].notna().to_numpy() | prev["start_ts"].notna().to_numpy()
            same = np.ones(len(incoming), dtype=bool)
            for c in CONTENT:
                same &= _same(incoming[c].reset_index(drop=True), prev[c].reset_index(drop=True))
            changed = ~(exists & same)
            removed = old[~old["event_id"].isin(ids)]  # family rows the new version no longer has
            write = incoming[changed]
            gone = pd.concat([old[old["event_id"].isin(write["event_id"])], removed], ignore_index=True)
            if len(gone):
                con.execute("DELETE FROM events WHERE dataset = ? AND event_id IN (SELECT unnest(?))",
                            [dataset, gone["event_id"].tolist()]).fetchall()
            if len(write):
                out = write[EVENT_COLUMNS].copy()
                out.insert(0, "dataset", dataset)
                con.register("_events_in", out)
                con.execute(f"INSERT INTO events ({', '.join(out.columns)}) SELECT * FROM _events_in")
                con.unregister("_events_in")
            con.execute(
                "INSERT INTO ingest_log (dataset, batch_id, source, received_at, rows, first_ts, last_ts, "
                "file_sha256, kind) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [dataset, bid, source, datetime.now(UTC).replace(tzinfo=None), len(frame),
                 pd.Timestamp(frame["start_ts"].min()).to_pydatetime(),
                 pd.Timestamp(frame["start_ts"].max()).to_pydatetime(), file_sha256, LOG_KIND],
            )
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        if len(write) or len(removed):
            _LIVE.replace_events(store, dataset, con)
    was = prev["status"].to_numpy(dtype=object)
    status = incoming["status"].to_numpy(dtype=object)
    for name, mask in (("new", changed & ~exists),
                       ("ended", changed & exists & (status == "ended") & (was != "ended")),
                       ("cancelled", changed & exists & (status == "cancelled") & (was != "cancelled"))):
        setattr(result, name, int(mask.sum()))
    result.updated = int((changed & exists).sum()) - result.ended - result.cancelled
    result.removed = len(removed)
    result.unchanged = int((~changed).sum())
    result.written = int(changed.sum()) + len(removed)
    result.events = write["event_id"].tolist() + removed["event_id"].tolist()
    result.touched = pd.concat([write[EVENT_COLUMNS], gone[EVENT_COLUMNS]], ignore_index=True)
    if len(det) and (changed.any() or len(gone)):
        near_new, _ = near_matrix(det, write, radius, km=km[:, changed])
        near_old, _ = near_matrix(det, gone, radius)
        hit = near_new.any(axis=1) | near_old.any(axis=1)
        result.detectors = sorted(det["detector_id"][hit].tolist())
    return result


def ingest_event_records(store: Store, dataset: str, doc, source: str = "api", fmt: str = "auto",
                         rows_are_positions: bool = True) -> EventIngestResult:
    """A JSON document (the API's body: a list of events, a WZDx feed or an Open511 document) parsed and ingested;
    errors name the input "events" (`source` is free text the client chose, recorded in the log)."""
    tz = dataset_timezone(store, dataset, "events")
    rows = parse_document(doc, "events", tz, fmt, rows_are_positions=rows_are_positions)
    return ingest_events(store, dataset, rows, source=source)


# ----------------------------------------------------------------------------------------------- forecasts
def affected_now(panel, touched: pd.DataFrame, spec: WindowSpec, at=None) -> list[str]:
    """The detectors whose context at the live issue time changes with `touched` (old and new versions of the
    events written): near one of them that a forecast issued then reads."""
    from trafficcore.live.ingest import issue_time

    if touched.empty:
        return []
    t = issue_time(panel) if at is None else pd.Timestamp(at)
    now = touched[in_effect(touched, t, max(spec.horizons_min))]
    if now.empty:
        return []
    near, _ = near_matrix(panel.detectors, now, spec.event_radius_km)
    return panel.detectors["detector_id"][near.any(axis=1)].astype(str).tolist()


def refresh_for_events(store: Store, dataset: str, result: EventIngestResult) -> pd.DataFrame | None:
    """Re-issue and store the forecasts of the detectors a batch changed now (`affected_now`), with the dataset's
    serving model; None when no forecast changes (nothing written, or no written event is in effect now)."""
    from trafficcore.live.ingest import live_model, live_panel, refresh_forecasts

    if not result.written:
        return None
    with store.held():  # a handful of queries and one write: the file stays open between them
        model, _ = live_model(store, dataset)
        dets = affected_now(live_panel(store, dataset), result.touched, model.spec)
        if not dets:
            return None
        return refresh_forecasts(store, dataset, dets)


# ----------------------------------------------------------------------------------------------- files
def ingest_event_file(store: Store, dataset: str, path: Path, refresh: bool = True, fmt: str = "auto"):
    """Ingest one feed file (all or nothing) and re-issue the forecasts it changes; never raises a DataError.
    Returns a `trafficcore.live.watch.FileOutcome` (the watcher files it under done/ or rejected/)."""
    from trafficcore.live.watch import FileOutcome, already_ingested, file_sha256, source_tag

    path = Path(path)
    t0 = time.perf_counter()
    try:
        digest = file_sha256(path)
        if already_ingested(store, dataset, digest):
            return FileOutcome(path, "duplicate", f"{path.name}: already ingested (same content), skipped")
        rows = read_event_file(path, dataset_timezone(store, dataset, str(path)), fmt)
        res = ingest_events(store, dataset, rows, source=source_tag(path, digest), file_sha256=digest)
    except DataError as e:
        return FileOutcome(path, "rejected", str(e))
    if res.duplicate_batch:
        return FileOutcome(path, "duplicate", f"{path.name}: the same events were ingested before, skipped",
                           res.to_dict())
    msg = describe(res, path.name)
    if refresh and res.written:
        try:
            t1 = time.perf_counter()
            fc = refresh_for_events(store, dataset, res)
            if fc is None:
                msg += "; no forecast changes now (no event written is in effect at the newest reading)"
            else:
                msg += (f"; forecasts re-issued for {fc['detector_id'].nunique()} detectors at "
                        f"{pd.Timestamp(fc['issued_at'].iloc[0]):%Y-%m-%d %H:%M} in {time.perf_counter() - t1:.2f} s")
        except (TrafficCoreError, KeyError, ValueError) as e:
            msg += f"; forecasts not re-issued ({e})"
    return FileOutcome(path, "ingested", f"{msg} (all {time.perf_counter() - t0:.2f} s)", res.to_dict())


def describe(res: EventIngestResult, name: str) -> str:
    """One line about a batch: "feed.json (wzdx): 3 events, 2 new, 1 updated; 9 detectors near them"."""
    parts = [f"{n} {k}" for k, n in (("new", res.new), ("updated", res.updated), ("ended", res.ended),
                                      ("cancelled", res.cancelled), ("removed", res.removed),
                                      ("unchanged", res.unchanged)) if n]
    return (f"{name} ({res.format}): {res.received} events" + (f", {', '.join(parts)}" if parts else "")
            + f"; {len(res.detectors)} detectors near the events written")


# ----------------------------------------------------------------------------------------------- for pages
def active_events(store: Store, dataset: str, at=None, horizon_min: int = 60,
                  radius_km: float | None = None) -> pd.DataFrame:
    """The events a forecast issued at `at` (default: the dataset's now) reads somewhere, soonest first, with
    the sites of the detectors they concern (`sites`) and whether they have started (`started`)."""
    radius = WindowSpec().event_radius_km if radius_km is None else float(radius_km)
    with store.connect() as con:
        tz = next(iter(con.execute("SELECT timezone FROM datasets WHERE dataset = ?", [dataset]).fetchall()), None)
        if tz is None:
            raise DataError("events", f"unknown dataset {dataset!r}", column="dataset")
        t = _now(con, dataset, tz[0]) if at is None else pd.Timestamp(at)
        ev = readable(con.execute("SELECT * EXCLUDE (dataset) FROM events WHERE dataset = ? ORDER BY start_ts",
                                  [dataset]).df())
        det = _detectors(con, dataset)
    cols = [*EVENT_COLUMNS, "started", "sites"]
    if ev.empty:
        return pd.DataFrame(columns=cols)
    ev = ev[in_effect(ev, t, horizon_min)].reset_index(drop=True)
    if ev.empty:
        return pd.DataFrame(columns=cols)
    near, _ = near_matrix(det, ev, radius)
    site_of = det["site_id"].astype(str).to_numpy()
    ev["sites"] = [sorted(set(site_of[near[:, j]])) for j in range(len(ev))]
    ev["started"] = pd.to_datetime(ev["start_ts"]) <= t
    return ev.sort_values(["started", "start_ts"], ascending=[False, True]).reset_index(drop=True)[cols]
