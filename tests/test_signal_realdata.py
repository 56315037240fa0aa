"""Real SCATS counts through the forecast -> demand -> analysis -> optimisation path (skips without ../shared/data)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from trafficcore.signal import Plan, analyse, demand_from_forecast, optimise

pytestmark = pytest.mark.realdata


def _site_970_as_forecast(shared_data) -> tuple[pd.DataFrame, dict[str, str]]:
    """Tuesday 2006-10-10, 07:00-09:00 counts of site 970 (Warrigal Rd / High Street Rd) as a Forecast frame.

    The observed 15-minute counts stand in for P50 (P10/P90 = -/+ 15 %); the SCATS location
    "WARRIGAL_RD N of HIGH STREET_RD" is the detector group on the north leg.
    """
    path = shared_data / "scats_boroondara_oct2006" / "scats_oct2006_data.csv"
    if not path.exists():
        pytest.skip(f"real data not available: {path} is absent")
    cols = ["SCATS Number", "Location", "Date"] + [f"V{i:02d}" for i in range(28, 36)]
    df = pd.read_csv(path, usecols=cols)
    day = df[(df["SCATS Number"] == 970) & (df["Date"] == "2006-10-10")]
    assert len(day) == 4, "site 970 has four approach detector groups"
    rows, mapping = [], {}
    for _, r in day.iterrows():
        leg = r["Location"].split(" of ")[0].split()[-1][0].upper()
        mapping[r["Location"]] = leg
        for k in range(8):
            ts = pd.Timestamp("2006-10-10 07:00") + pd.Timedelta(minutes=15 * k)
            v = float(r[f"V{28 + k:02d}"])
            rows.append({"detector_id": r["Location"], "issued_at": pd.Timestamp("2006-10-10 06:45"),
                         "target_ts": ts, "horizon_min": 15 * (k + 1), "p10": 0.85 * v, "p50": v, "p90": 1.15 * v})
    return pd.DataFrame(rows), mapping


def _plan_970() -> Plan:
    """A plausible two-phase-plus-lefts plan: 3 lanes + a left-turn lane on every leg (geometry assumed)."""
    app = {"lanes": 4, "left_lanes": 1, "turns": {"L": 0.1, "T": 0.8, "R": 0.1}, "heavy_share": 0.05}
    return Plan.from_dict({
        "name": "970 WARRIGAL/HIGH ST RD (assumed geometry)", "cycle": 120,
        "approaches": [{"name": leg, **app} for leg in ("N", "S", "E", "W")],
        "phases": [
            {"name": "NS left", "movements": ["N.L", "S.L"], "green": 10, "yellow": 4, "all_red": 2},
            {"name": "NS", "movements": ["N.TR", "S.TR"], "green": 46, "yellow": 4, "all_red": 2},
            {"name": "EW left", "movements": ["E.L", "W.L"], "green": 8, "yellow": 4, "all_red": 2},
            {"name": "EW", "movements": ["E.TR", "W.TR"], "green": 32, "yellow": 4, "all_red": 2},
        ],
    })


def test_scats_counts_through_the_timing_lab(shared_data):
    forecast, mapping = _site_970_as_forecast(shared_data)
    assert sorted(mapping.values()) == ["E", "N", "S", "W"]
    demand = demand_from_forecast(forecast, mapping)
    assert len(demand) == 4 * 8
    raw = forecast.groupby(["detector_id"])["p50"].sum()
    by_app = demand.groupby("approach")["p50"].sum() / 4  # veh/h over 15-min intervals -> vehicles
    for det, leg in mapping.items():
        assert by_app[leg] == pytest.approx(raw[det])
    plan = _plan_970()
    a = analyse(plan, demand)
    assert np.isfinite(a.approaches["delay_s"]).all() and (a.approaches["delay_s"] > 0).all()
    assert a.summary["los"] in "ABCDEF"
    res = optimise(plan, demand, quantiles=("p10", "p50", "p90"), cycle_step=10.0)
    assert res.delay_veh_h <= res.current_delay_veh_h
