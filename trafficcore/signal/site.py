"""A site's default signal plan from its detectors: approaches on compass legs, two phases, forecast demand.

A site in the store knows its detectors and their approach directions, not its lanes, turns or
signal phases. A plan therefore starts from a plain, stated default (each approach on its
compass leg, 2 lanes or the detector's lane count, 15/70/15 % left/through/right, two phases
N-S and E-W with permitted left turns, 90 s cycle). The timing lab (`trafficcore.ui.signals`) lets
an engineer edit it; live alerts (`trafficcore.live.alerts`) analyse it as is to warn of LOS E/F.
Plans are built through `Plan.from_dict`, so both enforce exactly the checks the command line does.
"""

from __future__ import annotations

import math

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
