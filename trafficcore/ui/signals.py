"""The timing lab's tables: a site's approaches as an editable plan, forecast demand, and result tables.

A site in the store knows its detectors and their approach directions, not its lanes, turns or
signal phases. The lab therefore starts from a plain, stated default (each approach on its
compass leg, 2 lanes or the detector's lane count, 15/70/15 % left/through/right, two phases
N-S and E-W with permitted left turns, 90 s cycle) which the engineer edits. Plans are built
through `Plan.from_dict`, so the lab enforces exactly the checks the command line does. The defaults
and the plan and demand builders live in `trafficcore.signal.site` (live alerts use them too).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from trafficcore.data.panel import Panel
from trafficcore.signal.plan import Plan
from trafficcore.signal.site import (  # noqa: F401 - moved below the UI (live alerts use them); re-exported
    APPROACH_COLUMNS,
    COMPASS_DEG,
    DEFAULT_ALL_RED,
    DEFAULT_CYCLE,
    DEFAULT_MIN_GREEN,
    DEFAULT_TURNS,
    DEFAULT_YELLOW,
    LEG_DEG,
    assign_legs,
    build_plan,
    default_phases,
    detector_map,
    plan_dict,
    site_approaches,
    site_demand,
)


def movement_options(approaches: pd.DataFrame) -> list[str]:
    """Movements a phase can serve, as the plan schema spells them ("N" = all turns of N)."""
    out = []
    for a in approaches["approach"]:
        out += [a, f"{a}.L", f"{a}.T", f"{a}.R", f"{a}.TR", f"{a}.LT"]
    return out


def turn_shares_problem(approaches: pd.DataFrame) -> str | None:
    """A sentence when an approach's turning percentages do not add up to 100 (else None)."""
    for r in approaches.itertuples(index=False):
        total = float(r.left_pct) + float(r.through_pct) + float(r.right_pct)
        if abs(total - 100.0) > 1.0:
            return f"Approach {r.approach}: left + through + right = {total:g} %, not 100 %."
    return None


def results_table(approaches_result: pd.DataFrame) -> pd.DataFrame:
    """Per approach and interval, rounded for reading: v, c, v/c, delay, LOS, queues."""
    df = approaches_result.copy()
    out = pd.DataFrame({
        "interval": df["interval_start"].dt.strftime("%H:%M"),
        "approach": df["approach"],
        "v (veh/h)": df["v"].round(0),
        "c (veh/h)": df["c"].round(0),
        "v/c": df["x"].round(2),
        "delay (s/veh)": df["delay_s"].round(1),
        "LOS": df["los"],
        "queue mean (veh)": df["queue_mean_veh"].round(1),
        "queue 95% (veh)": df["queue_p95_veh"].round(1),
    })
    return out


def approach_summary(approaches_result: pd.DataFrame) -> pd.DataFrame:
    """Over the whole horizon, per approach: flow-weighted delay, worst v/c, worst LOS, longest 95% queue."""
    df = approaches_result
    rows = []
    for a, g in df.groupby("approach", sort=False):
        w = g["v"].to_numpy()
        delay = float(np.average(g["delay_s"], weights=w)) if w.sum() > 0 else float(g["delay_s"].mean())
        rows.append({"approach": a, "delay (s/veh)": round(delay, 1), "worst v/c": round(float(g["x"].max()), 2),
                     "worst LOS": max(g["los"]), "queue 95% max (veh)": round(float(g["queue_p95_veh"].max()), 1)})
    return pd.DataFrame(rows)


def compare(summaries: dict[str, dict]) -> pd.DataFrame:
    """Scenario summaries (from `Analysis.summary`) side by side, one column per scenario."""
    rows = [("cycle (s)", "cycle", 0), ("mean delay (s/veh)", "delay_s", 1), ("LOS", "los", None),
            ("total delay (veh-h)", "delay_veh_h", 2), ("worst v/c", "max_x", 2),
            ("critical v/c (Xc)", "max_xc", 2)]
    data = {}
    for name, s in summaries.items():  # text cells: one column mixes numbers and LOS letters
        data[name] = [str(s[k]) if nd is None else f"{float(s[k]):.{nd}f}" for _, k, nd in rows]
    return pd.DataFrame(data, index=[r[0] for r in rows])


