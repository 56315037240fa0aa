"""The canonical tables: the one contract every loader produces and everything downstream reads.

Timestamps (`ts`, `start_ts`, `end_ts`, `issued_at`, `target_ts`) are naive ``TIMESTAMP`` values
in the dataset's *local wall-clock time*, the time people plan by; the IANA zone is recorded
per dataset in ``datasets.timezone`` so a timestamp can always be placed on UTC. An observation's
``ts`` is the start of its interval.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

#: column -> DuckDB type, per table; the first `KEYS[table]` columns form the primary key.
COLUMNS: dict[str, dict[str, str]] = {
    "datasets": {
        "dataset": "VARCHAR",
        "synthetic": "BOOLEAN",
        "source": "VARCHAR",
        "timezone": "VARCHAR",
        "interval_s": "INTEGER",
        "measure": "VARCHAR",
        "description": "VARCHAR",
    },
    "sites": {
        "dataset": "VARCHAR",
        "site_id": "VARCHAR",
        "name": "VARCHAR",
        "lat": "DOUBLE",
        "lon": "DOUBLE",
        "description": "VARCHAR",
        "geometry_wkt": "VARCHAR",
    },
    "detectors": {
        "dataset": "VARCHAR",
        "detector_id": "VARCHAR",
        "site_id": "VARCHAR",
        "approach": "VARCHAR",
        "description": "VARCHAR",
        "road": "VARCHAR",
        "lanes": "INTEGER",
        "measure": "VARCHAR",
        "interval_s": "INTEGER",
        "lat": "DOUBLE",
        "lon": "DOUBLE",
    },
    "observations": {
        "dataset": "VARCHAR",
        "detector_id": "VARCHAR",
        "ts": "TIMESTAMP",
        "value": "DOUBLE",
    },
    "events": {
        "dataset": "VARCHAR",
        "event_id": "VARCHAR",
        "start_ts": "TIMESTAMP",
        "end_ts": "TIMESTAMP",
        "lat": "DOUBLE",
        "lon": "DOUBLE",
        "site_id": "VARCHAR",
        "kind": "VARCHAR",
        "text": "VARCHAR",
        "source": "VARCHAR",
        # Added for live event feeds (trafficcore.live.events); null in imported datasets, which is read as
        # "active", "no road named", "a point event" and "never updated".
        "road": "VARCHAR",  # road name(s) the event is on, "; "-separated: detectors on them match further along
        "status": "VARCHAR",  # active | ended | cancelled (a cancelled event never happened: no model reads it)
        "updated_ts": "TIMESTAMP",  # when the feed last changed the event (local time)
        "geometry_wkt": "VARCHAR",  # WKT (lon lat) of a line or points where the feed gives one; matched by distance
    },
    "weather": {
        "dataset": "VARCHAR",
        "ts": "TIMESTAMP",
        "temp_c": "DOUBLE",
        "precip_mm": "DOUBLE",
        "humidity_pct": "DOUBLE",
        "wind_kmh": "DOUBLE",
        "condition": "VARCHAR",
    },
    "adjacency": {
        "dataset": "VARCHAR",
        "src": "VARCHAR",
        "dst": "VARCHAR",
        "weight": "DOUBLE",
        "kind": "VARCHAR",
    },
    "forecasts": {
        "run_id": "VARCHAR",
        "dataset": "VARCHAR",
        "detector_id": "VARCHAR",
        "issued_at": "TIMESTAMP",
        "target_ts": "TIMESTAMP",
        "horizon_min": "INTEGER",
        "p10": "DOUBLE",
        "p50": "DOUBLE",
        "p90": "DOUBLE",
    },
    "model_runs": {
        "run_id": "VARCHAR",
        "dataset": "VARCHAR",
        "model": "VARCHAR",
        "created_at": "TIMESTAMP",
        "path": "VARCHAR",
        "metrics_json": "VARCHAR",
        "config_json": "VARCHAR",
        "promoted": "BOOLEAN",
        "parent_run_id": "VARCHAR",  # the run a fine-tuned model started from (trafficcore.live.registry)
        "status": "VARCHAR",  # registry verdict: candidate, rejected, promoted, ... (NULL for plain runs)
        "train_end": "TIMESTAMP",  # newest reading the model learnt from
        "promoted_at": "TIMESTAMP",  # last time it became the promoted model (rollback goes to the one before)
    },
    # One row per batch of live readings taken in (trafficcore.live.ingest): a resent batch is recognised by its
    # content hash. `received_at` is UTC wall-clock time of the server, unlike the dataset's local timestamps.
    "ingest_log": {
        "dataset": "VARCHAR",
        "batch_id": "VARCHAR",
        "source": "VARCHAR",
        "received_at": "TIMESTAMP",
        "rows": "INTEGER",
        "first_ts": "TIMESTAMP",
        "last_ts": "TIMESTAMP",
        # sha256 of the file's bytes, for batches `trafficcore ingest` took from a file: the watcher's
        # "seen this file" key, in a column of its own so no client-given `source` text can forge it
        "file_sha256": "VARCHAR",
        # what the batch held: NULL for readings (every batch before events were fed live), "events" for a batch
        # of incidents, work zones and events (trafficcore.live.events)
        "kind": "VARCHAR",
    },
    # Served (live) forecasts scored against the readings that arrived afterwards (trafficcore.live.monitor):
    # additive error sums per model version, detector, horizon and hour of target time, so any window, site or
    # hour-of-day breakdown is a sum over rows. `hour_ts` is the start of the target hour (local time); `run_id`
    # is the live run (`live:<model>`); `scored_at` is the UTC wall-clock time the bucket was last recomputed.
    "forecast_accuracy": {
        "dataset": "VARCHAR",
        "run_id": "VARCHAR",
        "detector_id": "VARCHAR",
        "site_id": "VARCHAR",
        "horizon_min": "INTEGER",
        "hour_ts": "TIMESTAMP",
        "n": "INTEGER",  # scored pairs (forecast and reading both present)
        "abs_err": "DOUBLE",  # sum of |reading - P50|
        "abs_obs": "DOUBLE",  # sum of |reading| (WAPE's denominator)
        "inside": "INTEGER",  # readings within [P10, P90]
        "scored_at": "TIMESTAMP",
    },
}

KEYS: dict[str, tuple[str, ...]] = {
    "datasets": ("dataset",),
    "sites": ("dataset", "site_id"),
    "detectors": ("dataset", "detector_id"),
    "observations": ("dataset", "detector_id", "ts"),
    "events": ("dataset", "event_id"),
    "weather": ("dataset", "ts"),
    "adjacency": ("dataset", "src", "dst", "kind"),
    "forecasts": ("run_id", "detector_id", "issued_at", "horizon_min"),
    "model_runs": ("run_id",),
    "ingest_log": ("dataset", "batch_id"),
    "forecast_accuracy": ("dataset", "run_id", "detector_id", "horizon_min", "hour_ts"),
}

#: Tables a loader fills (everything but the products of models).
LOADED_TABLES = ("sites", "detectors", "observations", "events", "weather", "adjacency")

MEASURES = ("volume", "speed")

#: The Forecast frame: what every model returns (see trafficcore.models).
FORECAST_COLUMNS = ["detector_id", "issued_at", "target_ts", "horizon_min", "p10", "p50", "p90"]


def empty(table: str) -> pd.DataFrame:
    """An empty frame with the table's columns (without `dataset`, which the store adds)."""
    return pd.DataFrame({c: pd.Series(dtype=_pandas_dtype(t)) for c, t in COLUMNS[table].items() if c != "dataset"})


