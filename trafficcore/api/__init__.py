"""The forecast API (FastAPI): forecasts, explanations, signal analysis, live ingest and alerts over HTTP.

`create_app` builds the application; `trafficcore serve` runs it under uvicorn (trafficcore.api.serve).
Imported on demand only, so that the rest of trafficcore never loads the web stack: even importing
`trafficcore.api.serve` (which the CLI does to register `serve`) must not load FastAPI, so
`create_app` is resolved lazily.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trafficcore._lazy import lazy_exports

if TYPE_CHECKING:
    from trafficcore.api.app import create_app

__all__ = ["create_app"]

lazy_exports(__name__, {"create_app": "trafficcore.api.app"})
