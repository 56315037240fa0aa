"""`/metrics` on a real server (`trafficcore serve` on loopback): the Prometheus text parses, its counters move as
requests and ingest batches arrive, the store's gauges (reading age, serving model, live accuracy) appear, a scrape
token reads metrics and nothing else, and the server writes one JSON log line per request and per batch."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from helpers import tiny_tables
from prometheus_client.parser import text_string_to_metric_families

from trafficcore.api import create_app
from trafficcore.api.bench import ServerProcess

TOKEN = "metrics-test-token-0123456789"
SCRAPE = "scrape-only-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def scrape(url: str, token: str = TOKEN) -> dict[tuple[str, tuple], float]:
    """Every sample of /metrics as {(name, sorted labels): value}, read by prometheus-client's own parser."""
    r = httpx.get(url + "/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(r.text) for s in fam.samples}


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def readings(ts: str, v: float = 5.0) -> list[dict]:
    return [{"detector_id": d, "ts": ts, "value": v} for d in ("A:N", "B:N", "C:S")]


def wait_for(url: str, name: str, timeout_s: float = 60.0, **labels) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        samples = scrape(url)
        if value(samples, name, **labels) > 0:
            return samples
        time.sleep(0.3)
    raise AssertionError(f"{name}{labels} never appeared in /metrics")


@pytest.fixture
def server(tmp_path):
    from trafficcore.data.store import Store

    store = Store(tmp_path / "m.duckdb")
    store.ingest("tiny", tiny_tables(days=15))
    srv = ServerProcess(store.path, token=TOKEN, log=tmp_path / "server.log",
                        extra_env={"TRAFFICCORE_METRICS_TOKENS": SCRAPE})
    with srv:
        yield srv


def test_metrics_parse_and_move_with_requests_and_batches(server):
    url = server.url
    assert httpx.get(url + "/metrics", timeout=10).status_code == 401
    before = scrape(url)
    fc = {"name": "trafficcore_http_requests_total", "route": "/forecast", "method": "GET", "status": "200"}
    name = fc.pop("name")
    assert value(before, name, **fc) == 0
    for _ in range(2):
        r = httpx.get(url + "/forecast", params={"dataset": "tiny", "site": "A"}, headers=AUTH, timeout=60)
        assert r.status_code == 200, r.text
    ack = httpx.post(url + "/observations", params={"dataset": "tiny"}, json=readings("2025-01-16T00:00"),
                     headers=AUTH, timeout=30)
    assert ack.status_code == 200 and ack.json()["written"] == 3
    bad = httpx.post(url + "/observations", params={"dataset": "tiny"},
                     json=readings("2025-01-16T00:07"), headers=AUTH, timeout=30)  # off the 15-minute grid
    assert bad.status_code == 422
    resent = httpx.post(url + "/observations", params={"dataset": "tiny"}, json=readings("2025-01-16T00:00"),
                        headers=AUTH, timeout=30)
    assert resent.json()["duplicate_batch"] is True

    # the refresh after the first batch runs in the background; its time is counted once it finished
    after = wait_for(url, "trafficcore_forecast_refresh_seconds_count", dataset="tiny")
    assert value(after, name, **fc) == 2
    assert value(after, "trafficcore_http_request_duration_seconds_count", **fc) == 2
    assert value(after, name, route="/observations", method="POST", status="422") == 1
    assert value(after, name, route="/metrics", method="GET", status="401") == 1
    assert value(after, "trafficcore_ingest_batches_total", dataset="tiny", outcome="stored") == 1
    assert value(after, "trafficcore_ingest_batches_total", dataset="tiny", outcome="duplicate") == 1
    assert value(after, "trafficcore_ingest_batches_total", dataset="tiny", outcome="rejected") == 1
    assert value(after, "trafficcore_ingest_rejections_total", dataset="tiny", column="ts") == 1
    assert value(after, "trafficcore_ingest_readings_total", dataset="tiny", kind="received") == 6
    assert value(after, "trafficcore_ingest_readings_total", dataset="tiny", kind="written") == 3
    assert value(after, "trafficcore_forecast_last_refresh_timestamp_seconds", dataset="tiny") > time.time() - 600
    # the store's gauges: a 2025 reading is months old on today's clock; the baseline fitted on the spot serves
    assert value(after, "trafficcore_newest_reading_age_seconds", dataset="tiny") > 86400
    assert value(after, "trafficcore_serving_model_info", dataset="tiny", model="historical_average", run_id="",
                 source="baseline") == 1

    # the forecasts issued after the first batch are scored when the next interval's readings arrive
    ack = httpx.post(url + "/observations", params={"dataset": "tiny", "refresh": "false"},
                     json=readings("2025-01-16T00:15", 6.0), headers=AUTH, timeout=30)
    assert ack.json()["written"] == 3
    live = scrape(url)
    acc = {"dataset": "tiny", "run_id": "live:historical_average", "horizon_min": "15", "window": "24h"}
    assert value(live, "trafficcore_live_scored_pairs", **acc) == 3
    assert value(live, "trafficcore_live_mae", **acc) > 0
    assert 0 <= value(live, "trafficcore_live_coverage_p10_p90", **acc) <= 1
    assert value(live, "trafficcore_live_scored_pairs", **{**acc, "horizon_min": "all"}) == 3


def test_scrape_token_reads_metrics_only_and_logs_are_json_lines(server, tmp_path):
    assert scrape(server.url, SCRAPE)  # the scrape token reads /metrics ...
    r = httpx.get(server.url + "/forecast", params={"dataset": "tiny", "site": "A"},
                  headers={"Authorization": f"Bearer {SCRAPE}"}, timeout=30)
    assert r.status_code == 401  # ... and nothing else
    httpx.post(server.url + "/observations", params={"dataset": "tiny", "refresh": "false"},
               json=readings("2025-01-16T00:00"), headers=AUTH, timeout=30)
    time.sleep(0.3)
    lines = [ln for ln in (tmp_path / "server.log").read_text().splitlines() if ln.startswith("{")]
    events = [json.loads(ln) for ln in lines]  # every structured line is one JSON object
    requests = [e for e in events if e["event"] == "http_request"]
    assert {"route": "/forecast", "status": 401} in [{k: e[k] for k in ("route", "status")} for e in requests]
    batch = next(e for e in events if e["event"] == "ingest_batch")
    assert batch["dataset"] == "tiny" and batch["written"] == 3 and batch["source"] == "api"
    assert batch["level"] == "info" and batch["ts"].endswith("+00:00")


def test_each_app_has_its_own_registry(tmp_path):
    """Two applications in one process count separately (no shared global registry, no duplicate-name error)."""
    from fastapi.testclient import TestClient

    from trafficcore.data.store import Store

    store = Store(tmp_path / "two.duckdb")
    store.ingest("tiny", tiny_tables(days=2))
    apps = [create_app(store.path, tokens=[TOKEN]) for _ in range(2)]
    try:
        with TestClient(apps[0]) as a, TestClient(apps[1]) as b:
            assert a.get("/health").status_code == 200
            for i in range(3):  # invented paths and methods share one series: a client cannot grow the registry
                a.request("BREW", f"/coffee/{i}")
            first = a.get("/metrics", headers=AUTH).text
            second = b.get("/metrics", headers=AUTH).text
    finally:
        for app in apps:
            app.state.cache.close()

    def health(text: str) -> float:
        fams = text_string_to_metric_families(text)
        return sum(s.value for f in fams for s in f.samples if s.name == "trafficcore_http_requests_total"
                   and s.labels.get("route") == "/health")

    assert health(first) == 1 and health(second) == 0
    odd = [(s.labels["route"], s.labels["method"], s.value) for f in text_string_to_metric_families(first)
           for s in f.samples if s.name == "trafficcore_http_requests_total" and s.labels["route"] != "/health"]
    assert odd == [("unmatched", "other", 3.0)]
