"""Windowing: the one function that turns canonical tables (via a Panel) into model samples.

A sample is (detector d, issue time t). Conventions, relied on by every model and by the
leakage test:
- an observation's `ts` is the *start* of its interval; at issue time t the newest usable
  reading is the interval starting at t - interval (it ended at t);
- horizon h minutes targets the interval ending at t + h, i.e. starting at t + h - interval
  (so `target_ts = issued_at + horizon - interval`);
- inputs use only rows strictly before t: history, neighbours, and "same time last week" for
  each target (which lies a week before the target, hence before t for horizons < 7 days).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from trafficcore.data.event_match import (
    UNPLANNED_WORDS,  # noqa: F401 - re-exported: models import it from here
    in_effect,
    near_matrix,
)
from trafficcore.data.panel import Panel

WEEK = pd.Timedelta(days=7)


@dataclass(frozen=True)
class WindowSpec:
    """How much history and which horizons; `history_steps` counts intervals before t."""

    history_steps: int = 16
    horizons_min: tuple[int, ...] = (15, 30, 45, 60)
    n_neighbours: int = 4
    neighbour_method: str = "graph"
    event_radius_km: float = 1.0

    def horizon_steps(self, interval: pd.Timedelta) -> np.ndarray:
        steps = np.array([pd.Timedelta(minutes=h) / interval for h in self.horizons_min])
        if not np.allclose(steps, np.round(steps)) or (steps < 1).any():
            raise ValueError(f"horizons {self.horizons_min} are not whole multiples of the {interval} interval")
        return steps.astype(np.int64)


@dataclass
class Samples:
    """Arrays for N samples; NaN marks missing readings (inputs) or unknown truth (targets)."""

    detector_idx: np.ndarray  # (N,) column in panel.values
    issue_idx: np.ndarray  # (N,) row of the issue time in panel.times
    history: np.ndarray  # (N, H) detector's own last H readings, oldest first
    neighbours: np.ndarray  # (N, K, H) neighbours' last H readings
    last_week: np.ndarray  # (N, S) reading one week before each target
    calendar: np.ndarray  # (N, C) see CALENDAR_FEATURES
    targets: np.ndarray  # (N, S) truth per horizon
    spec: WindowSpec = field(repr=False)

    def __len__(self) -> int:
        return len(self.detector_idx)

    def subset(self, mask) -> Samples:
        take = np.flatnonzero(mask) if np.asarray(mask).dtype == bool else np.asarray(mask)
        return Samples(
            self.detector_idx[take],
            self.issue_idx[take],
            self.history[take],
            self.neighbours[take],
            self.last_week[take],
            self.calendar[take],
            self.targets[take],
            self.spec,
        )


CALENDAR_FEATURES = ["tod_sin", "tod_cos", "dow_sin", "dow_cos", "weekend", "holiday"]


def issue_grid(panel: Panel, start=None, end=None, spec: WindowSpec = WindowSpec()) -> np.ndarray:
    """Rows of panel.times usable as issue times in [start, end): enough history before them."""
    rows = np.arange(len(panel.times))
    ok = rows >= spec.history_steps
    if start is not None:
        ok &= panel.times >= pd.Timestamp(start)
    if end is not None:
        ok &= panel.times < pd.Timestamp(end)
    return rows[ok]


def holiday_dates(panel: Panel) -> frozenset:
    """Dates marked as public holidays by events of kind 'holiday' (the demo city has some).

    Kept on the panel after the first call (keyed by its events frame): explanations and day profiles
    ask for it hundreds of times per page, and building it costs about 2 ms each time.
    """
    ev = panel.events
    memo = panel.__dict__.setdefault("_holidays", {})
    hit = memo.get(id(ev))
    if hit is not None and hit[0] is ev:
        return hit[1]
    out = frozenset(_holiday_dates(ev))
    memo.clear()
    memo[id(ev)] = (ev, out)
    return out


def _holiday_dates(ev: pd.DataFrame) -> set:
    if ev.empty:
        return set()
    hol = ev[ev["kind"].fillna("").str.contains("holiday", case=False)]
    out: set = set()
    for s, e in zip(hol["start_ts"], hol["end_ts"], strict=True):
        e = s if pd.isna(e) else e
        out.update(pd.date_range(pd.Timestamp(s).normalize(), pd.Timestamp(e).normalize(), freq="D").date)
    return out


def calendar_features(times: pd.DatetimeIndex, holidays: set) -> np.ndarray:
    """Cyclic time of day and day of week, weekend and holiday flags (local time)."""
    tod = np.asarray(times.hour * 60 + times.minute) / 1440.0
    dow = np.asarray(times.day_of_week) / 7.0
    weekend = np.asarray(times.day_of_week) >= 5
    hol = np.array([d in holidays for d in times.date]) if holidays else np.zeros(len(times), bool)
    return np.stack(
        [
            np.sin(2 * np.pi * tod),
            np.cos(2 * np.pi * tod),
            np.sin(2 * np.pi * dow),
            np.cos(2 * np.pi * dow),
            weekend.astype(float),
            hol.astype(float),
        ],
        axis=1,
    ).astype(np.float32)


def build_samples(
    panel: Panel,
    issue_rows: np.ndarray,
    detector_idx: np.ndarray | None = None,
    spec: WindowSpec = WindowSpec(),
    neighbour_idx: np.ndarray | None = None,
) -> Samples:
    """All (detector, issue time) pairs of the given rows and detectors, as arrays.

    `neighbour_idx` (D, K) can be passed in to avoid recomputing it (see Panel.neighbour_matrix).
    """
    values = panel.values
    T, D = values.shape
    dets = np.arange(D) if detector_idx is None else np.asarray(detector_idx)
    rows = np.asarray(issue_rows, dtype=np.int64)
    if (rows < spec.history_steps).any():
        raise ValueError("an issue time has less history before it than spec.history_steps")
    if neighbour_idx is None:
        neighbour_idx = panel.neighbour_matrix(spec.n_neighbours, spec.neighbour_method)
    t_idx = np.repeat(rows, len(dets))
    d_idx = np.tile(dets, len(rows))
    hsteps = spec.horizon_steps(panel.interval)
    week = int(WEEK / panel.interval)

    # cells past the newest reading (targets of a live issue time) and "no neighbour" (-1) read as NaN; looked up
    # in place, not in a padded copy of the panel (at 8,000 detectors two copies cost more than the lookups)
    hist_rows = t_idx[:, None] + np.arange(-spec.history_steps, 0)[None, :]
    history = _cells(values, hist_rows, d_idx[:, None])
    nb = neighbour_idx[d_idx]  # (N, K)
    if (nb < 0).all():  # windows without neighbours (baselines that do not read them)
        neighbours = np.full(nb.shape + (spec.history_steps,), np.nan, dtype=np.float32)
    else:
        neighbours = _cells(values, hist_rows[:, None, :], nb[:, :, None])
    target_rows = t_idx[:, None] + hsteps[None, :] - 1
    targets = _cells(values, target_rows, d_idx[:, None])
    last_week = _cells(values, target_rows - week, d_idx[:, None])
    cal = calendar_features(panel.time_at(rows), holiday_dates(panel))
    calendar = np.repeat(cal, len(dets), axis=0)
    return Samples(d_idx, t_idx, history, neighbours, last_week, calendar, targets, spec)


def _cells(values: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """values[rows, cols] (broadcast), NaN where a row or column lies outside the panel."""
    n_rows, n_cols = values.shape
    ok = (rows >= 0) & (rows < n_rows) & (cols >= 0) & (cols < n_cols)
    if values.size == 0:
        return np.full(ok.shape, np.nan, dtype=np.float32)
    got = values[np.clip(rows, 0, n_rows - 1), np.clip(cols, 0, n_cols - 1)]
    return np.where(ok, got, np.float32(np.nan)).astype(np.float32, copy=False)


def context_fields(panel: Panel, detector_idx: int, issue_row: int, spec: WindowSpec = WindowSpec()) -> dict:
    """The facts a person would read about one sample, known at its issue time (for trafficcore.text).

    Planned events (concerts, matches, roadworks...) are announced in advance and are visible
    while they are upcoming within the horizon; unplanned incidents become visible only once
    they have started.
    """
    det = panel.detectors.iloc[int(detector_idx)]
    t = panel.time_at([int(issue_row)])[0]
    events = []
    ev = panel.events
    if not ev.empty:  # which events, and when: trafficcore.data.event_match (the rule live ingest matches by)
        active = in_effect(ev, t, max(spec.horizons_min))
        near = near_matrix(panel.detectors.iloc[[int(detector_idx)]], ev, spec.event_radius_km)[0][0]
        for _, e in ev[active & near].iterrows():
            s = pd.Timestamp(e["start_ts"])
            mins = int((s - t) / pd.Timedelta(minutes=1))
            events.append({"kind": e["kind"], "text": e["text"], "minutes_from_now": mins})
    weather = {}
    w = panel.weather
    if not w.empty:
        past = w[pd.to_datetime(w["ts"]) <= t]
        if not past.empty:
            weather = {k: v for k, v in past.iloc[-1].items() if k != "ts" and pd.notna(v)}
    return {
        "site_name": det.get("site_name"),
        "site_description": det.get("site_description"),
        "approach": det.get("approach"),
        "road": det.get("road"),
        "detector_description": det.get("description"),
        "measure": det.get("measure"),
        "issued_at": t,
        "holiday": t.date() in holiday_dates(panel),
        "events": events[:3],
        "weather": weather,
    }
