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
