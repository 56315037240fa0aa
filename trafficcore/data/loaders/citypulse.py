"""The Aarhus CityPulse road-traffic folder (2014) and its event listings as canonical tables.

The folder (see ../shared/data/aarhus_citypulse_traffic_2014/README.md) holds:

- ``trafficMetaData.csv``: one row per Bluetooth travel-time segment ``REPORT_ID``, from point 1
  to point 2 (``POINT_n_NAME`` ids, ``POINT_n_LAT/LNG``, ``POINT_n_STREET``), ``DISTANCE_IN_METERS``,
  ``NDT_IN_KMH`` (normal driving speed) and ``REPORT_NAME``;
- ``aarhus_vehicleCount_5min.csv.gz`` and ``aarhus_avgSpeed_5min.csv.gz``: wide matrices, index
  ``timestamp`` on a 5-minute grid, one column per ``REPORT_ID``; an empty cell means no record;
- ``aarhus_weather_aug_sep_2014.csv`` (optional): ``hum``, ``tempm``, ``wspdm``, ``TIMESTAMP`` at
  irregular 10/20/30-minute steps.

Modelling choices, and why:

- A segment is a site (``site_id`` = ``REPORT_ID``), drawn as the line from point 1 to point 2
  (WKT, lon lat order) and placed at its midpoint. It has two detectors: ``"{rid}:count"``
  (measure ``volume``) and ``"{rid}:speed"`` (measure ``speed``, km/h). ``approach`` is the
  8-point compass bearing from point 1 to point 2, the direction traffic on the segment travels.
- ``vehicleCount`` is the number of vehicles *matched by Bluetooth* at both ends in 5 minutes: a
  sample of the traffic (median 1, max 108), not the total flow. It is still stored as
  ``volume`` because it rises and falls with flow, but no capacity or v/c figure should read it
  as vehicles per hour.
- Speed is masked where the count is 0 or missing: the source carries the last speed forward
  when no vehicle was matched (96% of count-0 rows repeat the previous value), and speed 0 only
  occurs with count 0 (no data). So a speed observation exists only where a count > 0 does.
- Time zone of the matrices: UTC, converted here to Europe/Copenhagen wall time (CEST, UTC+2,
  throughout 1 Aug - 30 Sep 2014, so no wall time is skipped or repeated). Evidence: the mean
  weekday profile of counts summed over all segments, by hour of the *file's* timestamp, peaks at
  05-06 h (3,107 and 3,143 vehicles per 5 min) and 13-14 h (3,118 and 3,042), and is lowest at
  00-01 h (41, 55). Commuter peaks at 05-06 local would be absurd for a Danish city; at UTC+2
  they are 07-08 and 15-16 CEST, the usual morning and afternoon peaks. The first raw timestamp,
  2014-08-01 07:50, becomes 09:50 local. (Should a file cross the autumn change, the repeated
  local hour keeps its first pass; that does not happen in this data.)
- Time zone of the weather file: local wall time already, so it is stored unchanged. Evidence:
  the mean temperature by hour of the file's timestamp is lowest at 05-06 h and highest at
  15-16 h (Aug: 13.7 and 19.1 degC; Sep: 11.8 and 18.2 degC); a first-harmonic fit of the daily
  anomalies peaks at 15.5 h and the middle of each day's coldest reading falls at 05:55 (median).
  In Aarhus, solar noon is about 13:20 CEST and sunrise between 05:16 (1 Aug) and 07:17 (30 Sep)
  CEST, so a minimum near sunrise and a maximum about two hours after solar noon fit local time;
  read as UTC the maximum would sit at 17:30 CEST, four hours after solar noon, and the minimum
  well after sunrise. Rows repeating a timestamp are averaged (weather is context, not a
  measurement the store keys on), values of -999 or below (Weather Underground's "missing") are
  nulls, rows with no value at all are dropped, and ``precip_mm``/``condition`` are unknown (null).
- Events (the optional listings CSV, ../shared/data/aarhus_citypulse_events): every row becomes an
  event, whatever its date (1,647 rows, 2013-10 to 2015-08; 223 fall within the traffic data, and
  downstream filters by time). ``event_time`` is local wall time already (most events start at
  10:00, 16:00 or 19:00). The listings give an instant, no duration: a timed event is given
  ``EVENT_DURATION`` (2 h, a concert, talk or workshop), while one dated at exactly 00:00 is a
  day or longer listing (exhibitions, festivals dated on their first day), so its end is null
  (unknown). ``site_id`` is the segment nearest the venue if within ``EVENT_SITE_RADIUS_M``,
  ``kind`` the listing source (``cultural`` or ``library``), ``text`` = "title at venue" kept
  verbatim, and ``event_id`` = source + a hash of the whole row, so it is stable across reloads
  and an exact duplicate row collapses into one event.
  Quirk: the Danish letters ae, o-slash and a-ring were already turned into '?' in the source
  ("L?r at bruge Dropbox", venue "?by"); that loss cannot be undone here, so the text is kept as
  given rather than guessed at.
- Adjacency (kind ``graph``, weight 1): segment A -> B when A's end point id (``POINT_2_NAME``) is
  B's start point id (``POINT_1_NAME``): B is directly downstream of A. The reverse twin of A
  (B from A's end back to A's start) is included, as it shares the same junctions. Segments that
  merely share a start or an end point are not linked: traffic does not flow between them.

Bad input ends in one ``DataError`` naming file, row (header = row 1) and column. The matrices
(17,474 x 449) are parsed as floats in one C-parser pass; only when that fails are they re-read
as text to find the offending cell.
"""

