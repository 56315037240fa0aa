"""A dataset held in memory as a dense time x detector panel, the shape every model reads.

Loading is one pass over the store; afterwards windowing is pure array indexing, which is what
makes forecasting all detectors of a city in well under a second possible.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from trafficcore import config
from trafficcore.data.event_match import readable
from trafficcore.data.store import Store
from trafficcore.data.validate import MAX_IMPORT_GAP

if TYPE_CHECKING:
    from trafficcore.data.shard import ShardInfo

log = logging.getLogger(__name__)

EARTH_RADIUS_KM = 6371.0088


def haversine_km(lat1, lon1, lat2, lon2):
    """Great-circle distance in km (vectorised, broadcasting)."""
    lat1, lon1, lat2, lon2 = (np.radians(np.asarray(a, dtype=float)) for a in (lat1, lon1, lat2, lon2))
    a = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0, 1)))


@dataclass
class Panel:
    """values[t, d] = observation of detector d in the interval starting at times[t] (NaN: missing)."""

    dataset: str
    info: dict
    times: pd.DatetimeIndex
    detectors: pd.DataFrame  # one row per column of `values`, with site name/lat/lon joined
    values: np.ndarray  # float32 (T, D)
    sites: pd.DataFrame
    events: pd.DataFrame
    weather: pd.DataFrame
    adjacency: pd.DataFrame
    note: str = ""  # why the panel starts later than the dataset's first reading, when it does
    shard: ShardInfo | None = None  # set when the panel holds one rank's share of the detectors (data.shard)
    _col: dict[str, int] = field(default_factory=dict, repr=False, init=False)
    _neighbours: dict[tuple, np.ndarray] = field(default_factory=dict, repr=False, init=False)

    def __post_init__(self):
        self._col = {d: i for i, d in enumerate(self.detectors["detector_id"])}

    @property
    def interval(self) -> pd.Timedelta:
        return pd.Timedelta(seconds=int(self.info["interval_s"]))

    @property
    def synthetic(self) -> bool:
        return bool(self.info.get("synthetic", False))

    def column(self, detector_id: str) -> int:
        try:
            return self._col[detector_id]
        except KeyError:
            raise KeyError(f"unknown detector {detector_id!r} in dataset {self.dataset!r}") from None

    def time_at(self, rows) -> pd.DatetimeIndex:
        """Start times of grid rows, also past the newest reading (issue times for live forecasts)."""
        return pd.DatetimeIndex(self.times[0] + np.asarray(rows, dtype=np.int64) * self.interval)

    def index_of(self, ts) -> int:
        """Row of the interval starting at `ts` (must lie on the grid)."""
        ts = pd.Timestamp(ts)
        pos = (ts - self.times[0]) / self.interval
        if pos != int(pos):
            raise ValueError(f"{ts} is not on the {self.interval} grid of {self.dataset!r}")
        return int(pos)

    def frame(self, detector_ids=None, start=None, end=None) -> pd.DataFrame:
        """Wide frame (time index, detector columns) for a slice; a convenience for pages and reports."""
        cols = list(self.detectors["detector_id"]) if detector_ids is None else list(detector_ids)
        idx = [self.column(c) for c in cols]
        df = pd.DataFrame(self.values[:, idx], index=self.times, columns=cols)
        return df.loc[start:end] if (start is not None or end is not None) else df

    def neighbours(self, detector_id: str, k: int = 4, method: str = "distance") -> list[str]:
        """Spatial neighbours of a detector among detectors of *other* sites with the same measure.

        method="distance": the k nearest by great-circle distance; method="graph": detectors at
        sites adjacent in the source's own graph (or shared road names, for SCATS), nearest first,
        topped up by distance to k.
        """
        row = self.neighbour_matrix(k, method)[self.column(detector_id)]
        ids = self.detectors["detector_id"].to_numpy()
        return [ids[i] for i in row if i >= 0]

    def neighbour_matrix(self, k: int = 4, method: str = "distance") -> np.ndarray:
        """(D, k) column indices of each detector's neighbours (-1 where fewer exist); cached."""
        if method not in ("distance", "graph"):
            raise ValueError(f"method must be 'distance' or 'graph', not {method!r}")
        key = (k, method)
        if self.shard is not None:  # ranked over the whole network when the shard was loaded
            return self.shard.neighbour_matrix(key)
        if key not in self._neighbours:
            self._neighbours[key] = self._rank_neighbours(k, method)
        return self._neighbours[key]

    def _rank_neighbours(self, k: int, method: str) -> np.ndarray:
        det = self.detectors
        lat, lon = det["lat"].to_numpy(float), det["lon"].to_numpy(float)
        site = det["site_id"].astype(str).to_numpy()
        measure = det["measure"].astype(str).to_numpy()
        dist = haversine_km(lat[:, None], lon[:, None], lat[None, :], lon[None, :])
        dist = np.where(np.isfinite(dist), dist, 1e6)
        excluded = (site[:, None] == site[None, :]) | (measure[:, None] != measure[None, :])
        score = np.where(excluded, np.inf, dist)
        if method == "graph" and not self.adjacency.empty:
            pairs = set(zip(self.adjacency["src"].astype(str), self.adjacency["dst"].astype(str), strict=True))
            sites = np.unique(site)
            linked_sites = np.array([[(a, b) in pairs for b in sites] for a in sites])
            pos = np.searchsorted(sites, site)
            linked = linked_sites[pos[:, None], pos[None, :]]
            score = np.where(linked & ~excluded, score - 1e7, score)  # graph neighbours first, nearest first
        order = np.argsort(score, axis=1, kind="stable")[:, :k]
        ok = np.isfinite(np.take_along_axis(score, order, axis=1))
        out = np.where(ok, order, -1).astype(np.int64)
        if out.shape[1] < k:
            out = np.hstack([out, np.full((len(det), k - out.shape[1]), -1, np.int64)])
        return out


