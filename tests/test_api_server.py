"""The API as a real server (`trafficcore serve` on loopback) and a schemathesis run against its spec.

The store is the tiny three-detector dataset of tests/helpers.py, for which the live registry fits a
historical-average baseline in well under a second.
"""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest
import schemathesis
from helpers import tiny_tables
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from trafficcore.api import create_app
from trafficcore.api.bench import ServerProcess

TOKEN = "server-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _tiny_store(path):
    from trafficcore.data.store import Store

    store = Store(path)
    store.ingest("tiny", tiny_tables(days=15))
    return store


def test_real_server_on_loopback(tmp_path):
    store = _tiny_store(tmp_path / "srv.duckdb")
    srv = ServerProcess(store.path, token=TOKEN, log=tmp_path / "server.log",
                        extra_env={"TRAFFICCORE_API_BODY_TIMEOUT_S": "1"})
    with srv:
        assert srv.url.startswith("http://127.0.0.1:")
        assert httpx.get(srv.url + "/health", timeout=10).json() == {"status": "ok"}
        health = httpx.get(srv.url + "/health", headers=AUTH, timeout=10).json()
        assert health["datasets"] == ["tiny"] and health["auth"] is True
        assert _endless_chunk(srv.port).startswith(b"HTTP/1.1 408")
        assert httpx.get(srv.url + "/forecast", params={"dataset": "tiny", "site": "A"}, timeout=10).status_code == 401
        r = httpx.get(srv.url + "/forecast", params={"dataset": "tiny", "site": "A", "horizons": 15},
                      headers=AUTH, timeout=60)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["issued_at"] == "2025-01-16T00:00:00" and body["rows"][0]["detector_id"] == "A:N"
        reading = [{"detector_id": "A:N", "ts": "2025-01-16T00:00", "value": 5.0}]
        ack = httpx.post(srv.url + "/observations", params={"dataset": "tiny", "refresh": "false"}, json=reading,
                         headers=AUTH, timeout=30)
        assert ack.status_code == 200 and ack.json()["written"] == 1
        pid = srv.proc.pid
    assert srv.proc.poll() is not None, f"server {pid} still running after teardown"
    stored = store.observations("tiny", ["A:N"], "2025-01-16T00:00")
    assert stored["value"].tolist() == [5.0]


def _endless_chunk(port: int) -> bytes:
    """POST a chunk declared 0xfffffffffffffff bytes long, send a little of it, then wait: the reply, which a
    server bounding the body read in time sends within seconds (the socket gives up after 20)."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(b"POST /observations?dataset=tiny HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Authorization: Bearer " + TOKEN.encode() + b"\r\nContent-Type: application/json\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\nfffffffffffffff\r\n[{")
        try:
            return sock.recv(4096)
        except TimeoutError:
            return b"(no answer in 20 s)"


def test_plain_http_on_a_public_address_with_tokens_warns_and_tls_files_go_together(tmp_path, monkeypatch):
    """Tokens over plain HTTP on 0.0.0.0: a clear warning saying how to add TLS (the missing store then stops
    the command before anything binds); none on loopback; a key without a certificate is refused."""
    from typer.testing import CliRunner

    from trafficcore.cli import app

    monkeypatch.setenv("TRAFFICCORE_API_TOKENS", TOKEN)
    missing = str(tmp_path / "none.duckdb")
    res = CliRunner().invoke(app, ["serve", "--db", missing, "--host", "0.0.0.0"])
    assert res.exit_code == 2 and "no store at" in res.output
    assert "UNENCRYPTED" in res.output and "nginx or Caddy" in res.output and "--ssl-certfile" in res.output
    res = CliRunner().invoke(app, ["serve", "--db", missing])
    assert res.exit_code == 2 and "UNENCRYPTED" not in res.output
    key = tmp_path / "key.pem"
    key.write_text("x")
    res = CliRunner().invoke(app, ["serve", "--db", missing, "--host", "0.0.0.0", "--ssl-keyfile", str(key)])
    assert res.exit_code == 2 and "give both --ssl-keyfile and --ssl-certfile" in res.output
    res = CliRunner().invoke(app, ["serve", "--db", missing, "--host", "0.0.0.0", "--ssl-keyfile", str(key),
                                   "--ssl-certfile", str(key)])
    assert res.exit_code == 2 and "UNENCRYPTED" not in res.output  # HTTPS: nothing to warn about


def test_serve_refuses_to_start_without_tokens(tmp_path):
    store = _tiny_store(tmp_path / "srv.duckdb")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAFFICCORE_API_TOKENS")}
    res = subprocess.run([sys.executable, "-m", "trafficcore.cli", "serve", "--db", str(store.path)],
                         capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 2 and "no API tokens configured" in res.stderr
    res = subprocess.run([sys.executable, "-m", "trafficcore.cli", "serve", "--db", str(store.path), "--host",
                          "0.0.0.0", "--insecure-no-auth"], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 2 and "refused" in res.stderr


# ---------------------------------------------------------------------------------------------- schemathesis
@pytest.mark.slow
def test_no_server_errors_on_generated_requests(tmp_path):
    """Whatever schemathesis generates from the spec (valid or not), the answer is never a 5xx, and its
    status code and body are the ones the spec documents.

    Driven through schemathesis's operation strategies rather than its pytest plugin, whose lazy
    fixture loader does not run under the installed pytest.
    """
    store = _tiny_store(tmp_path / "fuzz.duckdb")
    app = create_app(store.path, tokens=[TOKEN], max_body_bytes=100_000)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    calls: dict[str, int] = {}
    failures: list[str] = []
    try:
        for result in schema.get_all_operations():
            _fuzz(result.ok(), calls, failures)
    finally:
        app.state.cache.close()
    assert not failures, "\n".join(failures[:10])
    assert set(calls) == {"GET /health", "GET /forecast", "GET /explain", "POST /signal/analyse",
                          "POST /observations", "GET /alerts", "POST /events"}
    assert all(n >= 30 for label, n in calls.items() if label != "GET /health"), calls


def _fuzz(op, calls: dict[str, int], failures: list[str]) -> None:
    """Generated requests for one operation, recording every 5xx: valid ones (20), valid ones on the real
    dataset (20, so that lookups get past the 404), and ones that break the schema (15)."""
    from schemathesis import GenerationMode

    label = op.label
    has_dataset = any(p.name == "dataset" for p in op.query)
    modes = [(GenerationMode.POSITIVE, None, 20), (GenerationMode.NEGATIVE, None, 15)]
    if has_dataset:
        modes.insert(1, (GenerationMode.POSITIVE, {"dataset": "tiny"}, 20))
    for mode, query, n in modes:

        @settings(max_examples=n, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=op.as_strategy(mode, query=query))
        def run(case):
            response = case.call(headers=AUTH)
            calls[label] = calls.get(label, 0) + 1
            if response.status_code >= 500:
                failures.append(f"{label} {case.query} {str(case.body)[:200]} -> {response.status_code} "
                                f"{response.text[:200]}")
            try:  # the answer is one the spec documents, in the documented shape
                case.validate_response(response, checks=[status_code_conformance, response_schema_conformance])
            except FailureGroup as e:
                failures.append(f"{label} {case.query} -> {response.status_code}: {str(e)[:300]}")

        try:
            run()
        except Unsatisfiable:  # nothing to break (GET /health has no inputs)
            assert mode == GenerationMode.NEGATIVE and label == "GET /health"
