"""The typical day: mean reading per detector x day type (weekday / weekend or holiday) x time of day.

One definition shared by the historical-average baseline, the language model's scalers, the
explainer's "typical" reference and the dashboard, so "typical" means the same everywhere.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import pandas as pd

from trafficcore.data.panel import Panel
from trafficcore.data.windows import holiday_dates


def nanmean(a: np.ndarray, axis: int) -> np.ndarray:
    """nanmean without the all-NaN warning (all-NaN slices give NaN)."""
    ok = np.isfinite(a)
    n = ok.sum(axis=axis)
    s = np.where(ok, a, 0.0).sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, s / np.maximum(n, 1), np.nan)


def slots_per_day(panel: Panel) -> int:
    return int(pd.Timedelta(days=1) / panel.interval)


def daytype_slot(panel: Panel, rows) -> tuple[np.ndarray, np.ndarray]:
    """Day type (0 weekday, 1 weekend or holiday) and time-of-day slot of panel rows (may lie past the end)."""
    rows = np.asarray(rows, dtype=np.int64)
    uniq, inv = np.unique(rows.ravel(), return_inverse=True)  # a batch of samples shares a few issue times
    start = panel.times[0] if len(panel.times) else pd.Timestamp(0)
    times = pd.DatetimeIndex(start + uniq * panel.interval)
    weekend = np.asarray(times.day_of_week) >= 5
    hol = holiday_dates(panel)
    if hol:
        weekend |= np.isin(np.asarray(times.normalize().date), list(hol))
    minutes = np.asarray(times.hour * 60 + times.minute)
    slot = minutes // int(panel.interval / pd.Timedelta(minutes=1))
    return (weekend.astype(np.int64)[inv].reshape(rows.shape), slot.astype(np.int64)[inv].reshape(rows.shape))


def slot_means(panel: Panel, rows, values: np.ndarray | None = None) -> np.ndarray:
    """(D, 2, slots) mean of `values` (default: the panel's readings) over `rows`; NaN where none."""
    return slot_table(panel, rows, values)[0]


def slot_table(panel: Panel, rows, values: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """`slot_means` and, per cell, how many readings it averages ((D, 2, slots) each)."""
    rows = np.asarray(rows, dtype=np.int64)
    vals = (panel.values if values is None else values)[rows].astype(np.float64)
    n_slots = slots_per_day(panel)
    daytype, slot = daytype_slot(panel, rows)
    key = daytype * n_slots + slot
    ok = np.isfinite(vals)
    sums = np.zeros((2 * n_slots, vals.shape[1]))
    counts = np.zeros((2 * n_slots, vals.shape[1]))
    if len(key):  # rows grouped by slot (stable), each group summed in row order: np.add.at's sums, 10x faster
        order = np.argsort(key, kind="stable")
        groups, starts = np.unique(key[order], return_index=True)
        sums[groups] = np.add.reduceat(np.where(ok, vals, 0.0)[order], starts, axis=0)
        counts[groups] = np.add.reduceat(ok[order].astype(np.float64), starts, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        table = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    shape = (vals.shape[1], 2, n_slots)
    return table.T.reshape(shape), counts.T.reshape(shape)


def row_mask(rows, n_rows: int) -> np.ndarray:
    """(n_rows,) bool: True at `rows` (those past the end ignored)."""
    rows = np.asarray(rows, dtype=np.int64)
    mask = np.zeros(n_rows, dtype=bool)
    mask[rows[(rows >= 0) & (rows < n_rows)]] = True
    return mask


def without_own_reading(mean: np.ndarray, count: np.ndarray, values: np.ndarray, rows: np.ndarray,
                        cols: np.ndarray, fit_rows: np.ndarray) -> np.ndarray:
    """Profile values looked up for panel cells (rows, cols), each without that very cell's reading when the cell
    is one the profile averaged ("leave own out"): (mean * count - reading) / (count - 1).

    `mean` and `count` are the looked-up profile values and how many readings each averages (same shape as
    `rows` broadcast with `cols`); `fit_rows` is the (T,) mask of the rows the profile was fit on. A training
    sample then reads the profile as a day outside the training rows would (see the models' `leave_own_out`).
    """
    n = len(fit_rows)
    rows, cols = np.broadcast_arrays(np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64))
    r = np.clip(rows, 0, n - 1)
    v = values[r, cols].astype(np.float64)
    own = (rows >= 0) & (rows < n) & fit_rows[r] & np.isfinite(v) & (count > 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        fixed = (np.asarray(mean, dtype=np.float64) * count - np.where(own, v, 0.0)) / np.maximum(count - 1, 1)
    return np.where(own, fixed, mean)


class DetectorProfile:
    """Each detector's typical day and size, fit on the rows a model may learn from; keyed by detector id.

    One class for every model (gradient boosting and the baselines look values up with `lookup`; the
    language model reads whole aligned tables with `for_panel`), so "typical" and "leave own out" mean the
    same in both. Holds:

    - `table[d, k, slot]`: mean reading per detector x day type x time of day (NaN where never seen);
    - `cross[k, slot]`: the mean of `table` over detectors (the baselines' fallback), then `overall`;
    - `scale[d]`: the detector's mean reading (the language model divides everything by it);
    - `shape[k, slot]`: the cross-site mean of table / scale (the language model's fallback, times the median
      scale for a detector it never saw).

    Training only (not saved): the fit rows and readings per cell, for `leave_own_out`.
    """

    def __init__(self, detector_ids: list[str], interval_min: int, table: np.ndarray, cross: np.ndarray,
                 overall: float, scale: np.ndarray, shape: np.ndarray):
        self.detector_ids = list(detector_ids)
        self.interval_min = int(interval_min)
        self.table = np.asarray(table, dtype=np.float32)
        self.cross = np.asarray(cross, dtype=np.float32)
        self.overall = float(overall)
        self.scale = np.asarray(scale, dtype=np.float32)
        self.shape = np.asarray(shape, dtype=np.float32)
        self._index = pd.Index(self.detector_ids)
        self._fit: tuple[np.ndarray, np.ndarray] | None = None  # (rows, readings per cell): training only
        self._raw: dict[str, np.ndarray] = {}  # training only: float64 tables, mean and sum of readings per detector
        self._loo: tuple[np.ndarray, np.ndarray] | None = None  # active `leaving_own_out` (row mask, counts)

    @classmethod
    def fit(cls, panel: Panel, rows, exclude: set[str] | None = None) -> DetectorProfile:
        """Fit on panel rows (those outside the panel ignored); `exclude` names detectors to treat as unseen."""
        rows = np.unique(np.asarray(rows, dtype=np.int64))
        rows = rows[(rows >= 0) & (rows < len(panel.times))]
        values = panel.values
        if exclude:
            values = values.copy()
            values[:, [i for i, d in enumerate(panel.detectors["detector_id"]) if d in exclude]] = np.nan
        table, counts = slot_table(panel, rows, values)
        vals = values[rows].astype(np.float64)
        ok = np.isfinite(vals)
        overall = float(np.nanmean(vals)) if ok.any() else 0.0
        scale = nanmean(vals, axis=0)
        prof = cls._assemble(list(panel.detectors["detector_id"]), int(panel.interval / pd.Timedelta(minutes=1)),
                             table, scale, overall)
        prof._fit = (rows, counts.astype(np.float32))
        prof._raw = {"table": table, "scale": scale, "sum": np.where(ok, vals, 0.0).sum(axis=0),
                     "n": ok.sum(axis=0).astype(np.float64)}
        return prof

    @classmethod
    def _assemble(cls, detector_ids: list[str], interval_min: int, table: np.ndarray, scale: np.ndarray,
                  overall: float) -> DetectorProfile:
        """The cross-detector parts (fallbacks, shape) from per-detector tables and mean readings."""
        cross = nanmean(table, axis=0)
        cross = np.where(np.isfinite(cross), cross, overall)
        seen = np.isfinite(scale) & (scale > 0)
        if not seen.any():
            raise ValueError("no training readings at all: cannot fit detector profiles")
        scale = np.where(seen, np.maximum(scale, 1e-3), np.nan)
        shape = nanmean(table[seen] / scale[seen, None, None], axis=0)
        shape = np.where(np.isfinite(shape), shape, 1.0)
        return cls(detector_ids, interval_min, table, cross, overall, scale, shape)

    # ---------------------------------------------------------------- fitting in shards
    def part(self, detector_ids) -> dict:
        """This fitted profile's per-detector arrays for some of its detectors: what `combine` needs from one
        rank that fit the profile on its share of the detectors (`trafficcore.data.shard`)."""
        if self._fit is None:
            raise ValueError("a loaded profile has no fit to share; fit it on the panel first")
        detector_ids = list(detector_ids)
        idx = self._index.get_indexer(detector_ids)
        if (idx < 0).any():
            missing = [d for d, i in zip(detector_ids, idx, strict=True) if i < 0]
            raise KeyError(f"detectors not in this profile: {missing[:3]}")
        return {"ids": list(detector_ids), "counts": self._fit[1][idx], "rows": self._fit[0],
                "interval_min": self.interval_min, **{k: v[idx] for k, v in self._raw.items()}}

    @classmethod
    def combine(cls, parts: list[dict], detector_ids: list[str]) -> DetectorProfile:
        """The profile of the whole network from per-shard `part`s, detectors in `detector_ids` order: the same
        arrays as fitting on one panel of all of them, except `overall` (the mean of all readings, here summed
        per detector first: equal up to float rounding; only a slot no detector was seen in reads it)."""
        ids = [d for p in parts for d in p["ids"]]
        order = pd.Index(ids).get_indexer(list(detector_ids))
        if (order < 0).any() or len(ids) != len(detector_ids):
            raise ValueError("the shards' profiles do not cover each detector exactly once")

        def cat(key: str) -> np.ndarray:
            return np.concatenate([np.asarray(p[key]) for p in parts])[order]

        total, n = cat("sum").sum(), cat("n").sum()
        raw = {k: cat(k) for k in ("table", "scale", "sum", "n")}
        prof = cls._assemble(list(detector_ids), parts[0]["interval_min"], raw["table"], raw["scale"],
                             float(total / n) if n else 0.0)
        prof._fit = (parts[0]["rows"], cat("counts"))
        prof._raw = raw
        return prof

    # ---------------------------------------------------------------- leave own out
    def own_out_tables(self, panel: Panel) -> tuple[np.ndarray, np.ndarray] | None:
        """(rows the profile was fit on as a (T,) mask, readings per cell aligned with the panel's columns), or
        None when unknown (a loaded profile).

        Why leave own out: a training sample's profile is an average that contains the sample's own reading
        (weight 1/6 on a weekend slot of three training weeks). A model trained on that learns to trust the
        profile more than it deserves on days it has never seen (validation, test, live). Training inputs
        therefore read each cell without the reading of the very row being looked up, the same as for a day
        outside the training rows.
        """
        if self._fit is None:
            return None
        idx = self.columns_for(panel)
        counts = np.where((idx >= 0)[:, None, None], self._fit[1][np.clip(idx, 0, None)], 0.0)
        return row_mask(self._fit[0], len(panel.times)), counts.astype(np.float32)

    @contextmanager
    def leaving_own_out(self, panel: Panel):
        """Within this block `lookup` leaves each fit row's own reading out (nothing changes for a loaded profile)."""
        loo = self.own_out_tables(panel)
        if loo is None:
            yield self
            return
        self._loo = loo
        try:
            yield self
        finally:
            self._loo = None

    # ---------------------------------------------------------------- reading it
    def columns_for(self, panel: Panel) -> np.ndarray:
        """Row of the tables for each panel column (-1 for detectors this profile never saw)."""
        if int(panel.interval / pd.Timedelta(minutes=1)) != self.interval_min:
            raise ValueError(f"profile was fit on {self.interval_min}-minute data, panel is {panel.interval}")
        return self._index.get_indexer(panel.detectors["detector_id"])

    def lookup(self, panel: Panel, det_idx: np.ndarray, rows: np.ndarray, cross_only: bool = False) -> np.ndarray:
        """Profile value of panel columns `det_idx` at panel rows `rows` (same shape; rows < 0 -> NaN); unseen
        cells fall back to the cross-detector mean."""
        det_idx, rows = np.broadcast_arrays(np.asarray(det_idx), np.asarray(rows, dtype=np.int64))
        r = np.clip(rows, 0, None)
        daytype, slot = daytype_slot(panel, np.arange(int(r.max(initial=0)) + 1))  # per row once, then gathered
        daytype, slot = daytype[r], slot[r]
        out = self.cross[daytype, slot].astype(np.float64)
        if not cross_only:
            prow = self.columns_for(panel)[det_idx]
            own = np.where(prow >= 0, self.table[np.clip(prow, 0, None), daytype, slot], np.nan)
            if self._loo is not None:
                n = np.where(prow >= 0, self._loo[1][det_idx, daytype, slot], 0.0)
                own = without_own_reading(own, n, panel.values, rows, det_idx, self._loo[0])
            out = np.where(np.isfinite(own), own, out)
        return np.where(rows >= 0, out, np.nan)

    def level(self, panel: Panel) -> np.ndarray:
        """Mean profile value of each panel column (the detector's typical size; NaN if unseen)."""
        prow = self.columns_for(panel)
        lv = nanmean(self.table.reshape(len(self.detector_ids), -1), axis=1)
        return np.where(prow >= 0, lv[np.clip(prow, 0, None)], np.nan)

    def for_panel(self, panel: Panel) -> tuple[np.ndarray, np.ndarray]:
        """(scale (D,), table (D, 2, slots)) aligned with the panel's columns; a detector never seen gets the
        median scale, a cell never seen the cross-site shape times the detector's scale."""
        if self.table.shape[2] != slots_per_day(panel):
            raise ValueError(f"model was fit on {self.table.shape[2]} slots a day, "
                             f"the panel has {slots_per_day(panel)}")
        idx = self.columns_for(panel)
        scale = np.where(idx >= 0, self.scale[np.clip(idx, 0, None)], np.nan)
        scale = np.where(np.isfinite(scale), scale, float(np.nanmedian(self.scale))).astype(np.float32)
        prof = np.where((idx >= 0)[:, None, None], self.table[np.clip(idx, 0, None)], np.nan)
        prof = np.where(np.isfinite(prof), prof, self.shape[None] * scale[:, None, None])
        return scale, prof.astype(np.float32)

    # ---------------------------------------------------------------- saving it
    def tensors(self, prefix: str = "profile") -> dict[str, np.ndarray]:
        return {f"{prefix}.{k}": np.ascontiguousarray(getattr(self, k)) for k in ("table", "cross", "scale", "shape")}

    def config(self) -> dict:
        return {"detector_ids": self.detector_ids, "interval_min": self.interval_min, "overall": self.overall}

    @classmethod
    def restore(cls, cfg: dict, tensors: dict[str, np.ndarray], prefix: str = "profile") -> DetectorProfile:
        t = {k: np.asarray(tensors[f"{prefix}.{k}"]) for k in ("table", "cross", "scale", "shape")}
        return cls(cfg["detector_ids"], cfg["interval_min"], overall=cfg["overall"], **t)
