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
        """Each detector's k best candidates: detectors of other sites with the same measure, those at sites
        the adjacency links to first (graph method), each group nearest first by great-circle distance, ties
        by column; a detector without coordinates counts as 1e6 km from every other.

        Why not one (D, D) distance matrix: at 8,000 detectors it takes gigabytes and seconds; a k-d tree
        over unit vectors finds the same candidates in O(D log D) (the chord grows with the great-circle
        distance), and the exact distances are then computed for those candidates only.
        """
        det = self.detectors
        n = len(det)
        out = np.full((n, k), -1, dtype=np.int64)
        if n == 0 or k <= 0:
            return out
        lat, lon = det["lat"].to_numpy(float), det["lon"].to_numpy(float)
        site = det["site_id"].astype(str).to_numpy()
        measure = det["measure"].astype(str).to_numpy()
        links = self._site_links() if method == "graph" and not self.adjacency.empty else {}
        for m in np.unique(measure):
            group = np.flatnonzero(measure == m)
            _NeighbourSearch(lat, lon, site, group, links).rank_into(out, k)
        return out

    def _site_links(self) -> dict[str, set[str]]:
        """site -> the sites the adjacency leads to from it."""
        links: dict[str, set[str]] = {}
        for a, b in zip(self.adjacency["src"].astype(str), self.adjacency["dst"].astype(str), strict=True):
            links.setdefault(a, set()).add(b)
        return links


class _NeighbourSearch:
    """Neighbour ranking among the detectors of one measure (`Panel._rank_neighbours`)."""

    FAR_KM = 1e6  # the distance of a detector without coordinates

    def __init__(self, lat: np.ndarray, lon: np.ndarray, site: np.ndarray, group: np.ndarray, links: dict):
        from scipy.spatial import cKDTree

        self.lat, self.lon, self.site, self.group, self.links = lat, lon, site, group, links
        finite = np.isfinite(lat[group]) & np.isfinite(lon[group])
        self.with_xy, self.without_xy = group[finite], group[~finite]  # both ascending
        phi, lam = np.radians(lat[self.with_xy]), np.radians(lon[self.with_xy])
        self.xyz = np.c_[np.cos(phi) * np.cos(lam), np.cos(phi) * np.sin(lam), np.sin(phi)]
        self.tree = cKDTree(self.xyz) if len(self.with_xy) else None
        order = np.argsort(site[group], kind="stable")  # by site, columns ascending within each
        names, starts = np.unique(site[group][order], return_index=True)
        ends = np.r_[starts[1:], len(order)]
        self.by_site = {str(s): group[order[a:b]] for s, a, b in zip(names, starts, ends, strict=True)}
        self.site_max = max((len(v) for v in self.by_site.values()), default=0)

    def dist(self, i: int, cols: np.ndarray) -> np.ndarray:
        d = haversine_km(self.lat[i], self.lon[i], self.lat[cols], self.lon[cols])
        return np.where(np.isfinite(d), d, self.FAR_KM)

    def ordered(self, i: int, cols: np.ndarray, offset: float = 0.0) -> np.ndarray:
        """`cols` nearest first, ties by column. `offset` is added to the distances as the ranking always
        did for graph neighbours (-1e7 km: in float64 that rounds distances to about 2e-9 km, so nearly
        equal distances tie and go by column; kept so that every model sees the neighbours it was fit on)."""
        cols = np.sort(cols)
        return cols[np.argsort(self.dist(i, cols) + offset, kind="stable")]

    def rank_into(self, out: np.ndarray, k: int) -> None:
        self.first_query: dict[int, np.ndarray] = {}
        if self.tree is not None:  # one batched query for every detector; `nearest` widens it where needed
            q = min(len(self.with_xy), k + 2 * self.site_max + 1)
            _, idx = self.tree.query(self.xyz, k=q)
            self.first_query = dict(zip(self.with_xy.tolist(), np.asarray(idx).reshape(len(self.with_xy), -1),
                                        strict=True))
        for i in self.group:
            linked_sites = self.links.get(self.site[i], ())
            linked = [self.by_site[s] for s in linked_sites if s != self.site[i] and s in self.by_site]
            first = self.ordered(i, np.concatenate(linked), -1e7) if linked else np.array([], dtype=np.int64)
            chosen = list(first[:k])
            if len(chosen) < k:
                skip = set(first.tolist()) | set(self.by_site[self.site[i]].tolist())
                chosen += self.nearest(i, k - len(chosen), skip)
            out[i, :len(chosen)] = chosen

    def nearest(self, i: int, need: int, skip: set) -> list[int]:
        """The `need` nearest detectors of the group not in `skip` (ties by column; without coordinates last)."""
        got: list[int] = []
        if np.isfinite(self.lat[i]) and np.isfinite(self.lon[i]) and self.tree is not None:
            n = len(self.with_xy)
            q = min(n, need + len(skip) + self.site_max + 1)
            phi, lam = np.radians(self.lat[i]), np.radians(self.lon[i])
            x = [np.cos(phi) * np.cos(lam), np.cos(phi) * np.sin(lam), np.sin(phi)]
            ready = self.first_query.get(int(i))
            while True:
                if ready is not None and len(ready) >= q:
                    idx, ready = ready[:q], None
                else:
                    ready = None
                    _, idx = self.tree.query(x, k=q)
                cols = self.with_xy[np.atleast_1d(idx)]
                d = self.dist(i, cols)
                keep = np.array([c not in skip for c in cols.tolist()], dtype=bool)
                cand = self.ordered(i, cols[keep])
                if q >= n:
                    got = list(cand[:need])
                    break
                if len(cand) >= need:
                    cut = self.dist(i, cand[need - 1:need])[0]
                    if d.max() > cut + 1e-9:  # nothing beyond the query can tie with or beat the last one kept
                        got = list(cand[:need])
                        break
                q = min(n, 2 * q)
        else:  # every distance is FAR_KM: by column, with or without coordinates
            return [int(c) for c in self.group if int(c) not in skip][:need]
        if len(got) < need:
            rest = self.without_xy[[c not in skip for c in self.without_xy.tolist()]]
            got += list(rest[:need - len(got)])
        return [int(c) for c in got]


#: The readings of the selected detectors (`_sel`: detector_id, col), each as its flat cell in the (rows x selected
#: detectors) grid (parameters: grid start, interval in microseconds, number of selected detectors, dataset, grid
#: start). Module-level so that tests can EXPLAIN exactly it.
VALUES_SQL = """SELECT ((epoch_us(o.ts) - epoch_us(?::TIMESTAMP)) // ?) * ? + c.col AS cell, o.value::FLOAT AS value
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
            # each reading's cell as one flat index, and 4-byte values: a region's 20 million readings cross over
            # and land in the grid in half the time of (row, column) pairs
            got = con.execute(
                VALUES_SQL,
                [start.to_pydatetime(), int(interval.total_seconds() * 1_000_000), len(det), dataset,
                 start.to_pydatetime()],
            ).fetchnumpy()
            values.reshape(-1)[np.asarray(got["cell"], dtype=np.int64)] = np.asarray(got["value"], dtype=np.float32)
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
