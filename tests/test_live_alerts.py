"""Alerts: each kind raised by constructed faults, and none on clean readings."""

from __future__ import annotations

import pandas as pd
import pytest
from live_data import copy_of, live_store, readings

from trafficcore.live.alerts import ALERT_COLUMNS, current_alerts
from trafficcore.live.ingest import ingest_observations, refresh_forecasts

MORNING = pd.date_range("2025-03-17 06:00", periods=8, freq="15min")  # clean readings, forecasts after each
FAULT = pd.date_range("2025-03-17 08:00", periods=8, freq="15min")


def batch(times, values: dict) -> pd.DataFrame:
    return pd.concat([readings(t, values) for t in times], ignore_index=True)


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """The test city with a clean live morning: readings as typical, inside forecasts issued before them.

    Forecasts reach 2 hours ahead, so the ones issued at 06:00 cover the morning and those issued at 08:00
    cover the faults the tests feed afterwards.
    """
    from trafficcore.data.store import Store

    path = tmp_path_factory.mktemp("alerts") / "town.duckdb"
    store = live_store(Store(path))
    refresh_forecasts(store, "town")
    ingest_observations(store, "town", batch(MORNING, {}))
    refresh_forecasts(store, "town")
    return path


@pytest.fixture
def town(template, tmp_path):
    return copy_of(template, tmp_path / "town.duckdb")


def feed(store, times, values_at) -> None:
    """Readings at `times` (typical except `values_at(i)`), one interval at a time, as live."""
    for i, t in enumerate(times):
        ingest_observations(store, "town", readings(t, values_at(i)))


def kinds(alerts: pd.DataFrame) -> list[tuple[str, str]]:
    return sorted(zip(alerts["kind"], alerts["detector_id"], strict=True))


def test_clean_readings_raise_nothing(town):
    alerts = current_alerts(town, "town")
    assert list(alerts.columns) == ALERT_COLUMNS
    assert alerts.empty, alerts["message"].tolist()


def test_band_exceedance_after_three_intervals_outside_not_two(town):
    feed(town, FAULT[:2], lambda i: {"X:N": 400.0 + i})
    assert current_alerts(town, "town").empty  # two in a row: one in 25 by chance, not yet an alert
    feed(town, FAULT[2:3], lambda i: {"X:N": 402.0})
    alerts = current_alerts(town, "town")
    assert kinds(alerts) == [("band_exceedance", "X:N")]
    a = alerts.iloc[0]
    assert a["site_id"] == "X" and a["severity"] == "warning"
    assert a["start_ts"] == FAULT[0] and a["end_ts"] == FAULT[2]
    assert "3 readings in a row above the forecast P10-P90 band" in a["message"]
    # a custom N, and the detector back to normal ends the alert
    assert current_alerts(town, "town", band_n=4).empty
    feed(town, FAULT[3:4], lambda i: {})
    assert current_alerts(town, "town").empty


def test_stuck_detector(town):
    ingest_observations(town, "town", batch(FAULT, {"Y:S": 140.0}))  # 8 identical non-zero readings
    alerts = current_alerts(town, "town")
    stuck = alerts[alerts["kind"] == "stuck"]
    assert stuck["detector_id"].tolist() == ["Y:S"]
    assert "the same reading 140 8 times in a row" in stuck["message"].iloc[0]
    assert current_alerts(town, "town", stuck_k=9).query("kind == 'stuck'").empty


def test_zero_detector_where_traffic_is_expected(town):
    feed(town, FAULT[:4], lambda i: {"X:E": 0.0})
    alerts = current_alerts(town, "town")
    zero = alerts[alerts["kind"] == "zero"]
    assert zero["detector_id"].tolist() == ["X:E"] and zero["start_ts"].iloc[0] == FAULT[0]
    assert "zero for 4 readings" in zero["message"].iloc[0]
    assert ("band_exceedance", "X:E") in kinds(alerts)  # zero is also far below the band


def test_zeros_at_night_are_not_an_alert(town):
    night = pd.date_range("2025-03-18 01:00", periods=6, freq="15min")
    ingest_observations(town, "town", batch(night, {"X:E": 0.0}))  # about 4 is typical at night: zeros are plausible
    assert current_alerts(town, "town", band_n=99).query("kind == 'zero'").empty


def test_los_e_f_predicted_at_a_signal(town):
    latest = town.query("SELECT * EXCLUDE (dataset) FROM forecasts WHERE issued_at = (SELECT max(issued_at) "
                        "FROM forecasts) AND detector_id LIKE 'X:%'")
    assert len(latest)
    assert current_alerts(town, "town").empty
    heavy = latest.assign(p10=latest["p10"] * 6, p50=latest["p50"] * 6, p90=latest["p90"] * 6)
    town.write_frame("forecasts", heavy, "town")  # as if the model now expected six times the traffic at X
    alerts = current_alerts(town, "town")
    los = alerts[alerts["kind"] == "los_ef"]
    assert set(los["site_id"]) == {"X"} and len(los) >= 1
    assert (los["severity"] == "critical").all()
    assert "level of service F predicted" in los["message"].iloc[0] and "default plan" in los["message"].iloc[0]
    assert los["start_ts"].min() >= latest["issued_at"].iloc[0]


def test_alerts_as_of_an_earlier_time(town):
    feed(town, FAULT[:3], lambda i: {"X:N": 400.0 + i})
    assert not current_alerts(town, "town").empty
    assert current_alerts(town, "town", at=MORNING[-1]).empty


def test_unknown_threshold_is_refused(town):
    with pytest.raises(ValueError, match="unknown alert threshold"):
        current_alerts(town, "town", band=3)
