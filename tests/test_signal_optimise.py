"""Optimisation: Webster, the delay search (never worse than the current plan), robust and time-of-day plans."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from trafficcore.errors import DataError
from trafficcore.signal import (
    Plan,
    analyse,
    load_plan,
    optimise,
    read_demand_csv,
    segment_profile,
    time_of_day,
    webster,
)
from trafficcore.signal.optimise import round_greens

EXAMPLES = Path(__file__).resolve().parents[1] / "docs" / "examples"


def two_phase(greens=(30.0, 30.0), cycle_min=30.0, cycle_max=150.0) -> Plan:
    """Webster's exercise geometry: N-S s = 2500 veh/h, E-W s = 3000 veh/h, 6 s lost per phase."""
    return Plan.from_dict({
        "cycle": sum(greens) + 12, "cycle_min": cycle_min, "cycle_max": cycle_max,
        "approaches": [{"name": "N", "lanes": 2, "sat_flow_base": 1250, "turns": {"T": 1}},
                       {"name": "E", "lanes": 2, "sat_flow_base": 1500, "turns": {"T": 1}}],
        "phases": [{"name": "NS", "movements": ["N"], "green": greens[0], "yellow": 4, "all_red": 2},
                   {"name": "EW", "movements": ["E"], "green": greens[1], "yellow": 4, "all_red": 2}],
    })


def demand(values: dict[str, list[float]], spread: float = 0.0) -> pd.DataFrame:
    rows = []
    for a, vs in values.items():
        for i, v in enumerate(vs):
            ts = pd.Timestamp("2026-01-01 06:00") + pd.Timedelta(minutes=15 * i)
            rows.append({"approach": a, "interval_start": ts,
                         "interval_min": 15, "p10": v * (1 - spread), "p50": v, "p90": v * (1 + spread)})
    return pd.DataFrame(rows)


def test_webster_plan_for_textbook_exercise():
    """y = 1000/2500 = 0.4 and 900/3000 = 0.3, L = 12 s: C0 = 23/0.3 = 76.67 s -> 77 s; the 65 s of green
    split 0.4 : 0.3 = 37.1 : 27.9 -> 37 / 28 s after rounding to whole seconds."""
    w = webster(two_phase(), demand({"N": [1000.0], "E": [900.0]}))
    assert w.cycle_unrounded == pytest.approx(76.667, abs=1e-3)
    assert w.y_total == pytest.approx(0.7)
    assert w.plan.cycle == 77
    assert w.plan.greens == [37.0, 28.0]
    assert w.critical_groups == ["N.T", "E.T"]


def test_webster_designs_for_the_peak_interval_and_respects_bounds():
    w = webster(two_phase(cycle_max=60.0), demand({"N": [500.0, 1000.0, 600.0], "E": [450.0, 900.0, 500.0]}))
    assert w.design_interval == pd.Timestamp("2026-01-01 06:15")
    assert w.plan.cycle == 60.0  # C0 = 76.7 s clipped to cycle_max


def test_webster_does_not_follow_the_users_greens():
    """Webster's cycle is (1.5 L + 5) / (1 - Y) from y = v/s and L; the greens typed into the plan are not an
    input. The example has permitted lefts (E/W shared single lanes, N/S lefts in the through phase), whose
    saturation flow depends on timing: it used to be read at the user's greens, so starving a phase moved
    Webster's answer. Same phases, intergreens and demand with three different splits -> the same plan.
    """
    plan = load_plan(EXAMPLES / "plan_4leg.json")
    d = read_demand_csv(EXAMPLES / "demand_4leg.csv")
    results = [webster(plan.with_timing(plan.cycle, greens), d) for greens in ([10, 40, 26], [10, 20, 46],
                                                                               [20, 40, 16], [6, 54, 16])]
    first = results[0]
    for w in results[1:]:
        assert (w.plan.cycle, w.plan.greens, w.y_total) == (first.plan.cycle, first.plan.greens, first.y_total)
    assert first.plan.cycle == pytest.approx(68.0)