from __future__ import annotations

import csv
import hashlib
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from trafficcore.data.files import check_unpacked, open_text
from trafficcore.data.schema import CanonicalTables, DatasetInfo, empty
from trafficcore.data.validate import (
    check_file,
    check_time_window,
    check_values,
    read_csv,
    read_text,
    to_numbers,
    to_timestamps,
)
from trafficcore.errors import DataError, shown

TIMEZONE = "Europe/Copenhagen"
#: The zone the matrices' timestamps are written in (see the module docstring for the evidence).
MATRIX_TIMEZONE = "UTC"
INTERVAL_S = 300
SOURCE = "CityPulse Aarhus road traffic 2014 (Open Data Aarhus / COWI Bluetooth)"

META_FILE = "trafficMetaData.csv"
COUNT_FILE = "aarhus_vehicleCount_5min.csv.gz"
SPEED_FILE = "aarhus_avgSpeed_5min.csv.gz"
WEATHER_FILE = "aarhus_weather_aug_sep_2014.csv"

META_REQUIRED = [
    "REPORT_ID", "REPORT_NAME", "POINT_1_NAME", "POINT_2_NAME", "POINT_1_STREET", "POINT_2_STREET",
    "POINT_1_LAT", "POINT_1_LNG", "POINT_2_LAT", "POINT_2_LNG", "DISTANCE_IN_METERS", "NDT_IN_KMH",
]
WEATHER_REQUIRED = ["TIMESTAMP", "tempm", "hum", "wspdm"]
EVENT_REQUIRED = ["source", "event_time", "title", "venue_name", "latitude", "longitude"]

#: Assumed length of a timed event (the listings give only its start).
EVENT_DURATION = pd.Timedelta(hours=2)
#: An event is tied to the nearest segment only if that segment is this close (metres).
EVENT_SITE_RADIUS_M = 1000.0
#: Weather Underground writes -999/-9999 for a missing reading.
WEATHER_MISSING_AT_OR_BELOW = -999.0

_COMPASS = ("N", "NE", "E", "SE", "S", "SW", "W", "NW")
_EARTH_M_PER_DEG = 111_195.0


