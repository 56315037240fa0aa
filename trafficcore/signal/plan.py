"""Timing plan and approach geometry: the one object the analysis, the optimiser and SUMO all read.

A plan is valid by construction: every `Plan` checks itself when it is built, so an impossible plan
(greens + intergreens that do not add up to the cycle, a movement with demand that no phase serves,
a negative or non-finite time) is rejected with a `DataError` naming the file and the JSON path of
the offending value (in the `column` slot, e.g. ``phases[1].green``) before any number is computed.

Conventions (see docs/SIGNAL.md for the JSON schema):

- An approach is named by an id (``"N"``) and sits on a compass leg (N/E/S/W): the side vehicles
  *come from*. Traffic drives on the right (SUMO's default); L is the turn across opposing traffic.
- A movement is ``"<approach>.<turn>"`` with turn L, T or R; ``"N"`` alone means all three and
  ``"N.TR"`` means through and right.
- Lane groups follow the lanes: exclusive left lanes form an L group, exclusive right lanes an R
  group, and the remaining lanes one group carrying through plus any turn without its own lane.
- Phases run in the listed order in one ring. A phase is green, then yellow, then all-red. The lost
  time of a phase is ``startup_lost_s + yellow + all_red - extension_s`` (HCM 2000 Ch. 16), so with
  the defaults (2 s and 2 s) effective green equals displayed green.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from trafficcore.errors import DataError

SCHEMA = "trafficcore.signal.plan/1"
TURNS = ("L", "T", "R")
LEGS = ("N", "E", "S", "W")
OPPOSITE = {"N": "S", "S": "N", "E": "W", "W": "E"}
#: Exit leg of each turn for right-hand traffic: from the N leg (heading south) a left goes east.
EXIT_LEG = {
    "N": {"L": "E", "T": "S", "R": "W"},
    "S": {"L": "W", "T": "N", "R": "E"},
    "E": {"L": "S", "T": "W", "R": "N"},
    "W": {"L": "N", "T": "E", "R": "S"},
}
#: Tolerance when checking that phase times add up to the cycle (JSON round-off).
CYCLE_TOLERANCE_S = 0.01
#: Longest cycle, and so any green, intergreen or lost time, a real fixed-time controller runs (s).
#: Above it the plan is a typo or a unit slip (ms for s), and HCM delay numbers would be nonsense.
MAX_CYCLE_S = 300.0
#: Most lanes an approach (or a turn lane set) can have at one stop line; 1e9 lanes is a typo.
MAX_LANES = 10
#: Highest base saturation flow accepted (pc/h/ln): one vehicle a second per lane.
MAX_SAT_FLOW = 3600.0


@dataclass(frozen=True)
class Approach:
    """One approach: lanes, saturation flow inputs and how its demand splits into turns."""

    name: str
    leg: str
    lanes: int
    left_lanes: int = 0
    right_lanes: int = 0
    left: float = 0.0
    through: float = 1.0
    right: float = 0.0
    sat_flow_base: float = 1900.0
    sat_adjust: float = 1.0
    heavy_share: float = 0.0
    arrival_type: int = 3
    length_m: float = 250.0
    speed_kmh: float = 50.0
    label: str = ""

    def share(self, turn: str) -> float:
        return {"L": self.left, "T": self.through, "R": self.right}[turn]

    @property
    def shared_lanes(self) -> int:
        """Lanes left once the exclusive turn lanes are taken."""
        return self.lanes - self.left_lanes - self.right_lanes


@dataclass(frozen=True)
class Phase:
    """One phase: the movements it serves and its displayed times (seconds)."""

    name: str
    movements: tuple[str, ...]
    green: float
    yellow: float = 3.0
    all_red: float = 1.0
    min_green: float = 5.0

    @property
    def intergreen(self) -> float:
        return self.yellow + self.all_red

    @property
    def split(self) -> float:
        return self.green + self.yellow + self.all_red


@dataclass(frozen=True)
class LaneGroup:
    """A set of lanes that discharge together; the unit HCM analyses."""

    approach: str
    movements: tuple[str, ...]  # turns, e.g. ("T", "R")
    lanes: int
    exclusive: bool  # an exclusive turn lane (L or R group)

    @property
    def id(self) -> str:
        return f"{self.approach}.{''.join(t for t in TURNS if t in self.movements)}"


@dataclass(frozen=True)
class Plan:
    """A fixed-time plan for one intersection: geometry, phase sequence and times."""

    name: str
    cycle: float
    approaches: tuple[Approach, ...]
    phases: tuple[Phase, ...]
    offset: float = 0.0
    cycle_min: float = 30.0
    cycle_max: float = 150.0
    startup_lost_s: float = 2.0
    extension_s: float = 2.0
    k: float = 0.5
    upstream_i: float = 1.0
    source: str = field(default="<plan>", compare=False)

    def __post_init__(self) -> None:
        validate(self)

    # ------------------------------------------------------------------ structure
    def approach(self, name: str) -> Approach:
        for a in self.approaches:
            if a.name == name:
                return a
        raise KeyError(name)

    @property
    def approach_names(self) -> list[str]:
        return [a.name for a in self.approaches]

    def lost_time(self, phase: Phase) -> float:
        """Lost time charged when the green of `phase` ends (HCM: l1 + Y + AR - e, never negative)."""
        return max(0.0, self.startup_lost_s + phase.intergreen - self.extension_s)

    @property
    def total_lost_time(self) -> float:
        """L: lost time per cycle, one charge per phase change."""
        return sum(self.lost_time(p) for p in self.phases)

    @property
    def total_intergreen(self) -> float:
        return sum(p.intergreen for p in self.phases)

    def lane_groups(self) -> list[LaneGroup]:
        """Lane groups that carry demand (a turn lane with a zero turning share is left out)."""
        groups: list[LaneGroup] = []
        for a in self.approaches:
            if a.left_lanes and a.left > 0:
                groups.append(LaneGroup(a.name, ("L",), a.left_lanes, True))
            main = tuple(
                t
                for t in TURNS
                if a.share(t) > 0
                and (t == "T" or (t == "L" and not a.left_lanes) or (t == "R" and not a.right_lanes))
            )
            if main:
                groups.append(LaneGroup(a.name, main, a.shared_lanes, False))
            if a.right_lanes and a.right > 0:
                groups.append(LaneGroup(a.name, ("R",), a.right_lanes, True))
        return groups

    def served(self, phase: Phase) -> set[tuple[str, str]]:
        return {tuple(m.split(".")) for m in phase.movements}  # type: ignore[misc]

    # ------------------------------------------------------------------ timing
    def with_timing(self, cycle: float, greens: list[float] | tuple[float, ...], offset: float | None = None) -> Plan:
        """The same plan with a new cycle and phase greens (checked like any other plan)."""
        if len(greens) != len(self.phases):
            raise DataError(self.source, f"expected {len(self.phases)} greens, got {len(greens)}", column="phases")
        phases = tuple(replace(p, green=float(g)) for p, g in zip(self.phases, greens, strict=True))
        return replace(self, cycle=float(cycle), phases=phases, offset=self.offset if offset is None else offset)

    @property
    def greens(self) -> list[float]:
        return [p.green for p in self.phases]

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "name": self.name,
            "cycle": self.cycle,
            "offset": self.offset,
            "cycle_min": self.cycle_min,
            "cycle_max": self.cycle_max,
            "startup_lost_s": self.startup_lost_s,
            "extension_s": self.extension_s,
            "k": self.k,
            "upstream_i": self.upstream_i,
            "approaches": [
                {
                    "name": a.name,
                    "leg": a.leg,
                    "label": a.label,
                    "lanes": a.lanes,
                    "left_lanes": a.left_lanes,
                    "right_lanes": a.right_lanes,
                    "turns": {"L": a.left, "T": a.through, "R": a.right},
                    "sat_flow_base": a.sat_flow_base,
                    "sat_adjust": a.sat_adjust,
                    "heavy_share": a.heavy_share,
                    "arrival_type": a.arrival_type,
                    "length_m": a.length_m,
                    "speed_kmh": a.speed_kmh,
                }
                for a in self.approaches
            ],
            "phases": [
                {
                    "name": p.name,
                    "movements": list(p.movements),
                    "green": p.green,
                    "yellow": p.yellow,
                    "all_red": p.all_red,
                    "min_green": p.min_green,
                }
                for p in self.phases
            ],
        }

    @classmethod
    def from_dict(cls, data: Any, source: str = "<plan>") -> Plan:
        """Build a plan from parsed JSON, naming the JSON path of the first bad value."""
        return _plan_from_dict(data, source)


def load_plan(path: str | Path) -> Plan:
    """Read a plan JSON file (see docs/SIGNAL.md)."""
    from trafficcore.data.validate import read_text

    text = read_text(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(str(path), f"not valid JSON: {e.msg} (column {e.colno})", row=e.lineno) from None
    return Plan.from_dict(data, source=str(path))


def save_plan(plan: Plan, path: str | Path) -> Path:
    """Write a plan as JSON (the same schema `load_plan` reads)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(plan.to_dict(), indent=2) + "\n", encoding="utf-8")
    return p


