"""The FastAPI application: `create_app` wires the store, the cache, auth, limits and error handling.

Error contract (every body is `schemas.ErrorResponse`): 401 missing/wrong token (with
``WWW-Authenticate: Bearer``), 404 unknown dataset/detector/site, 413 body over the limit, 422
invalid input (pydantic's field errors, or a `DataError` naming input, row and column), 503 the
store is locked by another process. Anything else is a server fault: logged with its traceback,
answered with a generic 500 that leaks nothing.
"""

from __future__ import annotations

import logging
import os
from contextlib import asynccontextmanager

import duckdb
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from trafficcore import config
from trafficcore.api.auth import Unauthorized, check_tokens
from trafficcore.api.limits import BodySizeLimit
from trafficcore.api.service import LiveCache, ModelLoader, NotFound
from trafficcore.data.store import Store
from trafficcore.errors import DataError, TrafficCoreError

log = logging.getLogger("trafficcore.api")


class NoTokensConfigured(RuntimeError):
    """The server refuses to start without tokens (unless told `--insecure-no-auth`)."""


def create_app(
    db_path: str | os.PathLike | None = None,
    tokens: list[str] | tuple[str, ...] | None = None,
    max_body_bytes: int | None = None,
    *,
    insecure_no_auth: bool = False,
    model_loader: ModelLoader | None = None,
    check_every_s: float = 2.0,
    hold_store_s: float = 2.0,
    body_timeout_s: float | None = None,
    metrics_tokens: list[str] | tuple[str, ...] | None = None,
) -> FastAPI:
    """Build the API over one DuckDB store.

    `tokens` default to `config.api_tokens()` (environment or config); with none configured this
    raises `NoTokensConfigured` unless `insecure_no_auth` (local demos only: every route is open).
    `model_loader(store, dataset) -> (model, info)` defaults to the live registry's current model;
    tests pass a fast one. `max_body_bytes` defaults to `config.api_max_body_bytes()`, `body_timeout_s` (the
    time a client has to send a whole body) to `config.api_body_timeout_s()`. The store file
    is held open while requests come and released after `hold_store_s` idle seconds (see
    `service.LiveCache.touch`). `metrics_tokens` (default `config.metrics_tokens()`) may read `/metrics` only
    (`trafficcore.api.metrics`).
    """
    from trafficcore.api.metrics import RequestMetrics, ServiceMetrics
    from trafficcore.api.metrics import router as metrics_router
    from trafficcore.api.routes import router

    configured = check_tokens(list(tokens) if tokens is not None else config.api_tokens())
    if not configured and not insecure_no_auth:
        raise NoTokensConfigured(
            "no API tokens configured: set TRAFFICCORE_API_TOKENS (comma-separated) or TRAFFICCORE_API_TOKENS_FILE, "
            "or start with --insecure-no-auth for a local demo"
        )
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        app.state.cache.close()  # stops the background threads

    app = FastAPI(
        lifespan=lifespan,
        title="trafficcore forecast API",
        version="1",
        description=(
            "Traffic forecasts, explanations, signal-timing analysis, live ingest and alerts over a trafficcore "
            "store. Every route but /health needs `Authorization: Bearer <token>`. Times are the dataset's local "
            "wall-clock time, ISO 8601 without a zone."
        ),
    )
    store = Store(db_path)
    app.state.store = store
    app.state.tokens = configured if configured else None
    app.state.cache = LiveCache(store, model_loader=model_loader, check_every_s=check_every_s, hold_s=hold_store_s)
    app.state.metrics = ServiceMetrics()
    app.state.metrics_tokens = check_tokens(list(metrics_tokens) if metrics_tokens is not None
                                            else config.metrics_tokens())
    app.state.cache.on_refresh = app.state.metrics.refreshed
    limit = int(max_body_bytes) if max_body_bytes is not None else config.api_max_body_bytes()
    timeout = float(body_timeout_s) if body_timeout_s is not None else config.api_body_timeout_s()
    app.add_middleware(BodySizeLimit, max_bytes=limit, timeout_s=timeout)
    app.add_middleware(RequestMetrics, metrics=app.state.metrics)  # added last: outermost, sees every answer
    app.include_router(router)
    app.include_router(metrics_router)
    _add_error_handlers(app)
    return app


def _error(status: int, detail, headers: dict | None = None, **where) -> JSONResponse:
    body = {"detail": detail, **{k: v for k, v in where.items() if v is not None}}
    return JSONResponse(body, status_code=status, headers=headers)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(Unauthorized)
    async def _unauthorized(request: Request, exc: Unauthorized):
        return _error(401, str(exc), headers={"WWW-Authenticate": 'Bearer realm="trafficcore"'})

    @app.exception_handler(NotFound)
    async def _not_found(request: Request, exc: NotFound):
        return _error(404, str(exc.args[0]) if exc.args else "not found")

    @app.exception_handler(DataError)
    async def _data_error(request: Request, exc: DataError):
        return _error(422, str(exc), file=exc.file, row=exc.row, column=exc.column)

    @app.exception_handler(TrafficCoreError)
    async def _user_error(request: Request, exc: TrafficCoreError):
        return _error(422, str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        # FastAPI answers a body it cannot decode (bad UTF-8) with 400; to a client it is invalid input like any other
        status = 422 if exc.status_code == 400 else exc.status_code
        return _error(status, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        errors = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
                  for e in exc.errors()]
        return _error(422, errors)

    @app.exception_handler(duckdb.IOException)
    async def _store_busy(request: Request, exc: duckdb.IOException):
        if "lock" in str(exc).lower():
            log.warning("store locked by another process: %s", exc)
            return _error(503, "the store is locked by another process; retry shortly", headers={"Retry-After": "1"})
        return await _server_fault(request, exc)

    @app.exception_handler(Exception)
    async def _server_fault(request: Request, exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return _error(500, "internal server error (logged on the server)")