def _pandas_dtype(duck: str) -> str:
    return {
        "VARCHAR": "object",
        "BOOLEAN": "bool",
        "INTEGER": "Int64",
        "DOUBLE": "float64",
        "TIMESTAMP": "datetime64[ns]",
    }[duck]


@dataclass
class DatasetInfo:
    """What the store knows about a dataset as a whole."""

    synthetic: bool
    source: str
    timezone: str
    interval_s: int
    measure: str = "volume"
    description: str = ""


@dataclass
class CanonicalTables:
    """One dataset as a loader produces it: frames keyed by table name, without `dataset`.

    Missing columns are filled with nulls by `normalised()`; unknown columns are an error, so a
    loader cannot silently invent a second schema.
    """

    info: DatasetInfo
    sites: pd.DataFrame = field(default_factory=lambda: empty("sites"))
    detectors: pd.DataFrame = field(default_factory=lambda: empty("detectors"))
    observations: pd.DataFrame = field(default_factory=lambda: empty("observations"))
    events: pd.DataFrame = field(default_factory=lambda: empty("events"))
    weather: pd.DataFrame = field(default_factory=lambda: empty("weather"))
    adjacency: pd.DataFrame = field(default_factory=lambda: empty("adjacency"))

    def table(self, name: str) -> pd.DataFrame:
        return getattr(self, name)

    def normalised(self, name: str) -> pd.DataFrame:
        """The table with exactly the canonical columns (minus `dataset`) in canonical order."""
        df = self.table(name)
        cols = [c for c in COLUMNS[name] if c != "dataset"]
        extra = set(df.columns) - set(cols)
        if extra:
            raise ValueError(f"table {name} has non-canonical columns: {sorted(extra)}")
        out = df.copy()
        for c in cols:
            if c not in out.columns:
                out[c] = pd.Series([None] * len(out), index=out.index, dtype=_pandas_dtype(COLUMNS[name][c]))
        return out[cols]
