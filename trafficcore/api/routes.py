"""The API's routes: thin adapters from HTTP to trafficcore's own functions.

Endpoints are plain `def`s, which FastAPI runs in its threadpool, so model calls and DuckDB reads
never block the event loop. The exception is /forecast: when its answer is already in memory it is
built on the event loop (a few dict look-ups; a threadpool hop would cost more than the work), and
anything that loads or computes goes through `run_in_threadpool`. The work itself lives elsewhere: forecasts in
`trafficcore.models` (through `service.LiveCache`), explanations in `trafficcore.explain`, signal
analysis in `trafficcore.signal`, ingest and alerts in `trafficcore.live`.
"""

from __future__ import annotations

import logging
import math
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from trafficcore.api import schemas as s
from trafficcore.api.auth import authorised, require_token
from trafficcore.api.service import LiveCache, NotFound, check_issue_time
from trafficcore.errors import DataError

router = APIRouter()
log = logging.getLogger(__name__)

#: Error responses shared by the authenticated routes (documented in the OpenAPI spec).
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": s.ErrorResponse, "description": "missing or wrong bearer token"},
    404: {"model": s.ErrorResponse, "description": "unknown dataset, detector or site"},
    413: {"model": s.ErrorResponse, "description": "request body over the size limit"},
    422: {"model": s.ErrorResponse, "description": "invalid input; DataError adds file, row and column"},
    503: {"model": s.ErrorResponse, "description": "the store is locked by another process; retry"},
}
AUTH = [Depends(require_token)]

Dataset = Query(..., min_length=1, max_length=s.DATASET_MAX, pattern=s.DATASET_PATTERN,
                description="dataset name in the store")
At = Query(None, max_length=40, description="issue time, local wall clock (default: just after the newest "
                                            "complete interval)")


def _cache(request: Request) -> LiveCache:
    return request.app.state.cache


def _iso(v) -> str | None:
    if v is None or (not isinstance(v, str) and pd.isna(v)):
        return None
    return pd.Timestamp(v).isoformat() if not isinstance(v, str) else v


