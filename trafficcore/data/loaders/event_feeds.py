"""Incident, work-zone and event feeds -> rows of the canonical `events` table.

Four formats (docs/FORMATS.md, "Event feeds"):

- **own**: the project's CSV or JSON, one record per event: `id, start, end, lat, lon, road, kind, text,
  status, updated`;
- **WZDx** v4.x (the US Work Zone Data Exchange): a GeoJSON FeatureCollection of work zones with road
  names, direction, vehicle impact, start and end dates and a LineString or MultiPoint geometry;
- **Open511** events JSON: id, status (ACTIVE/ARCHIVED), event_type, severity, headline, description,
  schedule (intervals or recurring schedules), roads and geography; one row per scheduled interval;
- **CAD** incident logs as highway-patrol dispatch centres publish them: incident number, time, a dispatch
  code with its label (`1183-Trfc Collision-Unkn Inj`), location and position. `CAD_CODES` turns the
  common codes into the plain words of the texts the model was trained on ("Crash ... injuries unknown").

Why the texts are composed here: the language model reads `text`, and it learnt from sentences such as
"Roadworks on Park Rd at Park Rd / 2nd Ave: one lane closed from Mon 20 Oct to Tue 21 Oct" and "Crash on
King St at King St / 3rd Ave: queues building" (`trafficcore.data.demo.PHRASINGS`). A feed's coded fields
(`vehicle_impact: some-lanes-closed`, `SOME_LANES_CLOSED`, `1125`) are turned into such words first; the
feed's own free text follows, so truncation cuts it before the facts.

Times: a time with a UTC offset (WZDx and Open511 publish them so) is converted to the dataset's local
wall-clock time; a time without one is taken as local already. Ids are namespaced by format (`wzdx:`,
`open511:`, `cad:`) so two feeds cannot overwrite each other's events.

Bad input is refused whole with one `DataError` naming the file and the row (CSV: the header is row 1)
or the JSON path of the bad value (`features[3].properties.start_date`).
"""

from __future__ import annotations

import functools
import io
import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from trafficcore.data.schema import COLUMNS
from trafficcore.data.validate import EARLIEST, LATEST, check_file, read_text
from trafficcore.errors import DataError, shown

FORMATS = ("own", "wzdx", "open511", "cad")
#: Most events one document may hold (a state-wide WZDx feed holds a few thousand).
MAX_EVENTS = 100_000
#: Longest text cell kept (the model reads a few dozen words; this bounds what a feed can make us store).
MAX_TEXT = 2_000
#: Most intervals an Open511 recurring schedule may expand to.
MAX_OCCURRENCES = 400
#: Statuses a feed may give, in its words -> the canonical status.
STATUSES = {
    "": "active", "active": "active", "planned": "active", "pending": "active", "ongoing": "active",
    "ended": "ended", "completed": "ended", "cleared": "ended", "archived": "ended", "inactive": "ended",
    "resolved": "ended", "cancelled": "cancelled", "canceled": "cancelled",
}
EVENT_COLUMNS = [c for c in COLUMNS["events"] if c != "dataset"]


