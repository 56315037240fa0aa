"""Demand: the demand CSV (units, PHF, bad rows) and the Forecast frame -> approach flow rates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from trafficcore.errors import DataError
from trafficcore.signal import demand_from_forecast, load_plan, read_demand_csv
from trafficcore.signal.demand import demand_matrix

EXAMPLES = Path(__file__).resolve().parents[1] / "docs" / "examples"


def _csv(tmp_path, text: str) -> Path:
    p = tmp_path / "demand.csv"
    p.write_text(text)
    return p


def test_example_demand_is_vehicles_per_interval():
    d = read_demand_csv(EXAMPLES / "demand_4leg.csv")
    raw = pd.read_csv(EXAMPLES / "demand_4leg.csv")
    assert len(d) == len(raw) == 32
    first = d[(d["approach"] == "N") & (d["interval_start"] == pd.Timestamp("2026-03-10 07:00"))].iloc[0]
    # 170 vehicles in 15 minutes is a flow rate of 680 veh/h
    assert first["p50"] == pytest.approx(170 * 4)
    assert (d["p10"] <= d["p50"]).all() and (d["p50"] <= d["p90"]).all()
    plan = load_plan(EXAMPLES / "plan_4leg.json")
    intervals, flows = demand_matrix(d, plan)
    assert flows.shape == (8, 4) and len(intervals) == 8


def test_units_and_phf(tmp_path):
    p = _csv(tmp_path, "approach,interval_start,p50,unit\nN,2026-01-01 08:00,100,veh\nS,2026-01-01 08:00,500,veh/h\n")
    d = read_demand_csv(p)
    assert d.set_index("approach")["p50"].to_dict() == {"N": 400.0, "S": 500.0}
    assert (d["p10"] == d["p50"]).all()  # missing p10/p90 default to p50
    hourly = _csv(tmp_path, "approach,interval_start,p50\nN,2026-01-01 08:00,900\n")
    d = read_demand_csv(hourly, interval_min=60, phf=0.9)
    # HCM: peak 15-minute flow rate = hourly volume / PHF
    assert d["p50"].iloc[0] == pytest.approx(1000.0)
    with pytest.raises(DataError, match="peak-hour factor"):
        read_demand_csv(hourly, phf=1.5)


@pytest.mark.parametrize(
    "body, row, column, match",
    [
        ("N,2026-01-01 08:00,-3\n", 2, "p50", "negative"),
        ("N,2026-01-01 08:00,10\nS,2026-01-01 08:00,abc\n", 3, "p50", "not a number"),
        ("N,2026-01-01 08:07,10\n", 2, "interval_start", "15-minute boundary"),
        ("N,not-a-time,10\n", 2, "interval_start", "not a date"),
        ("N,2026-01-01 08:00,10\nN,2026-01-01 08:00,12\n", 3, "interval_start", "second row"),
    ],
)
def test_bad_csv_rows_named(tmp_path, body, row, column, match):
    p = _csv(tmp_path, "approach,interval_start,p50\n" + body)
    with pytest.raises(DataError, match=match) as e:
        read_demand_csv(p)
    assert (e.value.row, e.value.column, e.value.file) == (row, column, str(p))


def test_crossing_quantiles_rejected(tmp_path):
    p = _csv(tmp_path, "approach,interval_start,p10,p50,p90\nN,2026-01-01 08:00,5,10,20\nS,2026-01-01 08:00,12,10,20\n")
    with pytest.raises(DataError, match="p10 <= p50 <= p90") as e:
        read_demand_csv(p)
    assert e.value.row == 3


def test_demand_must_cover_plan_approaches(tmp_path):
    plan = load_plan(EXAMPLES / "plan_4leg.json")
    p = _csv(tmp_path, "approach,interval_start,p50\nN,2026-01-01 08:00,10\nS,2026-01-01 08:00,10\n"
                       "E,2026-01-01 08:00,10\nX,2026-01-01 08:00,10\n")
    d = read_demand_csv(p)
    with pytest.raises(DataError, match="approach 'X' is not in plan") as e:
        demand_matrix(d, plan)
    assert e.value.row == 5  # the row as the user sees it in the file
    d = d[d["approach"] != "X"]
    with pytest.raises(DataError, match="approach 'W' has no demand"):
        demand_matrix(d, plan)


def _forecast() -> pd.DataFrame:
    """Two issues of 5-minute forecasts for detectors d1, d2 (approach N) and d3 (approach S)."""
    rows = []
    for issued, bump in ((pd.Timestamp("2026-01-01 06:00"), 100.0), (pd.Timestamp("2026-01-01 06:30"), 0.0)):
        for det, base in (("d1", 10.0), ("d2", 20.0), ("d3", 30.0)):
            for k in range(6):  # 07:00 .. 07:25
                ts = pd.Timestamp("2026-01-01 07:00") + pd.Timedelta(minutes=5 * k)
                p50 = base + k + bump
                rows.append({"detector_id": det, "issued_at": issued, "target_ts": ts,
                             "horizon_min": int((ts - issued).total_seconds() // 60),
                             "p10": p50 - 2, "p50": p50, "p90": p50 + 3})
    rows.append({"detector_id": "other", "issued_at": pd.Timestamp("2026-01-01 06:30"),
                 "target_ts": pd.Timestamp("2026-01-01 07:00"), "horizon_min": 30, "p10": 1, "p50": 1, "p90": 1})
    return pd.DataFrame(rows)


def test_demand_from_forecast_sums_detectors_and_uses_latest_issue():
    d = demand_from_forecast(_forecast(), {"d1": "N", "d2": "N", "d3": "S"})
    assert list(d.columns) == ["approach", "interval_start", "interval_min", "p10", "p50", "p90"]
    n = d[d["approach"] == "N"].set_index("interval_start")["p50"]
    # 07:00 interval, latest issue: d1 = 10, 11, 12 and d2 = 20, 21, 22 vehicles per 5 min
    assert n[pd.Timestamp("2026-01-01 07:00")] == pytest.approx((11 + 21) * 12)
    assert n[pd.Timestamp("2026-01-01 07:15")] == pytest.approx((14 + 24) * 12)
    s = d[d["approach"] == "S"].set_index("interval_start")
    assert s["p90"].iloc[0] == pytest.approx((31 + 3) * 12)
    assert set(d["approach"]) == {"N", "S"}  # the unmapped detector is ignored


def test_demand_from_forecast_phf_clipping_and_errors():
    f = _forecast()
    d = demand_from_forecast(f, {"d1": "N"}, phf=0.8)
    assert d["p50"].iloc[0] == pytest.approx(11 * 12 / 0.8)
    f.loc[0, "p10"] = -5.0  # a model's negative night-time quantile is clipped, not rejected
    assert (demand_from_forecast(f, {"d1": "N"})["p10"] >= 0).all()
    short = f[~((f["detector_id"] == "d2") & (f["target_ts"] >= pd.Timestamp("2026-01-01 07:15")))]
    with pytest.raises(DataError, match="detector d2 .* 1 of 2 intervals"):
        demand_from_forecast(short, {"d1": "N", "d2": "N"})
    with pytest.raises(DataError, match="no forecasts for the mapped detectors"):
        demand_from_forecast(f, {"zz": "N"})
    crossed = f.copy()
    crossed.loc[crossed.index[-2], "p10"] = 1e6
    with pytest.raises(DataError, match="quantiles cross"):
        demand_from_forecast(crossed, {"d1": "N", "d2": "N", "d3": "S"})
    with pytest.raises(DataError, match="missing required column"):
        demand_from_forecast(f.drop(columns=["p90"]), {"d1": "N"})


def test_demand_from_forecast_15_minute_steps_and_partial_interval():
    rows = [{"detector_id": "a", "issued_at": pd.Timestamp("2026-01-01 06:00"),
             "target_ts": pd.Timestamp("2026-01-01 07:00") + pd.Timedelta(minutes=15 * k), "horizon_min": 60 + 15 * k,
             "p10": v, "p50": v, "p90": v} for k, v in enumerate([50.0, 60.0, 70.0])]
    d = demand_from_forecast(pd.DataFrame(rows), {"a": "N"})
    assert np.allclose(d["p50"], [200.0, 240.0, 280.0])
    hourly = demand_from_forecast(pd.DataFrame(rows), {"a": "N"}, interval_min=60)
    # a partly covered hour is still a rate: mean of the covered steps x 4
    assert hourly["p50"].iloc[0] == pytest.approx(60.0 * 4)
