"""The Live page's served-forecast accuracy section (AppTest): the numbers are the monitor's, and an engineer can
roll the model back from it."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from live_data import live_store, readings
from streamlit.testing.v1 import AppTest
from test_app import frame_with, texts

from trafficcore.data.store import Store
from trafficcore.live import monitor, registry
from trafficcore.live.ingest import ingest_observations, live_model, refresh_forecasts

APP = Path(__file__).resolve().parents[1] / "app.py"


@pytest.fixture
def served(tmp_path):
    """The test city served by a promoted version (promoted after an older one), with two hours of readings
    scored against the forecasts issued before them."""
    store = live_store(Store(tmp_path / "live.duckdb"))
    model, _ = live_model(store, "town")
    ids = []
    for name in ("older", "newer"):
        model.save(tmp_path / name)
        ids.append(registry.register(store, "town", "historical_average", tmp_path / name,
                                     {"val": {"15": {"mae": 2.0}, "30": {"mae": 2.0}}}, {}, promote=True,
                                     run_id=f"ha-{name}"))
    refresh_forecasts(store, "town")
    for t in pd.date_range("2025-03-17 06:00", periods=8, freq="15min"):
        ingest_observations(store, "town", readings(t))
        refresh_forecasts(store, "town")
    return store


def page(store, monkeypatch, tmp_path) -> AppTest:
    monkeypatch.setenv("TRAFFICCORE_DB", str(store.path))
    monkeypatch.setenv("TRAFFICCORE_REPORTS", str(tmp_path))
    at = AppTest.from_file(str(APP), default_timeout=90)
    at.query_params.update({"dataset": "town"})
    at.run()
    at.switch_page("pages/live.py").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    return at


def metric(at, label: str):
    return next(m for m in at.metric if m.label == label)


def test_accuracy_section_shows_the_monitor_numbers_and_rolls_back(served, monkeypatch, tmp_path):
    at = page(served, monkeypatch, tmp_path)
    assert "Served forecast accuracy" in texts(at)
    want = monitor.accuracy(served, "town", 24, [], run_id="live:ha-newer")
    assert want["n"].iloc[0] > 0
    day = metric(at, "MAE, last 24 h")
    assert day.value == f"{want['mae'].iloc[0]:.2f}"
    assert "vs validation 2.00" in day.delta
    assert metric(at, "P10–P90 coverage, last 24 h").value == f"{100 * want['coverage_p10_p90'].iloc[0]:.1f}%"
    horizons = frame_with(at, "MAE, 24h")
    by_h = monitor.accuracy(served, "town", 24, ["horizon_min"], run_id="live:ha-newer").set_index("horizon_min")
    assert horizons.set_index("horizon (min)")["MAE, 24h"].round(2).to_dict() == by_h["mae"].round(2).to_dict()
    assert "version ha-newer" in texts(at)

    at.button(key="live_rollback").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert registry.promoted(served, "town")["run_id"] == "ha-older"
    assert "Rolled back ha-newer → ha-older." in [s.value for s in at.success]


def test_accuracy_section_before_anything_was_scored(monkeypatch, tmp_path):
    store = live_store(Store(tmp_path / "plain.duckdb"))
    at = page(store, monkeypatch, tmp_path)
    assert "No served forecast has been scored yet" in texts(at)
    assert "no earlier promoted model version" in texts(at)


def test_model_report_shows_served_forecasts_beside_the_benchmark(served, monkeypatch, tmp_path):
    import json

    report = {"dataset": "town", "protocol": "standard", "run_date": "2026-12-01T10:00:00+00:00",
              "results": [{"model": "gbt", "horizon_min": h, "mae": 1.5 + h / 100} for h in (15, 30, 45)]}
    (tmp_path / "town.json").write_text(json.dumps(report))
    monkeypatch.setenv("TRAFFICCORE_DB", str(served.path))
    monkeypatch.setenv("TRAFFICCORE_REPORTS", str(tmp_path))
    at = AppTest.from_file(str(APP), default_timeout=90)
    at.query_params.update({"dataset": "town"})
    at.run()
    at.switch_page("pages/model_report.py").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert "Served forecasts, last 7 days" in texts(at)
    table = frame_with(at, "served: ha-newer").set_index("horizon (min)")
    want = monitor.accuracy(served, "town", 168, ["horizon_min"]).set_index("horizon_min")
    assert table["served: ha-newer"].round(3).to_dict() == want["mae"].round(3).to_dict()
    assert table.loc[15, "benchmark: gbt"] == pytest.approx(1.65)
    assert table.loc[15, "forecasts scored"] == want.loc[15, "n"]
