"""The timing lab's tables: a site's approaches as an editable plan, forecast demand, and result tables.

A site in the store knows its detectors and their approach directions, not its lanes, turns or
signal phases. The lab therefore starts from a plain, stated default (each approach on its
compass leg, 2 lanes or the detector's lane count, 15/70/15 % left/through/right, two phases
N-S and E-W with permitted left turns, 90 s cycle) which the engineer edits. Plans are built
through `Plan.from_dict`, so the lab enforces exactly the checks the command line does.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from trafficcore.data.panel import Panel
from trafficcore.signal.plan import LEGS, Plan

COMPASS_DEG = {"N": 0, "NE": 45, "E": 90, "SE": 135, "S": 180, "SW": 225, "W": 270, "NW": 315}
LEG_DEG = {"N": 0, "E": 90, "S": 180, "W": 270}
DEFAULT_TURNS = (15.0, 70.0, 15.0)
DEFAULT_CYCLE = 90.0
DEFAULT_YELLOW = 3.0
DEFAULT_ALL_RED = 1.0
DEFAULT_MIN_GREEN = 7.0
APPROACH_COLUMNS = ["approach", "leg", "detectors", "lanes", "left_lanes", "right_lanes", "left_pct", "through_pct",
                    "right_pct", "sat_flow", "sat_adjust", "heavy_pct"]


def _angle_gap(a: float, b: float) -> float:
    d = abs(a - b) % 360
    return min(d, 360 - d)


def assign_legs(approaches: list[str]) -> dict[str, str]:
    """Each approach direction on the nearest free compass leg (N/E/S/W); at most four approaches.

    Exact matches are placed first so that "N" keeps the N leg even when "NE" is listed before it.
    """
    out: dict[str, str] = {}
    free = list(LEGS)
    known = [a for a in approaches if str(a).upper() in COMPASS_DEG]
    ordered = sorted(known, key=lambda a: (str(a).upper() not in LEG_DEG, str(a)))
    for a in ordered:
        if not free:
            break
        deg = COMPASS_DEG[str(a).upper()]
        leg = min(free, key=lambda g: _angle_gap(deg, LEG_DEG[g]))
        out[a] = leg
        free.remove(leg)
    return out


def site_approaches(panel: Panel, site_id: str) -> tuple[pd.DataFrame, list[str]]:
    """The editable approach table of a site (volume detectors with a compass approach) and notes.

    Notes say what was left out (speed detectors, approaches without a direction, a fifth leg).
    """
    det = panel.detectors[(panel.detectors["site_id"] == site_id)]
    notes = []
    vol = det[det["measure"].fillna("volume") == "volume"]
    if len(vol) < len(det):
        notes.append(f"{len(det) - len(vol)} speed detector(s) left out: demand needs vehicle counts.")
    names = [str(a) for a in vol["approach"].dropna().unique() if "." not in str(a)]
    legs = assign_legs(names)
    skipped = [a for a in names if a not in legs]
    no_dir = vol[vol["approach"].isna()]
    if skipped:
        notes.append(f"approach(es) {', '.join(skipped)} left out: a plan has at most four compass legs.")
    if len(no_dir):
        notes.append(f"{len(no_dir)} detector(s) without an approach direction left out.")
    rows = []
    for name, leg in sorted(legs.items(), key=lambda kv: LEGS.index(kv[1])):
        mine = vol[vol["approach"].astype(str) == name]
        lanes = pd.to_numeric(mine["lanes"], errors="coerce").max()
        rows.append({
            "approach": name, "leg": leg, "detectors": ", ".join(mine["detector_id"]),
            "lanes": int(lanes) if pd.notna(lanes) and lanes >= 1 else 2, "left_lanes": 0, "right_lanes": 0,
            "left_pct": DEFAULT_TURNS[0], "through_pct": DEFAULT_TURNS[1], "right_pct": DEFAULT_TURNS[2],
            "sat_flow": 1900.0, "sat_adjust": 1.0, "heavy_pct": 3.0,
        })
    return pd.DataFrame(rows, columns=APPROACH_COLUMNS), notes


def default_phases(approaches: pd.DataFrame, cycle: float = DEFAULT_CYCLE) -> list[dict]:
    """Two phases (N-S, then E-W; permitted lefts) sharing the cycle equally; one per axis present."""
    groups = []
    for axis, legs in (("N-S", ("N", "S")), ("E-W", ("E", "W"))):
        names = [a for a, g in zip(approaches["approach"], approaches["leg"], strict=True) if g in legs]
        if names:
            groups.append((axis, names))
    if not groups:
        return []
    intergreen = DEFAULT_YELLOW + DEFAULT_ALL_RED
    green = max(DEFAULT_MIN_GREEN, math.floor((cycle - intergreen * len(groups)) / len(groups)))
    return [{"name": axis, "movements": names, "green": float(green), "yellow": DEFAULT_YELLOW,
             "all_red": DEFAULT_ALL_RED, "min_green": DEFAULT_MIN_GREEN} for axis, names in groups]


def movement_options(approaches: pd.DataFrame) -> list[str]:
    """Movements a phase can serve, as the plan schema spells them ("N" = all turns of N)."""
    out = []
    for a in approaches["approach"]:
        out += [a, f"{a}.L", f"{a}.T", f"{a}.R", f"{a}.TR", f"{a}.LT"]
    return out


def plan_dict(approaches: pd.DataFrame, phases: list[dict], name: str = "what-if") -> dict:
    """The plan JSON (trafficcore.signal.plan/1) for an approach table and phase list; cycle = sum of splits."""
    cycle = sum(float(p["green"]) + float(p["yellow"]) + float(p["all_red"]) for p in phases)
    apps = []
    for r in approaches.itertuples(index=False):
        total = float(r.left_pct) + float(r.through_pct) + float(r.right_pct)
        apps.append({
            "name": str(r.approach), "leg": str(r.leg), "label": str(r.detectors),
            "lanes": _int(r.lanes), "left_lanes": _int(r.left_lanes), "right_lanes": _int(r.right_lanes),
            "turns": {k: (float(v) / total if total > 0 else float("nan"))
                      for k, v in (("L", r.left_pct), ("T", r.through_pct), ("R", r.right_pct))},
            "sat_flow_base": float(r.sat_flow), "sat_adjust": float(r.sat_adjust),
            "heavy_share": float(r.heavy_pct) / 100.0,
        })
    return {"schema": "trafficcore.signal.plan/1", "name": name, "cycle": cycle, "offset": 0.0, "cycle_min": 30.0,
            "cycle_max": 150.0, "approaches": apps, "phases": [dict(p, movements=list(p["movements"])) for p in phases]}


def _int(v) -> int | float:
    """Whole numbers for the schema; a non-whole or missing cell stays as is and fails validation there."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return float("nan")
    return int(f) if math.isfinite(f) and f == int(f) else f


