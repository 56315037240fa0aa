"""The Live page through AppTest: newest readings, live forecasts and alerts, and a refresh that shows new data."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from live_data import live_store, readings
from streamlit.testing.v1 import AppTest
from test_app import frame_with, texts

from trafficcore.data.store import Store
from trafficcore.live.ingest import ingest_observations, refresh_forecasts

APP = Path(__file__).resolve().parents[1] / "app.py"
MORNING = pd.date_range("2025-03-17 06:00", periods=4, freq="15min")


@pytest.fixture
def live_db(tmp_path):
    store = live_store(Store(tmp_path / "live.duckdb"))
    refresh_forecasts(store, "town")  # issued at 06:00, two hours ahead
    for t in MORNING[:3]:
        ingest_observations(store, "town", readings(t))
    ingest_observations(store, "town", readings(MORNING[3], {"X:E": 0.0}))  # the start of a silent detector
    refresh_forecasts(store, "town")
    return store


@pytest.fixture
def live_page(live_db, monkeypatch, tmp_path):
    monkeypatch.setenv("TRAFFICCORE_DB", str(live_db.path))
    monkeypatch.setenv("TRAFFICCORE_REPORTS", str(tmp_path))
    at = AppTest.from_file(str(APP), default_timeout=90)
    at.query_params.update({"dataset": "town", "site": "X"})
    at.run()
    at.switch_page("pages/live.py").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    return at


def metric(at, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


@pytest.mark.slow
def test_live_page_shows_newest_readings_forecasts_and_alerts(live_page, live_db):
    at = live_page
    assert "Live" in texts(at)
    assert metric(at, "Newest reading") == "2025-03-17 06:45"
    assert metric(at, "Forecasts issued at") == "2025-03-17 07:00"
    assert metric(at, "Batches taken in") == "4" and metric(at, "Alerts") == "0"  # one zero is not yet an alert
    assert "Nothing out of the ordinary" in texts(at)
    fc = frame_with(at, "P50 +15 min")
    assert sorted(fc["detector_id"]) == ["X:E", "X:N", "X:S", "X:W", "Y:N", "Y:S"]
    assert (fc["P50 +15 min"] > 0).all()
    assert len(at.get("plotly_chart")) == 1  # the selected site's readings and forecast band

    # three more silent intervals arrive while the page is open: the next refresh shows the alerts
    for t in pd.date_range("2025-03-17 07:00", periods=3, freq="15min"):
        ingest_observations(live_db, "town", readings(t, {"X:E": 0.0}))
    at.run()
    assert not at.exception
    assert metric(at, "Newest reading") == "2025-03-17 07:30"
    alerts = frame_with(at, "kind")
    assert {"zero", "band_exceedance"} <= set(alerts["kind"])
    assert set(alerts["detector_id"]) == {"X:E"}
    assert "Nothing out of the ordinary" not in texts(at)


def test_live_page_without_live_data_says_so(monkeypatch, tmp_path):
    store = live_store(Store(tmp_path / "plain.duckdb"))
    monkeypatch.setenv("TRAFFICCORE_DB", str(store.path))
    monkeypatch.setenv("TRAFFICCORE_REPORTS", str(tmp_path))
    at = AppTest.from_file(str(APP), default_timeout=90)
    at.query_params.update({"dataset": "town"})
    at.run()
    at.switch_page("pages/live.py").run()
    assert not at.exception and not at.error
    assert "No live batch received yet" in texts(at)
    assert "No live forecasts yet" in texts(at)
