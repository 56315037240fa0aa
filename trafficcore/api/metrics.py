"""Service metrics in the Prometheus text format (`GET /metrics`) and one JSON log line per request.

Why a registry per application (`ServiceMetrics.registry`) and not prometheus-client's global one:
every `create_app` (each test, each worker) counts its own requests; with the global registry a
second app in one process would try to register the same metric names and fail, or worse, two
apps would silently share counters.

What is counted, and where:

- requests and their latency by route template (`/forecast`, never the raw path, so a client
  cannot create a time series per URL), method and status: `RequestMetrics`, an ASGI middleware
  outside everything else, which also writes the access log line (`trafficcore.api.access`);
- ingest batches (stored, duplicate, rejected), readings (received, written, late) and rejections
  by the column at fault: the /observations route calls `ingest_done` / `ingest_rejected`;
- forecast refreshes after ingest (seconds, and when the last one finished): the cache's refresher
  calls `refreshed`;
- per dataset, read from the store when scraped (`update_from_store`): the age of the newest reading
  (the dataset's local clock against now in its time zone), the model that serves it, and the
  served forecasts' rolling MAE and P10-P90 coverage (`trafficcore.live.monitor`, 24 h and 7 days).

Scraping needs a token like every other route; a separate scrape token (`TRAFFICCORE_METRICS_TOKENS`,
comma-separated) lets a Prometheus server read metrics without being able to ingest readings.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pandas as pd
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from trafficcore.api.auth import Unauthorized, bearer, token_matches

access_log = logging.getLogger("trafficcore.api.access")
log = logging.getLogger("trafficcore.api")

#: Latency buckets (seconds): a warm /forecast answers in milliseconds, an explanation in seconds.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
REFRESH_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")


class ServiceMetrics:
    """The metrics of one application, in a registry of its own (see module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # two scrapes at once must not interleave clearing and setting the gauges
        r = self.registry = CollectorRegistry(auto_describe=True)
        req = ["route", "method", "status"]
        self.requests = Counter("trafficcore_http_requests", "HTTP requests answered", req, registry=r)
        self.latency = Histogram("trafficcore_http_request_duration_seconds", "Time to answer an HTTP request", req,
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.batches = Counter("trafficcore_ingest_batches", "Batches of readings received by POST /observations, "
                               "by outcome (stored, duplicate, rejected)", ["dataset", "outcome"], registry=r)
        self.readings = Counter("trafficcore_ingest_readings", "Readings in accepted batches: received, written "
                                "(new or changed) and late", ["dataset", "kind"], registry=r)
        self.rejections = Counter("trafficcore_ingest_rejections", "Batches refused as invalid, by the column at "
                                  "fault", ["dataset", "column"], registry=r)
        self.refresh_seconds = Histogram("trafficcore_forecast_refresh_seconds", "Time to re-issue and store live "
                                         "forecasts after an ingest", ["dataset"], buckets=REFRESH_BUCKETS,
                                         registry=r)
        self.last_refresh = Gauge("trafficcore_forecast_last_refresh_timestamp_seconds", "When the last forecast "
                                  "refresh finished (Unix time)", ["dataset"], registry=r)
        self.reading_age = Gauge("trafficcore_newest_reading_age_seconds", "Age of the newest stored reading: now in "
                                 "the dataset's time zone minus its local timestamp", ["dataset"], registry=r)
        self.serving = Gauge("trafficcore_serving_model_info", "1 for the model that serves each dataset "
                             "(trafficcore.live.serving)", ["dataset", "model", "run_id", "source"], registry=r)
        acc = ["dataset", "run_id", "horizon_min", "window"]
        self.live_mae = Gauge("trafficcore_live_mae", "MAE of the served forecasts scored against the readings that "
                              "followed, over a rolling window (horizon_min 'all': every horizon)", acc, registry=r)
        self.live_coverage = Gauge("trafficcore_live_coverage_p10_p90", "Share of readings inside the served P10-P90 "
                                   "band over a rolling window", acc, registry=r)
        self.live_pairs = Gauge("trafficcore_live_scored_pairs", "Served forecasts scored in the rolling window", acc,
                                registry=r)

    # ------------------------------------------------------------------ events
    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        labels = (route, method, str(status))
        self.requests.labels(*labels).inc()
        self.latency.labels(*labels).observe(seconds)

    def ingest_done(self, dataset: str, result) -> None:
        """An accepted batch (`trafficcore.live.ingest.IngestResult`)."""
        self.batches.labels(dataset, "duplicate" if result.duplicate_batch else "stored").inc()
        self.readings.labels(dataset, "received").inc(result.received)
        self.readings.labels(dataset, "written").inc(result.written)
        self.readings.labels(dataset, "late").inc(result.late)

    def ingest_rejected(self, dataset: str, column: str | None) -> None:
        self.batches.labels(dataset, "rejected").inc()
        self.rejections.labels(dataset, column or "-").inc()

    def refreshed(self, dataset: str, seconds: float) -> None:
        self.refresh_seconds.labels(dataset).observe(seconds)
        self.last_refresh.labels(dataset).set(time.time())

    # ------------------------------------------------------------------ read from the store when scraped
    def update_from_store(self, store, datasets: list[str]) -> None:
        """Set the per-dataset gauges from what the store holds now (see module docstring)."""
        from trafficcore.live.monitor import WINDOWS, accuracy
        from trafficcore.live.serving import candidates

        for g in (self.reading_age, self.serving, self.live_mae, self.live_coverage, self.live_pairs):
            g.clear()  # a dropped dataset or a retired model must not linger
        if not datasets:
            return
        info = store.query("SELECT d.dataset, d.timezone, (SELECT max(ts) FROM observations o "
                           "WHERE o.dataset = d.dataset) AS newest FROM datasets d")
        for r in info.itertuples(index=False):
            if r.dataset in datasets and r.newest is not None and not pd.isna(r.newest):
                self.reading_age.labels(r.dataset).set(_age_s(r.newest, r.timezone))
        for ds in datasets:
            try:
                c = candidates(store, ds)[0]
            except (KeyError, IndexError):
                continue
            self.serving.labels(ds, c.name, c.run_id or "", c.source).set(1)
            for window, hours in WINDOWS.items():
                by_h = accuracy(store, ds, hours, ["run_id", "horizon_min"])
                pooled = accuracy(store, ds, hours, ["run_id"]).assign(horizon_min="all")
                for row in pd.concat([by_h, pooled], ignore_index=True).itertuples(index=False):
                    labels = (ds, str(row.run_id), str(row.horizon_min), window)
                    self.live_pairs.labels(*labels).set(row.n)
                    self.live_mae.labels(*labels).set(row.mae)
                    self.live_coverage.labels(*labels).set(row.coverage_p10_p90)

    def scrape(self, store, datasets: list[str]) -> bytes:
        """The exposition text, with the store's gauges brought up to date first (a failure there is logged and
        the process's own counters are still served)."""
        with self._lock:
            try:
                self.update_from_store(store, datasets)
            except Exception:  # noqa: BLE001 - a busy store must not hide the counters from the scraper
                log.warning("metrics: reading the store failed; serving the counters only", exc_info=True)
            return generate_latest(self.registry)


def _age_s(newest, timezone: str | None) -> float:
    """Seconds from a naive local timestamp to now on the same wall clock."""
    try:
        tz = ZoneInfo(timezone) if timezone else ZoneInfo("UTC")
    except (ZoneInfoNotFoundError, ValueError):
        tz = ZoneInfo("UTC")
    now = pd.Timestamp(datetime.now(tz).replace(tzinfo=None))
    return float((now - pd.Timestamp(newest)).total_seconds())


# ---------------------------------------------------------------------------------------------- middleware
class RequestMetrics:
    """Count, time and log every HTTP request (status as sent; 500 when the application raised)."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            seconds = time.perf_counter() - t0
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = str(scope.get("method", ""))
            # labels only from bounded sets: a client inventing methods or paths must not create time series
            self.metrics.observe_request(route, method if method in METHODS else "other", status, seconds)
            client = scope.get("client")
            access_log.info("http_request", extra={
                "method": method[:16], "route": route, "path": str(scope.get("path", ""))[:200], "status": status,
                "duration_ms": round(seconds * 1000, 2), "client": client[0] if client else None})


# ---------------------------------------------------------------------------------------------- the route
router = APIRouter()


async def require_scrape_token(request: Request,
                               credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
    """Passes with auth off, an API token, or a scrape token (`TRAFFICCORE_METRICS_TOKENS`)."""
    tokens = request.app.state.tokens
    if tokens is None:
        return
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise Unauthorized("missing bearer token: send 'Authorization: Bearer <token>' (an API or a scrape token)")
    if not token_matches(credentials.credentials, tuple(tokens) + tuple(request.app.state.metrics_tokens)):
        raise Unauthorized("invalid bearer token")


# Not in the OpenAPI spec: the spec documents the JSON API for its clients (every route there has a response model,
# and schemathesis checks them); a scraper reads the Prometheus text format, whose contract is Prometheus's own.
@router.get("/metrics", dependencies=[Depends(require_scrape_token)], response_class=Response, include_in_schema=False)
def metrics(request: Request) -> Response:
    """Service metrics in the Prometheus text format: requests and latency by route and status, ingest batches,
    readings and rejections, forecast refresh time, and per dataset the newest reading's age, the serving model
    and the served forecasts' rolling MAE and coverage (docs/LIVE.md lists every series)."""
    cache = request.app.state.cache
    cache.touch()
    try:
        names = cache.datasets(fresh=True)
    except Exception:  # noqa: BLE001 - see ServiceMetrics.scrape
        log.warning("metrics: listing the datasets failed", exc_info=True)
        names = []
    return Response(request.app.state.metrics.scrape(cache.store, names), media_type=CONTENT_TYPE_LATEST)