#: The readings of the selected detectors (`_sel`: detector_id, col), each with its panel row (parameters: grid
#: start, interval in microseconds, dataset, grid start). Module-level so that tests can EXPLAIN exactly it.
VALUES_SQL = """SELECT c.col, (epoch_us(o.ts) - epoch_us(?::TIMESTAMP)) // ? AS r, o.value
                FROM observations o JOIN _sel c USING (detector_id) WHERE o.dataset = ? AND o.ts >= ?"""


def detector_table(store: Store, dataset: str, measure: str | None = None) -> pd.DataFrame:
    """The panel's detector rows (site name and position joined), in panel column order."""
    det = store.query(
        """SELECT d.detector_id, d.site_id, d.approach, d.description, d.road, d.lanes, d.measure, d.interval_s,
                  coalesce(d.lat, s.lat) AS lat, coalesce(d.lon, s.lon) AS lon,
                  s.name AS site_name, s.description AS site_description
           FROM detectors d LEFT JOIN sites s ON s.dataset = d.dataset AND s.site_id = d.site_id
           WHERE d.dataset = ? ORDER BY d.site_id, d.detector_id""",
        [dataset],
    )
    if measure is not None:
        det = det[det["measure"] == measure].reset_index(drop=True)
    return det


def load_panel(store: Store, dataset: str, measure: str | None = None, detectors=None) -> Panel:
    """Read one dataset from the store into a Panel (optionally only detectors of one measure).

    `detectors`: read only these detectors' readings (ids; the panel's columns are those of them the dataset
    has, in panel order). The time grid is still the whole dataset's, so that panels of different detectors
    line up row by row (`trafficcore.data.shard` loads one rank's share so); the filter reaches the scan
    (DuckDB pushes the join's detector ids into a Parquet read and skips row groups of other detectors)."""
    info = store.dataset_info(dataset)
    det = detector_table(store, dataset, measure)
    interval = pd.Timedelta(seconds=int(info["interval_s"]))
    # Fetched as numpy with each reading's column and row computed in SQL: a pandas frame of
    # millions of rows costs ten times more than the panel it fills.
    cols = pd.DataFrame({"detector_id": det["detector_id"], "col": np.arange(len(det), dtype=np.int64)})
    if detectors is not None:
        det = det[det["detector_id"].isin(set(map(str, detectors)))].reset_index(drop=True)
    sel = pd.DataFrame({"detector_id": det["detector_id"], "col": np.arange(len(det), dtype=np.int64)})
    with store.connect() as con:
        con.register("_cols", cols)
        con.register("_sel", sel)
        lo, hi, n = con.execute(
            "SELECT min(ts), max(ts), count(*) FROM observations o JOIN _cols c USING (detector_id) "
            "WHERE o.dataset = ?",
            [dataset],
        ).fetchone()
        note = ""
        if lo is not None:
            lo, hi = pd.Timestamp(lo), pd.Timestamp(hi)
            start, note = _bounded_start(con, dataset, lo, hi, interval, len(cols), int(n))
        times = pd.DatetimeIndex([], dtype="datetime64[ns]") if lo is None else pd.date_range(start, hi, freq=interval)
        values = np.full((len(times), len(det)), np.nan, dtype=np.float32)
        if lo is not None:
            got = con.execute(
                VALUES_SQL,
                [start.to_pydatetime(), int(interval.total_seconds() * 1_000_000), dataset, start.to_pydatetime()],
            ).fetchnumpy()
            values[np.asarray(got["r"], dtype=np.int64), np.asarray(got["col"], dtype=np.int64)] = np.asarray(
                got["value"], dtype=np.float32
            )
        con.unregister("_cols")
        con.unregister("_sel")
    return Panel(
        dataset=dataset,
        info=info,
        times=times,
        detectors=det,
        values=values,
        sites=store.sites(dataset),
        events=readable(store.events(dataset)),
        weather=store.weather(dataset),
        adjacency=store.adjacency(dataset),
        note=note,
    )


