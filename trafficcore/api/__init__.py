"""The forecast API (FastAPI): forecasts, explanations, signal analysis, live ingest and alerts over HTTP.

`create_app` builds the application; `trafficcore serve` runs it under uvicorn (trafficcore.api.serve).
Imported on demand only, so that the rest of trafficcore never loads the web stack.
"""

from trafficcore.api.app import create_app

__all__ = ["create_app"]