# ---------------------------------------------------------------------- parsing
def _num(
    d: dict,
    key: str,
    where: str,
    source: str,
    default: Any = None,
    minimum: float | None = 0.0,
    maximum: float | None = None,
    integer: bool = False,
    positive: bool = False,
) -> Any:
    path = f"{where}.{key}" if where else key
    if key not in d or d[key] is None:
        if default is None:
            raise DataError(source, "required value is missing", column=path)
        return default
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise DataError(source, f"expected a number, got {v!r}", column=path)
    if not math.isfinite(v):
        raise DataError(source, f"not a finite number: {v!r}", column=path)
    if integer and float(v) != int(v):
        raise DataError(source, f"expected a whole number, got {v!r}", column=path)
    if minimum is not None and v < minimum:
        raise DataError(source, f"{v!r} is below the minimum {minimum:g}", column=path)
    if positive and v <= 0:
        raise DataError(source, f"must be greater than 0, got {v!r}", column=path)
    if maximum is not None and v > maximum:
        raise DataError(source, f"{v!r} is above the maximum {maximum:g}", column=path)
    return int(v) if integer else float(v)


def _parse_movements(raw: Any, names: set[str], where: str, source: str) -> tuple[str, ...]:
    if isinstance(raw, str) or not isinstance(raw, list) or not raw:
        raise DataError(source, 'expected a non-empty list such as ["N.T", "N.R", "S"]', column=where)
    out: set[str] = set()
    for i, m in enumerate(raw):
        if not isinstance(m, str):
            raise DataError(source, f"expected a movement string, got {m!r}", column=f"{where}[{i}]")
        app, _, turns = m.strip().partition(".")
        if app not in names:
            raise DataError(source, f"unknown approach {app!r} in movement {m!r}; approaches: {sorted(names)}",
                            column=f"{where}[{i}]")
        turns = turns or "LTR"
        bad = [t for t in turns if t not in TURNS]
        if bad:
            raise DataError(source, f"unknown turn {bad[0]!r} in movement {m!r} (use L, T, R)", column=f"{where}[{i}]")
        out.update(f"{app}.{t}" for t in turns)
    return tuple(sorted(out))


