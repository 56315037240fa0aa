"""The `signal` typer app: OUT.json contents and exit code 2 with a one-line message on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trafficcore.signal import SumoError, load_plan
from trafficcore.signal import sumo as sumo_mod
from trafficcore.signal.cli import app

EXAMPLES = Path(__file__).resolve().parents[1] / "docs" / "examples"
PLAN = str(EXAMPLES / "plan_4leg.json")
DEMAND = str(EXAMPLES / "demand_4leg.csv")
ROW_KEYS = ("approach", "interval_start", "v", "c", "x", "delay_s", "los", "queue_mean_veh", "queue_p95_veh")

runner = CliRunner()


def test_analyse_writes_out_json(tmp_path):
    out = tmp_path / "out.json"
    res = runner.invoke(app, ["analyse", "--plan", PLAN, "--demand", DEMAND, "--json", str(out)])
    assert res.exit_code == 0, res.output
    assert "intersection:" in res.output
    data = json.loads(out.read_text())
    assert data["command"] == "analyse"
    assert len(data["rows"]) == 32
    assert all(k in data["rows"][0] for k in ROW_KEYS)
    assert data["summary"]["intervals"] == 8 and data["summary"]["los"] in "ABCDEF"
    assert len(data["intervals"]) == 8 and "critical_groups" in data["intervals"][0]


def test_optimise_writes_plan_sheet_and_tod(tmp_path):
    out, plan_out, sheet = tmp_path / "o.json", tmp_path / "best.json", tmp_path / "sheet.csv"
    res = runner.invoke(app, ["optimise", "--plan", PLAN, "--demand", DEMAND, "--json", str(out), "--robust",
                              "--tod", "2", "--min-plan-min", "30", "--cycle-step", "10",
                              "--out-plan", str(plan_out), "--timing-sheet", str(sheet)])
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    s = data["summary"]
    assert s["optimised_delay_veh_h"] <= s["current_delay_veh_h"]
    assert data["objective"]["weights"] == [0.3, 0.4, 0.3]
    assert len(data["time_of_day"]["plans"]) == 2
    assert data["webster"]["cycle"] >= load_plan(PLAN).cycle_min
    best = load_plan(plan_out)
    assert best.cycle == s["optimised_cycle"] and best.greens == s["optimised_greens"]
    assert sheet.read_text().startswith("order,phase,movements")


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--plan", "missing.json", "--demand", DEMAND], "missing.json: file not found"),
        (["--plan", PLAN, "--demand", DEMAND, "--quantile", "p99"], "quantile must be one of"),
        (["--plan", PLAN, "--demand", DEMAND, "--phf", "2"], "peak-hour factor"),
    ],
)
def test_bad_input_exit_code_2_one_line(args, fragment):
    res = runner.invoke(app, ["analyse", *args])
    assert res.exit_code == 2
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0]


def test_impossible_plan_and_bad_demand_row(tmp_path):
    raw = json.loads(Path(PLAN).read_text())
    raw["phases"][0]["green"] = 11
    bad_plan = tmp_path / "plan.json"
    bad_plan.write_text(json.dumps(raw))
    res = runner.invoke(app, ["optimise", "--plan", str(bad_plan), "--demand", DEMAND])
    assert res.exit_code == 2 and "column 'cycle'" in res.output and "cycle is 90 s" in res.output
    bad_demand = tmp_path / "demand.csv"
    bad_demand.write_text(Path(DEMAND).read_text().replace("N,2026-03-10T07:15,164,200,240,veh",
                                                           "N,2026-03-10T07:15,164,lots,240,veh"))
    res = runner.invoke(app, ["analyse", "--plan", PLAN, "--demand", str(bad_demand)])
    assert res.exit_code == 2
    assert "row 6, column 'p50': not a number: 'lots'" in res.output


@pytest.mark.slow
def test_simulate_adds_sim_columns(tmp_path):
    try:
        sumo_mod.sumo_binary("sumo")
    except SumoError as e:
        pytest.skip(f"SUMO is not available here: {e}")
    demand = tmp_path / "d.csv"
    demand.write_text("approach,interval_start,p50\nN,2026-03-10 07:00,120\nS,2026-03-10 07:00,110\n"
                      "E,2026-03-10 07:00,40\nW,2026-03-10 07:00,45\n")
    out = tmp_path / "s.json"
    res = runner.invoke(app, ["simulate", "--plan", PLAN, "--demand", str(demand), "--json", str(out), "--seed", "5"])
    assert res.exit_code == 0, res.output
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 4
    for r in rows:
        assert all(k in r for k in ROW_KEYS)
        assert r["sim_delay_s"] > 0 and r["sim_max_queue_veh"] >= 0 and r["sim_vehicles"] > 0


def _one_line_error(res) -> str:
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), res.output
    return lines[0]


@pytest.mark.parametrize(
    "edit, fragment",
    [
        (lambda p: p.update(cycle=1e300) or p["phases"][1].update(green=1e300 - 50), "column 'phases[1].green'"),
        (lambda p: p.update(cycle=1e300), "column 'cycle': 1e+300 is above the maximum 300"),
        (lambda p: p.update(cycle=450) or p["phases"][1].update(green=400), "column 'phases[1].green'"),
        (lambda p: p["approaches"][0].update(lanes=1e9),
         "column 'approaches[0].lanes': 1000000000.0 is above the maximum 10"),
        (lambda p: p["approaches"][2].update(lanes=11), "column 'approaches[2].lanes'"),
        (lambda p: p.update(cycle_max=1000), "column 'cycle_max'"),
    ],
)
def test_physically_absurd_plan_exits_2_naming_the_place(tmp_path, edit, fragment):
    """A 1e300 s cycle, 400 s green or 1e9 lanes used to run (exit 0, overflow warnings, nonsense delays)."""
    raw = json.loads(Path(PLAN).read_text())
    edit(raw)
    bad = tmp_path / "plan.json"
    bad.write_text(json.dumps(raw))
    line = _one_line_error(runner.invoke(app, ["analyse", "--plan", str(bad), "--demand", DEMAND]))
    assert fragment in line and str(bad) in line


def test_absurd_demand_exits_2_naming_row_and_column(tmp_path):
    """1e12 veh in 15 min is refused on reading; 50,000 veh in 15 min on E (1 lane x 1900 pc/h/ln) is
    200,000 veh/h, over 10 x 1900 = 19,000 veh/h, refused against the plan, by row and column."""
    text = Path(DEMAND).read_text()
    huge = tmp_path / "huge.csv"
    huge.write_text(text.replace("N,2026-03-10T07:15,164,200,240,veh", "N,2026-03-10T07:15,164,1e12,1e12,veh"))
    line = _one_line_error(runner.invoke(app, ["analyse", "--plan", PLAN, "--demand", str(huge)]))
    assert "row 6, column 'p50'" in line and "check the unit" in line
    lanes = tmp_path / "lanes.csv"
    lanes.write_text(text.replace("E,2026-03-10T07:00,45,55,66,veh", "E,2026-03-10T07:00,45,55,50000,veh"))
    line = _one_line_error(runner.invoke(app, ["optimise", "--plan", PLAN, "--demand", str(lanes)]))
    assert "row 4, column 'p90'" in line and "approach 'E'" in line and "19000 veh/h" in line


def test_plan_built_in_code_gets_the_same_limits():
    """The page and the API build plans with `with_timing` / `Plan(...)`: the same refusal, naming the field."""
    from trafficcore.errors import DataError

    plan = load_plan(PLAN)
    with pytest.raises(DataError, match=r"column 'cycle'.*above the maximum 300"):
        plan.with_timing(390.0, [10.0, 300.0, 26.0])
