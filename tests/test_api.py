"""The forecast API through FastAPI's TestClient: every route, auth failures, size limits and 4xx errors.

The store is the demo city (4 weeks) imported under a non-demo source, so the live registry serves
a historical-average baseline fitted on the spot (a second) instead of loading the language model.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from trafficcore.api import create_app
from trafficcore.api.app import NoTokensConfigured

TOKEN = "test-token-0123456789abcdef"
OTHER = "second-token-abcdefghijklmnop"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
EXAMPLES = Path(__file__).resolve().parents[1] / "docs" / "examples"


def demo_store(path: Path, dataset: str = "city"):
    """The demo city (4 weeks) in a fresh store, labelled so that no shipped model applies to it."""
    from trafficcore.data import demo
    from trafficcore.data.store import Store

    tables = demo.generate(seed=0, weeks=4)
    tables.info = dataclasses.replace(tables.info, source="api-test")
    store = Store(path)
    store.ingest(dataset, tables)
    return store


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return demo_store(tmp_path_factory.mktemp("api") / "api.duckdb")


@pytest.fixture(scope="module")
def client(store):
    app = create_app(store.path, tokens=[TOKEN, OTHER], max_body_bytes=200_000)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def _newest(store, dataset="city") -> pd.Timestamp:
    return pd.Timestamp(store.query("SELECT max(ts) AS t FROM observations WHERE dataset = ?", [dataset])["t"][0])


# ---------------------------------------------------------------------------------------------- auth
def test_health_needs_no_token_and_reports_the_store_only_with_one(client, store):
    for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": f"Basic {TOKEN}"}):
        r = client.get("/health", headers=headers)
        assert r.status_code == 200 and r.json() == {"status": "ok"}  # no path, no dataset names for strangers
        assert str(store.path) not in r.text and "city" not in r.text
    body = client.get("/health", headers=AUTH).json()
    assert body["status"] == "ok" and body["store_reachable"] and body["datasets"] == ["city"]
    assert body["store"] == str(store.path) and body["auth"] is True


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong-token-0123456789"},
                                     {"Authorization": f"Basic {TOKEN}"}, {"Authorization": "Bearer "}])
@pytest.mark.parametrize("path", ["/forecast?dataset=city&site=S01", "/alerts?dataset=city",
                                  "/explain?dataset=city&detector=S01:N"])
def test_missing_or_wrong_token_is_401_with_www_authenticate(client, headers, path):
    r = client.get(path, headers=headers)
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert "token" in r.json()["detail"]


def test_posts_need_a_token_too_and_write_nothing(client, store):
    n = len(store.observations("city"))
    reading = [{"detector_id": "S01:N", "ts": (_newest(store) + pd.Timedelta("15min")).isoformat(), "value": 1}]
    assert client.post("/observations?dataset=city", json=reading).status_code == 401
    assert client.post("/signal/analyse", json={}).status_code == 401
    assert len(store.observations("city")) == n


def test_every_configured_token_works(client):
    for t in (TOKEN, OTHER):
        r = client.get("/forecast?dataset=city&site=S01", headers={"Authorization": f"Bearer {t}"})
        assert r.status_code == 200


def test_no_tokens_refuses_to_build_unless_insecure(tmp_path, monkeypatch):
    monkeypatch.delenv("TRAFFICCORE_API_TOKENS", raising=False)
    monkeypatch.delenv("TRAFFICCORE_API_TOKENS_FILE", raising=False)
    with pytest.raises(NoTokensConfigured, match="TRAFFICCORE_API_TOKENS"):
        create_app(tmp_path / "x.duckdb")
    with pytest.raises(ValueError, match="at least 16 characters"):
        create_app(tmp_path / "x.duckdb", tokens=["short"])
    open_app = create_app(tmp_path / "x.duckdb", insecure_no_auth=True)
    with TestClient(open_app) as c:
        assert c.get("/health").json()["auth"] is False
        assert c.get("/alerts?dataset=nope").status_code == 404  # reached the route without a token


def test_tokens_come_from_the_environment_or_a_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TRAFFICCORE_API_TOKENS", f" {TOKEN} , {OTHER}")
    with TestClient(create_app(tmp_path / "x.duckdb")) as c:
        assert c.get("/alerts?dataset=nope", headers=AUTH).status_code == 404
        assert c.get("/alerts?dataset=nope", headers={"Authorization": "Bearer nope-nope-nope-nope"}).status_code == 401
    monkeypatch.delenv("TRAFFICCORE_API_TOKENS")
    (tmp_path / "tokens").write_text(f"# operators\n{OTHER}\n")
    monkeypatch.setenv("TRAFFICCORE_API_TOKENS_FILE", str(tmp_path / "tokens"))
    with TestClient(create_app(tmp_path / "x.duckdb")) as c:
        assert c.get("/alerts?dataset=nope", headers={"Authorization": f"Bearer {OTHER}"}).status_code == 404
        assert c.get("/alerts?dataset=nope", headers=AUTH).status_code == 401


# ---------------------------------------------------------------------------------------------- forecast
def test_forecast_for_a_site_matches_the_model(client, store):
    from trafficcore.live.ingest import live_panel
    from trafficcore.live.serving import serving_model
    from trafficcore.models.base import predict

    r = client.get("/forecast", params={"dataset": "city", "site": "S01"}, headers=AUTH)
    assert r.status_code == 200, r.text
    body = r.json()
    served = client.app.state.cache.model("city")
    model = served.model  # what serving_model gave this process (it refits when a new day of data arrives)
    assert body["model"] == "historical_average" and body["model_info"]["source"] == "baseline"
    assert type(serving_model(store, "city").model) is type(model)
    assert body["issued_at"] == (_newest(store) + pd.Timedelta("15min")).isoformat()  # after the newest interval
    dets = store.detectors("city").query("site_id == 'S01'")["detector_id"].tolist()
    assert body["detectors"] == dets and body["horizons_min"] == list(model.spec.horizons_min)
    got = pd.DataFrame(body["rows"])
    assert len(got) == len(dets) * len(model.spec.horizons_min)
    assert (got["p10"] <= got["p50"]).all() and (got["p50"] <= got["p90"]).all()
    want = predict(model, live_panel(store, "city"), body["issued_at"], dets)
    np.testing.assert_allclose(got["p50"].to_numpy(), want["p50"].to_numpy(), rtol=1e-6)
    assert list(got["target_ts"]) == [t.isoformat() for t in want["target_ts"]]


def test_forecast_for_one_detector_at_a_time_and_horizons(client):
    r = client.get("/forecast", params={"dataset": "city", "detector": "S01:N", "at": "2025-09-10T08:00",
                                        "horizons": [15, 60]}, headers=AUTH)
    assert r.status_code == 200, r.text
    rows = r.json()["rows"]
    assert [(x["horizon_min"], x["target_ts"]) for x in rows] == [(15, "2025-09-10T08:00:00"),
                                                                  (60, "2025-09-10T08:45:00")]
    assert all(x["issued_at"] == "2025-09-10T08:00:00" and x["detector_id"] == "S01:N" for x in rows)


@pytest.mark.parametrize("params,status,column", [
    ({"dataset": "nope", "site": "S01"}, 404, None),
    ({"dataset": "city", "site": "S99"}, 404, None),
    ({"dataset": "city", "detector": "S01:Q"}, 404, None),
    ({"dataset": "city"}, 422, "detector"),
    ({"dataset": "city", "site": "S01", "detector": "S01:N"}, 422, "detector"),
    ({"dataset": "city", "site": "S01", "horizons": 17}, 422, "horizons"),
    ({"dataset": "city", "site": "S01", "at": "2025-09-10T08:07"}, 422, "at"),
    ({"dataset": "city", "site": "S01", "at": "yesterday-ish"}, 422, "at"),
    ({"dataset": "city", "site": "S01", "at": "2025-09-01T00:15"}, 422, "at"),  # no history before it
    ({"dataset": "city", "site": "S01", "at": "2031-01-01T00:00"}, 422, "at"),  # beyond the data
    ({"dataset": "city", "site": "S01", "at": "2025-09-10T08:00+02:00"}, 422, "at"),
    ({"dataset": "city", "site": "S01", "horizons": "soon"}, 422, None),
])
def test_forecast_errors_are_clear_4xx(client, params, status, column):
    r = client.get("/forecast", params=params, headers=AUTH)
    assert r.status_code == status, r.text
    body = r.json()
    assert body["detail"]
    if column:
        assert body["column"] == column


# ---------------------------------------------------------------------------------------------- explain
def test_explain_gives_the_cli_fields_and_adds_up(client):
    r = client.get("/explain", params={"dataset": "city", "detector": "S05:E", "at": "2025-09-24T08:00",
                                       "horizon": 30}, headers=AUTH)
    assert r.status_code == 200, r.text
    e = r.json()
    for k in ("prediction", "base_value", "tokens", "features", "summary", "model", "detector_id", "issued_at",
              "horizon_min", "typical", "text"):
        assert k in e
    assert e["detector_id"] == "S05:E" and e["horizon_min"] == 30 and e["issued_at"] == "2025-09-24T08:00:00"
    total = e["base_value"] + sum(t["value"] for t in e["tokens"]) + sum(f["value"] for f in e["features"])
    assert total == pytest.approx(e["prediction"], abs=1e-3)
    assert "expected" in e["summary"]
    fc = client.get("/forecast", params={"dataset": "city", "detector": "S05:E", "at": "2025-09-24T08:00",
                                         "horizons": 30}, headers=AUTH).json()
    assert e["prediction"] == pytest.approx(fc["rows"][0]["p50"], rel=1e-5)


@pytest.mark.parametrize("params,status", [
    ({"dataset": "city", "detector": "nope"}, 404),
    ({"dataset": "city", "detector": "S01:N", "horizon": 7}, 422),
    ({"dataset": "city", "detector": "S01:N", "at": "2025-09-10T08:01"}, 422),
    ({"dataset": "city"}, 422),
])
def test_explain_errors(client, params, status):
    assert client.get("/explain", params=params, headers=AUTH).status_code == status


# ---------------------------------------------------------------------------------------------- signal
def _signal_body() -> dict:
    plan = json.loads((EXAMPLES / "plan_4leg.json").read_text())
    demand = pd.read_csv(EXAMPLES / "demand_4leg.csv").to_dict("records")
    return {"plan": plan, "demand": demand}


def test_signal_analyse_matches_the_cli(client):
    from trafficcore.signal import load_plan, read_demand_csv
    from trafficcore.signal.cli import run_analyse

    r = client.post("/signal/analyse", json=_signal_body(), headers=AUTH)
    assert r.status_code == 200, r.text
    want = run_analyse(load_plan(EXAMPLES / "plan_4leg.json"), read_demand_csv(EXAMPLES / "demand_4leg.csv"))
    got = r.json()
    assert got["rows"] == want["rows"]
    assert got["summary"]["los"] == want["summary"]["los"] and len(got["intervals"]) == 8
    assert {"approach", "v", "c", "x", "delay_s", "los", "queue_p95_veh"} <= set(got["rows"][0])


def test_signal_analyse_p90_and_flow_rates(client):
    body = _signal_body()
    p50 = client.post("/signal/analyse", json=body, headers=AUTH).json()
    p90 = client.post("/signal/analyse", json={**body, "quantile": "p90"}, headers=AUTH).json()
    assert p90["summary"]["delay_s"] > p50["summary"]["delay_s"]
    rates = [{**row, "p10": None, "p90": None, "p50": row["p50"] * 4, "unit": "veh/h"} for row in body["demand"]]
    same = client.post("/signal/analyse", json={**body, "demand": rates}, headers=AUTH).json()
    assert [x["v"] for x in same["rows"]] == [x["v"] for x in p50["rows"]]


def test_signal_analyse_errors_name_the_json_path_or_row(client):
    body = _signal_body()
    body["plan"]["phases"][1]["green"] = -3
    r = client.post("/signal/analyse", json=body, headers=AUTH)
    assert r.status_code == 422 and r.json()["file"] == "plan" and r.json()["column"] == "phases[1].green"
    body = _signal_body()
    body["demand"][5]["interval_start"] = "2026-03-10T07:05"
    r = client.post("/signal/analyse", json=body, headers=AUTH)
    assert r.status_code == 422, r.text
    assert (r.json()["file"], r.json()["row"], r.json()["column"]) == ("demand", 6, "interval_start")
    body = _signal_body()
    body["demand"] = [d for d in body["demand"] if not (d["approach"] == "W" and d["interval_start"].endswith("8:00"))]
    r = client.post("/signal/analyse", json=body, headers=AUTH)
    assert r.status_code == 422 and "'W' has no demand" in r.json()["detail"]
    body = _signal_body()
    body["demand"][2]["interval_start"] = "9999-12-31T23:45"
    r = client.post("/signal/analyse", json=body, headers=AUTH)
    assert r.status_code == 422 and (r.json()["row"], r.json()["column"]) == (3, "interval_start")
    assert client.post("/signal/analyse", json={"plan": {}, "demand": []}, headers=AUTH).status_code == 422
    assert client.post("/signal/analyse", content=b"{not json", headers={**AUTH, "content-type": "application/json"}
                       ).status_code == 422


# ---------------------------------------------------------------------------------------------- ingest
def test_observations_ingest_then_forecast_moves_on(client, store):
    newest = _newest(store)
    t = newest + pd.Timedelta("15min")
    dets = store.detectors("city")["detector_id"].tolist()
    batch = [{"detector_id": d, "ts": t.isoformat(), "value": float(i % 50)} for i, d in enumerate(dets)]
    r = client.post("/observations", params={"dataset": "city", "refresh": "false"}, json=batch, headers=AUTH)
    assert r.status_code == 200, r.text
    res = r.json()
    assert (res["received"], res["written"], res["duplicate_batch"]) == (len(dets), len(dets), False)
    stored = store.observations("city", start=t)
    assert len(stored) == len(dets) and stored["value"].sum() == sum(x["value"] for x in batch)
    again = client.post("/observations", params={"dataset": "city"}, json=batch[::-1], headers=AUTH).json()
    assert again["duplicate_batch"] and again["written"] == 0 and again["batch_id"] == res["batch_id"]
    assert len(store.observations("city", start=t)) == len(dets)
    fc = client.get("/forecast", params={"dataset": "city", "site": "S01"}, headers=AUTH).json()
    assert fc["issued_at"] == (t + pd.Timedelta("15min")).isoformat()  # the cache saw the new interval


def test_observations_refresh_stores_live_forecasts(client, store):
    t = _newest(store) + pd.Timedelta("15min")
    batch = [{"detector_id": "S02:N", "ts": t.isoformat(), "value": 42.0}]
    r = client.post("/observations", params={"dataset": "city"}, json=batch, headers=AUTH)
    assert r.status_code == 200 and r.json()["written"] == 1
    assert client.app.state.cache.wait_refreshed(60)
    fc = store.query("SELECT * FROM forecasts WHERE dataset = 'city' AND run_id LIKE 'live:%' "
                     "AND detector_id = 'S02:N'")
    assert len(fc) and fc["issued_at"].max() >= t


@pytest.mark.parametrize("bad,row,column", [
    ({"detector_id": "NOPE", "ts": "2025-09-20T08:00", "value": 3}, 2, "detector_id"),
    ({"detector_id": "S01:N", "ts": "2025-09-20T08:05", "value": 3}, 2, "ts"),
    ({"detector_id": "S01:N", "ts": "not a time", "value": 3}, 2, "ts"),
    ({"detector_id": "S01:N", "ts": "2025-09-20T08:15", "value": -4}, 2, "value"),
])
def test_bad_reading_refuses_the_whole_batch(client, store, bad, row, column):
    before = len(store.observations("city"))
    good = {"detector_id": "S01:E", "ts": "2025-09-20T08:00", "value": 999.0}
    r = client.post("/observations", params={"dataset": "city"}, json=[good, bad], headers=AUTH)
    assert r.status_code == 422, r.text
    assert (r.json()["row"], r.json()["column"]) == (row, column)
    assert len(store.observations("city")) == before
    assert store.observations("city", ["S01:E"], "2025-09-20T08:00", "2025-09-20T08:01")["value"].iloc[0] != 999.0


def test_readings_far_outside_the_data_are_refused(client, store):
    """One reading in year 2262 would make every later panel load allocate centuries of intervals."""
    before = len(store.observations("city"))
    outside = "outside the stored readings"
    for ts, why in (("2262-04-11T23:45", "out of range (1970-2099)"), ("1900-01-01T00:00", "out of range"),
                    ("2090-01-01T00:00", outside), ("1990-01-01T00:00", outside)):
        batch = [{"detector_id": "S01:E", "ts": "2025-09-20T08:00", "value": 1.0},
                 {"detector_id": "S01:N", "ts": ts, "value": 1.0}]
        r = client.post("/observations", params={"dataset": "city"}, json=batch, headers=AUTH)
        assert r.status_code == 422, r.text
        assert (r.json()["row"], r.json()["column"]) == (2, "ts")
        assert why in r.json()["detail"]
    assert len(store.observations("city")) == before


@pytest.mark.parametrize("value,why", [
    (True, "number"), ("12", "number"), (1e12, "implausible count"), (1.7e308, "implausible count"),
])
def test_implausible_or_non_numeric_values_are_refused(client, store, value, why):
    """A JSON true was read as 1.0 and 1.7e308 overflowed the float32 panel; both are refused, nothing written."""
    before = len(store.observations("city"))
    batch = [{"detector_id": "S01:E", "ts": "2025-09-20T08:00", "value": 1.0},
             {"detector_id": "S01:N", "ts": "2025-09-20T08:00", "value": value}]
    r = client.post("/observations", params={"dataset": "city"}, json=batch, headers=AUTH)
    assert r.status_code == 422, r.text
    assert why in r.text
    if why.startswith("implausible"):
        assert (r.json()["row"], r.json()["column"]) == (2, "value")
    assert len(store.observations("city")) == before


@pytest.mark.parametrize("name", ["../../x", "a b", "", "é", "x'; drop table", "a" * 41])
def test_dataset_names_follow_the_data_layer_rule(client, name):
    """The API accepted names up to 200 characters; it now applies the one rule of the CLI and dashboard."""
    r = client.get("/forecast", params={"dataset": name, "site": "S01"}, headers=AUTH)
    assert r.status_code == 422, r.text
    body = [{"detector_id": "S01:N", "ts": "2025-09-20T08:00", "value": 1.0}]
    assert client.post("/observations", params={"dataset": name}, json=body, headers=AUTH).status_code == 422


@pytest.mark.parametrize("body,params,status", [
    ([{"detector_id": "S01:N", "ts": "2025-09-20T08:00", "value": 1}], {"dataset": "nope"}, 404),
    ([], {"dataset": "city"}, 422),
    ([{"detector_id": "S01:N", "ts": "2025-09-20T08:00"}], {"dataset": "city"}, 422),
    ([{"detector_id": "S01:N", "ts": "2025-09-20T08:00", "value": "many"}], {"dataset": "city"}, 422),
    ({"detector_id": "S01:N"}, {"dataset": "city"}, 422),
])
def test_observation_validation(client, body, params, status):
    assert client.post("/observations", params=params, json=body, headers=AUTH).status_code == status


# ---------------------------------------------------------------------------------------------- limits
def test_body_over_the_limit_is_413_by_declared_length(client, store):
    before = len(store.observations("city"))
    big = [{"detector_id": "S01:N", "ts": "2025-09-20T08:00", "value": 1.0}] * 5000  # ~300 kB > 200 kB
    r = client.post("/observations", params={"dataset": "city"}, json=big, headers=AUTH)
    assert r.status_code == 413 and "limit" in r.json()["detail"]
    assert len(store.observations("city")) == before


def test_body_over_the_limit_is_413_when_streamed_without_length(client):
    chunk = b"[" + b'{"detector_id": "S01:N", "ts": "2025-09-20T08:00", "value": 1.0},' * 1000

    def stream():
        for _ in range(5):  # 5 x ~65 kB, no Content-Length (chunked)
            yield chunk

    r = client.post("/observations", params={"dataset": "city"}, content=stream(),
                    headers={**AUTH, "content-type": "application/json"})
    assert r.status_code == 413


def test_small_streamed_body_is_accepted(client, store):
    t = _newest(store) + pd.Timedelta("15min")
    payload = json.dumps([{"detector_id": "S03:E", "ts": t.isoformat(), "value": 7.0}]).encode()
    r = client.post("/observations", params={"dataset": "city", "refresh": "false"}, content=iter([payload]),
                    headers={**AUTH, "content-type": "application/json"})
    assert r.status_code == 200 and r.json()["written"] == 1


# ---------------------------------------------------------------------------------------------- alerts
def test_alerts_lists_a_stuck_detector(client, store):
    t0 = _newest(store) + pd.Timedelta("15min")
    batch = [{"detector_id": "S04:N", "ts": (t0 + k * pd.Timedelta("15min")).isoformat(), "value": 123.0}
             for k in range(10)]
    assert client.post("/observations", params={"dataset": "city", "refresh": "false"}, json=batch,
                       headers=AUTH).status_code == 200
    r = client.get("/alerts", params={"dataset": "city"}, headers=AUTH)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["dataset"] == "city"
    stuck = [a for a in body["alerts"] if a["kind"] == "stuck" and a["detector_id"] == "S04:N"]
    assert stuck and stuck[0]["site_id"] == "S04" and "123" in stuck[0]["message"]
    assert set(body["alerts"][0]) == {"kind", "severity", "detector_id", "site_id", "start_ts", "end_ts", "message"}
    quiet = client.get("/alerts", params={"dataset": "city", "stuck_k": 50}, headers=AUTH).json()
    assert not [a for a in quiet["alerts"] if a["kind"] == "stuck" and a["detector_id"] == "S04:N"]


@pytest.mark.parametrize("params,status", [({"dataset": "nope"}, 404), ({"dataset": "city", "at": "whenever"}, 422),
                                           ({"dataset": "city", "band_n": 0}, 422)])
def test_alerts_errors(client, params, status):
    assert client.get("/alerts", params=params, headers=AUTH).status_code == status


# ---------------------------------------------------------------------------------------------- faults, spec
def test_a_server_fault_is_a_generic_500_and_logged(store, caplog):
    def broken(store, dataset):
        raise RuntimeError("secret internals /etc/passwd")

    app = create_app(store.path, tokens=[TOKEN], model_loader=broken)
    with TestClient(app, raise_server_exceptions=False) as c, caplog.at_level(logging.ERROR, "trafficcore.api"):
        r = c.get("/forecast", params={"dataset": "city", "site": "S01"}, headers=AUTH)
    assert r.status_code == 500
    assert "secret" not in r.text and r.json()["detail"].startswith("internal server error")
    assert any("secret internals" in str(rec.exc_info[1]) for rec in caplog.records if rec.exc_info)


def test_openapi_documents_every_route_with_models_and_auth(client):
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    assert {"/health", "/forecast", "/explain", "/signal/analyse", "/observations", "/alerts"} <= set(paths)
    for path, ops in paths.items():
        for method, op in ops.items():
            ok = op["responses"]["200"]["content"]["application/json"]["schema"]
            assert "$ref" in ok, f"{method} {path} has no response model"
            if path != "/health":
                assert op.get("security"), f"{method} {path} is not marked as needing a token"
                assert {"401", "404", "413", "422"} <= set(op["responses"])
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert "security" not in paths["/health"]["get"]


def test_a_body_that_never_ends_gets_408_in_bounded_time(store):
    """A client declaring an endless chunk (or trickling bytes) must not hold the request open for ever."""
    import asyncio
    import time

    import httpx

    app = create_app(store.path, tokens=[TOKEN], body_timeout_s=0.5)

    async def endless():
        yield b'[{"detector_id": "S01:N", '
        await asyncio.sleep(3600)
        yield b"}]"

    async def post():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            return await c.post("/observations", params={"dataset": "city"}, content=endless(),
                                headers={**AUTH, "Content-Type": "application/json"})

    t0 = time.monotonic()
    try:
        r = asyncio.run(asyncio.wait_for(post(), 20))
    finally:
        app.state.cache.close()
    assert r.status_code == 408 and "not received within 0.5 s" in r.json()["detail"]
    assert time.monotonic() - t0 < 10


def test_a_resent_batch_issues_the_forecasts_a_crash_left_missing(client, store):
    """Readings stored, forecasts never issued (refresh off here, a crash in life): the resend, a duplicate
    that writes nothing, still gets the touched detectors their forecasts."""
    t = _newest(store) + pd.Timedelta("15min")
    dets = store.detectors("city")["detector_id"].tolist()
    batch = [{"detector_id": d, "ts": t.isoformat(), "value": 7.0} for d in dets]
    first = client.post("/observations", params={"dataset": "city", "refresh": "false"}, json=batch, headers=AUTH)
    assert first.status_code == 200 and first.json()["written"] == len(dets)
    live = ("SELECT DISTINCT detector_id FROM forecasts WHERE dataset = 'city' AND run_id LIKE 'live:%' "
            "AND issued_at > ?")
    assert client.app.state.cache.wait_refreshed(60) and store.query(live, [t.to_pydatetime()]).empty
    again = client.post("/observations", params={"dataset": "city"}, json=batch, headers=AUTH).json()
    assert again["duplicate_batch"] and again["written"] == 0
    assert client.app.state.cache.wait_refreshed(60)
    assert sorted(store.query(live, [t.to_pydatetime()])["detector_id"]) == sorted(dets)