def test_round_greens_keeps_sum_and_minimums():
    g = round_greens(np.array([10.4, 20.35, 30.25]), 61.0, np.array([5.0, 5.0, 5.0]))
    assert g.sum() == pytest.approx(61.0) and all(float(x).is_integer() for x in g)
    g = round_greens(np.array([4.2, 40.0]), 44.2, np.array([5.0, 5.0]))
    assert g[0] >= 5.0 and g.sum() == pytest.approx(44.2)


def test_optimiser_beats_a_bad_plan_and_never_loses():
    bad = two_phase(greens=(15.0, 60.0))  # most green to the lighter E-W road
    d = demand({"N": [900.0, 1000.0, 950.0, 800.0], "E": [500.0, 600.0, 550.0, 450.0]})
    res = optimise(bad, d)
    assert res.current_delay_veh_h == pytest.approx(analyse(bad, d).summary["delay_veh_h"])
    assert res.delay_veh_h == pytest.approx(analyse(res.plan, d).summary["delay_veh_h"])
    assert res.delay_veh_h < 0.7 * res.current_delay_veh_h
    assert res.plan.greens[0] > res.plan.greens[1]
    again = optimise(res.plan, d)  # starting from the optimum: equal or better, never worse
    assert again.delay_veh_h <= res.delay_veh_h + 1e-9
    assert again.current_delay_veh_h == pytest.approx(res.delay_veh_h)
    # the search covers the neighbourhood: no single 1 s move or cycle change does better
    base = res.delay_veh_h
    c, (g1, g2) = res.plan.cycle, res.plan.greens
    for cand in [(c, g1 + 1, g2 - 1), (c, g1 - 1, g2 + 1), (c + 1, g1 + 1, g2), (c + 1, g1, g2 + 1),
                 (c - 1, g1 - 1, g2), (c - 1, g1, g2 - 1)]:
        other = res.plan.with_timing(cand[0], [cand[1], cand[2]])
        assert analyse(other, d).summary["delay_veh_h"] >= base - 1e-9


def test_optimiser_keeps_current_plan_when_search_cannot_beat_it():
    d = demand({"N": [900.0, 1000.0], "E": [500.0, 600.0]})
    best = optimise(two_phase(), d).plan
    # search only long cycles, all worse than the optimum: the current (optimal) plan must come back
    res = optimise(best, d, cycle_min=best.cycle + 40, cycle_max=best.cycle + 60)
    assert len(res.trace) > 0 and (res.trace["delay_veh_h"] > res.current_delay_veh_h).all()
    assert res.plan == best and res.delay_veh_h == res.current_delay_veh_h and res.saving_pct == 0.0


def test_optimiser_improves_example_and_trace_is_consistent():
    plan = load_plan(EXAMPLES / "plan_4leg.json")
    d = read_demand_csv(EXAMPLES / "demand_4leg.csv")
    res = optimise(plan, d, cycle_step=10.0)
    assert res.delay_veh_h <= res.current_delay_veh_h
    assert res.saving_pct > 10.0  # the example's E-W green is too short
    assert len(res.trace) > 5 and (res.trace["delay_veh_h"] >= res.delay_veh_h - 1e-9).all()


def test_robust_objective_uses_swanson_weights():
    plan = two_phase(greens=(30.0, 30.0))
    d = demand({"N": [900.0, 1000.0], "E": [500.0, 600.0]}, spread=0.25)
    res = optimise(plan, d, quantiles=("p10", "p50", "p90"))
    assert res.weights == (0.3, 0.4, 0.3)
    expected = sum(w * analyse(res.plan, d, quantile=q).summary["delay_veh_h"]
                   for q, w in zip(("p10", "p50", "p90"), res.weights, strict=True))
    assert res.delay_veh_h == pytest.approx(expected, rel=1e-9)
    p50_only = optimise(plan, d)
    # designing for the P90 tail asks for at least as long a cycle as designing for the median
    assert res.plan.cycle >= p50_only.plan.cycle
    with pytest.raises(DataError, match="weight"):
        optimise(plan, d, quantiles=("p50",), weights=(1.0, 2.0))


