"""The first view issued ahead (`trafficcore.ui.first_view`) and the dashboard opening on it.

A small saved model stands in for the shipped language model (same code path, loads in
milliseconds); a gate on `load_saved` makes "the model is still loading" last as long as a test needs.
"""

from __future__ import annotations

import json
import shutil
import sys
import threading
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest
from test_app_support import city_tables, gate_model_load, make_city_db

from trafficcore import config
from trafficcore.data.panel import load_panel
from trafficcore.data.store import Store
from trafficcore.live import fallback, serving
from trafficcore.live.fallback import fit_baseline
from trafficcore.ui import clock, data_stamp, first_view
from trafficcore.ui import models as uim

APP = Path(__file__).resolve().parents[1] / "app.py"


@pytest.fixture(scope="module")
def city_db(tmp_path_factory):
    return make_city_db(tmp_path_factory.mktemp("fv") / "city.duckdb")


@pytest.fixture
def shipped(tmp_path, city_db):
    """A saved model folder that the dashboard treats as the shipped model of the test city."""
    folder = tmp_path / "shipped"
    model, _ = fit_baseline("seasonal_naive", load_panel(Store(city_db, read_only=True), "city"))
    model.save(folder)
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "dataset_source": "test-city"}))
    return folder


@pytest.fixture
def db(tmp_path, city_db):
    """A private copy of the test city store (these tests write forecasts into it)."""
    path = tmp_path / "city.duckdb"
    shutil.copy(city_db, path)
    return str(path)


def test_issued_forecasts_are_what_the_model_says_and_only_for_that_model_and_data(db, shipped):
    store = Store(db)
    res = first_view.prepare(store, "city", shipped)
    panel = load_panel(store, "city")
    at = clock.default_issue_time(panel)
    assert res is not None and res["issued_at"] == at
    stamp = data_stamp(store, "city")
    assert first_view.stored_times(store, "city", stamp, shipped) == [at]
    stored = first_view.stored_forecast(store, "city", stamp, shipped, at)
    model = serving.load_saved(shipped)
    live = uim.forecast(model, panel, at).sort_values(["detector_id", "horizon_min"]).reset_index(drop=True)
    assert len(stored) == len(live) == res["rows"] == panel.values.shape[1] * len(model.spec.horizons_min)
    pd.testing.assert_frame_equal(stored, live, check_dtype=False)
    assert first_view.stored_forecast(store, "city", stamp, shipped, at - pd.Timedelta(hours=1)) is None

    # another model (different weights or settings) must not see them
    cfg = json.loads((shipped / "config.json").read_text())
    (shipped / "config.json").write_text(json.dumps({**cfg, "note": "retrained"}))
    assert first_view.stored_forecast(store, "city", stamp, shipped, at) is None
    # and neither must the same model on changed data; issuing again replaces the old first view
    (shipped / "config.json").write_text(json.dumps(cfg))
    more = city_tables(days=29)
    store.ingest("city", more)
    new_stamp = data_stamp(store, "city")
    assert new_stamp != stamp and first_view.stored_forecast(store, "city", new_stamp, shipped, at) is None
    first_view.prepare(store, "city", shipped)
    ids = store.query("SELECT DISTINCT run_id FROM forecasts WHERE dataset = 'city'")["run_id"].tolist()
    assert ids == [first_view.run_id("city", new_stamp, shipped)]


def test_prepare_does_nothing_where_the_shipped_model_does_not_apply(db, tmp_path):
    assert first_view.prepare(Store(db), "city", tmp_path / "no_model_here") is None
    assert Store(db).query("SELECT count(*) AS n FROM forecasts")["n"].iloc[0] == 0


def texts(at) -> str:
    kinds = ("title", "caption", "markdown", "info", "warning", "error")
    parts = [e.value for kind in kinds for e in getattr(at, kind)]
    return "\n".join(str(p) for p in parts)


def _stored_first_view(db, shipped, monkeypatch, tmp_path):
    """What `trafficcore demo` leaves behind (stored first forecasts, the shipped model as the default), with the
    deferred model load held at a gate the test opens."""
    first_view.prepare(Store(db), "city", shipped)
    monkeypatch.setenv("TRAFFICCORE_DB", db)
    monkeypatch.setenv("TRAFFICCORE_REPORTS", str(tmp_path))
    monkeypatch.setattr(config, "DEMO_MODEL_DIR", shipped)
    return gate_model_load(monkeypatch)


def test_first_page_shows_the_stored_forecasts_and_loads_the_model_after(db, shipped, monkeypatch, tmp_path):
    """No model load and no fit before the first page: the stored forecasts answer, the model loads later."""
    gate = _stored_first_view(db, shipped, monkeypatch, tmp_path)

    def no_fit(*args, **kwargs):
        raise AssertionError("the first page must not fit a model")

    monkeypatch.setattr(fallback, "fit_baseline", no_fit)
    app = AppTest.from_file(str(APP), default_timeout=90)
    at = app.run()
    assert not at.exception and not at.error
    assert at.title[0].value == "Forecast map"
    assert at.selectbox(key="model").value == "shipped"
    side = texts(at.sidebar)
    assert "issued by it ahead of time" in side and "Historical average" not in side
    shared = sys.modules["pages._shared"]
    assert shared.loader_for(str(shipped)) is None  # not started while the browser draws the first page

    # the map's busiest-sites table shows the stored forecasts (sum of approaches at the shared horizon)
    store = Store(db, read_only=True)
    panel = load_panel(store, "city")
    stored = first_view.stored_forecast(store, "city", data_stamp(store, "city"), shipped,
                                        clock.default_issue_time(panel))
    h = at.select_slider(key="map_h").value
    dets = panel.detectors.set_index("detector_id")
    want = stored[stored["horizon_min"] == h].assign(site=lambda d: dets.loc[d["detector_id"], "site_id"].to_numpy())
    want = want.groupby("site")["p50"].sum()
    names = panel.sites.set_index("site_id")["name"]
    table = next(df.value for df in at.dataframe if "forecast" in df.value.columns)
    for name, value in zip(table["name"], table["forecast"], strict=True):
        site = names[names == name].index[0]
        assert value == pytest.approx(round(want[site], 1), abs=0.051)

    # once the delay has passed, the next run starts the load; when it is done the model itself answers
    at.session_state["_load_soon_at"] = 0.0
    at.run()
    loader = shared.loader_for(str(shipped))
    assert loader is not None and not loader.ready
    gate.set()
    assert loader.done.wait(30)
    at.run()
    side = texts(at.sidebar)
    assert "ahead of time" not in side and "Shipped demo model" in side
    assert not at.exception and not at.error


def test_a_page_that_needs_the_model_waits_for_it_instead_of_failing(db, shipped, monkeypatch, tmp_path):
    """Opening "Why this forecast" before the deferred load: the page starts the load and waits for it."""
    gate = _stored_first_view(db, shipped, monkeypatch, tmp_path)
    at = AppTest.from_file(str(APP), default_timeout=90).run()
    assert "issued by it ahead of time" in texts(at.sidebar)
    threading.Timer(0.5, gate.set).start()
    at.switch_page("pages/why_forecast.py").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.title[0].value == "Why this forecast"
    assert any(m.label == "Sum of attributions" for m in at.metric)
    assert sys.modules["pages._shared"].loader_for(str(shipped)).ready