# --------------------------------------------------------------------------- public API
def load(folder: str | Path, events: str | Path | None = None) -> CanonicalTables:
    """Read the CityPulse traffic folder (and, optionally, the event listings CSV) into canonical tables."""
    root = Path(folder)
    if not root.is_dir():
        raise DataError(str(root), f"expected the CityPulse folder holding {META_FILE}, {COUNT_FILE} and {SPEED_FILE}")
    meta = _read_metadata(root / META_FILE)
    known = set(meta["REPORT_ID"])
    counts = _read_matrix(root / COUNT_FILE, known, whole_numbers=True)
    speeds = _read_matrix(root / SPEED_FILE, known, whole_numbers=False)
    weather_path = root / WEATHER_FILE
    return CanonicalTables(
        info=DatasetInfo(
            synthetic=False,
            source=SOURCE,
            timezone=TIMEZONE,
            interval_s=INTERVAL_S,
            measure="volume",
            description=(
                "Aarhus (Denmark) road segments: 5-minute Bluetooth-matched vehicle counts (a sample of traffic, "
                "not total flow) and average speeds (km/h). Timestamps converted from UTC to Copenhagen wall "
                "time; speed masked where no vehicle was matched."
            ),
        ),
        sites=_sites(meta),
        detectors=_detectors(meta),
        observations=_observations(counts, speeds),
        events=_read_events(Path(events), meta) if events is not None else empty("events"),
        weather=_read_weather(weather_path) if weather_path.exists() else empty("weather"),
        adjacency=_adjacency(meta),
    )


# --------------------------------------------------------------------------- segments
def _read_metadata(path: Path) -> pd.DataFrame:
    """The segment table, validated: unique non-empty ids, coordinates on the globe."""
    df = read_csv(path, required=META_REQUIRED)
    for c in df.columns:
        df[c] = df[c].str.strip()
    blank = df["REPORT_ID"] == ""
    if blank.any():
        raise DataError(str(path), "segment id is empty", row=2 + int(np.flatnonzero(blank)[0]), column="REPORT_ID")
    exact = df.duplicated(keep="first")
    conflict = df["REPORT_ID"].duplicated(keep="first") & ~exact
    if conflict.any():
        i = int(np.flatnonzero(conflict.to_numpy())[0])
        raise DataError(str(path), f"segment {shown(df['REPORT_ID'].iloc[i])} is listed twice with different values",
                        row=2 + i, column="REPORT_ID")
    rows = df.index.to_series() + 2
    for c, lo, hi in (("POINT_1_LAT", -90, 90), ("POINT_2_LAT", -90, 90), ("POINT_1_LNG", -180, 180),
                      ("POINT_2_LNG", -180, 180)):
        df[c] = to_numbers(df[c], path, c, first_row=2)
        _check_range(df[c], rows, lo, hi, path, c)
    for c in ("DISTANCE_IN_METERS", "NDT_IN_KMH"):
        df[c] = to_numbers(df[c], path, c, first_row=2, allow_missing=True, non_negative=True)
    return df[~exact.to_numpy()].reset_index(drop=True)


def _check_range(vals: pd.Series, rows: pd.Series, lo: float, hi: float, path: Path, column: str) -> None:
    bad = (vals < lo) | (vals > hi)
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(str(path), f"{vals.iloc[i]:g} is outside [{lo}, {hi}]", row=int(rows.iloc[i]), column=column)


def _street(df: pd.DataFrame, n: int) -> pd.Series:
    """The street at point n, or 'point <id>' where the metadata leaves it blank."""
    s = df[f"POINT_{n}_STREET"]
    return s.where(s != "", "point " + df[f"POINT_{n}_NAME"])


def _sites(meta: pd.DataFrame) -> pd.DataFrame:
    s1, s2 = _street(meta, 1), _street(meta, 2)
    route = s1.where(s1 == s2, s1 + " → " + s2)
    lat1, lon1, lat2, lon2 = (meta[c] for c in ("POINT_1_LAT", "POINT_1_LNG", "POINT_2_LAT", "POINT_2_LNG"))
    wkt = [f"LINESTRING ({a:.8f} {b:.8f}, {c:.8f} {d:.8f})" for a, b, c, d in zip(lon1, lat1, lon2, lat2, strict=True)]
    desc = []
    for r, a, b, head in zip(meta.itertuples(index=False), s1, s2, _bearings(meta), strict=True):
        text = (f"Road segment {r.REPORT_NAME} from point {r.POINT_1_NAME} ({a}) "
                f"to point {r.POINT_2_NAME} ({b}), heading {head}")
        if pd.notna(r.DISTANCE_IN_METERS):
            text += f", {r.DISTANCE_IN_METERS:.0f} m long"
        if pd.notna(r.NDT_IN_KMH):
            text += f", normal driving speed {r.NDT_IN_KMH:.0f} km/h"
        road_type = getattr(r, "ROAD_TYPE", "")
        if road_type:
            text += f", {road_type.replace('_', ' ').lower()}"
        desc.append(text + ". Bluetooth travel-time segment (COWI).")
    return pd.DataFrame(
        {
            "site_id": meta["REPORT_ID"].to_numpy(dtype=object),
            "name": (route + " (" + meta["REPORT_NAME"] + ")").to_numpy(dtype=object),
            "lat": ((lat1 + lat2) / 2).to_numpy(),
            "lon": ((lon1 + lon2) / 2).to_numpy(),
            "description": desc,
            "geometry_wkt": wkt,
        }
    )


