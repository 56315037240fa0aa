"""Which detectors an event concerns, and when: the one rule the model's context, live ingest and the pages share.

An event is near a detector when

- it names the detector's site (`site_id`), or
- it lies within `radius_km` of the detector: distance to the event's geometry (a work zone's line, an
  incident's points) where the feed gives one, else to its point (`lat`, `lon`), or
- it is on the detector's own road (`road`, road names compared after `road_key`) within
  `ALONG_ROAD_FACTOR` x `radius_km`: a closure or a crash backs traffic up along its road further than it
  reaches the cross streets around it.

Events imported before live feeds existed have neither geometry nor road, so for them the rule is the one
the models were trained with (same site or within the radius of the point): nothing they read changes.

And an event is *in effect* at issue time t (what the model reads about it then) when a planned event
starts within the horizon plus an hour, or an unplanned one (a crash, an incident: `UNPLANNED_WORDS`) has
started, and it has not ended more than an hour before t (traffic takes a while to recover). An event
without an end is taken to last `DEFAULT_DURATION`. Public holidays are calendar facts, not events nearby.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

#: Words in `kind` that mark an unplanned event: known only once it has started.
UNPLANNED_WORDS = ("crash", "incident", "collision", "accident", "breakdown", "fault", "closure-unplanned")
#: How long an event without an end is taken to last.
DEFAULT_DURATION = pd.Timedelta(hours=2)
#: Events on a detector's own road reach this many times further than `radius_km`.
ALONG_ROAD_FACTOR = 1.5
#: An event stays in the context this long after its end.
AFTERGLOW = pd.Timedelta(hours=1)

_M_PER_DEG = 111_194.93  # metres per degree of latitude on the mean-radius sphere (haversine's radius)

#: Words of road names written one way everywhere (a feed's "Park Road" is the detector's "Park Rd").
_ABBREV = {
    "road": "rd", "street": "st", "avenue": "ave", "av": "ave", "boulevard": "blvd", "drive": "dr",
    "highway": "hwy", "lane": "ln", "place": "pl", "court": "ct", "parkway": "pkwy", "freeway": "fwy",
    "expressway": "expy", "terrace": "tce", "crescent": "cres", "square": "sq", "route": "rte",
    "interstate": "i", "saint": "st", "mount": "mt", "first": "1st", "second": "2nd", "third": "3rd",
    "fourth": "4th", "fifth": "5th", "sixth": "6th",
}
_PHRASES = (("state route", "sr"), ("state highway", "sh"), ("us highway", "us"), ("us route", "us"))
_DIRECTIONS = {"n", "s", "e", "w", "nb", "sb", "eb", "wb", "north", "south", "east", "west", "northbound",
               "southbound", "eastbound", "westbound", "both"}


def road_key(name: object) -> str:
    """A road name in one spelling: lower case, common words abbreviated, letters and digits apart, no
    trailing direction ("SR-99 N" and "State Route 99" both give "sr 99")."""
    if name is None or (not isinstance(name, str) and pd.isna(name)):
        return ""
    s = str(name).lower()
    for long, short in _PHRASES:
        s = s.replace(long, short)
    s = re.sub(r"(?<=[a-z])(?=\d)|(?<=\d)(?!(?:st|nd|rd|th)\b)(?=[a-z]{2,})", " ", s)  # "sr99": "sr 99"; "1st" stays
    words = [_ABBREV.get(w, w) for w in re.findall(r"[a-z0-9]+", s)]
    while len(words) > 1 and words[-1] in _DIRECTIONS:
        words.pop()
    return " ".join(words)


def road_keys(value: object) -> set[str]:
    """The roads an event is on: its `road` cell split at ';' and '/' ("Park Rd / 2nd Ave": both)."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return set()
    return {k for part in re.split(r"[;/]", str(value)) if (k := road_key(part))}


def _haversine_km(lat1, lon1, lat2, lon2) -> np.ndarray:
    from trafficcore.data.panel import haversine_km

    return haversine_km(lat1, lon1, lat2, lon2)


def _column(ev: pd.DataFrame, name: str) -> pd.Series:
    return ev[name] if name in ev.columns else pd.Series([None] * len(ev), index=ev.index, dtype=object)


def distances_km(lat: np.ndarray, lon: np.ndarray, ev: pd.DataFrame) -> np.ndarray:
    """(P, E) km from each point to each event: to its geometry where it has one, else to its point (NaN
    where either side has no position).

    Geometries are measured on a plane tangent at the points' mean latitude: within a metre over a city.
    """
    lat = np.asarray(lat, dtype=float)
    lon = np.asarray(lon, dtype=float)
    out = _haversine_km(lat[:, None], lon[:, None], ev["lat"].to_numpy(dtype=float)[None, :],
                        ev["lon"].to_numpy(dtype=float)[None, :]) if len(ev) else np.zeros((len(lat), 0))
    wkt = _column(ev, "geometry_wkt")
    has = wkt.notna().to_numpy() & (wkt.astype(str).str.strip() != "").to_numpy()
    if has.any() and len(lat):
        cols = np.flatnonzero(has)
        out[:, cols] = _to_geometries_km(lat, lon, wkt.to_numpy()[cols])
    return out


