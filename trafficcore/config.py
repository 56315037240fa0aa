"""Where things live and the few limits a deployment may want to change.

Resolution order for the store: an explicit path (``--db``), then ``TRAFFICCORE_DB``, then
``data/trafficcore.duckdb`` in the project folder. Observations may instead be read from a
hive-partitioned Parquet folder (``--observations-parquet`` or ``TRAFFICCORE_OBSERVATIONS_PARQUET``).
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = PROJECT_ROOT / "data"
DEFAULT_DB = DATA_DIR / "trafficcore.duckdb"
DEMO_MODEL_DIR = DATA_DIR / "demo_model"

#: Largest input file accepted by the loaders (bytes); override with TRAFFICCORE_MAX_FILE_MB.
DEFAULT_MAX_FILE_MB = 200.0


def db_path(explicit: str | os.PathLike | None = None) -> Path:
    """The DuckDB file to use: ``--db`` beats ``TRAFFICCORE_DB`` beats the default."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("TRAFFICCORE_DB")
    if env:
        return Path(env)
    return DEFAULT_DB


def observations_parquet(explicit: str | os.PathLike | None = None) -> Path | None:
    """A folder of Parquet files to read observations from (`--observations-parquet`, else
    ``TRAFFICCORE_OBSERVATIONS_PARQUET``), or None: observations then come from the DuckDB file alone.
    See `trafficcore.data.parquet` for the layout."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("TRAFFICCORE_OBSERVATIONS_PARQUET")
    return Path(env) if env else None


def max_file_bytes() -> int:
    """Size limit for one input file, from TRAFFICCORE_MAX_FILE_MB (megabytes) or the default."""
    raw = os.environ.get("TRAFFICCORE_MAX_FILE_MB")
    mb = float(raw) if raw else DEFAULT_MAX_FILE_MB
    return int(mb * 1024 * 1024)


#: Most cells (intervals x detectors) one in-memory panel may hold: 2**28 float32 values, 1 GiB.
#: Override with TRAFFICCORE_MAX_PANEL_CELLS.
DEFAULT_MAX_PANEL_CELLS = 2**28


def max_panel_cells() -> int:
    """Cell limit of one panel (`trafficcore.data.panel.load_panel` keeps the newest intervals that fit)."""
    raw = os.environ.get("TRAFFICCORE_MAX_PANEL_CELLS")
    return max(1, int(float(raw))) if raw else DEFAULT_MAX_PANEL_CELLS


#: API bearer tokens a deployment may set here instead of the environment (see `api_tokens`); keep secrets out of git.
API_TOKENS: tuple[str, ...] = ()
#: Largest request body the API accepts (megabytes); override with TRAFFICCORE_API_MAX_BODY_MB.
DEFAULT_API_MAX_BODY_MB = 16.0


def api_tokens() -> list[str]:
    """API tokens: TRAFFICCORE_API_TOKENS (comma-separated), else the file TRAFFICCORE_API_TOKENS_FILE (one per
    line; `#` comments), else `API_TOKENS`. Empty means none configured: `trafficcore serve` then refuses to start."""
    env = os.environ.get("TRAFFICCORE_API_TOKENS")
    if env and env.strip():
        return [t.strip() for t in env.split(",") if t.strip()]
    file = os.environ.get("TRAFFICCORE_API_TOKENS_FILE")
    if file:
        lines = Path(file).read_text(encoding="utf-8").splitlines()
        return [t.strip() for t in lines if t.strip() and not t.strip().startswith("#")]
    return list(API_TOKENS)


def metrics_tokens() -> list[str]:
    """Scrape tokens for `GET /metrics` only (TRAFFICCORE_METRICS_TOKENS, comma-separated): a Prometheus server can
    read the service's metrics without holding a token that may also ingest readings. API tokens work there too."""
    env = os.environ.get("TRAFFICCORE_METRICS_TOKENS", "")
    return [t.strip() for t in env.split(",") if t.strip()]


def api_max_body_bytes() -> int:
    """Request-body limit of the API, from TRAFFICCORE_API_MAX_BODY_MB (megabytes) or the default."""
    raw = os.environ.get("TRAFFICCORE_API_MAX_BODY_MB")
    mb = float(raw) if raw else DEFAULT_API_MAX_BODY_MB
    return int(mb * 1024 * 1024)


#: Seconds a client has to send a whole request body; override with TRAFFICCORE_API_BODY_TIMEOUT_S.
DEFAULT_API_BODY_TIMEOUT_S = 30.0


def api_body_timeout_s() -> float:
    """Time limit for reading one request body (see `trafficcore.api.limits`: a body that never ends)."""
    raw = os.environ.get("TRAFFICCORE_API_BODY_TIMEOUT_S")
    return float(raw) if raw else DEFAULT_API_BODY_TIMEOUT_S


#: Thresholds of the drift and decay alerts (`trafficcore.live.alerts`; each can be overridden per call). The
#: defaults were chosen so that a replayed normal week of SCATS (Boroondara, October 2006) raises none of them,
#: while a detector halved mid-week is flagged within two hours (docs/LIVE.md, "Live accuracy and drift").
MONITOR_THRESHOLDS: dict[str, float] = {
    # accuracy decay: the serving model's MAE over the trailing `rolling_hours` (mean over horizons, as the
    # validation MAE it recorded) above that validation MAE by `decay_margin` (0.25: 25%) for `decay_hours`
    "decay_margin": 0.25,
    "decay_hours": 6,
    # band calibration: P10-P90 coverage over the trailing `rolling_hours` outside [low, high] for `coverage_hours`
    "coverage_low": 0.70,
    "coverage_high": 0.90,
    "coverage_hours": 6,
    "rolling_hours": 24,
    # a rolling window counts only with scored forecasts in at least this many of its hours
    "min_hours": 12,
    # detector drift: the readings of the last `drift_window_min` minutes against the detector's own typical day
    # (`profile_days` before today), relative to the other detectors; alert when their level (median ratio to the
    # typical day) leaves the range the detector showed over those days (its `drift_quantile` to
    # 1 - `drift_quantile` quantiles) by more than `drift_margin` (0.35: below 1/1.35 of its low or above 1.35
    # times its high), or when their variation from one interval to the next falls below `drift_flat_ratio` of its
    # low (flat-lining). Windows whose typical reading is below `drift_min_typical` (reading units: vehicles per
    # interval for counts) are skipped: at night a handful of vehicles more or less is no shift. On the SCATS
    # week, a margin of 0.25 already raised 7 alerts (3 detectors); 0.35 raised none
    "drift_window_min": 120,
    "drift_quantile": 0.02,
    "drift_margin": 0.35,
    "drift_flat_ratio": 0.25,
    # history windows further than this many robust standard deviations from the detector's median are left out
    # of its range (a past fault, or the current shift persisting, would otherwise widen the range to include it:
    # without trimming, a detector halved for good was named by none of 121 four days later; with 4, by 111)
    "drift_trim": 4.0,
    "drift_min_typical": 25.0,
}
