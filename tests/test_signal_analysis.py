"""HCM / Webster analysis: hand-worked textbook values and invariants.

Sources of the formulas: HCM 2000 (TRB, Highway Capacity Manual 2000) Chapter 16 — Eq. 16-9..16-12
(control delay d = d1 PF + d2 + d3), Exhibit 16-12 (progression factor), Exhibit 16-7 (turn
factors), Appendix G (back of queue); Webster, F.V. (1958) "Traffic Signal Settings", Road
Research Technical Paper 39 (optimum cycle). Every expected number below is worked by hand in the
test's docstring from those formulas, so a reader can check it with a calculator.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trafficcore.signal import (
    Plan,
    analyse,
    incremental_delay,
    level_of_service,
    load_plan,
    progression_factor,
    read_demand_csv,
    uniform_delay,
    webster_cycle,
)
from trafficcore.signal.analysis import Model, drew_filter_flow, free_green, initial_queue_delay

EXAMPLES = Path(__file__).resolve().parents[1] / "docs" / "examples"


def two_phase(n_sat=1800.0, e_sat=1800.0, lanes=2, greens=(40.0, 40.0), yellow=3.0, all_red=2.0, **approach) -> Plan:
    """N (through only) in phase 1, E (through only) in phase 2; effective green = displayed green."""
    base = {"lanes": lanes, "turns": {"T": 1.0}, **approach}
    return Plan.from_dict({
        "cycle": sum(greens) + 2 * (yellow + all_red),
        "approaches": [{"name": "N", "sat_flow_base": n_sat, **base}, {"name": "E", "sat_flow_base": e_sat, **base}],
        "phases": [
            {"name": "NS", "movements": ["N"], "green": greens[0], "yellow": yellow, "all_red": all_red},
            {"name": "EW", "movements": ["E"], "green": greens[1], "yellow": yellow, "all_red": all_red},
        ],
    })


def demand(values: dict[str, list[float]], start="2026-01-01 08:00") -> pd.DataFrame:
    rows = []
    for a, vs in values.items():
        for i, v in enumerate(vs):
            rows.append({"approach": a, "interval_start": pd.Timestamp(start) + pd.Timedelta(minutes=15 * i),
                         "interval_min": 15, "p10": v, "p50": v, "p90": v})
    return pd.DataFrame(rows)


def test_hcm_uniform_and_incremental_delay_hand_worked():
    """C = 90 s, g = 40 s, s = 3600 veh/h (2 x 1800), v = 1200 veh/h, T = 0.25 h, k = 0.5, I = 1.

    c = 3600 * 40/90 = 1600 veh/h; X = 0.75;
    d1 = 0.5 * 90 * (1 - 0.4444)^2 / (1 - 0.75 * 0.4444) = 45 * 0.30864 / 0.66667 = 20.833 s;
    d2 = 900 * 0.25 * [(0.75 - 1) + sqrt(0.0625 + 8 * 0.5 * 1 * 0.75 / (1600 * 0.25))]
       = 225 * (-0.25 + sqrt(0.07)) = 225 * 0.0145751 = 3.2794 s;  d = 24.11 s -> LOS C.
    """
    assert uniform_delay(90.0, 40.0, 0.75) == pytest.approx(20.8333, abs=1e-3)
    assert incremental_delay(0.75, 1600.0, 0.25) == pytest.approx(3.2794, abs=1e-3)
    a = analyse(two_phase(), demand({"N": [1200.0], "E": [300.0]}))
    n = a.lane_groups.set_index("lane_group").loc["N.T"]
    assert n["c"] == pytest.approx(1600.0)
    assert n["x"] == pytest.approx(0.75)
    assert n["d1"] == pytest.approx(20.8333, abs=1e-3)
    assert n["d2"] == pytest.approx(3.2794, abs=1e-3)
    assert n["delay_s"] == pytest.approx(24.113, abs=1e-2)
    assert n["los"] == "C"


def test_back_of_queue_hcm_appendix_g_hand_worked():
    """Same lane group, per lane: v_L = 600, c_L = 800, s_L = 1800 veh/h, g/C = 0.4444, AT 3 (PF2 = 1).

    Q1 = (600 * 90/3600) * (1 - 0.4444) / (1 - 0.75 * 0.4444) = 15 * 0.5556 / 0.6667 = 12.500;
    k_B = 0.12 * 1 * (1800 * 40/3600)^0.7 = 0.12 * 20^0.7 = 0.97702;
    Q2 = 0.25 * 800 * 0.25 * [(-0.25) + sqrt(0.0625 + 8 * 0.97702 * 0.75/200)] = 50 * 0.053003 = 2.650;
    Q = 15.150 veh/lane -> 30.30 veh on 2 lanes; 95th = (15.150 + 1.645 sqrt(15.150)) * 2 = 43.11.
    """
    a = analyse(two_phase(), demand({"N": [1200.0], "E": [300.0]}))
    n = a.lane_groups.set_index("lane_group").loc["N.T"]
    kb = 0.12 * 20**0.7
    q2 = 50 * (-0.25 + math.sqrt(0.0625 + 8 * kb * 0.75 / 200))
    q = 12.5 + q2
    assert q2 == pytest.approx(2.650, abs=1e-3)
    assert n["queue_mean_veh"] == pytest.approx(2 * q, rel=1e-6)
    assert n["queue_p95_veh"] == pytest.approx(2 * (q + 1.645 * math.sqrt(q)), rel=1e-6)
    assert n["queue_p95_veh"] == pytest.approx(43.11, abs=0.01)


def test_progression_factor_exhibit_16_12():
    """PF = (1 - R_p g/C) f_PA / (1 - g/C); g/C = 0.4444.

    AT 3: R_p = 1, f_PA = 1 -> PF = 1. AT 4: (1 - 1.333 * 0.4444) * 1.15 / 0.5556 = 0.8436.
    AT 5: (1 - 1.667 * 0.4444) * 1.0 / 0.5556 = 0.4664.
    """
    gc = 40.0 / 90.0
    assert progression_factor(gc, 3) == pytest.approx(1.0)
    assert progression_factor(gc, 4) == pytest.approx(0.8436, abs=1e-4)
    assert progression_factor(gc, 5) == pytest.approx(0.4664, abs=1e-4)
    good = analyse(two_phase(arrival_type=5), demand({"N": [1200.0], "E": [300.0]}))
    n = good.lane_groups.set_index("lane_group").loc["N.T"]
    assert n["pf"] == pytest.approx(0.4664, abs=1e-4)
    assert n["d1"] == pytest.approx(20.8333 * 0.4664, abs=1e-2)


def test_progression_factor_capped_at_1_for_arrival_types_3_to_6():
    """HCM 2000 Exhibit 16-12, g/C = 0.20 column: AT 1 1.167, AT 2 1.007, AT 3 1.000, AT 4 1.000.

    By hand: AT 4 (1 - 1.333 * 0.2) * 1.15 / 0.8 = 1.054 -> "PF may not exceed 1.0 for AT 3-6" -> 1.000;
    AT 1 (1 - 0.333 * 0.2) * 1.0 / 0.8 = 1.167 and AT 2 (1 - 0.667 * 0.2) * 0.93 / 0.8 = 1.007 stay above 1.
    """
    assert progression_factor(0.2, 4) == pytest.approx(1.0)
    assert progression_factor(0.2, 1) == pytest.approx(1.1668, abs=1e-4)
    assert progression_factor(0.2, 2) == pytest.approx(1.0074, abs=1e-4)
    short = analyse(two_phase(greens=(14.0, 66.0), arrival_type=4), demand({"N": [300.0], "E": [300.0]}))
    n = short.lane_groups.set_index("lane_group").loc["N.T"]  # g/C = 14/90 = 0.156 -> uncapped 1.091
    assert n["pf"] == pytest.approx(1.0)


def test_free_green_constants_single_lane_and_multilane():
    """HCM 2000 Ch. 16 App. C: g_f = G exp(-0.882 LTC^0.717) - t_L multilane, exp(-0.860 LTC^0.629) single lane.

    G = 40 s, LTC = 2 left turners per cycle, t_L = 2 s:
    single lane: 2^0.629 = 1.5465, exp(-0.860 * 1.5465) = 0.26448, 40 * 0.26448 - 2 = 8.579 s;
    multilane:   2^0.717 = 1.6439, exp(-0.882 * 1.6439) = 0.23462, 40 * 0.23462 - 2 = 7.385 s.
    """
    assert free_green(40.0, 2.0, 1, 2.0) == pytest.approx(8.579, abs=1e-3)
    assert free_green(40.0, 2.0, 2, 2.0) == pytest.approx(7.385, abs=1e-3)
    assert free_green(40.0, 2.0, 3, 2.0) == pytest.approx(7.385, abs=1e-3)


def test_webster_two_phase_textbook_exercise():
    """Standard two-phase exercise: N-S critical flow 1000 veh/h on s = 2500, E-W 900 veh/h on s = 3000,
    lost time 6 s per phase (L = 12 s).

    y = 0.4 and 0.3, Y = 0.7; C0 = (1.5 * 12 + 5) / (1 - 0.7) = 23 / 0.3 = 76.67 s;
    effective greens (y/Y)(C0 - L) = 36.95 s and 27.71 s.
    """
    assert webster_cycle(12.0, 0.7) == pytest.approx(76.667, abs=1e-3)
    plan = two_phase(n_sat=1250.0, e_sat=1500.0, greens=(30.0, 30.0), yellow=4.0, all_red=2.0)
    assert plan.total_lost_time == 12.0
    a = analyse(plan, demand({"N": [1000.0], "E": [900.0]}))
    iv = a.intervals.iloc[0]
    assert iv["Y"] == pytest.approx(0.7)
    assert iv["L"] == 12.0
    assert iv["webster_cycle"] == pytest.approx(76.667, abs=1e-3)
    assert iv["critical_groups"] == "N.T,E.T"
    assert iv["xc"] == pytest.approx(0.7 * 72 / 60)

    from trafficcore.signal.optimise import equal_saturation_greens

    g = equal_saturation_greens(Model(plan), 23 / 0.3, np.array([0.4, 0.3]))
    assert g == pytest.approx([0.4 / 0.7 * (23 / 0.3 - 12), 0.3 / 0.7 * (23 / 0.3 - 12)], abs=1e-6)
    assert g == pytest.approx([36.95, 27.71], abs=0.01)
    assert webster_cycle(12.0, 0.7, 30, 60) == 60.0 and webster_cycle(12.0, 1.2, 30, 150) == 150.0


def test_level_of_service_thresholds():
    d = [0.0, 10.0, 10.01, 20.0, 20.5, 35.0, 35.1, 55.0, 55.1, 80.0, 80.1, 300.0]
    assert list(level_of_service(d)) == list("AABBCCDDEEFF")
    assert level_of_service(12.0) == "B"
    assert list(level_of_service([5.0, 5.0], [0.99, 1.01])) == ["A", "F"]  # X > 1 is F whatever the delay


def test_saturation_flow_adjustments_of_example():
    """N.TR: 1900 x 2 lanes x 0.95 (sat_adjust) x f_HV (1/(1 + 0.04)) x f_RT (1 - 0.15 * 0.10/0.88) = 3411.99."""
    plan = load_plan(EXAMPLES / "plan_4leg.json")
    m = Model(plan)
    s = dict(zip(m.group_ids, m.s_prot, strict=True))
    assert s["N.TR"] == pytest.approx(1900 * 2 * 0.95 / 1.04 * (1 - 0.15 * 0.10 / 0.88), rel=1e-9)
    assert s["N.L"] == pytest.approx(1900 * 0.95 / 1.04 * 0.95, rel=1e-9)
    assert s["E.LTR"] == pytest.approx(1900 * 0.95 / 1.02 * (1 - 0.135 * 0.15) / (1 + 0.05 * 0.15), rel=1e-9)


def test_delay_grows_with_demand_and_totals_weighted_by_flow():
    plan = load_plan(EXAMPLES / "plan_4leg.json")
    base = read_demand_csv(EXAMPLES / "demand_4leg.csv")
    delays, groups = [], []
    for f in (0.4, 0.6, 0.8, 1.0, 1.2, 1.4):
        d = base.copy()
        for q in ("p10", "p50", "p90"):
            d[q] = d[q] * f
        a = analyse(plan, d)
        delays.append(a.summary["delay_s"])
        groups.append(a.lane_groups["delay_s"].to_numpy())
        lg = a.lane_groups
        assert a.summary["delay_s"] == pytest.approx((lg["v"] * lg["delay_s"]).sum() / lg["v"].sum())
        ap = a.approaches
        first = ap[(ap["approach"] == "N") & (ap["interval_start"] == ap["interval_start"].min())].iloc[0]
        sub = lg[(lg["approach"] == "N") & (lg["interval_start"] == ap["interval_start"].min())]
        assert first["delay_s"] == pytest.approx((sub["v"] * sub["delay_s"]).sum() / sub["v"].sum())
        assert first["c"] == pytest.approx(sub["c"].sum())
        assert first["x"] == pytest.approx(sub["x"].max())
    assert all(b > a for a, b in zip(delays, delays[1:], strict=False))
    assert all((b >= a - 1e-9).all() for a, b in zip(groups, groups[1:], strict=False))


def test_critical_path_with_overlapping_phases():
    """N leads (N.L + N.T), then N.T runs on with S.T, then E: N.T spans phases 1-2.

    Critical Y = max(y_NL + y_ST + y_ET, y_NT + y_ET).
    """
    plan = Plan.from_dict({
        "cycle": 100,
        "approaches": [
            {"name": "N", "lanes": 2, "left_lanes": 1, "turns": {"L": 0.2, "T": 0.8}},
            {"name": "S", "lanes": 1, "turns": {"T": 1.0}},
            {"name": "E", "lanes": 1, "turns": {"T": 1.0}},
        ],
        "phases": [
            {"name": "N lead", "movements": ["N"], "green": 10, "yellow": 3, "all_red": 1},
            {"name": "NS", "movements": ["N.T", "S.T"], "green": 40, "yellow": 3, "all_red": 1},
            {"name": "E", "movements": ["E"], "green": 38, "yellow": 3, "all_red": 1},
        ],
    })
    m = Model(plan)
    assert m.group_ids == ["N.L", "N.T", "S.T", "E.T"]
    assert m.served.tolist() == [[True, False, False], [True, True, False], [False, True, False],
                                 [False, False, True]]
    g = m.green_contributions(100.0, np.array([10.0, 40.0, 38.0]))
    # N.T is green from the start of phase 1 to the end of phase 2: 10 + 4 + 40 + 4 - 4 lost = 54 s
    assert g.sum(axis=1).tolist() == [10.0, 54.0, 40.0, 38.0]
    y = np.array([[0.05, 0.30, 0.10, 0.20], [0.05, 0.10, 0.20, 0.20]])
    y_tot, best = m.critical(y)
    assert y_tot.tolist() == pytest.approx([0.50, 0.45])
    assert m.packings[best[0]].tolist() == [False, True, False, True]
    assert m.packings[best[1]].tolist() == [True, False, True, True]


def test_permitted_left_capacity_falls_with_opposing_flow():
    """Exclusive permitted left, N.L opposed by S.T in one phase (no opposing flow: 1440 veh/h filter, capped)."""
    plan = Plan.from_dict({
        "cycle": 90,
        "approaches": [
            {"name": "N", "lanes": 2, "left_lanes": 1, "turns": {"L": 0.2, "T": 0.8}},
            {"name": "S", "lanes": 1, "turns": {"T": 1.0}},
            {"name": "E", "lanes": 1, "turns": {"T": 1.0}},
        ],
        "phases": [
            {"name": "NS", "movements": ["N", "S"], "green": 45, "yellow": 3, "all_red": 2},
            {"name": "E", "movements": ["E"], "green": 35, "yellow": 3, "all_red": 2},
        ],
    })
    assert drew_filter_flow(0.0) == pytest.approx(3600 / 2.5)
    assert drew_filter_flow(600.0) < drew_filter_flow(300.0) < drew_filter_flow(0.0)
    caps = []
    for opp in (0.0, 200.0, 400.0, 600.0, 800.0):
        a = analyse(plan, demand({"N": [500.0], "S": [opp], "E": [200.0]}))
        caps.append(a.lane_groups.set_index("lane_group").loc["N.L", "c"])
    assert caps[0] == pytest.approx(min((1440 * 45 + 2 * 3600) / 90, 1900 * 0.95 * 45 / 90))
    assert all(b < a for a, b in zip(caps, caps[1:], strict=False))


def test_initial_queue_carries_unmet_demand():
    plan = two_phase()
    d = demand({"N": [2000.0, 1000.0, 1000.0], "E": [300.0, 300.0, 300.0]})  # c = 1600 veh/h
    plain = analyse(plan, d)
    carry = analyse(plan, d, initial_queue=True)
    lg = carry.lane_groups[carry.lane_groups["lane_group"] == "N.T"].reset_index(drop=True)
    # 400 veh/h unmet for 0.25 h -> 100 veh at the start of interval 2; gone by interval 3 (100 - 600 * 0.25 < 0)
    assert lg["initial_queue_veh"].tolist() == pytest.approx([0.0, 100.0, 0.0])
    # second interval: Qb = 100 veh, X = 0.625 -> clears in 100 / (1600 * 0.375) = 0.1667 h < T: u = 0
    t = 100 / (1600 * 0.375)
    assert lg.loc[1, "d3"] == pytest.approx(1800 * 100 * t / (1600 * 0.25))
    assert lg.loc[1, "delay_s"] > plain.lane_groups.query("lane_group == 'N.T'")["delay_s"].iloc[1]
    under = demand({"N": [1000.0, 1000.0], "E": [300.0, 300.0]})
    assert analyse(plan, under, initial_queue=True).summary["delay_s"] == pytest.approx(
        analyse(plan, under).summary["delay_s"])


def test_initial_queue_delay_hcm_appendix_f_cases_hand_worked():
    """HCM 2000 Appendix F, T = 0.25 h; d3 = 1800 Q_b (1 + u) t / (c T).

    I   no initial queue: d3 = 0.
    II  Q_b = 10, c = 600, X = 0.5: spare 600 * 0.5 = 300 veh/h, clears in t = 10/300 = 0.0333 h < T,
        u = 0: d3 = 1800 * 10 * 1 * 0.0333 / (600 * 0.25) = 600 / 150 = 4.0 s.
    III Q_b = 40, c = 600, X = 0.8: spare 120 veh/h would need 40/120 = 0.333 h > T, so t = T and
        u = 1 - c T (1 - X) / Q_b = 1 - 600 * 0.25 * 0.2 / 40 = 1 - 30/40 = 0.25 (10 of the 40 still
        queued at the end): d3 = 1800 * 40 * 1.25 * 0.25 / 150 = 150.0 s.
    IV  Q_b = 20, c = 500, X = 1.2: the queue grows, t = T, u = 1:
        d3 = 1800 * 20 * 2 * 0.25 / (500 * 0.25) = 18000 / 125 = 144.0 s.
    Boundary II/III: Q_b = 30, c = 600, X = 0.8 clears exactly at T: u = 0 either way, d3 = 1800 * 30 * 0.25 / 150 = 90.
    """
    d3, t, u = initial_queue_delay([0.0, 10.0, 40.0, 20.0, 30.0], [600.0, 600.0, 600.0, 500.0, 600.0],
                                   [0.5, 0.5, 0.8, 1.2, 0.8], 0.25)
    assert d3.tolist() == pytest.approx([0.0, 4.0, 150.0, 144.0, 90.0])
    assert t.tolist() == pytest.approx([0.0, 10 / 300, 0.25, 0.25, 0.25])
    assert u.tolist() == pytest.approx([0.0, 0.0, 0.25, 1.0, 0.0])


@settings(max_examples=300, deadline=None)
@given(qb=st.floats(0.0, 5000.0), c=st.floats(1.0, 20000.0), x=st.floats(0.0, 5.0),
       t_h=st.sampled_from([0.25, 0.5, 1.0]))
def test_initial_queue_delay_is_never_negative(qb, c, x, t_h):
    """Whatever the queue, capacity and demand, d3 >= 0, 0 <= u <= 1 and 0 <= t <= T."""
    d3, t, u = initial_queue_delay(qb, c, x, t_h)
    assert d3 >= 0.0 and 0.0 <= u <= 1.0 and 0.0 <= t <= t_h


def test_initial_queue_that_does_not_clear_in_the_interval():
    """Case III through the analysis: C = 90, g = 40, s = 3600 -> c = 1600 veh/h, T = 0.25 h.

    Interval 1: v = 2000, 400 veh/h unmet -> Q_b = 100 veh. Interval 2: v = 1500, X = 0.9375, spare
    1600 * 0.0625 = 100 veh/h would need 1 h > T: t = T, u = 1 - 1600 * 0.25 * 0.0625 / 100 = 0.75,
    d3 = 1800 * 100 * 1.75 * 0.25 / (1600 * 0.25) = 196.875 s (the (1 - X)-in-the-denominator form
    gave u = 1 - 400 / 6.25 = -63 and d3 = -6975 s/veh).
    """
    a = analyse(two_phase(), demand({"N": [2000.0, 1500.0], "E": [300.0, 300.0]}), initial_queue=True)
    n = a.lane_groups[a.lane_groups["lane_group"] == "N.T"].reset_index(drop=True)
    assert n.loc[1, "initial_queue_veh"] == pytest.approx(100.0)
    assert n.loc[1, "d3"] == pytest.approx(196.875)


def test_initial_queue_never_gives_negative_delay_on_the_example():
    """Shipped example with --initial-queue: it used to give E/W d3 of -1909 / -2195 s/veh at 08:15 and an
    intersection delay of -31.1 s/veh, LOS A. Every d3 is now >= 0 and W at 08:15 (case II, the 08:00
    queue clears within T) is by hand t = Q_b / (c (1 - X)), d3 = 1800 Q_b t / (c T).
    """
    plan = load_plan(EXAMPLES / "plan_4leg.json")
    a = analyse(plan, read_demand_csv(EXAMPLES / "demand_4leg.csv"), initial_queue=True)
    lg = a.lane_groups
    assert (lg["d3"] >= 0).all() and (a.intervals["delay_s"] > 0).all() and a.summary["delay_s"] > 0
    at = lg[(lg["interval_start"] == pd.Timestamp("2026-03-10 08:15")) & (lg["lane_group"] == "W.LTR")].iloc[0]
    qb, c, x = at["initial_queue_veh"], at["c"], at["x"]
    assert 0 < qb < c * 0.25 * (1 - x)
    t = qb / (c * (1 - x))
    assert at["d3"] == pytest.approx(1800 * qb * t / (c * 0.25))
    assert a.intervals.set_index("interval_start").loc["2026-03-10 08:15", "los"] != "A"


def test_analysis_rows_have_out_json_fields():
    plan = load_plan(EXAMPLES / "plan_4leg.json")
    a = analyse(plan, read_demand_csv(EXAMPLES / "demand_4leg.csv"))
    rows = a.rows()
    assert len(rows) == 4 * 8
    for key in ("approach", "interval_start", "v", "c", "x", "delay_s", "los", "queue_mean_veh", "queue_p95_veh"):
        assert key in rows[0]
    assert rows[0]["interval_start"] == "2026-03-10T07:00:00"
    assert all(r["los"] in "ABCDEF" for r in rows)