def turn_shares_problem(approaches: pd.DataFrame) -> str | None:
    """A sentence when an approach's turning percentages do not add up to 100 (else None)."""
    for r in approaches.itertuples(index=False):
        total = float(r.left_pct) + float(r.through_pct) + float(r.right_pct)
        if abs(total - 100.0) > 1.0:
            return f"Approach {r.approach}: left + through + right = {total:g} %, not 100 %."
    return None


def build_plan(approaches: pd.DataFrame, phases: list[dict], name: str = "what-if") -> Plan:
    """A validated Plan (DataError naming the field when the plan is impossible)."""
    return Plan.from_dict(plan_dict(approaches, phases, name), source="the plan")


def detector_map(approaches: pd.DataFrame) -> dict[str, str]:
    """detector_id -> approach name, for demand_from_forecast."""
    out = {}
    for a, dets in zip(approaches["approach"], approaches["detectors"], strict=True):
        for d in str(dets).split(", "):
            if d:
                out[d] = str(a)
    return out


def site_demand(fc: pd.DataFrame, approaches: pd.DataFrame, step_min: int = 15, phf: float | None = None):
    """Forecast demand (veh/h per approach and interval, P10/P50/P90) of the site's approaches.

    Intervals are 15 minutes, or the data's own step where that is longer.
    """
    from trafficcore.data.schema import FORECAST_COLUMNS
    from trafficcore.signal.demand import demand_from_forecast

    interval = max(15, int(step_min))
    return demand_from_forecast(fc[FORECAST_COLUMNS], detector_map(approaches), interval_min=interval, phf=phf,
                                step_min=float(step_min))


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


def day_forecast(model, panel: Panel, detector_ids: list[str], day, neighbour_idx=None) -> pd.DataFrame:
    """Forecasts covering one day for some detectors: issued every max-horizon, each target once.

    Every value was forecast at most `max horizon` ahead from data before its issue time, so the
    profile is what the model would have said through that day. Hours that cannot be issued
    (before enough history, after the newest reading) are simply absent.
    """
    from trafficcore.ui.models import forecast

    hmax = max(model.spec.horizons_min)
    times = day_issue_times(panel, day, hmax, model.spec.history_steps)
    if not times:
        return pd.DataFrame()
    fc = forecast(model, panel, times, detector_ids, neighbour_idx)
    end = pd.Timestamp(day).normalize() + pd.Timedelta(days=1)
    return fc[fc["target_ts"] < end].reset_index(drop=True)
