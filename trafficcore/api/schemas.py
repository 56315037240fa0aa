"""Request and response models of the forecast API: the contract the OpenAPI spec publishes.

Why every response has a model: clients generate code from /openapi.json, and a response without
a schema is a response they cannot type. Timestamps are naive local wall-clock times of the
dataset (as everywhere in trafficcore), written ISO 8601 without a zone.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt

from trafficcore.data.validate import DATASET_NAME_MAX, DATASET_NAME_PATTERN

#: Longest id/name accepted in a path or query (datasets, detectors, sites); longer is a 422, not a lookup.
MAX_ID = 200
#: Dataset names follow the data layer's one rule (`validate.check_dataset_name`); the API only republishes it.
DATASET_MAX = DATASET_NAME_MAX
DATASET_PATTERN = DATASET_NAME_PATTERN
#: Most readings in one POST /observations batch (a SCATS day is 140 x 96 = 13,440).
MAX_BATCH = 100_000


class ErrorResponse(BaseModel):
    """Every 4xx/5xx body: a human-readable `detail`; DataError adds where the bad value is."""

    detail: str | list[dict[str, Any]]
    file: str | None = Field(None, description="the input that was wrong (e.g. 'observations', 'plan')")
    row: int | None = Field(None, description="1-based record in that input, when it applies")
    column: str | None = Field(None, description="field or JSON path of the bad value, when it applies")


class HealthResponse(BaseModel):
    """Without a valid token only `status`; the rest (where the store is, what it holds) needs one."""

    status: Literal["ok", "degraded"]
    store: str | None = Field(None, description="path of the DuckDB store (with a token)")
    store_reachable: bool | None = Field(None, description="with a token")
    datasets: list[str] | None = Field(None, description="with a token")
    models_loaded: dict[str, str] | None = Field(
        None, description="dataset -> model name, for models already in memory (with a token)")
    auth: bool | None = Field(None, description="false only when started with --insecure-no-auth (with a token)")
    error: str | None = None


class ForecastRow(BaseModel):
    detector_id: str
    issued_at: str
    target_ts: str
    horizon_min: int
    p10: float | None = Field(description="null where the model had nothing to go on")
    p50: float | None
    p90: float | None


class ForecastResponse(BaseModel):
    dataset: str
    issued_at: str = Field(description="issue time: the forecast uses readings before it")
    model: str = Field(description="name of the model that made the forecast")
    model_info: dict[str, Any] = Field(description="which model and why: source, model, run_id, path, reason")
    detectors: list[str]
    horizons_min: list[int]
    rows: list[ForecastRow]


class TokenAttribution(BaseModel):
    token: str
    value: float


class FeatureAttribution(BaseModel):
    name: str
    value: float


class ExplainResponse(BaseModel):
    """The same fields as `trafficcore explain --json`; base_value + sum(values) == prediction."""

    prediction: float
    base_value: float
    tokens: list[TokenAttribution]
    features: list[FeatureAttribution]
    summary: str
    model: str
    detector_id: str
    issued_at: str
    horizon_min: int
    typical: float
    text: str
    note_read: str = Field("", description="the scenario note as the model read it (times relative to the issue "
                                           "time, places as distances); empty when it did not read it")
    note_unread: str = Field("", description="why a model that reads text was not given the note (it lies outside "
                                             "the events the model reads: too far ahead or away)")


class DemandRow(BaseModel):
    """One approach and interval of demand, as in a demand CSV (docs/SIGNAL.md, "Demand")."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    approach: str = Field(min_length=1, max_length=MAX_ID)
    interval_start: str = Field(min_length=1, max_length=40, description="local time, e.g. 2026-03-10T07:00")
    p50: float
    p10: float | None = None
    p90: float | None = None
    unit: Literal["veh", "veh/h"] | None = Field(None, description="default: the request's `unit`")


class SignalAnalyseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    plan: dict[str, Any] = Field(description="timing plan JSON, schema trafficcore.signal.plan/1 (docs/SIGNAL.md)")
    demand: list[DemandRow] = Field(min_length=1, max_length=10_000)
    quantile: Literal["p10", "p50", "p90"] = "p50"
    unit: Literal["veh", "veh/h"] = Field("veh", description="unit of rows without their own `unit`")
    interval_min: int = Field(15, ge=1, le=1440)
    phf: float | None = Field(None, description="peak-hour factor, 0.25-1 (use with hourly demand)")
    initial_queue: bool = False


class ApproachResult(BaseModel):
    approach: str
    interval_start: str
    v: float | None = Field(description="demand flow rate (veh/h)")
    c: float | None = Field(description="capacity (veh/h)")
    x: float | None = Field(description="degree of saturation v/c of the most saturated lane group")
    delay_s: float | None = Field(description="HCM control delay (s/veh)")
    los: str
    queue_mean_veh: float | None
    queue_p95_veh: float | None


class SignalAnalyseResponse(BaseModel):
    quantile: str
    rows: list[ApproachResult]
    intervals: list[dict[str, Any]]
    lane_groups: list[dict[str, Any]]
    summary: dict[str, Any]
    plan: dict[str, Any]


class Observation(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    detector_id: str = Field(min_length=1, max_length=MAX_ID)
    ts: str = Field(min_length=1, max_length=40, description="interval start, local time (e.g. 2025-09-29T08:15)")
    #: Strict: a JSON true or "12" is refused (pydantic would read them as 1.0 and 12.0).
    value: StrictFloat | StrictInt = Field(description="a JSON number")


class IngestResponse(BaseModel):
    """`trafficcore.live.ingest.IngestResult.to_dict()`: sent only after the transaction committed."""

    model_config = ConfigDict(extra="allow")

    batch_id: str
    dataset: str
    source: str
    received: int
    written: int
    late: int
    duplicate_batch: bool
    detectors: list[str]
    first_ts: str | None
    last_ts: str | None


class Alert(BaseModel):
    kind: str
    severity: str
    detector_id: str | None
    site_id: str | None
    start_ts: str | None
    end_ts: str | None
    message: str


class AlertsResponse(BaseModel):
    dataset: str
    at: str | None = Field(description="the time the alerts were evaluated at (default: newest data)")
    alerts: list[Alert]


class EventsIngestResponse(BaseModel):
    """`trafficcore.live.events.EventIngestResult.to_dict()`: sent only after the transaction committed."""

    model_config = ConfigDict(extra="allow")

    batch_id: str = Field(description="sha256 of the events' content (empty for a document without events)")
    dataset: str
    source: str
    format: str = Field(description="own, wzdx or open511")
    received: int = Field(description="events in the document (an Open511 event: one per scheduled interval)")
    written: int
    new: int
    updated: int
    ended: int
    cancelled: int
    removed: int = Field(description="intervals an Open511 event no longer has")
    unchanged: int
    duplicate_batch: bool
    events: list[str] = Field(description="ids of the events written")
    detectors: list[str] = Field(description="detectors near the events written (old and new positions)")