def _jsonable(obj):
    """Plain JSON values: non-finite floats become null, timestamps ISO strings, numpy scalars Python ones."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (pd.Timestamp,)):
        return obj.isoformat()
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        try:
            obj = obj.item()
        except (ValueError, TypeError):
            return str(obj)
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    return str(obj)


def _bad_query(message: str, column: str) -> DataError:
    return DataError("query", message, column=column)


# ---------------------------------------------------------------------------------------------- health
@router.get("/health", response_model=s.HealthResponse, response_model_exclude_none=True, tags=["service"])
def health(request: Request) -> s.HealthResponse:
    """Liveness and readiness: `status` for anyone; with a valid token also the store, its datasets and the
    models loaded (they describe the server to whoever asks, so an anonymous probe gets only ok/degraded)."""
    cache = _cache(request)
    try:
        names = cache.store.dataset_names()
        ok, error = True, None
    except Exception as e:  # noqa: BLE001 - health reports the fault instead of failing
        names, ok, error = [], False, f"{type(e).__name__}: store unreachable"
    if not authorised(request):
        return s.HealthResponse(status="ok" if ok else "degraded")
    return s.HealthResponse(
        status="ok" if ok else "degraded", store=str(cache.store.path), store_reachable=ok, datasets=names,
        models_loaded=cache.loaded_models(), auth=request.app.state.tokens is not None, error=error,
    )


# ---------------------------------------------------------------------------------------------- forecasts
@router.get("/forecast", response_model=s.ForecastResponse, dependencies=AUTH, responses=ERRORS, tags=["forecast"])
async def forecast(
    request: Request,
    dataset: str = Dataset,
    detector: str | None = Query(None, min_length=1, max_length=s.MAX_ID, description="one detector_id"),
    site: str | None = Query(None, min_length=1, max_length=s.MAX_ID, description="all detectors of a site_id"),
    horizons: list[int] | None = Query(None, description="minutes ahead (repeat the parameter; default: all)"),
    at: str | None = At,
) -> JSONResponse:
    """P10/P50/P90 forecasts for one detector or every detector of a site, from the dataset's current model.

    Answered from the per-process cache (trafficcore.api.service). When the panel, the model and the
    forecast are in memory the answer is a few dict look-ups, done on the event loop; anything that
    loads or computes runs in the threadpool. The body is built from ready-made rows and sent as is;
    the response model documents it.
    """
    if (detector is None) == (site is None):
        raise _bad_query("give exactly one of 'detector' or 'site'", "detector")
    args = (_cache(request), dataset, detector, site, horizons, at)
    if args[0].ready(dataset) is not None:
        fast = _forecast(*args, compute=False)
        if fast is not None:
            return fast
    return await run_in_threadpool(_forecast, *args, compute=True)


def _forecast(cache: LiveCache, dataset: str, detector: str | None, site: str | None, horizons: list[int] | None,
              at: str | None, compute: bool) -> JSONResponse | None:
    p = cache.panel(dataset)
    m = cache.model(dataset)
    if detector is not None:
        _check_detector(p.panel, detector, dataset)
        dets = [detector]
    else:
        dets = p.sites.get(str(site), [])
        if not dets:
            raise NotFound(f"unknown site {site!r} in dataset {dataset!r} (or it has no detectors)")
    hs = list(dict.fromkeys(horizons)) if horizons else [int(h) for h in m.model.spec.horizons_min]
    ts = _checked_request(m, p, hs, at, "horizons")
    fc = cache.forecast(dataset, ts, m, p, compute=compute)
    if fc is None:
        return None
    wanted = set(hs)
    rows = [r for d in dets for r in fc.rows.get(d, ()) if r["horizon_min"] in wanted]
    brief = {k: m.info.get(k) for k in ("source", "model", "run_id", "path", "reason") if m.info.get(k) is not None}
    return JSONResponse({"dataset": dataset, "issued_at": ts.isoformat(), "model": str(m.info["name"]),
                         "model_info": _jsonable(brief), "detectors": dets, "horizons_min": hs, "rows": rows})


def _checked_request(m, p, horizons: list[int], at, field: str) -> pd.Timestamp:
    """The issue time for `at`, after checking the model offers every asked horizon (422 naming `field`)."""
    offered = [int(h) for h in m.model.spec.horizons_min]
    wrong = [h for h in horizons if h not in offered]
    if wrong:
        raise _bad_query(f"horizon(s) {wrong} not offered by model {m.info['name']!r}; choose from {offered}", field)
    try:
        return check_issue_time(p, m.model, at)
    except ValueError as e:
        raise _bad_query(str(e), "at") from None


def _check_detector(panel, detector: str, dataset: str) -> None:
    try:
        panel.column(detector)
    except KeyError:
        raise NotFound(f"unknown detector {detector!r} in dataset {dataset!r}") from None


@router.get("/explain", response_model=s.ExplainResponse, dependencies=AUTH, responses=ERRORS, tags=["forecast"])
def explain(
    request: Request,
    dataset: str = Dataset,
    detector: str = Query(..., min_length=1, max_length=s.MAX_ID, description="detector_id"),
    at: str | None = At,
    horizon: int = Query(30, description="minutes ahead (one the model offers)"),
    note: str | None = Query(None, max_length=500, description="a scenario note added to the context text"),
) -> s.ExplainResponse:
    """Why a forecast is what it is (SHAP over context words and numeric features), as `trafficcore explain`."""
    from trafficcore.explain import explain as run_explain

    cache = _cache(request)
    cache.touch()
    p = cache.panel(dataset)
    m = cache.model(dataset)
    _check_detector(p.panel, detector, dataset)
    ts = _checked_request(m, p, [horizon], at, "horizon")
    with cache.compute_lock(dataset):
        e = run_explain(m.model, p.panel, detector, ts, horizon, note=note)
    return s.ExplainResponse(**_jsonable(e.to_dict()))


# ---------------------------------------------------------------------------------------------- signal
@router.post("/signal/analyse", response_model=s.SignalAnalyseResponse, dependencies=AUTH, responses=ERRORS,
             tags=["signal"])
def signal_analyse(body: s.SignalAnalyseRequest) -> s.SignalAnalyseResponse:
    """HCM capacity, v/c, control delay, LOS and queues per approach and interval (`trafficcore signal analyse`)."""
    from trafficcore.signal.cli import run_analyse
    from trafficcore.signal.plan import Plan

    plan = Plan.from_dict(body.plan, source="plan")
    demand = _demand_frame(body)
    result = run_analyse(plan, demand, quantile=body.quantile, initial_queue=body.initial_queue)
    return s.SignalAnalyseResponse(**_jsonable({k: result[k] for k in
                                                ("quantile", "rows", "intervals", "lane_groups", "summary", "plan")}))


def _demand_frame(body: s.SignalAnalyseRequest) -> pd.DataFrame:
    """The request's demand rows read by `trafficcore.signal.read_demand_csv` (the CSV contract, unit
    conversion and checks included); errors name `demand` and the 1-based row of the list."""
    from trafficcore.signal.demand import read_demand_csv

    df = pd.DataFrame([r.model_dump() for r in body.demand], columns=["approach", "interval_start", "p10", "p50",
                                                                     "p90", "unit"])
    with tempfile.TemporaryDirectory(prefix="tc-demand-") as tmp:
        path = Path(tmp) / "demand.csv"
        df.to_csv(path, index=False)
        try:
            demand = read_demand_csv(path, interval_min=body.interval_min, unit=body.unit, phf=body.phf)
        except DataError as e:
            raise DataError("demand", e.message, row=None if e.row is None else e.row - 1, column=e.column) from None
        except pd.errors.OutOfBoundsDatetime:  # a date pandas cannot hold (before 1678 or after 2261)
            lo, hi = pd.Timestamp.min, pd.Timestamp.max
            rows = [i for i, r in enumerate(body.demand, start=1)
                    if (t := _naive(r.interval_start)) is not pd.NaT and not lo <= t <= hi]
            raise DataError("demand", "interval_start is outside the years 1678-2261", row=rows[0] if rows else None,
                            column="interval_start") from None
    demand.attrs["source"] = "demand"
    demand.index = demand.index - 1  # so that later checks name the row as above (index + 2 - 1)
    return demand


# ---------------------------------------------------------------------------------------------- live
@router.post("/observations", response_model=s.IngestResponse, dependencies=AUTH, responses=ERRORS, tags=["live"])
def observations(
    request: Request,
    dataset: str = Dataset,
    readings: list[s.Observation] = Body(..., min_length=1, max_length=s.MAX_BATCH,
                                         description="readings: [{detector_id, ts, value}, ...]"),
    source: str = Query("api", min_length=1, max_length=s.MAX_ID, description="recorded in the ingest log"),
    refresh: bool = Query(True, description="re-issue and store forecasts of the detectors touched, right after "
                                            "answering (what alerts compare readings with)"),
) -> s.IngestResponse:
    """Take in readings (idempotent; late data accepted). Answers only after the transaction committed.

    A bad reading refuses the whole batch (422 naming `row`, the 1-based position in the list, and
    `column`); nothing is written. A batch sent again is recognised (`duplicate_batch`) and writes nothing.
    """
    from trafficcore.live.ingest import ingest_observations

    cache = _cache(request)
    cache.touch()
    cache.require_dataset(dataset)
    frame = pd.DataFrame([r.model_dump() for r in readings], columns=["detector_id", "ts", "value"])
    metrics = request.app.state.metrics
    try:
        result = ingest_observations(cache.store, dataset, frame, source=source, first_row=1)
    except DataError as e:
        metrics.ingest_rejected(dataset, e.column)
        raise
    metrics.ingest_done(dataset, result)
    if result.written:
        cache.invalidate(dataset)
        if refresh:
            cache.schedule_refresh(dataset, result.detectors)
    elif result.duplicate_batch and refresh:  # a resend after a crash may find its forecasts never issued
        from trafficcore.live.ingest import missing_forecasts

        try:
            missing, _ = missing_forecasts(cache.store, dataset, result.detectors)
        except Exception:  # noqa: BLE001 - the batch is stored; a failed check must not fail the request
            log.warning("checking the forecasts of a resent batch on %s failed", dataset, exc_info=True)
            missing = []
        if missing:
            cache.schedule_refresh(dataset, missing)
    return s.IngestResponse(**_jsonable(result.to_dict()))


@router.post("/events", response_model=s.EventsIngestResponse, dependencies=AUTH, responses=ERRORS, tags=["live"])
def events(
    request: Request,
    dataset: str = Dataset,
    body: list[dict[str, Any]] | dict[str, Any] = Body(
        ..., description="a list of events [{id, start, end, lat, lon, road, kind, text, status, updated}, ...] "
                         "(or {\"events\": [...]}), a WZDx v4.x FeatureCollection, or an Open511 events document "
                         "(docs/FORMATS.md, \"Event feeds\")"),
    fmt: str = Query("auto", alias="format", pattern="^(auto|own|wzdx|open511)$",
                     description="the body's format (default: told from its shape)"),
    source: str = Query("api", min_length=1, max_length=s.MAX_ID, description="recorded in the ingest log"),
    refresh: bool = Query(True, description="re-issue and store the forecasts of the detectors the events change "
                                            "now, right after answering"),
) -> s.EventsIngestResponse:
    """Take in incidents, work zones and events (idempotent; updates and cancellations by id). Answers only
    after the transaction committed.

    A bad value refuses the whole document (422 naming `row`, the 1-based position in a list of events, and
    `column`, the field; or, in a WZDx or Open511 document, `column` = its JSON path such as
    `features[3].properties.start_date`); nothing is written. A document sent again is recognised
    (`duplicate_batch`) and writes nothing.
    """
    from trafficcore.live.events import affected_now, ingest_event_records

    cache = _cache(request)
    cache.touch()
    cache.require_dataset(dataset)
    result = ingest_event_records(cache.store, dataset, body, source=source, fmt=fmt)
    if result.written:
        ready = cache.ready(dataset)
        cache.invalidate(dataset)
        if refresh:  # the detectors whose context changes now when the model is in memory, else all those near
            dets = result.detectors
            if ready is not None:
                try:
                    dets = affected_now(cache.panel(dataset).panel, result.touched, ready[1].model.spec)
                except Exception:  # noqa: BLE001 - the events are stored; a failed look-up must not fail the request
                    log.warning("finding the detectors events changed on %s failed", dataset, exc_info=True)
            if dets:
                cache.schedule_refresh(dataset, dets)
    return s.EventsIngestResponse(**_jsonable(result.to_dict()))


def _naive(x) -> pd.Timestamp:
    try:
        t = pd.Timestamp(x)
    except (ValueError, TypeError, OverflowError):
        return pd.NaT
    return t if t is not pd.NaT and t.tzinfo is None else pd.NaT


@router.get("/alerts", response_model=s.AlertsResponse, dependencies=AUTH, responses=ERRORS, tags=["live"])
def alerts(
    request: Request,
    dataset: str = Dataset,
    at: str | None = Query(None, max_length=40, description="evaluate as of this local time (default: newest data)"),
    band_n: int | None = Query(None, ge=1, le=10_000, description="consecutive readings outside P10-P90"),
    stuck_k: int | None = Query(None, ge=1, le=10_000, description="identical non-zero readings in a row"),
    zero_k: int | None = Query(None, ge=1, le=10_000, description="zeros in a row where traffic is expected"),
    zero_typical: float | None = Query(None, ge=0, le=1e9, description="typical reading above which 0 is odd"),
    lookback: int | None = Query(None, ge=1, le=10_000, description="readings examined per detector"),
) -> s.AlertsResponse:
    """Current alerts (`trafficcore.live.alerts.current_alerts`): readings outside the forecast P10-P90 band,
    predicted LOS E/F at a signal, stuck or zero detectors; most severe first. Unset thresholds take the
    defaults documented in docs/LIVE.md."""
    from trafficcore.live.alerts import current_alerts

    cache = _cache(request)
    cache.touch()
    cache.require_dataset(dataset)
    when = None
    if at is not None:
        try:
            when = pd.Timestamp(at)
        except (ValueError, TypeError, OverflowError):
            raise _bad_query(f"at={at!r} is not a timestamp", "at") from None
        if pd.isna(when) or when.tzinfo is not None:
            raise _bad_query(f"at={at!r}: give a local wall-clock time without a zone", "at")
    try:
        given = {"band_n": band_n, "stuck_k": stuck_k, "zero_k": zero_k, "zero_typical": zero_typical,
                 "lookback": lookback}
        df = current_alerts(cache.store, dataset, at=when, **{k: v for k, v in given.items() if v is not None})
    except ValueError as e:
        raise _bad_query(str(e), "at") from None
    items = [
        s.Alert(kind=str(r["kind"]), severity=str(r["severity"]), detector_id=_str(r["detector_id"]),
                site_id=_str(r["site_id"]), start_ts=_iso(r["start_ts"]), end_ts=_iso(r["end_ts"]),
                message=str(r["message"]))
        for r in df.to_dict("records")
    ]
    return s.AlertsResponse(dataset=dataset, at=_iso(when), alerts=items)


def _str(v) -> str | None:
    return None if v is None or (not isinstance(v, str) and pd.isna(v)) else str(v)
