"""Events on the dashboard through AppTest: the map draws and lists the events a forecast reads (escaped), the
Live page lists those in effect, and the Site detail says what the model read (or that it reads none)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from live_data import live_store
from streamlit.testing.v1 import AppTest
from test_app import frame_with, texts
from test_app_support import make_city_db

from trafficcore.data.loaders.event_feeds import parse_document
from trafficcore.data.store import Store
from trafficcore.live.events import ingest_events
from trafficcore.ui.safe import md

APP = Path(__file__).resolve().parents[1] / "app.py"
AT = "2025-03-26T07:45"  # a Wednesday morning of the test city
HOSTILE = "Crash on Mill St **now** [details](http://evil.example) <b>x</b>"


def crash(start: str, lat: float, lon: float, text: str = HOSTILE, **more) -> list[dict]:
    return [{"id": "crash-1", "start": start, "lat": lat, "lon": lon, "road": "Mill St", "kind": "crash",
             "text": text, **more}]


@pytest.fixture(scope="module")
def city_db(tmp_path_factory):
    path = make_city_db(tmp_path_factory.mktemp("events") / "city.duckdb")
    store = Store(path)
    events = crash("2025-03-26 07:30", 52.0452, 5.1001)  # at S2, Mill St / 2nd Ave
    events.append({"id": "works-1", "start": "2025-03-26 09:30", "end": "2025-03-28 16:00", "lat": 52.0500,
                   "lon": 5.1100, "kind": "road works", "text": "Roadworks on King St: one lane closed"})
    events.append({"id": "later-1", "start": "2025-03-26 12:00", "lat": 52.04, "lon": 5.10, "kind": "crash",
                   "text": "A crash that has not happened yet"})
    ingest_events(store, "city", parse_document(events, "events", "UTC"))
    return path


@pytest.fixture
def page(city_db, tmp_path, monkeypatch):
    monkeypatch.setenv("TRAFFICCORE_DB", city_db)
    monkeypatch.setenv("TRAFFICCORE_REPORTS", str(tmp_path))

    def open_page(name: str) -> AppTest:
        at = AppTest.from_file(str(APP), default_timeout=90)
        at.query_params.update({"dataset": "city", "site": "S2", "at": AT})
        at.run()
        if name != "forecast_map":
            at.switch_page(f"pages/{name}.py").run()
        assert not at.exception, name
        assert not at.error, [e.value for e in at.error]
        return at

    return open_page


def test_the_map_draws_and_lists_the_events_its_forecast_reads(page):
    at = page("forecast_map")
    chart = at.get("deck_gl_json_chart")[0].proto
    spec = json.loads(chart.json)
    layers = {layer["id"]: layer for layer in spec["layers"]}
    assert list(layers)[:3] == ["roads", "sites", "label"] and "events" in layers
    markers = layers["events"]["data"]
    # the crash (started 07:30) and the works (start 09:30, within the 60-min horizon plus an hour) are read at
    # 07:45; the 12:00 crash is not known yet
    assert sorted(m["event_id"] for m in markers) == ["crash-1", "works-1"]
    assert all(m["icon"]["url"].startswith("data:image/svg+xml;base64,") for m in markers)  # no network
    tip = next(m["tip"] for m in markers if m["event_id"] == "crash-1")
    assert tip.startswith("crash: Crash on Mill St") and "started 15 min ago" in tip
    assert json.loads(chart.tooltip)["text"] == "{tip}"
    assert layers["sites"]["data"][0]["tip"].startswith("Mill St / 1st Ave (S1)\nForecast: ")
    shown = texts(at)
    assert "Events in effect** (2)" in shown and ":material/car_crash: **crash**" in shown
    assert md(HOSTILE) in shown and "**now**" not in shown and "\\[details\\]" in md(HOSTILE)  # escaped
    assert "has not happened yet" not in shown


def test_the_site_detail_says_the_model_in_use_reads_no_events(page):
    at = page("site_detail")
    assert "Events the model read for this forecast" in texts(at)
    assert "does not read events" in texts(at)  # the historical average answers here


def test_the_live_page_lists_the_events_in_effect(tmp_path, monkeypatch):
    store = live_store(Store(tmp_path / "live.duckdb"))
    newest = store.query("SELECT max(ts) AS t FROM observations WHERE dataset = 'town'")["t"][0]
    ingest_events(store, "town", parse_document(crash(f"{newest:%Y-%m-%d %H:%M}", -37.81, 144.96), "events", "UTC"))
    monkeypatch.setenv("TRAFFICCORE_DB", str(store.path))
    monkeypatch.setenv("TRAFFICCORE_REPORTS", str(tmp_path))
    at = AppTest.from_file(str(APP), default_timeout=90)
    at.query_params.update({"dataset": "town", "site": "X"})
    at.run()
    at.switch_page("pages/live.py").run()
    assert not at.exception and not at.error
    assert "Events in effect" in texts(at)
    table = frame_with(at, "what")
    assert list(table["what"]) == [HOSTILE] and list(table["kind"]) == ["crash"]  # a table cell: plain text
    assert table["sites"].iloc[0] == "X"
    assert next(m.value for m in at.metric if m.label == "Batches taken in") == "0"  # batches of readings only
