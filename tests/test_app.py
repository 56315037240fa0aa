"""The dashboard shell through Streamlit's AppTest: router, shared sidebar, URL state, failure handling,
and the Import & quality page (including an upload that must fail in plain words)."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from test_app_support import GAP, STUCK, ZERO, gate_model_load, make_city_db

from trafficcore.data.store import Store

APP = Path(__file__).resolve().parents[1] / "app.py"
PAGES = ["forecast_map", "site_detail", "signal_whatif", "tod_plans", "why_forecast", "model_report", "import_quality"]


@pytest.fixture(scope="module")
def city_db(tmp_path_factory):
    return make_city_db(tmp_path_factory.mktemp("app") / "city.duckdb")


@pytest.fixture
def app(city_db, monkeypatch, tmp_path):
    monkeypatch.setenv("TRAFFICCORE_DB", city_db)
    monkeypatch.setenv("TRAFFICCORE_REPORTS", str(tmp_path))  # no stray reports
    return AppTest.from_file(str(APP), default_timeout=90)


def texts(at) -> str:
    """Everything the user can read on the page, as one string."""
    parts = [e.value for kind in ("title", "subheader", "caption", "markdown", "info", "warning", "error", "success")
             for e in getattr(at, kind)]
    return "\n".join(str(p) for p in parts)


def test_every_page_file_exists():
    for name in PAGES:
        assert (APP.parent / "pages" / f"{name}.py").exists(), name


def test_first_page_is_the_map_with_sidebar_defaults(app):
    at = app.run()
    assert not at.exception
    assert at.title[0].value == "Forecast map"
    assert at.selectbox(key="dataset").value == "city"
    assert at.selectbox(key="model").value == "fit:historical_average"
    assert "Historical average" in texts(at.sidebar)
    # the default issue time is a weekday 08:00 with two hours of data after it
    assert at.query_params["at"] == ["2025-03-28T08:00"] or at.query_params["at"] == "2025-03-28T08:00"
    assert "Synthetic data" in texts(at)


def frame_with(at, column: str):
    """The first table on the page that has `column` (tables are not addressable by key in AppTest)."""
    for df in at.dataframe:
        if column in df.value.columns:
            return df.value
    raise AssertionError(f"no table with column {column!r}")


def _qp(at, key):
    v = at.query_params.get(key)
    return v[0] if isinstance(v, list) else v


def test_deep_link_sets_site_time_and_horizon(app):
    app.query_params.update({"dataset": "city", "site": "S3", "at": "2025-03-26T17:00", "h": "30"})
    at = app.run()
    assert not at.exception
    assert at.selectbox(key="site").value == "S3"
    assert at.selectbox(key="asof_time").value == "17:00"
    assert str(at.date_input(key="asof_date").value) == "2025-03-26"
    assert at.select_slider(key="map_h").value == 30
    assert "issued Wed 26 Mar 17:00" in texts(at)


def test_bad_link_values_fall_back_to_defaults(app):
    app.query_params.update({"dataset": "nope", "site": "<script>", "at": "yesterday-ish", "h": "x"})
    at = app.run()
    assert not at.exception
    assert at.selectbox(key="dataset").value == "city"
    assert at.selectbox(key="site").value != "<script>"
    assert _qp(at, "at") == "2025-03-28T08:00"


def test_selection_survives_page_switches_and_stays_in_the_url(app):
    at = app.run()
    at.selectbox(key="site").set_value("S5").run()
    at.selectbox(key="asof_time").set_value("07:30").run()
    for page in ("pages/site_detail.py", "pages/signal_whatif.py", "pages/forecast_map.py"):
        at.switch_page(page).run()
        assert not at.exception, page
        assert at.selectbox(key="site").value == "S5"
        assert _qp(at, "site") == "S5"
        assert _qp(at, "at").endswith("T07:30")
    assert "King St / 2nd Ave" in texts(at)  # S5's name in the approach table heading


def test_jump_to_newest_reading(app):
    at = app.run()
    jump = [b for b in at.sidebar.button if b.label.startswith("Jump")][0]
    jump.click().run()
    assert _qp(at, "at") == "2025-03-31T00:00"  # one interval past the newest reading (23:45)
    assert "live" in texts(at.sidebar)


def test_a_failing_page_shows_a_friendly_message_not_a_traceback(app, monkeypatch):
    from trafficcore.ui import forecasts

    def broken(*args, **kwargs):
        raise RuntimeError("internal detail that must not reach the user")

    monkeypatch.setattr(forecasts, "site_totals", broken)
    at = app.run()
    assert not at.exception
    shown = texts(at)
    assert "Something went wrong" in shown
    assert "internal detail" not in shown


def test_empty_store_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("TRAFFICCORE_DB", str(tmp_path / "empty.duckdb"))
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    assert not at.exception
    assert any("trafficcore demo" in w.value for w in at.sidebar.warning)
    assert "No dataset is loaded yet" in texts(at)
    at.switch_page("pages/import_quality.py").run()
    assert not at.exception
    assert "No datasets yet" in texts(at)


# ---------------------------------------------------------------------------- Import & quality
def test_datasets_tab_lists_the_store(app):
    at = app.run().switch_page("pages/import_quality.py").run()
    assert not at.exception
    table = frame_with(at, "observations")
    assert table.loc[table["name"] == "city", "detectors"].item() == 24
    assert any("Synthetic" in w.value for w in at.warning)


def test_quality_tab_flags_the_injected_faults(app):
    at = app.run().switch_page("pages/import_quality.py").run()
    flags = frame_with(at, "faults")
    flagged = dict(zip(flags["detector_id"], flags["faults"], strict=True))
    assert set(flagged) == {STUCK[0], ZERO[0], GAP[0]}
    assert "stuck" in flagged[STUCK[0]] and "zero" in flagged[ZERO[0]] and "gap" in flagged[GAP[0]]
    at.toggle(key="q_only").set_value(False).run()
    assert len(frame_with(at, "faults")) == 24


SITES = b"site_id,name,lat,lon\nX1,First St,52.1,5.1\n"
DETS = b"detector_id,site_id,approach\nX1:N,X1,N\n"


def _upload(at, observations: bytes, name: str = "obs.csv"):
    at.selectbox(key="imp_format").set_value("long").run()
    at.file_uploader(key="imp_long_observations").set_value((name, observations, "text/csv"))
    at.file_uploader(key="imp_long_sites").set_value(("sites.csv", SITES, "text/csv"))
    at.file_uploader(key="imp_long_detectors").set_value(("detectors.csv", DETS, "text/csv"))
    at.text_input(key="imp_name").set_value("upl")
    at.run()
    at.button(key="imp_go").click().run()
    return at


def test_bad_upload_is_explained_in_plain_words_and_nothing_is_written(app, city_db):
    before = Store(city_db).dataset_names()
    at = _upload(app.run().switch_page("pages/import_quality.py").run(),
                 b"detector_id,timestamp,value\nX1:N,2025-01-01 00:00,5\nX1:N,2025-01-01 00:15,five\n", "counts.csv")
    assert not at.exception
    err = " ".join(e.value for e in at.error)
    assert "counts.csv" in err and "row 3" in err and "column 'value'" in err and "five" in err
    assert "/tmp" not in err  # the user's file name, not the temporary path
    assert Store(city_db).dataset_names() == before


def test_good_upload_is_imported(app, city_db):
    rows = "".join(f"X1:N,2025-01-01 {h:02d}:{m:02d},{h + m}\n" for h in range(6) for m in (0, 15, 30, 45))
    at = _upload(app.run().switch_page("pages/import_quality.py").run(),
                 ("detector_id,timestamp,value\n" + rows).encode())
    assert not at.exception
    assert any("Imported dataset 'upl'" in s.value for s in at.success)
    store = Store(city_db)
    assert "upl" in store.dataset_names()
    assert len(store.observations("upl")) == 24
    store.drop_dataset("upl")


def test_shipped_model_loads_in_the_background_and_takes_over(app, city_db, tmp_path, monkeypatch):
    """The first page never waits for the saved model: the historical average answers until it is loaded."""
    import json
    import sys

    from trafficcore import config
    from trafficcore.data.panel import load_panel
    from trafficcore.live.fallback import fit_baseline

    folder = tmp_path / "shipped"
    model, _ = fit_baseline("seasonal_naive", load_panel(Store(city_db), "city"))
    model.save(folder)
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "dataset_source": "test-city"}))
    monkeypatch.setattr(config, "DEMO_MODEL_DIR", folder)
    gate = gate_model_load(monkeypatch)
    at = app.run()
    assert not at.exception
    assert at.selectbox(key="model").value == "shipped"
    side = texts(at.sidebar)
    assert "being prepared" in side and "Historical average" in side
    # the load starts LOAD_DELAY_S after the first page (the browser draws it meanwhile); here at once
    assert sys.modules["pages._shared"].loader_for(str(folder)) is None
    at.session_state["_load_soon_at"] = 0.0
    gate.set()
    at.run()
    sys.modules["pages._shared"].loader_for(str(folder)).done.wait(30)
    at.run()
    side = texts(at.sidebar)
    assert "being prepared" not in side and "Shipped demo model" in side
    assert not at.exception and not at.error
