"""Data quality: how complete each detector is, and which look faulty (stuck, dead at zero, gaps).

Detector faults are the first thing an engineer checks before trusting a forecast: a loop that
repeats one count for hours, reads zero through the morning peak, or drops out for a day. The
rules are deliberately simple and stated in the table, so a person can check any flag by eye:

- **gap**: a run of missing intervals lasting at least `gap` (default 1 hour);
- **stuck**: the same non-zero value for at least `stuck` (default 2 hours) in a row; real counts
  with noise almost never repeat that long, and speeds carried forward by a broken feed do;
- **zero**: zeros for at least `zero` (default 2 hours) while the same detector's median at those
  times of day is at least `busy` (default 5): a dead loop, not a quiet night.

Only what is missing counts. The panel's grid is the dataset's local wall clock at a fixed step, so
on the day the clocks go forward it holds an hour of local times that never happened (SCATS,
Melbourne, 29 Oct 2006 02:00-02:45). A detector has nothing to report then, so those rows are not
expected readings: they are left out of gaps and coverage, and a run of missing readings on both
sides of the jump is one gap as long as the time that really passed (`skipped_wall_times`). A
reading stored at such a time (a feed that ignores the clock change) still counts as observed.
Faults the demo city plants (its city-wide communications outage of 1-2 hours, a detector's
missing rows) are real gaps and are reported.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from trafficcore.data.panel import Panel


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start indices and lengths of the True runs of a 1-D boolean array."""
    padded = np.concatenate([[False], mask, [False]])
    diff = np.diff(padded.astype(np.int8))
    starts = np.flatnonzero(diff == 1)
    ends = np.flatnonzero(diff == -1)
    return starts, ends - starts


