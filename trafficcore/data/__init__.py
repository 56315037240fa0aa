"""Canonical schema, the DuckDB store, loaders, the demo city and windowing into model samples."""

from trafficcore.data.schema import FORECAST_COLUMNS, CanonicalTables, DatasetInfo
from trafficcore.data.store import Store

__all__ = ["FORECAST_COLUMNS", "CanonicalTables", "DatasetInfo", "Store"]
