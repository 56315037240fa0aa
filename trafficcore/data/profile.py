"""The typical day: mean reading per detector x day type (weekday / weekend or holiday) x time of day.

One definition shared by the historical-average baseline, the language model's scalers, the
explainer's "typical" reference and the dashboard, so "typical" means the same everywhere.
"""

from __future__ import annotations

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
    start = panel.times[0] if len(panel.times) else pd.Timestamp(0)
    times = pd.DatetimeIndex(start + rows.ravel() * panel.interval)
    weekend = np.asarray(times.day_of_week) >= 5
    hol = holiday_dates(panel)
    if hol:
        weekend |= np.isin(np.asarray(times.normalize().date), list(hol))
    minutes = np.asarray(times.hour * 60 + times.minute)
    slot = minutes // int(panel.interval / pd.Timedelta(minutes=1))
    return weekend.astype(np.int64).reshape(rows.shape), slot.astype(np.int64).reshape(rows.shape)


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
    np.add.at(sums, key, np.where(ok, vals, 0.0))
    np.add.at(counts, key, ok)
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