def _plan_from_dict(data: Any, source: str) -> Plan:
    if not isinstance(data, dict):
        raise DataError(source, "a plan is a JSON object with 'cycle', 'approaches' and 'phases'")
    schema = data.get("schema", SCHEMA)
    if schema != SCHEMA:
        raise DataError(source, f"unsupported schema {schema!r}; expected {SCHEMA!r}", column="schema")
    raw_apps = data.get("approaches")
    if not isinstance(raw_apps, list) or not raw_apps:
        raise DataError(source, "expected a non-empty list of approaches", column="approaches")
    approaches = []
    for i, a in enumerate(raw_apps):
        w = f"approaches[{i}]"
        if not isinstance(a, dict):
            raise DataError(source, "expected an object", column=w)
        name = a.get("name")
        if not isinstance(name, str) or not name.strip() or "." in name:
            raise DataError(source, f"approach name must be a non-empty string without '.', got {name!r}",
                            column=f"{w}.name")
        leg = a.get("leg", name if name in LEGS else None)
        if leg not in LEGS:
            raise DataError(source, f"leg must be one of {list(LEGS)} (the side traffic comes from), got {leg!r}",
                            column=f"{w}.leg")
        turns = a.get("turns", {"T": 1.0})
        if not isinstance(turns, dict) or set(turns) - set(TURNS):
            raise DataError(source, 'turns is an object like {"L": 0.1, "T": 0.8, "R": 0.1}', column=f"{w}.turns")
        shares = {t: _num(turns, t, f"{w}.turns", source, default=0.0, maximum=1.0) for t in TURNS}
        total = sum(shares.values())
        if abs(total - 1.0) > 0.01:
            raise DataError(source, f"turning shares add up to {total:.3f}, not 1", column=f"{w}.turns")
        shares = {t: v / total for t, v in shares.items()}
        approaches.append(
            Approach(
                name=name.strip(),
                leg=leg,
                label=str(a.get("label", "")),
                lanes=_num(a, "lanes", w, source, integer=True, minimum=1, maximum=MAX_LANES),
                left_lanes=_num(a, "left_lanes", w, source, default=0, integer=True, maximum=MAX_LANES),
                right_lanes=_num(a, "right_lanes", w, source, default=0, integer=True, maximum=MAX_LANES),
                left=shares["L"],
                through=shares["T"],
                right=shares["R"],
                sat_flow_base=_num(a, "sat_flow_base", w, source, default=1900.0, positive=True,
                                   maximum=MAX_SAT_FLOW),
                sat_adjust=_num(a, "sat_adjust", w, source, default=1.0, positive=True, maximum=2.0),
                heavy_share=_num(a, "heavy_share", w, source, default=0.0, maximum=1.0),
                arrival_type=_num(a, "arrival_type", w, source, default=3, integer=True, minimum=1, maximum=6),
                length_m=_num(a, "length_m", w, source, default=250.0, minimum=50.0, maximum=5000.0),
                speed_kmh=_num(a, "speed_kmh", w, source, default=50.0, minimum=5.0, maximum=130.0),
            )
        )
    names = [a.name for a in approaches]
    raw_phases = data.get("phases")
    if not isinstance(raw_phases, list) or not raw_phases:
        raise DataError(source, "expected a non-empty list of phases", column="phases")
    phases = []
    for i, p in enumerate(raw_phases):
        w = f"phases[{i}]"
        if not isinstance(p, dict):
            raise DataError(source, "expected an object", column=w)
        phases.append(
            Phase(
                name=str(p.get("name", f"phase {i + 1}")),
                movements=_parse_movements(p.get("movements"), set(names), f"{w}.movements", source),
                green=_num(p, "green", w, source, maximum=MAX_CYCLE_S),
                yellow=_num(p, "yellow", w, source, default=3.0, maximum=MAX_CYCLE_S),
                all_red=_num(p, "all_red", w, source, default=1.0, maximum=MAX_CYCLE_S),
                min_green=_num(p, "min_green", w, source, default=5.0, maximum=MAX_CYCLE_S),
            )
        )
    return Plan(
        name=str(data.get("name", "plan")),
        cycle=_num(data, "cycle", "", source, positive=True, maximum=MAX_CYCLE_S),
        offset=_num(data, "offset", "", source, default=0.0, maximum=MAX_CYCLE_S),
        cycle_min=_num(data, "cycle_min", "", source, default=30.0, positive=True, maximum=MAX_CYCLE_S),
        cycle_max=_num(data, "cycle_max", "", source, default=150.0, positive=True, maximum=MAX_CYCLE_S),
        startup_lost_s=_num(data, "startup_lost_s", "", source, default=2.0, maximum=MAX_CYCLE_S),
        extension_s=_num(data, "extension_s", "", source, default=2.0, maximum=MAX_CYCLE_S),
        k=_num(data, "k", "", source, default=0.5, positive=True, maximum=1.0),
        upstream_i=_num(data, "upstream_i", "", source, default=1.0, positive=True, maximum=1.0),
        approaches=tuple(approaches),
        phases=tuple(phases),
        source=source,
    )


