"""Canonical schema, the DuckDB store, loaders, the demo city and windowing into model samples.

The names below are resolved lazily: importing a submodule (say `trafficcore.data.validate` for a
dataset-name check) must not load pandas and DuckDB for it (issue 15).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trafficcore._lazy import lazy_exports

if TYPE_CHECKING:
    from trafficcore.data.schema import FORECAST_COLUMNS, CanonicalTables, DatasetInfo
    from trafficcore.data.store import Store

__all__ = ["FORECAST_COLUMNS", "CanonicalTables", "DatasetInfo", "Store"]

lazy_exports(__name__, {
    "FORECAST_COLUMNS": "trafficcore.data.schema",
    "CanonicalTables": "trafficcore.data.schema",
    "DatasetInfo": "trafficcore.data.schema",
    "Store": "trafficcore.data.store",
})