# ============================================================================================= naming places
@dataclass(frozen=True)
class Where:
    """Where one record sits in its input, to name a bad value: a CSV row, or a JSON path."""

    file: str
    row: int | None = None
    path: str | None = None

    def at(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def error(self, name: str, message: str) -> DataError:
        return DataError(self.file, message, row=self.row, column=self.at(name))

    def inner(self, suffix: str) -> Where:
        """The place of a value nested in this record (`schedule.intervals[0]`)."""
        return Where(self.file, self.row, self.at(suffix))


@dataclass
class EventRows:
    """Parsed events: canonical rows (`frame`), where each came from, and the format's name of each column."""

    frame: pd.DataFrame
    where: list[Where]
    fields: dict[str, str]
    format: str
    #: event_id prefixes whose rows come in families (one Open511 event, several intervals): a new version
    #: of the event replaces the whole family (see trafficcore.live.events)
    families: tuple[str, ...] = field(default_factory=tuple)

    def __len__(self) -> int:
        return len(self.frame)


# ============================================================================================= cell readers
def _blank(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or (
        isinstance(value, str) and not value.strip())


def _text(value, where: Where, name: str, required: bool = True) -> str | None:
    if _blank(value):
        if required:
            raise where.error(name, "value is missing")
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise where.error(name, f"expected text, got {shown(value)}")
    s = " ".join(str(value).split())
    if len(s) > MAX_TEXT:
        raise where.error(name, f"text is {len(s):,} characters long, over the {MAX_TEXT:,} accepted")
    return s


def _number(value, where: Where, name: str, lo: float, hi: float, required: bool = True) -> float:
    if _blank(value):
        if required:
            raise where.error(name, "value is missing")
        return float("nan")
    if isinstance(value, bool):
        raise where.error(name, f"not a number: {shown(value)}")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise where.error(name, f"not a number: {shown(value)}") from None
    if not math.isfinite(x):
        raise where.error(name, f"not a finite number: {shown(value)}")
    if not lo <= x <= hi:
        raise where.error(name, f"{x:g} is outside {lo:g}..{hi:g}")
    return x


def _time(value, where: Where, name: str, tz: str, required: bool = True) -> datetime | None:
    """A local wall-clock time of the dataset: a time with an offset is converted, one without is local.

    ISO 8601 goes through `datetime.fromisoformat` (a microsecond; a feed has thousands of times), anything
    else through pandas' parser (CAD logs write "10/26/2025 11:20 PM").
    """
    if _blank(value):
        if required:
            raise where.error(name, "value is missing")
        return None
    if not isinstance(value, str):
        raise where.error(name, f"expected a date/time as text, got {shown(value)}")
    text = value.strip()
    try:
        ts = datetime.fromisoformat(text)
    except ValueError:
        try:
            ts = pd.Timestamp(text).to_pydatetime()
        except (ValueError, TypeError, OverflowError):
            raise where.error(name, f"not a date/time: {shown(value)}") from None
        if pd.isna(ts):
            raise where.error(name, f"not a date/time: {shown(value)}") from None
    if ts.tzinfo is not None:
        ts = ts.astimezone(_zone(tz)).replace(tzinfo=None)
    if not EARLIEST <= ts < LATEST:
        raise where.error(name, f"date/time out of range ({EARLIEST.year}-{LATEST.year - 1}): {shown(value)}")
    return ts


@functools.lru_cache(maxsize=16)
def _zone(tz: str) -> ZoneInfo:
    return ZoneInfo(tz)


def _status(value, where: Where, name: str) -> str:
    s = "" if _blank(value) else str(value).strip().lower()
    if s not in STATUSES:
        allowed = sorted(k for k in STATUSES if k)
        raise where.error(name, f"unknown status {shown(value)}; use one of {allowed}")
    return STATUSES[s]


def _obj(value, where: Where, name: str, required: bool = True) -> dict | None:
    if value is None and not required:
        return None
    if not isinstance(value, dict):
        raise where.error(name, "value is missing" if value is None else f"expected an object, got {shown(value)}")
    return value


def _list(value, where: Where, name: str, required: bool = True) -> list | None:
    if value is None and not required:
        return None
    if not isinstance(value, list):
        raise where.error(name, "value is missing" if value is None else f"expected a list, got {shown(value)}")
    return value


def _choice(value, where: Where, name: str, allowed, required: bool = True) -> str | None:
    if _blank(value) and not required:
        return None
    if not isinstance(value, str) or value not in allowed:
        raise where.error(name, f"{shown(value)} is not one of {sorted(allowed)}")
    return value


def _day(ts: datetime) -> str:
    """A date as the training texts write it: "Mon 20 Oct"."""
    return f"{ts:%a} {ts.day} {ts:%b}"


def _span(start: datetime, end: datetime) -> str:
    """When, as the training texts say it: "from Mon 20 Oct to Tue 21 Oct", or the hours of a shorter one."""
    if end - start >= timedelta(days=1):
        return f"from {_day(start)} to {_day(end)}"
    if start.date() == end.date():
        return f"on {_day(start)} {start:%H:%M}-{end:%H:%M}"
    return f"from {_day(start)} {start:%H:%M} to {_day(end)} {end:%H:%M}"


def _sentence(*parts: str | None) -> str:
    return ". ".join(p.strip().rstrip(".") for p in parts if p and p.strip())


# ============================================================================================= geometry
def _position(value, where: Where, name: str) -> tuple[float, float]:
    """A GeoJSON position [lon, lat] (a third value, the height, is allowed and ignored)."""
    if not isinstance(value, list) or len(value) < 2:
        raise where.error(name, f"expected a position [lon, lat], got {shown(value)}")
    lon = _number(value[0], where, f"{name}[0]", -180, 180)
    lat = _number(value[1], where, f"{name}[1]", -90, 90)
    return lon, lat


def _geometry(value, where: Where, name: str, allowed: tuple[str, ...]) -> tuple[str, float, float]:
    """(WKT, lat, lon) of a GeoJSON geometry; the point is the vertex nearest the vertices' mean."""
    g = _obj(value, where, name)
    kind = g.get("type")
    if kind not in allowed:
        raise where.error(f"{name}.type", f"{shown(kind)} is not one of {list(allowed)}")
    coords = g.get("coordinates")
    cname = f"{name}.coordinates"
    if kind == "Point":
        parts = [[_position(coords, where, cname)]]
    elif kind in ("LineString", "MultiPoint"):
        pts = _list(coords, where, cname)
        parts = [[_position(p, where, f"{cname}[{i}]") for i, p in enumerate(pts)]]
        if kind == "MultiPoint":
            parts = [[p] for p in parts[0]]
    else:  # MultiLineString, Polygon: lists of lines (a polygon by its rings)
        lines = _list(coords, where, cname)
        parts = []
        for j, line in enumerate(lines):
            pts = _list(line, where, f"{cname}[{j}]")
            parts.append([_position(p, where, f"{cname}[{j}][{i}]") for i, p in enumerate(pts)])
    flat = [p for part in parts for p in part]
    if not flat:
        raise where.error(cname, "the geometry has no positions")
    if kind == "LineString" and len(flat) < 2:
        raise where.error(cname, "a LineString needs at least 2 positions")

    def pts(part):
        return ", ".join(f"{lo:.7f} {la:.7f}" for lo, la in part)

    if kind == "Point":
        wkt = f"POINT ({pts(parts[0])})"
    elif kind == "MultiPoint":
        wkt = "MULTIPOINT (" + ", ".join(f"({pts(p)})" for p in parts) + ")"
    elif kind == "LineString":
        wkt = f"LINESTRING ({pts(parts[0])})"
    else:
        wkt = "MULTILINESTRING (" + ", ".join(f"({pts(p)})" if len(p) > 1 else f"({pts(p + p)})"
                                              for p in parts) + ")"
    arr = np.array(flat)
    mid = arr.mean(axis=0)
    lon, lat = arr[int(np.argmin(((arr - mid) ** 2).sum(axis=1)))]
    return wkt, float(lat), float(lon)


# ============================================================================================= the formats
def _row(event_id: str, start, end, lat: float, lon: float, kind: str, text: str, source: str, road: str | None,
         status: str, updated, geometry: str | None = None) -> dict:
    return {"event_id": event_id, "start_ts": start, "end_ts": end, "lat": lat, "lon": lon, "site_id": None,
            "kind": kind, "text": text, "source": source, "road": road, "status": status, "updated_ts": updated,
            "geometry_wkt": geometry}


OWN_FIELDS = {"event_id": "id", "start_ts": "start", "end_ts": "end", "lat": "lat", "lon": "lon", "road": "road",
              "kind": "kind", "text": "text", "status": "status", "updated_ts": "updated"}
OWN_REQUIRED = ("id", "start", "lat", "lon", "kind", "text")


def _own(records: list[dict], wheres: list[Where], tz: str, source: str) -> list[dict]:
    """The project's own records (CSV rows or JSON objects with the keys of `OWN_FIELDS`)."""
    known = set(OWN_FIELDS.values())
    out = []
    for r, w in zip(records, wheres, strict=True):
        if not isinstance(r, dict):
            raise DataError(w.file, f"expected an event object, got {shown(r)}", row=w.row, column=w.path)
        extra = [k for k in r if k not in known]
        if extra:
            raise w.error(str(extra[0]), f"unknown field {shown(extra[0])}; an event has {sorted(known)}")
        start = _time(r.get("start"), w, "start", tz)
        end = _time(r.get("end"), w, "end", tz, required=False)
        out.append(_row(
            _text(r.get("id"), w, "id"), start, end, _number(r.get("lat"), w, "lat", -90, 90),
            _number(r.get("lon"), w, "lon", -180, 180), _text(r.get("kind"), w, "kind"),
            _text(r.get("text"), w, "text"), source, _text(r.get("road"), w, "road", required=False),
            _status(r.get("status"), w, "status"),
            _time(r.get("updated"), w, "updated", tz, required=False)))
    return out


# --------------------------------------------------------------------------------------------- WZDx
#: WZDx `vehicle_impact` -> the words the training texts use for the same restriction.
WZDX_IMPACT = {
    "all-lanes-closed": "road closed",
    "some-lanes-closed": "lanes closed",
    "some-lanes-closed-merge-left": "lanes closed, merge left",
    "some-lanes-closed-merge-right": "lanes closed, merge right",
    "some-lanes-closed-split": "lanes closed, traffic split",
    "all-lanes-open": "lane narrowing",
    "all-lanes-open-shift-left": "lane narrowing, traffic shifted left",
    "all-lanes-open-shift-right": "lane narrowing, traffic shifted right",
    "alternating-one-way": "single-file traffic",
    "flagging": "single-file traffic",
    "temporary-traffic-signal": "only one lane open",
    "unknown": "lane restriction",
}
WZDX_TYPES = ("work-zone", "detour")
WZDX_STATUS = ("planned", "pending", "active", "completed", "cancelled")
_COUNT = {1: "one", 2: "two", 3: "three", 4: "four"}


def _lanes_closed(words: str, lanes: list | None) -> str:
    """"lanes closed" made precise by the feed's lane list ("one lane closed") where it has one."""
    if not words.startswith("lanes closed") or not isinstance(lanes, list):
        return words
    n = sum(isinstance(x, dict) and x.get("status") == "closed" for x in lanes)
    if n < 1:
        return words
    return f"{_COUNT.get(n, str(n))} lane{'s' if n > 1 else ''} closed" + words[len("lanes closed"):]


def _wzdx(doc: dict, file: str, tz: str) -> tuple[list[dict], list[Where]]:
    root = Where(file)
    info = doc.get("feed_info", doc.get("road_event_feed_info"))
    info = _obj(info, root, "feed_info")
    version = str(info.get("version", ""))
    if not version.startswith("4"):
        name = "feed_info.version" if "feed_info" in doc else "road_event_feed_info.version"
        raise DataError(file, f"WZDx version {shown(version)} is not supported; give a v4.x feed", column=name)
    features = _list(doc.get("features"), root, "features")
    rows, wheres = [], []
    for i, f in enumerate(features):
        w = Where(file, path=f"features[{i}]")
        f = _obj(f, Where(file), f"features[{i}]")
        fid = _text(f.get("id"), w, "id")
        p = _obj(f.get("properties"), w, "properties")
        pw = w.inner("properties")
        core = _obj(p.get("core_details"), pw, "core_details")
        cw = pw.inner("core_details")
        etype = _choice(core.get("event_type"), cw, "event_type", WZDX_TYPES)
        names = _list(core.get("road_names"), cw, "road_names")
        if not names:
            raise cw.error("road_names", "needs at least one road name")
        roads = [_text(n, cw, f"road_names[{j}]") for j, n in enumerate(names)]
        direction = _text(core.get("direction"), cw, "direction")
        description = _text(core.get("description"), cw, "description", required=False)
        updated = _time(core.get("update_date"), cw, "update_date", tz, required=False)
        start = _time(p.get("start_date"), pw, "start_date", tz)
        end = _time(p.get("end_date"), pw, "end_date", tz)
        impact = _choice(p.get("vehicle_impact"), pw, "vehicle_impact", WZDX_IMPACT)
        lanes = p.get("lanes")
        status = _choice(p.get("event_status"), pw, "event_status", WZDX_STATUS, required=False)
        wkt, lat, lon = _geometry(f.get("geometry"), w, "geometry", ("LineString", "MultiPoint"))
        way = "" if direction in ("undefined", "unknown", "") else f" {direction}"
        words = _lanes_closed(WZDX_IMPACT[impact], lanes)
        noun = "Roadworks" if etype == "work-zone" else "Detour for roadworks"
        road = " / ".join(roads)
        text = _sentence(f"{noun} on {road}{way}: {words} {_span(start, end)}", description)
        rows.append(_row(f"wzdx:{fid}", start, end, lat, lon, "road works", text[:MAX_TEXT], "wzdx",
                         "; ".join(roads), STATUSES[status or ""], updated, wkt))
        wheres.append(w)
    return rows, wheres


WZDX_FIELDS = {"event_id": "id", "start_ts": "properties.start_date", "end_ts": "properties.end_date",
               "status": "properties.event_status", "text": "properties.core_details.description"}


# --------------------------------------------------------------------------------------------- Open511
OPEN511_TYPES = {
    "CONSTRUCTION": ("road works", "Roadworks"),
    "SPECIAL_EVENT": ("special event", "Special event"),
    "INCIDENT": ("incident", "Incident"),
    "WEATHER_CONDITION": ("weather incident", "Weather warning"),
    "ROAD_CONDITION": ("road condition", "Poor road conditions"),
}
#: event_subtypes that say more than the event type: (kind, noun)
OPEN511_SUBTYPES = {
    "ACCIDENT": ("crash", "Crash"),
    "BROKEN_DOWN_VEHICLE": ("breakdown", "Broken-down vehicle"),
    "SPILL": ("incident", "Spill"),
    "HAZARD": ("incident", "Hazard"),
    "FIRE": ("incident", "Vehicle fire"),
    "EMERGENCY_MAINTENANCE": ("incident", "Emergency repairs"),
    "PARADE": ("parade", "Parade"),
    "SPORTS_EVENT": ("special event", "Sports event"),
    "CONCERT": ("concert", "Concert"),
}
OPEN511_STATUS = {"ACTIVE": "active", "ARCHIVED": "ended"}
OPEN511_SEVERITY = {"MINOR": "minor delays", "MODERATE": "long delays", "MAJOR": "long delays, queues building",
                    "UNKNOWN": None}
OPEN511_STATE = {"CLOSED": "road closed", "SOME_LANES_CLOSED": "lanes closed",
                 "SINGLE_LANE_ALTERNATING": "single-file traffic", "ALL_LANES_OPEN": None}
OPEN511_GEOMETRIES = ("Point", "MultiPoint", "LineString", "MultiLineString", "Polygon")


def _intervals(schedule: dict, w: Where, tz: str) -> list[tuple[datetime, datetime | None]]:
    """Open511 `schedule`: ISO 8601 `intervals` ("start/end", the end may be empty), or `recurring_schedules`
    (start_date, end_date, daily_start_time, daily_end_time, days 1=Monday..7) expanded day by day."""
    out: list[tuple[datetime, datetime | None]] = []
    intervals = _list(schedule.get("intervals"), w, "intervals", required=False)
    for k, iv in enumerate(intervals or []):
        name = f"intervals[{k}]"
        if not isinstance(iv, str) or "/" not in iv:
            raise w.error(name, f"expected an interval 'start/end', got {shown(iv)}")
        a, b = iv.split("/", 1)
        out.append((_time(a, w, name, tz), _time(b, w, name, tz, required=False)))
    recurring = _list(schedule.get("recurring_schedules"), w, "recurring_schedules", required=False)
    for k, rs in enumerate(recurring or []):
        rw = w.inner(f"recurring_schedules[{k}]")
        rs = _obj(rs, w, f"recurring_schedules[{k}]")
        first = pd.Timestamp(_time(rs.get("start_date"), rw, "start_date", tz)).normalize()
        last = pd.Timestamp(_time(rs.get("end_date"), rw, "end_date", tz)).normalize()
        t0 = _clock(rs.get("daily_start_time"), rw, "daily_start_time")
        t1 = _clock(rs.get("daily_end_time"), rw, "daily_end_time")
        days = _list(rs.get("days"), rw, "days", required=False) or [1, 2, 3, 4, 5, 6, 7]
        for j, d in enumerate(days):
            if isinstance(d, bool) or d not in range(1, 8):
                raise rw.error(f"days[{j}]", f"{shown(d)} is not a weekday number 1 (Monday) to 7")
        dates = [d for d in pd.date_range(first, last, freq="D") if d.day_of_week + 1 in days]
        if len(out) + len(dates) > MAX_OCCURRENCES:
            raise rw.error("end_date", f"the schedule expands to over {MAX_OCCURRENCES} intervals")
        for d in dates:
            s, e = d + t0, d + t1
            out.append((s.to_pydatetime(), (e if e > s else e + pd.Timedelta(days=1)).to_pydatetime()))
    if not out:
        raise w.error("intervals", "the schedule has neither intervals nor recurring_schedules")
    return out


def _clock(value, w: Where, name: str) -> pd.Timedelta:
    if not isinstance(value, str):
        raise w.error(name, f"expected a time of day 'HH:MM', got {shown(value)}")
    try:
        hh, mm = value.strip().split(":")[:2]
        out = pd.Timedelta(hours=int(hh), minutes=int(mm))
    except ValueError:
        raise w.error(name, f"expected a time of day 'HH:MM', got {shown(value)}") from None
    if not pd.Timedelta(0) <= out <= pd.Timedelta(hours=24):
        raise w.error(name, f"{shown(value)} is not a time of day")
    return out


def _open511(doc: dict, file: str, tz: str) -> tuple[list[dict], list[Where]]:
    events = _list(doc.get("events"), Where(file), "events")
    rows, wheres = [], []
    for i, e in enumerate(events):
        w = Where(file, path=f"events[{i}]")
        e = _obj(e, Where(file), f"events[{i}]")
        eid = _text(e.get("id"), w, "id")
        status = OPEN511_STATUS[_choice(e.get("status"), w, "status", OPEN511_STATUS)]
        etype = _choice(e.get("event_type"), w, "event_type", OPEN511_TYPES)
        kind, noun = OPEN511_TYPES[etype]
        subtypes = _list(e.get("event_subtypes"), w, "event_subtypes", required=False) or []
        for j, sub in enumerate(subtypes):
            if not isinstance(sub, str):
                raise w.error(f"event_subtypes[{j}]", f"expected text, got {shown(sub)}")
        hit = next((OPEN511_SUBTYPES[s] for s in subtypes if s in OPEN511_SUBTYPES), None)
        if hit is not None and (etype == "INCIDENT" or etype == "SPECIAL_EVENT"):
            kind, noun = hit
        severity = _choice(e.get("severity"), w, "severity", OPEN511_SEVERITY, required=False)
        headline = _text(e.get("headline"), w, "headline", required=False)
        description = _text(e.get("description"), w, "description", required=False)
        updated = _time(e.get("updated"), w, "updated", tz, required=False)
        intervals = _intervals(_obj(e.get("schedule"), w, "schedule"), w.inner("schedule"), tz)
        wkt, lat, lon = _geometry(e.get("geography"), w, "geography", OPEN511_GEOMETRIES)
        roads = _list(e.get("roads"), w, "roads", required=False) or []
        names, state, place = [], None, None
        for j, r in enumerate(roads):
            rw = w.inner(f"roads[{j}]")
            r = _obj(r, w, f"roads[{j}]")
            names.append(_text(r.get("name"), rw, "name"))
            if j == 0:
                place = _text(r.get("from"), rw, "from", required=False)
                st = _choice(r.get("state"), rw, "state", OPEN511_STATE, required=False)
                state = OPEN511_STATE.get(st) if st else None
                n = r.get("lanes_closed")
                if state == "lanes closed" and isinstance(n, int) and not isinstance(n, bool) and n > 0:
                    state = f"{_COUNT.get(n, str(n))} lane{'s' if n > 1 else ''} closed"
        where_words = (f" on {names[0]}" if names else "") + (f" at {place}" if place else "")
        facts = ", ".join(x for x in (state, OPEN511_SEVERITY.get(severity or "UNKNOWN")) if x)
        lead = f"{noun}{where_words}" + (f": {facts}" if facts else "")
        extra = description or (headline if headline and headline.upper() != headline else None)
        text = _sentence(lead, extra)[:MAX_TEXT]
        many = len(intervals) > 1
        for k, (start, end) in enumerate(intervals, start=1):
            rows.append(_row(f"open511:{eid}" + (f"#{k}" if many else ""), start, end, lat, lon, kind, text,
                             "open511", "; ".join(names) or None, status, updated, wkt))
            wheres.append(w.inner(f"schedule.intervals[{k - 1}]") if many else w)
    return rows, wheres


OPEN511_FIELDS = {"event_id": "id", "start_ts": "schedule", "end_ts": "schedule", "status": "status"}


# --------------------------------------------------------------------------------------------- CAD
#: Dispatch codes (CHP style, "11-83" written "1183") -> (kind, what happened, what it means for traffic),
#: in the words the model has read. Codes not listed keep their own label, spelled out (`_spell_out`).
CAD_CODES: dict[str, tuple[str, str, str]] = {
    "1179": ("crash", "Crash", "injuries, ambulance on the way"),
    "1180": ("crash", "Serious crash", "major injuries, emergency services at the scene"),
    "1181": ("crash", "Collision", "minor injuries"),
    "1182": ("crash", "Collision", "no injuries"),
    "1183": ("crash", "Crash", "injuries unknown"),
    "1144": ("crash", "Fatal crash", "road closed for the investigation"),
    "20001": ("crash", "Hit-and-run crash", "injuries"),
    "20002": ("crash", "Hit-and-run collision", "no injuries"),
    "1125": ("incident", "Traffic hazard", "an obstruction in the road"),
    "1125A": ("incident", "Animal on the road", "slow traffic past the scene"),
    "1124": ("incident", "Abandoned vehicle", "vehicle left by the road"),
    "1126": ("breakdown", "Broken-down vehicle", "a lane blocked"),
    "1185": ("breakdown", "Vehicle waiting for a tow truck", "a lane blocked"),
    "1166": ("fault", "Traffic signals out of order", "signals not working, junction uncontrolled"),
    "1184": ("incident", "Police directing traffic", "slow traffic"),
    "FIRE": ("incident", "Vehicle fire", "emergency services at the scene"),
    "SIG": ("incident", "Sig alert", "lanes blocked, long delays"),
    "CZP": ("road works", "Police at a construction zone", "lane restriction"),
}
_SPELL = {"trfc": "traffic", "inj": "injuries", "unkn": "unknown", "veh": "vehicle", "enrt": "en route",
          "haz": "hazard", "maj": "major", "min": "minor", "no": "no", "rdwy": "roadway", "obst": "obstruction",
          "disabl": "disabled", "assist": "assist", "w/": "with"}
CAD_ALIASES = {
    "id": ("incident no", "incident number", "incident", "log id", "logid", "incident id", "id"),
    "time": ("time", "log time", "logtime", "date time", "datetime", "received", "reported"),
    "type": ("type", "log type", "logtype", "call type", "incident type"),
    "location": ("location", "address"),
    "location_desc": ("location desc", "locationdesc", "location description"),
    "area": ("area", "beat", "district"),
    "lat": ("lat", "latitude"),
    "lon": ("lon", "lng", "long", "longitude"),
    "status": ("status",),
    "cleared": ("cleared", "end", "closed time", "cleared time"),
    "details": ("details", "log details", "logdetails", "comments"),
}
CAD_REQUIRED = ("id", "time", "type", "location", "lat", "lon")


def _spell_out(label: str) -> str:
    words = [_SPELL.get(x.lower(), x) for x in label.replace("-", " - ").split()]
    return " ".join(words).replace(" - ", ", ").strip(" ,")


def cad_meaning(code_label: str) -> tuple[str, str, str]:
    """(kind, what, detail) for a CAD type cell such as "1183-Trfc Collision-Unkn Inj"."""
    code, _, label = code_label.partition("-")
    key = code.strip().upper().replace(" ", "")
    if key in CAD_CODES:
        return CAD_CODES[key]
    for k, v in CAD_CODES.items():  # "SIG Alert", "FIRE-Vehicle Fire"
        if key.startswith(k) and not k.isdigit():
            return v
    words = _spell_out(label or code)
    low = words.lower()
    kind = "crash" if ("collision" in low or "crash" in low) else "incident"
    return kind, words[:1].upper() + words[1:], ""


def _cad(df: pd.DataFrame, names: dict[str, str], file: str, tz: str) -> tuple[list[dict], list[Where]]:
    rows, wheres = [], []
    cols = {k: names[k] for k in names}
    for i, rec in enumerate(df.to_dict("records")):
        w = Where(file, row=i + 2)
        g = {k: rec.get(c) for k, c in cols.items()}
        inc = _text(g["id"], w, cols["id"])
        start = _time(g["time"], w, cols["time"], tz)
        kind, what, detail = cad_meaning(_text(g["type"], w, cols["type"]))
        location = _text(g["location"], w, cols["location"])
        lat = _number(g["lat"], w, cols["lat"], -90, 90)
        lon = _number(g["lon"], w, cols["lon"], -180, 180)
        status = _status(g.get("status"), w, cols.get("status", "status"))
        end = _time(g.get("cleared"), w, cols.get("cleared", "cleared"), tz, required=False)
        if end is not None and status == "active":
            status = "ended"
        roads = [p.strip() for p in location.split("/") if p.strip()]
        road = roads[0] if roads else location
        at = f" at {' / '.join(roads[1:])}" if len(roads) > 1 else ""
        desc = _text(g.get("location_desc"), w, cols.get("location_desc", "location_desc"), required=False)
        text = f"{what} on {road}{at}" + (f" ({desc})" if desc and len(desc) > 3 else "") + (
            f": {detail}" if detail else "")
        rows.append(_row(f"cad:{start:%Y%m%d}:{inc}", start, end, lat, lon, kind, text, "cad", "; ".join(roads) or None,
                         status, end if status == "ended" else None))
        wheres.append(w)
    return rows, wheres


# ============================================================================================= reading
def _headers(df: pd.DataFrame) -> dict[str, str]:
    """Normalised header -> the header as written."""
    return {" ".join(str(c).strip().lower().replace("_", " ").split()): str(c) for c in df.columns}


def _cad_columns(headers: dict[str, str]) -> dict[str, str] | None:
    """Our name -> the file's header for a CAD log, or None when the file is not one."""
    found = {}
    for ours, aliases in CAD_ALIASES.items():
        for a in aliases:
            if a in headers:
                found[ours] = headers[a]
                break
    return found if {"time", "type"} <= set(found) and "start" not in headers else None


def parse_csv(text: str, file: str, tz: str, fmt: str = "auto") -> EventRows:
    """An events CSV: the project's own columns, or a CAD incident log (told apart by their headers)."""
    if not text.strip():
        raise DataError(file, "file is empty")
    try:
        df = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except pd.errors.ParserError as e:
        raise DataError(file, f"cannot parse CSV: {e}") from None
    headers = _headers(df)
    cad = _cad_columns(headers)
    if fmt == "cad" or (fmt == "auto" and cad is not None):
        cad = cad or {}
        missing = [c for c in CAD_REQUIRED if c not in cad]
        if missing:
            raise DataError(file, f"a CAD log needs columns {[CAD_ALIASES[c][0] for c in CAD_REQUIRED]}; "
                                  f"missing {missing[0]!r} (e.g. {CAD_ALIASES[missing[0]][0]!r})", row=1,
                            column=missing[0])
        rows, wheres = _cad(df, cad, file, tz)
        return _finish(rows, wheres, {"event_id": cad["id"], "start_ts": cad["time"],
                                      "end_ts": cad.get("cleared", "cleared")}, "cad")
    if fmt not in ("auto", "own"):
        raise DataError(file, f"a CSV file cannot be in format {fmt!r}; CSV files are 'own' or 'cad'")
    rename = {h: headers_key for headers_key, h in headers.items()}
    df = df.rename(columns=rename)
    missing = [c for c in OWN_REQUIRED if c not in df.columns]
    if missing:
        raise DataError(file, f"missing required column(s) {missing}; found {shown(list(rename))}; an events CSV "
                              f"has {list(OWN_FIELDS.values())} (or is a CAD log: Incident No, Time, Type, "
                              "Location, Latitude, Longitude)", row=1, column=missing[0])
    if df.empty:
        raise DataError(file, "file has a header but no events", row=2)
    records = df.to_dict("records")
    rows = _own(records, [Where(file, row=i + 2) for i in range(len(records))], tz, "events-csv")
    return _finish(rows, [Where(file, row=i + 2) for i in range(len(rows))], OWN_FIELDS, "own")


def detect_json(doc) -> str:
    """The format of a JSON document: WZDx (a GeoJSON FeatureCollection), Open511 (`events` with `event_type`
    or `schedule`), else the project's own (a list of events, or `{"events": [...]}` with `start`)."""
    if isinstance(doc, dict) and doc.get("type") == "FeatureCollection":
        return "wzdx"
    if isinstance(doc, dict) and isinstance(doc.get("events"), list):
        evs = [e for e in doc["events"] if isinstance(e, dict)]
        if any("event_type" in e or "schedule" in e for e in evs) or (not evs and "meta" in doc):
            return "open511"
        return "own"
    return "own"


def parse_document(doc, file: str, tz: str, fmt: str = "auto", rows_are_positions: bool = False) -> EventRows:
    """A JSON document (already decoded) in any JSON format. `rows_are_positions`: errors in the project's own
    list name the 1-based position as `row` and the key as column (the API's convention), not a JSON path."""
    if fmt not in ("auto", *FORMATS):
        raise DataError(file, f"unknown format {fmt!r}; choose auto or one of {list(FORMATS)}")
    kind = detect_json(doc) if fmt == "auto" else fmt
    if kind == "cad":
        raise DataError(file, "CAD logs are CSV files, not JSON")
    if kind == "wzdx":
        if not isinstance(doc, dict) or doc.get("type") != "FeatureCollection":
            raise DataError(file, "a WZDx feed is a GeoJSON object with \"type\": \"FeatureCollection\"",
                            column="type")
        rows, wheres = _wzdx(doc, file, tz)
        return _finish(rows, wheres, WZDX_FIELDS, "wzdx")
    if kind == "open511":
        if not isinstance(doc, dict):
            raise DataError(file, "an Open511 document is an object with an \"events\" list", column="events")
        rows, wheres = _open511(doc, file, tz)
        return _finish(rows, wheres, OPEN511_FIELDS, "open511", families=("open511:",))
    records, prefix = (doc, "") if isinstance(doc, list) else (doc.get("events") if isinstance(doc, dict) else None,
                                                               "events")
    if not isinstance(records, list):
        raise DataError(file, "expected a list of events (or {\"events\": [...]}), a WZDx FeatureCollection or an "
                              "Open511 document", column="events" if isinstance(doc, dict) else None)
    if rows_are_positions:
        wheres = [Where(file, row=i + 1) for i in range(len(records))]
    else:
        wheres = [Where(file, path=f"{prefix}[{i}]") for i in range(len(records))]
    rows = _own(records, wheres, tz, "events-json")
    return _finish(rows, wheres, OWN_FIELDS, "own")


def read_event_file(path: str | Path, tz: str, fmt: str = "auto") -> EventRows:
    """One feed file: `.csv` (own or CAD) or `.json`/`.geojson` (own, WZDx or Open511); `.gz` unpacked."""
    p = check_file(path)
    text = read_text(p)
    name = p.name.lower().removesuffix(".gz")
    if name.endswith(".csv") or fmt == "cad":
        return parse_csv(text, str(p), tz, fmt)
    if not name.endswith((".json", ".geojson")) and fmt == "auto":
        raise DataError(str(p), "cannot tell the format from the name: an event feed is .csv, .json or .geojson "
                                "(or give --format)")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(str(p), f"not valid JSON: {e.msg} (line {e.lineno}, column {e.colno})", row=e.lineno) from None
    except RecursionError:
        raise DataError(str(p), "not valid JSON: nested too deeply") from None
    return parse_document(doc, str(p), tz, fmt)


def _finish(rows: list[dict], wheres: list[Where], fields: dict[str, str], fmt: str,
            families: tuple[str, ...] = ()) -> EventRows:
    """Rows as a frame, after the checks across records: end not before start, ids unique (an exact repeat
    is dropped, a conflicting one refused naming the second)."""
    if len(rows) > MAX_EVENTS:
        raise DataError(wheres[MAX_EVENTS].file, f"{len(rows):,} events in one document; at most {MAX_EVENTS:,}")
    seen: dict[str, int] = {}
    keep = []
    for k, (r, w) in enumerate(zip(rows, wheres, strict=True)):
        if r["end_ts"] is not None and r["end_ts"] < r["start_ts"]:
            raise w.error(fields.get("end_ts", "end_ts"), f"the end {r['end_ts']} is before the start {r['start_ts']}")
        j = seen.get(r["event_id"])
        if j is None:
            seen[r["event_id"]] = k
            keep.append(k)
        elif rows[j] != r:
            raise w.error(fields.get("event_id", "id"), f"conflicting duplicate of event {shown(r['event_id'])} "
                                                        "(the same id with other content)")
    frame = pd.DataFrame([rows[k] for k in keep], columns=EVENT_COLUMNS)
    for c in ("start_ts", "end_ts", "updated_ts"):
        frame[c] = pd.to_datetime(frame[c]).astype("datetime64[ns]")
    for c in ("lat", "lon"):
        frame[c] = frame[c].astype(float)
    return EventRows(frame, [wheres[k] for k in keep], fields, fmt, families)

