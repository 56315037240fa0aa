"""POST /events through FastAPI's TestClient: token auth, all-or-nothing, idempotent, feeds as bodies, forecasts."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from test_api import AUTH, TOKEN, demo_store

from trafficcore.api import create_app

DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture
def served(tmp_path):
    store = demo_store(tmp_path / "api.duckdb")
    app = create_app(store.path, tokens=[TOKEN], max_body_bytes=200_000)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield store, c, app.state.cache


def newest(store) -> pd.Timestamp:
    return pd.Timestamp(store.query("SELECT max(ts) AS t FROM observations WHERE dataset = 'city'")["t"][0])


def incident(store, **over) -> dict:
    """A crash at Station Rd / 2nd Ave (site S30) that started 20 minutes before the newest reading ended."""
    start = newest(store) - pd.Timedelta("5min")
    out = {"id": "inc-1", "start": f"{start:%Y-%m-%dT%H:%M}", "lat": 52.0354, "lon": 5.10785, "road": "Station Rd",
           "kind": "crash", "text": "Crash on Station Rd at Station Rd / 2nd Ave: two lanes blocked"}
    return {**out, **over}


def count(store, sql: str) -> int:
    return int(store.query(sql)["n"].iloc[0])


def test_events_need_a_token_and_write_nothing_without_one(served):
    store, client, _ = served
    for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}):
        r = client.post("/events?dataset=city", json=[incident(store)], headers=headers)
        assert r.status_code == 401
    assert count(store, "SELECT count(*) AS n FROM events WHERE event_id = 'inc-1'") == 0


def test_an_incident_is_stored_matched_and_its_detectors_re_forecast(served):
    store, client, cache = served
    r = client.post("/events?dataset=city&source=cad-bridge", json=[incident(store)], headers=AUTH)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["new"], body["written"], body["duplicate_batch"], body["format"]) == (1, 1, False, "own")
    assert "S30:N" in body["detectors"] and body["events"] == ["inc-1"]
    row = store.events("city").set_index("event_id").loc["inc-1"]
    assert row["site_id"] == "S30" and row["status"] == "active"
    assert cache.wait_refreshed(120)
    fc = store.query("SELECT DISTINCT detector_id FROM forecasts WHERE dataset = 'city' AND run_id LIKE 'live:%'")
    assert "S30:N" in set(fc["detector_id"])  # re-issued in the background, right after answering
    log = store.query("SELECT source, kind, rows FROM ingest_log WHERE dataset = 'city'").iloc[0]
    assert (log["source"], log["kind"], log["rows"]) == ("cad-bridge", "events", 1)

    again = client.post("/events?dataset=city", json=[incident(store)], headers=AUTH).json()
    assert again["duplicate_batch"] and again["written"] == 0 and again["batch_id"] == body["batch_id"]

    cleared = client.post("/events?dataset=city", json=[incident(store, status="cleared")], headers=AUTH).json()
    assert (cleared["ended"], cleared["written"]) == (1, 1)
    ended = store.events("city").set_index("event_id").loc["inc-1", "end_ts"]
    assert ended == newest(store) + pd.Timedelta("15min")  # ended "now": the end of the newest reading's interval


def test_a_bad_event_is_422_naming_its_position_and_field_and_writes_nothing(served):
    store, client, _ = served
    body = [incident(store), incident(store, id="inc-2", lat="north")]
    r = client.post("/events?dataset=city", json=body, headers=AUTH)
    assert r.status_code == 422
    err = r.json()
    assert (err["file"], err["row"], err["column"]) == ("events", 2, "lat") and "not a number" in err["detail"]
    assert count(store, "SELECT count(*) AS n FROM events WHERE event_id LIKE 'inc-%'") == 0
    assert count(store, "SELECT count(*) AS n FROM ingest_log") == 0
    r = client.post("/events?dataset=nowhere", json=[incident(store)], headers=AUTH)
    assert r.status_code == 404


def test_a_wzdx_feed_as_the_body_and_its_json_path_in_errors(served):
    store, client, _ = served
    doc = json.loads((DATA / "wzdx_demo.geojson").read_text())
    r = client.post("/events?dataset=city&refresh=false", json=doc, headers=AUTH)
    assert r.status_code == 200 and r.json()["format"] == "wzdx" and r.json()["new"] == 3, r.text
    doc["features"][1]["geometry"]["coordinates"][0] = [5.11715]
    r = client.post("/events?dataset=city&format=wzdx", json=doc, headers=AUTH)
    assert r.status_code == 422 and r.json()["column"] == "features[1].geometry.coordinates[0]", r.text
    r = client.post("/events?dataset=city&format=cad", json=doc, headers=AUTH)
    assert r.status_code == 422  # CAD logs are CSV files, not a body format


def test_the_openapi_spec_documents_post_events(served):
    _, client, _ = served
    spec = client.get("/openapi.json").json()
    op = spec["paths"]["/events"]["post"]
    assert "requestBody" in op and {"200", "401", "422"} <= set(op["responses"])
