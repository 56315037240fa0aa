"""Timing plan: loading, the documented schema, lane groups and rejection of impossible plans."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from trafficcore.errors import DataError
from trafficcore.signal import Plan, load_plan, save_plan

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "examples" / "plan_4leg.json"


@pytest.fixture
def raw() -> dict:
    return json.loads(EXAMPLE.read_text())


def test_example_plan_loads_with_lane_groups():
    plan = load_plan(EXAMPLE)
    assert plan.cycle == 90
    assert [a.name for a in plan.approaches] == ["N", "S", "E", "W"]
    ids = [g.id for g in plan.lane_groups()]
    # exclusive left lanes on N/S form their own groups; E/W share one lane for all turns
    assert ids == ["N.L", "N.TR", "S.L", "S.TR", "E.LTR", "W.LTR"]
    assert plan.total_lost_time == pytest.approx((2 + 4 - 2) + (2 + 5 - 2) + (2 + 5 - 2))
    assert plan.phases[2].movements == ("E.L", "E.R", "E.T", "W.L", "W.R", "W.T")


def test_json_round_trip(tmp_path, raw):
    plan = load_plan(EXAMPLE)
    out = save_plan(plan, tmp_path / "p.json")
    again = load_plan(out)
    assert again == plan
    assert again.to_dict() == plan.to_dict()


def test_with_timing_checks_the_new_times():
    plan = load_plan(EXAMPLE)
    p2 = plan.with_timing(100, [12, 48, 26])
    assert p2.cycle == 100 and p2.greens == [12, 48, 26]
    with pytest.raises(DataError, match="cycle is 100"):
        plan.with_timing(100, [12, 48, 20])


def _expect(raw: dict, match: str, column: str | None = None):
    with pytest.raises(DataError, match=match) as e:
        Plan.from_dict(raw, source="plan.json")
    assert e.value.file == "plan.json"
    if column is not None:
        assert e.value.column == column
    return e.value


def test_greens_plus_intergreens_must_equal_cycle(raw):
    raw["cycle"] = 95
    err = _expect(raw, r"greens \(76 s\) \+ intergreens \(14 s\) = 90 s, but the cycle is 95 s", "cycle")
    assert "plan.json" in str(err)


def test_movement_never_served_is_rejected(raw):
    raw["phases"][2]["movements"] = ["E", "W.TR"]  # W's left has demand but no phase
    _expect(raw, r"no phase serves them|serves .* but not", None)


def test_movement_never_served_exclusive_lane(raw):
    raw["phases"] = raw["phases"][1:]
    raw["phases"][0]["green"] = 54  # keep the cycle at 90 s
    raw["cycle"] = 90
    _expect(raw, r"\['N.L'\] have demand but no phase serves them", "phases")


def test_shared_lane_must_be_served_whole(raw):
    raw["phases"][2]["movements"] = ["E.T", "E.R", "W"]
    raw["phases"].append({"name": "E left", "movements": ["E.L"], "green": 5, "yellow": 3, "all_red": 1})
    raw["cycle"] = 99
    _expect(raw, r"share lane group E.LTR", "phases[2].movements")


@pytest.mark.parametrize("value", [-1, float("nan"), float("inf")])
def test_negative_or_non_finite_times_rejected(raw, value):
    raw["phases"][1]["yellow"] = value
    err = _expect(raw, "minimum|finite", "phases[1].yellow")
    assert err.row is None


def test_nan_in_json_text_rejected(tmp_path, raw):
    text = json.dumps(raw).replace('"all_red": 2', '"all_red": NaN', 1)
    p = tmp_path / "nan.json"
    p.write_text(text)
    with pytest.raises(DataError, match="finite") as e:
        load_plan(p)
    assert e.value.column.endswith("all_red")


def test_green_below_minimum_rejected(raw):
    raw["phases"][0]["green"] = 4  # min_green 5
    raw["phases"][1]["green"] = 46
    _expect(raw, "below the minimum green", "phases[0].green")


def test_crossing_throughs_in_one_phase_rejected(raw):
    raw["phases"][1]["movements"] = ["N.TR", "S.TR", "E.T"]
    _expect(raw, "crossing through movements", "phases[1].movements")


def test_unknown_approach_and_turn(raw):
    bad = copy.deepcopy(raw)
    bad["phases"][0]["movements"] = ["X.L"]
    _expect(bad, "unknown approach 'X'", "phases[0].movements[0]")
    bad = copy.deepcopy(raw)
    bad["phases"][0]["movements"] = ["N.U"]
    _expect(bad, "unknown turn 'U'", "phases[0].movements[0]")


def test_turn_shares_and_lanes_checked(raw):
    bad = copy.deepcopy(raw)
    bad["approaches"][0]["turns"] = {"L": 0.5, "T": 0.8}
    _expect(bad, "add up to 1.300", "approaches[0].turns")
    bad = copy.deepcopy(raw)
    bad["approaches"][2]["left_lanes"] = 1  # E has one lane: no lane left for through traffic
    _expect(bad, "needs a lane", "approaches[2].lanes")
    bad = copy.deepcopy(raw)
    bad["approaches"][1]["leg"] = "N"
    _expect(bad, "leg N is used by", "approaches[1].leg")


def test_bad_json_syntax_names_line(tmp_path):
    p = tmp_path / "broken.json"
    p.write_text('{\n  "cycle": 90,\n  "approaches": [\n}\n')
    with pytest.raises(DataError, match="not valid JSON") as e:
        load_plan(p)
    assert e.value.row == 4


def test_offset_must_be_inside_cycle(raw):
    raw["offset"] = 90
    _expect(raw, "offset", "offset")