def test_segment_profile_exact_breaks():
    x = np.r_[np.zeros(10), np.ones(7) * 5, np.ones(9) * 2]
    assert segment_profile(x, 3) == [10, 17]
    assert segment_profile(x, 1) == []
    with pytest.raises(ValueError):
        segment_profile(x, 3, min_len=10)


def test_time_of_day_recovers_planted_two_level_profile():
    """A quiet morning (16 intervals) then a busy period (16 intervals), with noise: k = 2 finds the step."""
    rng = np.random.default_rng(7)
    n_low, n_high = 16, 16
    ns = np.r_[np.full(n_low, 500.0), np.full(n_high, 1500.0)] * rng.uniform(0.93, 1.07, n_low + n_high)
    ew = np.r_[np.full(n_low, 300.0), np.full(n_high, 550.0)] * rng.uniform(0.93, 1.07, n_low + n_high)
    d = demand({"N": list(ns), "E": list(ew)})
    plan = two_phase(greens=(30.0, 30.0))
    tod = time_of_day(plan, d, k=2, min_intervals=4, cycle_step=10.0)
    seg = tod.segments
    assert seg["start"].tolist() == [pd.Timestamp("2026-01-01 06:00"), pd.Timestamp("2026-01-01 10:00")]
    assert seg["end"].iloc[-1] == pd.Timestamp("2026-01-01 14:00")
    assert seg["intervals"].tolist() == [16, 16]
    low, high = tod.plans
    assert high.cycle > low.cycle
    assert high.greens[0] / high.greens[1] > 1.5
    assert (seg["delay_veh_h"] <= seg["current_delay_veh_h"] + 1e-9).all()
    assert tod.delay_veh_h < tod.current_delay_veh_h
    with pytest.raises(DataError, match="cannot split"):
        time_of_day(plan, d, k=9, min_intervals=4)


def test_equal_saturation_without_an_lp_solver_matches_the_linear_programme():
    """The bisection used when each lane group has one phase gives the LP's greens (random instances)."""
    from scipy.optimize import linprog

    from trafficcore.signal.optimise import _max_min_margin_single

    rng = np.random.default_rng(3)
    checked = 0
    for _ in range(200):
        n_p, n_g = int(rng.integers(2, 6)), int(rng.integers(2, 9))
        phase = np.concatenate([np.arange(n_p), rng.integers(0, n_p, n_g - n_p)]) if n_g >= n_p else \
            rng.integers(0, n_p, n_g)
        min_green = rng.uniform(4, 15, n_p)
        yc = rng.uniform(1, 40, n_g)
        const = rng.uniform(-3, 3, n_g)
        budget = float(rng.uniform(20, 150))
        ours = _max_min_margin_single(min_green, phase, yc, const, budget)
        served = np.zeros((n_g, n_p))
        served[np.arange(n_g), phase] = 1.0
        res = linprog(np.r_[np.zeros(n_p), -1.0], A_ub=np.hstack([-served, yc[:, None]]), b_ub=const,
                      A_eq=np.r_[np.ones(n_p), 0.0][None, :], b_eq=[budget],
                      bounds=[(float(m), None) for m in min_green] + [(0.0, 1e6)], method="highs")
        if res.status != 0:
            assert ours is None
            continue
        checked += 1
        assert ours is not None and ours.sum() == pytest.approx(budget, abs=1e-6)
        assert np.min((served @ ours + const) / yc) == pytest.approx(-res.fun, abs=1e-6)
        assert np.all(ours >= min_green - 1e-9)
        assert ours == pytest.approx(res.x[:n_p], abs=1e-5)  # the optimum is unique here
    assert checked > 100
