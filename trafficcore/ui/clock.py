"""The "as of" clock: which issue times a dataset allows, a sensible default, and URL-safe text.

Forecasts can be issued at any historical moment, so a planner can replay a morning and then see
what actually happened. Issue times live on the dataset's grid (an observation's `ts` is the start
of its interval; at issue time t the newest usable reading ends at t).
"""

from __future__ import annotations

import pandas as pd

from trafficcore.data.panel import Panel

URL_FORMAT = "%Y-%m-%dT%H:%M"


def issue_range(panel: Panel, history_steps: int = 16) -> tuple[pd.Timestamp, pd.Timestamp]:
    """First and last allowed issue time: enough history before, at most one interval past the data."""
    if len(panel.times) <= history_steps:
        raise ValueError(
            f"dataset {panel.dataset!r} has {len(panel.times)} intervals; forecasts need more than {history_steps}"
        )
    return panel.times[history_steps], panel.times[-1] + panel.interval


def snap(panel: Panel, ts, history_steps: int = 16) -> pd.Timestamp:
    """Floor a time onto the grid and clip it into the allowed issue range."""
    first, last = issue_range(panel, history_steps)
    ts = pd.Timestamp(ts)
    steps = (ts - panel.times[0]) // panel.interval
    ts = panel.times[0] + steps * panel.interval
    return min(max(ts, first), last)


def default_issue_time(
    panel: Panel, history_steps: int = 16, lookahead: pd.Timedelta = pd.Timedelta(hours=2), hour: int = 8
) -> pd.Timestamp:
    """The latest weekday `hour`:00 whose next `lookahead` is in the data, else the latest such moment.

    A morning peak is what planners look at first, and keeping the following two hours inside the
    data means the site page can show the observed values beside the forecast straight away.
    """
    first, last = issue_range(panel, history_steps)
    latest = min(last - lookahead, last)
    day = latest.normalize()
    for _ in range(15):
        cand = day + pd.Timedelta(hours=hour)
        if cand.day_of_week < 5 and first <= cand <= latest:
            return snap(panel, cand, history_steps)
        day -= pd.Timedelta(days=1)
    return snap(panel, max(latest, first), history_steps)


def time_options(panel: Panel) -> list[str]:
    """Clock times of one day on the dataset's grid ("HH:MM"), for a time picker."""
    day = pd.date_range("2000-01-01", periods=int(pd.Timedelta(days=1) / panel.interval), freq=panel.interval)
    return [f"{t:%H:%M}" for t in day]


def combine(date, clock: str) -> pd.Timestamp:
    """A date and an "HH:MM" text as one timestamp."""
    return pd.Timestamp(f"{pd.Timestamp(date):%Y-%m-%d} {clock}")


def to_url(ts) -> str:
    """Compact, readable text for a query parameter ("2025-01-14T08:00")."""
    return pd.Timestamp(ts).strftime(URL_FORMAT)


def from_url(text: str | None) -> pd.Timestamp | None:
    """Parse a query-parameter time; None when absent or not a time (a hand-edited link)."""
    if not text:
        return None
    try:
        ts = pd.Timestamp(str(text))
    except (ValueError, TypeError):
        return None
    return None if pd.isna(ts) else ts.tz_localize(None) if ts.tzinfo else ts


def describe(ts, panel: Panel) -> str:
    """"Tuesday 14 Jan 2025, 08:00" plus how it relates to the newest reading."""
    ts = pd.Timestamp(ts)
    newest_end = panel.times[-1] + panel.interval
    text = f"{ts:%A %d %b %Y, %H:%M}"
    if ts >= newest_end:
        return text + " (live: after the newest reading)"
    return text + " (replay: later readings are known)"
