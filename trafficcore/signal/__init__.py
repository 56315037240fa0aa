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
"""

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
