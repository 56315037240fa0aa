"""Signal timing lab: timing plans against forecast demand, time-of-day plans and SUMO checks.

Uses only `trafficcore.data` (schema, validation helpers) and the Forecast frame. Methods and the
plan JSON schema are documented in docs/SIGNAL.md.

Typical use::

    from trafficcore.signal import load_plan, read_demand_csv, analyse, optimise, simulate
    plan = load_plan("docs/examples/plan_4leg.json")
    demand = read_demand_csv("docs/examples/demand_4leg.csv")
    result = analyse(plan, demand)          # result.approaches: the OUT.json rows
    better = optimise(plan, demand).plan    # never worse than `plan` on this demand
    sim = simulate(plan, demand)            # SUMO, headless, in a temporary folder

The names below are resolved lazily: the command line imports `trafficcore.signal.cli` for every
command (even `--help`), and an eager root would load scipy and the SUMO tools with it (issue 15).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trafficcore._lazy import lazy_exports

if TYPE_CHECKING:
    from trafficcore.signal.analysis import (
        Analysis,
        Model,
        analyse,
        incremental_delay,
        level_of_service,
        progression_factor,
        uniform_delay,
        webster_cycle,
    )
    from trafficcore.signal.demand import DEMAND_COLUMNS, demand_from_forecast, read_demand_csv
    from trafficcore.signal.export import (
        read_timing_sheet,
        timing_sheet,
        write_plan_json,
        write_sumo_additional,
        write_sumo_scenario,
        write_timing_sheet,
    )
    from trafficcore.signal.optimise import (
        OptimiseResult,
        TimeOfDayResult,
        WebsterResult,
        optimise,
        segment_profile,
        time_of_day,
        webster,
    )
    from trafficcore.signal.plan import Approach, LaneGroup, Phase, Plan, load_plan, save_plan
    from trafficcore.signal.sumo import Simulation, SumoError, compare, simulate, sumo_binary

__all__ = [
    "DEMAND_COLUMNS",
    "Analysis",
    "Approach",
    "LaneGroup",
    "Model",
    "OptimiseResult",
    "Phase",
    "Plan",
    "Simulation",
    "SumoError",
    "TimeOfDayResult",
    "WebsterResult",
    "analyse",
    "compare",
    "demand_from_forecast",
    "incremental_delay",
    "level_of_service",
    "load_plan",
    "optimise",
    "progression_factor",
    "read_demand_csv",
    "read_timing_sheet",
    "save_plan",
    "segment_profile",
    "simulate",
    "sumo_binary",
    "time_of_day",
    "timing_sheet",
    "uniform_delay",
    "webster",
    "webster_cycle",
    "write_plan_json",
    "write_sumo_additional",
    "write_sumo_scenario",
    "write_timing_sheet",
]

lazy_exports(__name__, {
    "Analysis": "trafficcore.signal.analysis",
    "Model": "trafficcore.signal.analysis",
    "analyse": "trafficcore.signal.analysis",
    "incremental_delay": "trafficcore.signal.analysis",
    "level_of_service": "trafficcore.signal.analysis",
    "progression_factor": "trafficcore.signal.analysis",
    "uniform_delay": "trafficcore.signal.analysis",
    "webster_cycle": "trafficcore.signal.analysis",
    "DEMAND_COLUMNS": "trafficcore.signal.demand",
    "demand_from_forecast": "trafficcore.signal.demand",
    "read_demand_csv": "trafficcore.signal.demand",
    "read_timing_sheet": "trafficcore.signal.export",
    "timing_sheet": "trafficcore.signal.export",
    "write_plan_json": "trafficcore.signal.export",
    "write_sumo_additional": "trafficcore.signal.export",
    "write_sumo_scenario": "trafficcore.signal.export",
    "write_timing_sheet": "trafficcore.signal.export",
    "OptimiseResult": "trafficcore.signal.optimise",
    "TimeOfDayResult": "trafficcore.signal.optimise",
    "WebsterResult": "trafficcore.signal.optimise",
    "optimise": "trafficcore.signal.optimise",
    "segment_profile": "trafficcore.signal.optimise",
    "time_of_day": "trafficcore.signal.optimise",
    "webster": "trafficcore.signal.optimise",
    "Approach": "trafficcore.signal.plan",
    "LaneGroup": "trafficcore.signal.plan",
    "Phase": "trafficcore.signal.plan",
    "Plan": "trafficcore.signal.plan",
    "load_plan": "trafficcore.signal.plan",
    "save_plan": "trafficcore.signal.plan",
    "Simulation": "trafficcore.signal.sumo",
    "SumoError": "trafficcore.signal.sumo",
    "compare": "trafficcore.signal.sumo",
    "simulate": "trafficcore.signal.sumo",
    "sumo_binary": "trafficcore.signal.sumo",
})