def _bounded_start(con, dataset: str, lo: pd.Timestamp, hi: pd.Timestamp, interval: pd.Timedelta, detectors: int,
                   readings: int) -> tuple[pd.Timestamp, str]:
    """Where the dense grid starts (on the grid of the first reading), and why when that is not `lo`.

    Why: the grid is dense from first to newest reading, so one stray reading decades before the rest
    (written before imports checked dates, or by hand) would cost gigabytes for every load. Readings
    before the newest gap longer than `MAX_IMPORT_GAP` (the gap an import refuses) are left out, and
    the grid never holds more than `config.max_panel_cells()` cells: beyond it, the newest intervals
    that fit are kept (forecasts need the recent past). A grid at least a quarter filled skips the
    gap search: such a dataset has no decades-long hole.
    """
    step = interval.value
    rows = (hi - lo).value // step + 1
    start, why = lo, ""
    if rows * max(detectors, 1) > 4 * max(readings, 1):
        after_gap = con.execute(
            """SELECT max(ts) FROM (SELECT ts, lag(ts) OVER (ORDER BY ts) AS prev FROM
                   (SELECT DISTINCT o.ts FROM observations o JOIN _cols c USING (detector_id) WHERE o.dataset = ?))
               WHERE epoch_us(ts) - epoch_us(prev) > ?""",
            [dataset, MAX_IMPORT_GAP.value // 1000],
        ).fetchone()[0]
        if after_gap is not None:
            start = _on_grid(lo, pd.Timestamp(after_gap), step)
            why = f"a gap of more than {MAX_IMPORT_GAP.days} days without readings"
    max_rows = max(1, config.max_panel_cells() // max(detectors, 1))
    if (hi - start).value // step + 1 > max_rows:
        start = _on_grid(lo, hi - (max_rows - 1) * interval, step)
        why = f"the {config.max_panel_cells():,}-cell limit of a panel (TRAFFICCORE_MAX_PANEL_CELLS)"
    if start == lo:
        return lo, ""
    note = f"readings of {dataset!r} before {start} ({lo} onwards) are left out: {why}"
    log.warning(note)
    return start, note


def _on_grid(lo: pd.Timestamp, ts: pd.Timestamp, step: int) -> pd.Timestamp:
    """The first interval start of the grid anchored at `lo` at or after `ts`."""
    k = -(-(ts - lo).value // step)
    return lo + pd.Timedelta(k * step, unit="ns")
