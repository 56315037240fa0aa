"""Live operation: readings taken in as they arrive, forecasts re-issued, alerts raised, models kept current.

- `ingest`: validated, idempotent batches of readings (`ingest_observations`) and re-issued forecasts
  for the detectors they touched (`refresh_forecasts`);
- `watch`: a folder of long-format CSV files processed in order, each once;
- `replay`: history fed into a copy of a dataset as if it arrived live (demos and tests);
- `alerts`: departures from the forecast band, predicted LOS E/F at signals, stuck and zero detectors;
- `registry` / `update`: model versions and continual fine-tuning.

Submodules are imported on demand so that `import trafficcore.live` stays cheap.
"""
