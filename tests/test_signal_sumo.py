"""SUMO verification: the signal program, error handling, and a real (slow) headless run."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from trafficcore.signal import SumoError, analyse, compare, load_plan, simulate
from trafficcore.signal import sumo as sumo_mod
from trafficcore.signal.sumo import lane_turns, network_sources, phase_states

EXAMPLES = Path(__file__).resolve().parents[1] / "docs" / "examples"


def _binary_or_skip(name: str) -> str:
    try:
        return sumo_mod.sumo_binary(name)
    except SumoError as e:
        pytest.skip(f"SUMO is not available here: {e}")


def small_demand(plan, per_approach: dict[str, float], intervals: int = 2) -> pd.DataFrame:
    rows = []
    for i in range(intervals):
        for a in plan.approach_names:
            v = per_approach[a]
            ts = pd.Timestamp("2026-03-10 07:00") + pd.Timedelta(minutes=15 * i)
            rows.append({"approach": a, "interval_start": ts,
                         "interval_min": 15, "p10": v, "p50": v, "p90": v})
    return pd.DataFrame(rows)


def test_lanes_and_connections_follow_the_geometry():
    plan = load_plan(EXAMPLES / "plan_4leg.json")
    lanes = lane_turns(plan)
    assert lanes["N"] == [["T", "R"], ["T"], ["L"]]  # kerb lane shares the right turn; exclusive left lane
    assert lanes["E"] == [["T", "R", "L"]]
    src = network_sources(plan)
    assert src["edges"].count("<edge ") == 8
    assert '<connection from="N_in" to="E_out" fromLane="2"' in src["connections"]  # N left -> east
    assert '<connection from="N_in" to="W_out" fromLane="0"' in src["connections"]  # N right -> west


def test_signal_states_follow_the_plan():
    plan = load_plan(EXAMPLES / "plan_4leg.json")
    # link order as netconvert numbers it for this plan (checked against a build in the slow test)
    links = {0: ("N", "R"), 1: ("N", "T"), 2: ("N", "T"), 3: ("N", "L"), 4: ("E", "R"), 5: ("E", "T"),
             6: ("E", "L"), 7: ("S", "R"), 8: ("S", "T"), 9: ("S", "T"), 10: ("S", "L"), 11: ("W", "R"),
             12: ("W", "T"), 13: ("W", "L")}
    steps = phase_states(plan, links)
    assert [round(s[1], 3) for s in steps] == [10, 3, 1, 40, 4, 1, 26, 3, 2]
    assert sum(s[1] for s in steps) == plan.cycle
    names = [s[0] for s in steps]
    states = dict(zip(names, (s[2] for s in steps), strict=True))
    assert states["NS protected left green"] == "rrrGrrrrrrGrrr"  # protected: G
    assert states["NS protected left yellow"] == "rrryrrrrrryrrr"
    assert states["NS through/right green"] == "GGGrrrrGGGrrrr"
    # E-W: throughs G, turns that cross or merge with the opposing stream yield (g)
    assert states["EW all (permitted left) green"] == "rrrrgGgrrrrgGg"
    assert states["EW all (permitted left) all-red"] == "r" * 14


def test_missing_binary_is_a_clear_error(monkeypatch):
    import sumolib

    monkeypatch.setattr(sumolib, "checkBinary", lambda name, bindir=None: "/nonexistent/sumo-xyz")
    with pytest.raises(SumoError, match="'sumo' program was not found.*pip install eclipse-sumo"):
        sumo_mod.sumo_binary("sumo")


def test_failure_shows_stderr_and_timeout(tmp_path):
    sumo = _binary_or_skip("sumo")
    with pytest.raises(SumoError, match=r"sumo failed \(exit code \d+\): .*no-such-option"):
        sumo_mod._run([sumo, "--no-such-option"], tmp_path, 30, "sumo")
    with pytest.raises(SumoError, match="did not finish within 0.5 s"):
        sumo_mod._run([sys.executable, "-c", "import time; time.sleep(10)"], tmp_path, 0.5, "sumo")


@pytest.mark.slow
def test_sumo_run_on_small_4leg_produces_delays(tmp_path):
    _binary_or_skip("sumo")
    _binary_or_skip("netconvert")
    plan = load_plan(EXAMPLES / "plan_4leg.json").with_timing(70, [8, 30, 18])
    d = small_demand(plan, {"N": 600.0, "S": 500.0, "E": 200.0, "W": 220.0})
    sim = simulate(plan, d, seed=3, timeout_s=60, tmp_parent=tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing left behind
    rows = sim.rows
    assert len(rows) == 4 * 2
    demand_veh = 1520 * 0.5
    assert abs(sim.summary["vehicles"] - demand_veh) < 0.15 * demand_veh  # Poisson arrivals
    assert sim.summary["unfinished"] == 0 and sim.summary["teleports"] == 0
    assert (rows["sim_delay_s"] > 0).all() and np.isfinite(rows["sim_delay_s"]).all()
    assert (rows["sim_max_queue_veh"] > 0).all()
    assert sim.summary["wall_s"] < 30
    a = analyse(plan, d)
    both = compare(a.approaches, sim)
    ratio = sim.summary["delay_s"] / a.summary["delay_s"]
    assert 0.6 < ratio < 1.7, f"SUMO {sim.summary['delay_s']:.1f} s vs HCM {a.summary['delay_s']:.1f} s"
    # simulated maximum queues are of the order of the analytic 95th-percentile back of queue
    q_ratio = both["sim_max_queue_veh"] / both["queue_p95_veh"]
    assert ((q_ratio > 0.25) & (q_ratio < 4.0)).all(), both[["approach", "queue_p95_veh", "sim_max_queue_veh"]]
    # netconvert numbered the links the way test_signal_states_follow_the_plan assumes
    net = sumo_mod.build_network(plan, tmp_path)
    assert net.links[3] == ("N", "L") and net.links[6] == ("E", "L") and len(net.links) == 14
    shutil.rmtree(tmp_path, ignore_errors=True)


@pytest.mark.slow
def test_sumo_error_cleans_up(tmp_path, monkeypatch):
    _binary_or_skip("sumo")
    plan = load_plan(EXAMPLES / "plan_4leg.json")
    d = small_demand(plan, {"N": 600.0, "S": 500.0, "E": 200.0, "W": 220.0}, intervals=1)
    real_run = sumo_mod._run

    def broken(cmd, cwd, timeout_s, what):
        if what == "sumo":
            cmd = [*cmd, "--no-such-option"]
        return real_run(cmd, cwd, timeout_s, what)

    monkeypatch.setattr(sumo_mod, "_run", broken)
    with pytest.raises(SumoError, match="sumo failed"):
        simulate(plan, d, tmp_parent=tmp_path)
    assert list(tmp_path.iterdir()) == []