def _to_geometries_km(lat: np.ndarray, lon: np.ndarray, wkts: np.ndarray) -> np.ndarray:
    """(P, G) km from points to WKT geometries (every part: lines by their segments, points as points)."""
    import shapely

    geoms = shapely.from_wkt(wkts.astype(object))
    parts, owner = shapely.get_parts(geoms, return_index=True)
    coords, idx = shapely.get_coordinates(parts, return_index=True)
    ok = np.isfinite(lat) & np.isfinite(lon)
    lat0 = np.radians(np.nanmean(lat[ok])) if ok.any() else 0.0
    kx = np.cos(lat0) * _M_PER_DEG
    px, py = lon * kx, lat * _M_PER_DEG
    cx, cy = coords[:, 0] * kx, coords[:, 1] * _M_PER_DEG
    same = idx[1:] == idx[:-1]
    a = np.flatnonzero(same)  # segment k runs from coordinate a[k] to a[k] + 1
    counts = np.bincount(idx, minlength=len(parts))
    single = np.flatnonzero(counts[idx] == 1)  # a point part: a segment of length 0
    start = np.concatenate([a, single])
    end = np.concatenate([a + 1, single])
    seg_geom = owner[idx[start]]
    ax, ay, bx, by = cx[start], cy[start], cx[end], cy[end]
    dx, dy = bx - ax, by - ay
    len2 = dx * dx + dy * dy
    with np.errstate(invalid="ignore", divide="ignore"):
        t = ((px[:, None] - ax) * dx + (py[:, None] - ay) * dy) / len2
    t = np.clip(np.nan_to_num(t, nan=0.0, posinf=0.0, neginf=0.0), 0.0, 1.0)
    d = np.hypot(px[:, None] - (ax + t * dx), py[:, None] - (ay + t * dy)) / 1000.0  # (P, S)
    out = np.full((len(lat), len(wkts)), np.nan)
    if len(start):
        order = np.argsort(seg_geom, kind="stable")
        g_sorted = seg_geom[order]
        first = np.flatnonzero(np.r_[True, g_sorted[1:] != g_sorted[:-1]])
        out[:, g_sorted[first]] = np.minimum.reduceat(d[:, order], first, axis=1)
    out[~ok] = np.nan
    return out


def near_matrix(det: pd.DataFrame, ev: pd.DataFrame, radius_km: float,
                km: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(near, km), both (D, E): whether each event concerns each detector (module docstring) and how far it is.

    `det` needs `site_id`, `lat`, `lon` and optionally `road`; `ev` the events table's columns (`road` and
    `geometry_wkt` optional). `km`: the distances, when the caller has them already (`distances_km`).
    """
    site_d = det["site_id"].astype(object).to_numpy()
    near = _column(ev, "site_id").astype(object).to_numpy()[None, :] == site_d[:, None]
    lat = det["lat"].to_numpy(dtype=float)
    if km is None:
        if not len(ev) or (not ev["lat"].notna().any() and not _column(ev, "geometry_wkt").notna().any()):
            return near, np.full((len(det), len(ev)), np.nan)
        km = distances_km(lat, det["lon"].to_numpy(dtype=float), ev)
    close = np.nan_to_num(km, nan=1e9)
    near = near | ((close <= radius_km) & np.isfinite(lat)[:, None])
    events_on: dict[str, list[int]] = {}
    for j, r in enumerate(_column(ev, "road")):
        for k in road_keys(r):
            events_on.setdefault(k, []).append(j)
    if events_on and "road" in det.columns:
        on_road = np.zeros(km.shape, dtype=bool)
        for i, r in enumerate(det["road"]):
            on_road[i, events_on.get(road_key(r), [])] = True
        near = near | (on_road & (close <= radius_km * ALONG_ROAD_FACTOR))
    return near, km


def unplanned(kind: pd.Series) -> np.ndarray:
    """Per event: is it unplanned (visible only once started)?"""
    return kind.fillna("").astype(str).str.lower().str.contains("|".join(UNPLANNED_WORDS)).to_numpy()


def holiday(kind: pd.Series) -> np.ndarray:
    return kind.fillna("").astype(str).str.contains("holiday").to_numpy()


def ends(ev: pd.DataFrame) -> pd.Series:
    """Each event's end, `DEFAULT_DURATION` after its start where it has none."""
    start = pd.to_datetime(ev["start_ts"])
    return pd.to_datetime(ev["end_ts"]).fillna(start + DEFAULT_DURATION)


def in_effect(ev: pd.DataFrame, t, horizon_min: int) -> np.ndarray:
    """Per event: does a forecast issued at `t` for up to `horizon_min` minutes read it (module docstring)?"""
    if ev.empty:
        return np.zeros(0, dtype=bool)
    t = pd.Timestamp(t)
    start = pd.to_datetime(ev["start_ts"]).to_numpy()
    end = ends(ev).to_numpy()
    horizon = np.datetime64((t + pd.Timedelta(minutes=int(horizon_min)) + AFTERGLOW).to_datetime64())
    t64 = np.datetime64(t.to_datetime64())
    visible = np.where(unplanned(ev["kind"]), start <= t64, start <= horizon)
    return visible & (end >= np.datetime64((t - AFTERGLOW).to_datetime64())) & ~holiday(ev["kind"])


def readable(ev: pd.DataFrame) -> pd.DataFrame:
    """The events a model may read: all but cancelled ones (a cancelled event never happened)."""
    if ev.empty or "status" not in ev.columns:
        return ev
    return ev[ev["status"].fillna("").astype(str).str.lower() != "cancelled"].reset_index(drop=True)