def _bearings(meta: pd.DataFrame) -> list[str]:
    """8-point compass direction of travel from point 1 to point 2 (initial great-circle bearing)."""
    p1, p2 = np.radians(meta["POINT_1_LAT"].to_numpy()), np.radians(meta["POINT_2_LAT"].to_numpy())
    dl = np.radians(meta["POINT_2_LNG"].to_numpy() - meta["POINT_1_LNG"].to_numpy())
    y = np.sin(dl) * np.cos(p2)
    x = np.cos(p1) * np.sin(p2) - np.sin(p1) * np.cos(p2) * np.cos(dl)
    deg = np.degrees(np.arctan2(y, x))
    return [_COMPASS[int(((d % 360) + 22.5) // 45) % 8] for d in deg]


def _detectors(meta: pd.DataFrame) -> pd.DataFrame:
    s1, s2 = _street(meta, 1), _street(meta, 2)
    road = s1.where(s1 == s2, s1 + " → " + s2)
    heading = _bearings(meta)
    lat = ((meta["POINT_1_LAT"] + meta["POINT_2_LAT"]) / 2).to_numpy()
    lon = ((meta["POINT_1_LNG"] + meta["POINT_2_LNG"]) / 2).to_numpy()
    rows = []
    for k, rid in enumerate(meta["REPORT_ID"]):
        where = f"segment {rid} ({road.iloc[k]}, heading {heading[k]})"
        rows.append(
            (f"{rid}:count", rid, heading[k], road.iloc[k], "volume", lat[k], lon[k],
             f"Vehicles matched by Bluetooth at both ends of {where} per 5 minutes: a sample of traffic, "
             "not the total flow.")
        )
        rows.append(
            (f"{rid}:speed", rid, heading[k], road.iloc[k], "speed", lat[k], lon[k],
             f"Average speed (km/h) of the vehicles matched on {where} per 5 minutes; missing where none was "
             "matched.")
        )
    cols = ["detector_id", "site_id", "approach", "road", "measure", "lat", "lon", "description"]
    df = pd.DataFrame(rows, columns=cols)
    df["lanes"] = pd.Series([pd.NA] * len(df), dtype="Int64")
    df["interval_s"] = INTERVAL_S
    return df


def _adjacency(meta: pd.DataFrame) -> pd.DataFrame:
    """Directed downstream links: A -> B when A ends where B starts (see the module docstring)."""
    a = meta.loc[meta["POINT_2_NAME"] != "", ["REPORT_ID", "POINT_2_NAME"]]
    b = meta.loc[meta["POINT_1_NAME"] != "", ["REPORT_ID", "POINT_1_NAME"]]
    links = a.merge(b, left_on="POINT_2_NAME", right_on="POINT_1_NAME", suffixes=("_src", "_dst"))
    links = links[links["REPORT_ID_src"] != links["REPORT_ID_dst"]]
    out = pd.DataFrame({"src": links["REPORT_ID_src"].to_numpy(dtype=object),
                        "dst": links["REPORT_ID_dst"].to_numpy(dtype=object)})
    out = out.drop_duplicates().sort_values(["src", "dst"]).reset_index(drop=True)
    out["weight"] = 1.0
    out["kind"] = "graph"
    return out


# --------------------------------------------------------------------------- matrices
def _open_text(path: Path):
    """A text handle on a CSV, gunzipping a .gz file on the fly (bounded: see `trafficcore.data.files`)."""
    return open_text(path)


def _header(path: Path) -> list[str]:
    """The first line of a (gzipped) CSV, read with the csv module so repeated names stay visible."""
    try:
        with _open_text(path) as f:
            return [c.strip() for c in next(csv.reader(f), [])]
    except UnicodeDecodeError:
        read_text(path)  # raises a DataError naming the row of the bad byte
        raise
    except (OSError, EOFError, csv.Error) as e:
        raise DataError(str(path), f"cannot read the file: {e}") from None


def _read_matrix(path: Path, known: set[str], whole_numbers: bool) -> pd.DataFrame:
    """A timestamp x REPORT_ID matrix of floats (NaN = no record), index in the file's own time (UTC)."""
    p = check_file(path)
    check_unpacked(p)
    header = _header(p)
    if not header or header[0] != "timestamp":
        raise DataError(str(p), f"first column must be 'timestamp', found {header[:1]}", row=1, column="timestamp")
    ids = header[1:]
    seen: set[str] = set()
    for c in ids:
        if c in seen:
            raise DataError(str(p), f"segment column {shown(c)} appears twice", row=1, column=c)
        if c not in known:
            raise DataError(str(p), f"segment {shown(c)} is not in {META_FILE}", row=1, column=c)
        seen.add(c)
    try:
        with warnings.catch_warnings():
            # with index_col=False pandas would silently drop a row's surplus fields; make that an error
            warnings.simplefilter("error", pd.errors.ParserWarning)
            with _open_text(p) as f:
                df = pd.read_csv(f, header=0, names=header, index_col=False,
                                 dtype={"timestamp": str} | {c: "float64" for c in ids})
    except UnicodeDecodeError:
        read_text(p)
        raise
    except (pd.errors.ParserError, pd.errors.ParserWarning) as e:
        _find_long_row(p, len(header))
        raise DataError(str(p), f"cannot parse CSV: {e}") from None
    except ValueError:
        _find_bad_cell(p, header)
        raise
    if df.empty:
        raise DataError(str(p), "file has a header but no records", row=2)
    ts = to_timestamps(df["timestamp"], p, "timestamp", first_row=2, fmt="ISO8601")
    off_grid = ts != ts.dt.floor(f"{INTERVAL_S}s")
    if off_grid.any():
        i = int(np.flatnonzero(off_grid.to_numpy())[0])
        raise DataError(str(p), f"{shown(df['timestamp'].iloc[i])} is not on the {INTERVAL_S // 60}-minute grid",
                        row=2 + i, column="timestamp")
    values = df[ids].to_numpy(dtype=float)
    _check_cells(values, ids, p, whole_numbers)
    for j, c in enumerate(ids):
        check_values(pd.Series(values[:, j]), "volume" if whole_numbers else "speed", INTERVAL_S, p, c, 2)
    check_time_window(ts, p, "timestamp", 2)
    frame = pd.DataFrame(values, index=pd.DatetimeIndex(ts), columns=ids)
    return _drop_repeated_rows(frame, p)


def _find_long_row(path: Path, width: int) -> None:
    """Scan with the csv module and raise a DataError at the first row with more fields than the header."""
    with _open_text(path) as f:
        for row, fields in enumerate(csv.reader(f), start=1):
            if len(fields) > width:
                raise DataError(str(path), f"{len(fields)} fields, but the header has {width}", row=row)


def _find_bad_cell(path: Path, header: list[str]) -> None:
    """Re-read as text and raise a DataError at the first cell that is not a number."""
    with _open_text(path) as f:
        df = pd.read_csv(f, header=0, names=header, index_col=False, dtype=str, keep_default_na=False)
    for c in header[1:]:
        to_numbers(df[c], path, c, first_row=2, allow_missing=True)
    raise DataError(str(path), "cannot parse the values as numbers")


def _check_cells(values: np.ndarray, ids: list[str], path: Path, whole_numbers: bool) -> None:
    """Finite, non-negative, and whole where they are counts; the first bad cell (file order) is named."""
    with np.errstate(invalid="ignore"):
        checks = [
            (np.isinf(values), "not a finite number"),
            (values < 0, "negative value (counts and speeds cannot be negative)"),
        ]
        if whole_numbers:
            fractional = np.isfinite(values) & (values != np.round(values))
            checks.append((fractional, "a vehicle count must be a whole number"))
    for bad, message in checks:
        if bad.any():
            i, j = np.argwhere(bad)[0]
            raise DataError(str(path), f"{message}: {values[i, j]:g}", row=2 + int(i), column=ids[j])


def _drop_repeated_rows(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Exact repeats of a timestamp's row are dropped; a repeat with other values is an error."""
    rep = frame.index.duplicated(keep=False)
    if not rep.any():
        return frame
    flat = frame.reset_index(names="_ts")
    exact = flat.duplicated(keep="first").to_numpy()
    rest = flat[~exact]
    conflict = rest["_ts"].duplicated(keep="first")
    if conflict.any():
        i = int(rest.index[np.flatnonzero(conflict.to_numpy())[0]])
        raise DataError(str(path), f"timestamp {flat['_ts'].iloc[i]} repeats with different values",
                        row=2 + i, column="timestamp")
    return frame[~exact]


def _to_local(index: pd.DatetimeIndex) -> pd.DatetimeIndex:
    """File (UTC) timestamps as naive Copenhagen wall time."""
    return index.tz_localize(MATRIX_TIMEZONE).tz_convert(TIMEZONE).tz_localize(None)


def _observations(counts: pd.DataFrame, speeds: pd.DataFrame) -> pd.DataFrame:
    """Long (detector_id, ts, value): every recorded count, and speeds only where count > 0 and speed > 0."""
    speeds = speeds.reindex(index=counts.index, columns=counts.columns)
    local = _to_local(counts.index)
    first = ~local.duplicated(keep="first")  # the repeated autumn hour keeps its first pass
    local = local[first]
    c = counts.to_numpy()[first]
    s = speeds.to_numpy()[first]
    with np.errstate(invalid="ignore"):
        s = np.where((c > 0) & (s > 0), s, np.nan)
    steps = len(local)
    names = [f"{rid}:count" for rid in counts.columns] + [f"{rid}:speed" for rid in counts.columns]
    # detector-major (all of one detector, then the next), so the frame comes out sorted by (detector, ts)
    values = np.concatenate([c.T.ravel(), s.T.ravel()])
    cells = np.flatnonzero(~np.isnan(values))
    codes, step = np.divmod(cells, steps)
    ts = local.to_numpy(dtype="datetime64[ns]")[step]
    return pd.DataFrame({"detector_id": _decode(codes, names), "ts": ts, "value": values[cells]}, copy=False)


def _decode(codes: np.ndarray, names: list[str]):
    """names[codes] as a string column, built in Arrow when pandas stores strings there.

    Letting pandas infer an Arrow string column from 11 million Python string references takes
    seconds and several hundred MB; decoding a dictionary array in Arrow takes milliseconds.
    """
    dtype = pd.Series(["x"]).dtype
    if isinstance(dtype, pd.StringDtype) and dtype.storage == "pyarrow":
        import pyarrow as pa

        arr = pa.DictionaryArray.from_arrays(pa.array(codes), pa.array(names, pa.string())).cast(pa.large_string())
        return pd.array(arr, dtype=dtype)
    return np.asarray(names, dtype=object)[codes]


# --------------------------------------------------------------------------- weather
def _read_weather(path: Path) -> pd.DataFrame:
    """Weather rows in local time; repeated timestamps averaged; precipitation unknown."""
    df = read_csv(path, required=WEATHER_REQUIRED)
    ts = to_timestamps(df["TIMESTAMP"], path, "TIMESTAMP", first_row=2, fmt="ISO8601")
    out = pd.DataFrame({"ts": ts})
    fields = (("tempm", "temp_c", -60, 60), ("hum", "humidity_pct", 0, 100), ("wspdm", "wind_kmh", 0, 300))
    for src, dst, lo, hi in fields:
        vals = to_numbers(df[src], path, src, first_row=2, allow_missing=True)
        vals = vals.mask(vals <= WEATHER_MISSING_AT_OR_BELOW)
        _check_range(vals, df.index.to_series() + 2, lo, hi, path, src)
        out[dst] = vals
    values = ["temp_c", "humidity_pct", "wind_kmh"]
    out = out.dropna(subset=values, how="all")
    out = out.groupby("ts", as_index=False, sort=True)[values].mean()
    out["precip_mm"] = np.nan
    out["condition"] = pd.Series([None] * len(out), dtype=object)
    return out


# --------------------------------------------------------------------------- events
def _read_events(path: Path, meta: pd.DataFrame) -> pd.DataFrame:
    """Every listing as an event (see the module docstring for duration, site and id)."""
    df = read_csv(path, required=EVENT_REQUIRED)
    start = to_timestamps(df["event_time"], path, "event_time", first_row=2, fmt="ISO8601")
    source = df["source"].str.strip()
    blank = source == ""
    if blank.any():
        raise DataError(str(path), "event source is empty", row=2 + int(np.flatnonzero(blank)[0]), column="source")
    lat = to_numbers(df["latitude"], path, "latitude", first_row=2, allow_missing=True)
    lon = to_numbers(df["longitude"], path, "longitude", first_row=2, allow_missing=True)
    rows = df.index.to_series() + 2
    _check_range(lat, rows, -90, 90, path, "latitude")
    _check_range(lon, rows, -180, 180, path, "longitude")
    timed = start != start.dt.normalize()
    end = (start + EVENT_DURATION).where(timed)
    title, venue = df["title"].str.strip(), df["venue_name"].str.strip()
    text = title.where(venue == "", title + " at " + venue)
    cols = list(df.columns)
    ids = [
        f"{s}-{hashlib.sha1(chr(31).join(r).encode('utf-8')).hexdigest()[:16]}"
        for s, r in zip(source, df[cols].itertuples(index=False, name=None), strict=True)
    ]
    out = pd.DataFrame(
        {
            "event_id": ids,
            "start_ts": start.to_numpy(),
            "end_ts": end.to_numpy(dtype="datetime64[ns]"),
            "lat": lat.to_numpy(),
            "lon": lon.to_numpy(),
            "site_id": _nearest_sites(lat.to_numpy(), lon.to_numpy(), meta),
            "kind": source.to_numpy(dtype=object),
            "text": text.to_numpy(dtype=object),
            "source": ("citypulse:" + source).to_numpy(dtype=object),
        }
    )
    return out.drop_duplicates("event_id").reset_index(drop=True)


def _nearest_sites(lat: np.ndarray, lon: np.ndarray, meta: pd.DataFrame) -> np.ndarray:
    """The REPORT_ID of the segment line nearest each point, or None beyond EVENT_SITE_RADIUS_M.

    Distances on a local equirectangular plane: exact to well under a metre over a city.
    """
    out = np.full(len(lat), None, dtype=object)
    ok = ~(np.isnan(lat) | np.isnan(lon))
    if not ok.any() or meta.empty:
        return out
    lat0 = np.radians(np.nanmean(lat[ok]))

    def xy(la, lo):
        return np.asarray(lo) * np.cos(lat0) * _EARTH_M_PER_DEG, np.asarray(la) * _EARTH_M_PER_DEG

    px, py = xy(lat[ok], lon[ok])
    ax, ay = xy(meta["POINT_1_LAT"].to_numpy(), meta["POINT_1_LNG"].to_numpy())
    bx, by = xy(meta["POINT_2_LAT"].to_numpy(), meta["POINT_2_LNG"].to_numpy())
    dx, dy = bx - ax, by - ay
    length2 = dx * dx + dy * dy
    with np.errstate(invalid="ignore", divide="ignore"):
        t = ((px[:, None] - ax) * dx + (py[:, None] - ay) * dy) / length2
    t = np.clip(np.nan_to_num(t), 0.0, 1.0)
    dist = np.hypot(px[:, None] - (ax + t * dx), py[:, None] - (ay + t * dy))
    best = dist.argmin(axis=1)
    near = dist[np.arange(len(best)), best] <= EVENT_SITE_RADIUS_M
    ids = meta["REPORT_ID"].to_numpy(dtype=object)
    out[np.flatnonzero(ok)[near]] = ids[best[near]]
    return out
