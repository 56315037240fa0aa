"""Export a plan the ways engineers use it: JSON, a CSV timing sheet and a SUMO additional file.

The timing sheet is the table a technician keys into a controller: one row per phase in running
order with its start time in the cycle, green, yellow, all-red, split and minimum green. It reads
back onto the plan it came from (`read_timing_sheet`), so a sheet edited by hand can be analysed
again. The SUMO additional file holds the plan as a ``tlLogic`` whose link indices match the
network `trafficcore.signal.sumo.build_network` builds from the same plan.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from trafficcore.data.validate import read_csv, to_numbers
from trafficcore.errors import DataError
from trafficcore.signal.plan import Plan, save_plan
from trafficcore.signal.sumo import build_network, tls_additional, write_scenario

SHEET_COLUMNS = [
    "order", "phase", "movements", "start_s", "green_s", "yellow_s", "all_red_s", "end_s", "split_s", "split_pct",
    "min_green_s", "effective_green_s", "cycle_s", "offset_s",
]


def write_plan_json(plan: Plan, path: str | Path) -> Path:
    """The plan as JSON (see docs/SIGNAL.md); `trafficcore.signal.load_plan` reads it back."""
    return save_plan(plan, path)


def timing_sheet(plan: Plan) -> pd.DataFrame:
    """One row per phase in running order (times in seconds from the start of phase 1's green)."""
    rows, t = [], 0.0
    for i, p in enumerate(plan.phases, start=1):
        rows.append({
            "order": i,
            "phase": p.name,
            "movements": " ".join(p.movements),
            "start_s": t,
            "green_s": p.green,
            "yellow_s": p.yellow,
            "all_red_s": p.all_red,
            "end_s": t + p.split,
            "split_s": p.split,
            "split_pct": round(100.0 * p.split / plan.cycle, 2),
            "min_green_s": p.min_green,
            "effective_green_s": p.split - plan.lost_time(p),
            "cycle_s": plan.cycle,
            "offset_s": plan.offset,
        })
        t += p.split
    return pd.DataFrame(rows, columns=SHEET_COLUMNS)


def write_timing_sheet(plan: Plan, path: str | Path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    timing_sheet(plan).to_csv(p, index=False)
    return p


def read_timing_sheet(path: str | Path, plan: Plan) -> Plan:
    """Apply a (possibly hand-edited) timing sheet to `plan`: greens, yellows, all-reds, cycle, offset.

    Phases are matched by order and must keep their names, so a sheet cannot silently be applied
    to a different intersection. The result is checked like any plan (times must add up).
    """
    src = str(path)
    df = read_csv(path, required=["order", "phase", "green_s", "yellow_s", "all_red_s", "cycle_s"])
    if len(df) != len(plan.phases):
        raise DataError(src, f"sheet has {len(df)} phases, plan {plan.name!r} has {len(plan.phases)}", column="order")
    nums = {c: to_numbers(df[c], src, c, 2, non_negative=True)
            for c in ("order", "green_s", "yellow_s", "all_red_s", "cycle_s")}
    offset = to_numbers(df["offset_s"], src, "offset_s", 2, non_negative=True) if "offset_s" in df.columns else None
    order = np.argsort(nums["order"].to_numpy(), kind="stable")
    for k, i in enumerate(order):
        if df["phase"].iloc[i].strip() != plan.phases[k].name:
            raise DataError(src, f"phase {k + 1} is {plan.phases[k].name!r} in the plan but {df['phase'].iloc[i]!r} "
                                 "in the sheet", row=int(i) + 2, column="phase")
    cycles = nums["cycle_s"].unique()
    if len(cycles) != 1:
        raise DataError(src, f"cycle_s differs between rows: {sorted(cycles)}", column="cycle_s")
    phases = []
    for k, i in enumerate(order):
        phases.append(replace(plan.phases[k], green=float(nums["green_s"].iloc[i]),
                              yellow=float(nums["yellow_s"].iloc[i]), all_red=float(nums["all_red_s"].iloc[i])))
    off = float(offset.iloc[0]) if offset is not None else plan.offset
    return replace(plan, cycle=float(cycles[0]), offset=off, phases=tuple(phases), source=src)


def write_sumo_additional(plan: Plan, path: str | Path, timeout_s: float = 60.0) -> Path:
    """The plan as a SUMO additional file (tlLogic ``C``, program ``trafficcore``).

    Link indices come from netconvert, so the network is built once in a temporary folder.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="trafficcore-sumo-") as tmp:
        net = build_network(plan, Path(tmp), timeout_s)
        p.write_text(tls_additional(plan, net.links), encoding="utf-8")
    return p


def write_sumo_scenario(plan: Plan, demand: pd.DataFrame, folder: str | Path, quantile: str = "p50") -> Path:
    """A complete scenario folder (network, signal, routes, .sumocfg) to open in sumo-gui; returns the .sumocfg."""
    _, cfg = write_scenario(plan, demand, folder, quantile)
    return cfg