def _repeat_runs(col: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start indices and lengths of runs of one repeated finite value."""
    n = len(col)
    if n == 0:
        return np.array([], int), np.array([], int)
    change = np.ones(n, bool)
    change[1:] = ~((col[1:] == col[:-1]) & np.isfinite(col[1:]))
    starts = np.flatnonzero(change)
    lengths = np.diff(np.append(starts, n))
    return starts, lengths


def skipped_wall_times(times: pd.DatetimeIndex, timezone: str | None) -> np.ndarray:
    """True for each grid time that does not exist on `timezone`'s wall clock (a DST spring-forward).

    No time zone, an unknown one or a zone without clock changes skips nothing.
    """
    skipped = np.zeros(len(times), dtype=bool)
    if not timezone or not len(times) or times.tz is not None:
        return skipped
    try:
        local = times.tz_localize(str(timezone), nonexistent="NaT", ambiguous=np.ones(len(times), dtype=bool))
    except (ValueError, KeyError, TypeError):  # an unknown zone name: nothing to leave out
        return skipped
    return np.asarray(local.isna(), dtype=bool)


def row_labels(panel: Panel) -> list[str]:
    """A readable label per detector, in panel order: site name, approach and the detector id.

    Why: a detector id alone ("2000:10505") means little to the person who must go and fix the loop;
    the id stays in the label so that it can be found in the fault table and the source files.
    """
    det = panel.detectors
    labels = []
    for row in det.itertuples(index=False):
        name = getattr(row, "site_name", None)
        approach = getattr(row, "approach", None)
        parts = [str(x) for x in (name, approach) if isinstance(x, str) and x.strip()]
        labels.append(f"{' '.join(parts)} ({row.detector_id})" if parts else str(row.detector_id))
    return labels


def fault_flags(
    panel: Panel,
    gap: pd.Timedelta = pd.Timedelta(hours=1),
    stuck: pd.Timedelta = pd.Timedelta(hours=2),
    zero: pd.Timedelta = pd.Timedelta(hours=2),
    busy: float = 5.0,
) -> pd.DataFrame:
    """One row per detector: coverage, gaps, stuck and zero runs, and a short list of its faults."""
    step = panel.interval
    gap_n = max(1, int(np.ceil(gap / step)))
    stuck_n = max(2, int(np.ceil(stuck / step)))
    zero_n = max(2, int(np.ceil(zero / step)))
    values = panel.values
    tod = (panel.times - panel.times.normalize()) // step if len(panel.times) else np.array([], int)
    tod_all = np.asarray(tod, dtype=np.int64)
    skipped = skipped_wall_times(panel.times, panel.info.get("timezone"))
    rows = []
    for j, det in enumerate(panel.detectors.itertuples(index=False)):
        col = values[:, j].astype(np.float64)
        # Rows the clocks skipped take no time: drop them unless they hold a reading (module docstring).
        expected = ~skipped | np.isfinite(col)
        col, tod = col[expected], tod_all[expected]
        seen = np.isfinite(col)
        g_start, g_len = _runs(~seen)
        long_gaps = g_len >= gap_n
        r_start, r_len = _repeat_runs(col)
        first_vals = col[r_start] if len(r_start) else np.array([])
        stuck_runs = (r_len >= stuck_n) & np.isfinite(first_vals) & (first_vals != 0)
        zero_runs = (r_len >= zero_n) & (first_vals == 0)
        dead = 0
        if zero_runs.any():
            med = pd.Series(col).groupby(tod).median()
            for s, n in zip(r_start[zero_runs], r_len[zero_runs], strict=True):
                if np.nanmedian(med.reindex(tod[s : s + n]).to_numpy()) >= busy:
                    dead += 1
        faults = []
        if long_gaps.any():
            faults.append(f"{int(long_gaps.sum())} gap(s) >= {_fmt(gap)}")
        if stuck_runs.any():
            faults.append(f"stuck {int(stuck_runs.sum())}x")
        if dead:
            faults.append(f"zero in busy hours {dead}x")
        rows.append(
            {
                "detector_id": det.detector_id,
                "site_id": det.site_id,
                "approach": det.approach,
                "measure": det.measure,
                "coverage_pct": round(100.0 * seen.mean(), 1) if len(col) else 0.0,
                "gaps": int(long_gaps.sum()),
                "longest_gap_h": round(float(g_len.max() * step / pd.Timedelta(hours=1)), 2) if len(g_len) else 0.0,
                "stuck_runs": int(stuck_runs.sum()),
                "longest_stuck_h": round(float(r_len[stuck_runs].max() * step / pd.Timedelta(hours=1)), 2)
                if stuck_runs.any()
                else 0.0,
                "zero_runs": dead,
                "status": "check" if faults else "ok",
                "faults": "; ".join(faults),
            }
        )
    return pd.DataFrame(rows)


def _fmt(td: pd.Timedelta) -> str:
    hours = td / pd.Timedelta(hours=1)
    return f"{hours:g} h" if hours >= 1 else f"{td / pd.Timedelta(minutes=1):g} min"


def coverage_matrix(panel: Panel, freq: str = "D") -> pd.DataFrame:
    """Share (0-100 %) of intervals observed per detector (rows) and day (columns), for a heatmap.

    Local times the clocks skipped are not intervals a detector could report (module docstring).
    """
    if not len(panel.times):
        return pd.DataFrame()
    observed = np.isfinite(panel.values)
    expected = observed | ~skipped_wall_times(panel.times, panel.info.get("timezone"))[:, None]
    cols = panel.detectors["detector_id"]
    seen = pd.DataFrame(observed, index=panel.times, columns=cols).resample(freq).sum()
    due = pd.DataFrame(expected, index=panel.times, columns=cols).resample(freq).sum()
    out = (seen / due.where(due > 0)).T * 100.0
    out.columns = [f"{c:%Y-%m-%d}" for c in out.columns]
    return out.round(1)


def quality_summary(flags: pd.DataFrame) -> dict:
    """Headline figures for the page: detectors, mean coverage, and how many show each fault."""
    if flags.empty:
        return {"detectors": 0, "coverage_pct": 0.0, "with_gaps": 0, "stuck": 0, "zero": 0, "flagged": 0}
    return {
        "detectors": int(len(flags)),
        "coverage_pct": round(float(flags["coverage_pct"].mean()), 1),
        "with_gaps": int((flags["gaps"] > 0).sum()),
        "stuck": int((flags["stuck_runs"] > 0).sum()),
        "zero": int((flags["zero_runs"] > 0).sum()),
        "flagged": int((flags["status"] == "check").sum()),
    }