def period_text(start, end) -> str:
    """ "06:00-24:00": a clock period whose end may be the next midnight (never "00:00-00:00")."""
    start, end = pd.Timestamp(start), pd.Timestamp(end)
    stop = "24:00" if end.normalize() > start.normalize() and end == end.normalize() else f"{end:%H:%M}"
    return f"{start:%H:%M}-{stop}"


def clock_end(start, end) -> str:
    """A period's end as a clock time, "24:00" when it is the midnight after `start`."""
    return period_text(start, end).split("-")[1]


def greens_text(plan: Plan) -> str:
    """ "N-S 41 s, E-W 41 s (cycle 90 s)" """
    parts = ", ".join(f"{p.name} {p.green:g} s" for p in plan.phases)
    return f"{parts} (cycle {plan.cycle:g} s)"


def day_issue_times(panel: Panel, day, horizon_max_min: int, history_steps: int = 16) -> list[pd.Timestamp]:
    """Issue times that tile one day with forecasts: every `horizon_max_min` from midnight, where allowed."""
    from trafficcore.ui.clock import issue_range

    first, last = issue_range(panel, history_steps)
    start = pd.Timestamp(day).normalize()
    step = pd.Timedelta(minutes=int(horizon_max_min))
    out = []
    t = start
    while t < start + pd.Timedelta(days=1):
        if first <= t <= last:
            out.append(t)
        t += step
    return out


def day_forecast(model, panel: Panel, detector_ids: list[str], day, neighbour_idx=None, progress=None,
                 chunks: int = 4) -> pd.DataFrame:
    """Forecasts covering one day for some detectors: issued every max-horizon, each target once.

    Every value was forecast at most `max horizon` ahead from data before its issue time, so the
    profile is what the model would have said through that day. Hours that cannot be issued
    (before enough history, after the newest reading) are simply absent. The issue times run in
    up to `chunks` batches; `progress(done, total)` (issue times) is called after each, for a page's bar.
    """
    from trafficcore.ui.models import forecast

    hmax = max(model.spec.horizons_min)
    times = day_issue_times(panel, day, hmax, model.spec.history_steps)
    if not times:
        return pd.DataFrame()
    size = max(1, -(-len(times) // max(1, int(chunks))))
    parts = []
    for i in range(0, len(times), size):
        parts.append(forecast(model, panel, times[i:i + size], detector_ids, neighbour_idx))
        if progress is not None:
            progress(min(i + size, len(times)), len(times))
    fc = pd.concat(parts, ignore_index=True)
    end = pd.Timestamp(day).normalize() + pd.Timedelta(days=1)
    return fc[fc["target_ts"] < end].reset_index(drop=True)


#: Why SUMO and the HCM analysis disagree, shown beside the two numbers so the gap reads as expected.
SUMO_DIFFERENCES = (
    "Why they differ: SUMO counts each vehicle's time loss until it leaves, including queues left over "
    "from one interval into the next, while HCM delay is per interval (d3 only with the initial-queue "
    "option); SUMO's arrivals are random, so the arrival type (progression) is not modelled; and "
    "permitted left turns filter through simulated gaps rather than the HCM gap-acceptance formula."
)
#: A SUMO / analytic delay ratio beyond this (either way) is flagged: the two models no longer tell one story.
SUMO_RATIO_WARN = 2.0


def sumo_comparison(analytic_delay_s: float, sumo_delay_s: float) -> tuple[float | None, str | None]:
    """(SUMO / analytic delay ratio, warning text or None).

    Why a warning at a factor of 2: the two models differ by design (see `SUMO_DIFFERENCES`), but
    by more than 2 either way the plan is near or past capacity, or SUMO ran into gridlock or
    teleports, and the analytic numbers alone should not be trusted.
    """
    if not (analytic_delay_s > 0 and np.isfinite(analytic_delay_s) and np.isfinite(sumo_delay_s)):
        return None, None
    ratio = float(sumo_delay_s) / float(analytic_delay_s)
    if ratio > SUMO_RATIO_WARN or ratio < 1.0 / SUMO_RATIO_WARN:
        return ratio, (f"SUMO's delay is {ratio:.1f} x the analytic one (more than {SUMO_RATIO_WARN:g} x apart): "
                       "check for leftover queues, saturated approaches or teleports before trusting either.")
    return ratio, None