# ---------------------------------------------------------------------- validation
def _finite_non_negative(value: float, source: str, column: str, positive: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DataError(source, f"not a finite number: {value!r}", column=column)
    if value < 0 or (positive and value == 0):
        raise DataError(source, f"must be {'greater than 0' if positive else 'zero or more'}, got {value:g}",
                        column=column)


def _at_most(value: float, limit: float, source: str, column: str, why: str) -> None:
    """Refuse a physically absurd value (it would give nonsense, not an error, further on)."""
    if value > limit:
        raise DataError(source, f"{value:g} is above the maximum {limit:g} ({why})", column=column)


def validate(plan: Plan) -> None:
    """Reject an impossible plan with a `DataError` naming the JSON path of the problem."""
    src = plan.source
    for key in ("cycle", "offset", "cycle_min", "cycle_max", "startup_lost_s", "extension_s", "k", "upstream_i"):
        _finite_non_negative(getattr(plan, key), src, key, positive=key in ("cycle", "k", "upstream_i"))
        if key not in ("k", "upstream_i"):
            _at_most(getattr(plan, key), MAX_CYCLE_S, src, key, "s: no real controller runs")
    if plan.cycle_min > plan.cycle_max:
        raise DataError(src, f"cycle_min {plan.cycle_min:g} s is above cycle_max {plan.cycle_max:g} s",
                        column="cycle_min")
    if not plan.approaches:
        raise DataError(src, "a plan needs at least one approach", column="approaches")
    if not plan.phases:
        raise DataError(src, "a plan needs at least one phase", column="phases")
    seen_names: set[str] = set()
    seen_legs: dict[str, str] = {}
    for i, a in enumerate(plan.approaches):
        w = f"approaches[{i}]"
        if a.name in seen_names:
            raise DataError(src, f"duplicate approach name {a.name!r}", column=f"{w}.name")
        seen_names.add(a.name)
        if a.leg not in LEGS:
            raise DataError(src, f"leg must be one of {list(LEGS)}, got {a.leg!r}", column=f"{w}.leg")
        if a.leg in seen_legs:
            raise DataError(src, f"leg {a.leg} is used by approaches {seen_legs[a.leg]!r} and {a.name!r}",
                            column=f"{w}.leg")
        seen_legs[a.leg] = a.name
        for key in ("sat_flow_base", "sat_adjust", "length_m", "speed_kmh"):
            _finite_non_negative(getattr(a, key), src, f"{w}.{key}", positive=True)
        for key in ("heavy_share", "left", "through", "right"):
            _finite_non_negative(getattr(a, key), src, f"{w}.{key}")
        for key in ("lanes", "left_lanes", "right_lanes"):
            _at_most(getattr(a, key), MAX_LANES, src, f"{w}.{key}", "lanes at one stop line")
        _at_most(a.sat_flow_base, MAX_SAT_FLOW, src, f"{w}.sat_flow_base", "pc/h/ln")
        if a.lanes < 1 or a.left_lanes < 0 or a.right_lanes < 0:
            raise DataError(src, "lanes must be at least 1 and turn lanes zero or more", column=f"{w}.lanes")
        if a.shared_lanes < 0:
            raise DataError(src, f"left_lanes + right_lanes ({a.left_lanes + a.right_lanes}) exceed lanes ({a.lanes})",
                            column=f"{w}.lanes")
        needs_main = a.through > 0 or (a.left > 0 and not a.left_lanes) or (a.right > 0 and not a.right_lanes)
        if needs_main and a.shared_lanes == 0:
            raise DataError(src, "every lane is an exclusive turn lane but through or unlaned turning traffic "
                                 "needs a lane", column=f"{w}.lanes")
        if abs(a.left + a.through + a.right - 1.0) > 0.01:
            raise DataError(src, "turning shares must add up to 1", column=f"{w}.turns")
        if a.arrival_type not in range(1, 7):
            raise DataError(src, f"arrival_type must be 1..6, got {a.arrival_type!r}", column=f"{w}.arrival_type")
    for i, p in enumerate(plan.phases):
        w = f"phases[{i}]"
        for key in ("green", "yellow", "all_red", "min_green"):
            _finite_non_negative(getattr(p, key), src, f"{w}.{key}")
            _at_most(getattr(p, key), MAX_CYCLE_S, src, f"{w}.{key}", "s: no real controller runs")
        if p.green + 1e-9 < p.min_green:
            raise DataError(src, f"green {p.green:g} s is below the minimum green {p.min_green:g} s",
                            column=f"{w}.green")
        for m in p.movements:
            app, _, turn = m.partition(".")
            if app not in seen_names or turn not in TURNS:
                raise DataError(src, f"unknown movement {m!r}", column=f"{w}.movements")
        _check_conflicts(plan, p, w)
    total = sum(p.split for p in plan.phases)
    if abs(total - plan.cycle) > CYCLE_TOLERANCE_S:
        greens = sum(p.green for p in plan.phases)
        raise DataError(src, f"greens ({greens:g} s) + intergreens ({total - greens:g} s) = {total:g} s, "
                             f"but the cycle is {plan.cycle:g} s", column="cycle")
    if plan.offset >= plan.cycle:
        raise DataError(src, f"offset {plan.offset:g} s must be below the cycle {plan.cycle:g} s", column="offset")
    _check_served(plan)


def _check_conflicts(plan: Plan, phase: Phase, where: str) -> None:
    """Through movements from crossing legs cannot share a phase: that is a collision, not a plan."""
    legs = {plan.approach(m.split(".")[0]).leg for m in phase.movements if m.endswith(".T")}
    if ({"N", "S"} & legs) and ({"E", "W"} & legs):
        raise DataError(plan.source, f"phase {phase.name!r} gives green to crossing through movements "
                                     f"(legs {sorted(legs)})", column=f"{where}.movements")


def _check_served(plan: Plan) -> None:
    """Every movement with demand is served, and a shared lane group is served as a whole."""
    groups = plan.lane_groups()
    for g in groups:
        wanted = {(g.approach, t) for t in g.movements}
        served_any = False
        for i, p in enumerate(plan.phases):
            s = plan.served(p)
            part = wanted & s
            if part and part != wanted:
                missing = sorted(f"{a}.{t}" for a, t in wanted - s)
                raise DataError(
                    plan.source,
                    f"phase {p.name!r} serves {sorted(f'{a}.{t}' for a, t in part)} but not {missing}, which share "
                    f"lane group {g.id}; serve them together or give the turn its own lane",
                    column=f"phases[{i}].movements",
                )
            served_any = served_any or bool(part)
        if not served_any:
            raise DataError(plan.source, f"movement(s) {[f'{g.approach}.{t}' for t in g.movements]} have demand "
                                         "but no phase serves them", column="phases")
