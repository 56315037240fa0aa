"""A tiny synthetic city for forecasting tests: 3 sites x 2 approaches, 15-minute counts.

Built through the real path (CanonicalTables -> Store -> load_panel) so the tests exercise the
same Panel the product uses. Counts follow a weekday/weekend daily profile scaled per detector,
times a slowly varying city-wide anomaly (so recent readings carry information beyond the
profile), plus Poisson noise; a few readings are missing.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from trafficcore.data.panel import load_panel
from trafficcore.data.schema import CanonicalTables, DatasetInfo
from trafficcore.data.store import Store

START = "2024-01-01"  # a Monday
DETECTORS = [("A:N", "A", "N"), ("A:S", "A", "S"), ("B:N", "B", "N"), ("B:S", "B", "S"), ("C:E", "C", "E"),
             ("C:W", "C", "W")]
SITES = {"A": (-37.80, 145.00), "B": (-37.81, 145.01), "C": (-37.82, 145.02)}
MISSING = [("A:N", "2024-01-15 08:00"), ("B:S", "2024-01-16 12:00")]


def tables(days: int = 22, seed: int = 0, start: str = START, source: str = "synthetic test city",
           interval_min: int = 15) -> CanonicalTables:
    rng = np.random.default_rng(seed)
    times = pd.date_range(start, periods=days * 1440 // interval_min, freq=f"{interval_min}min")
    hour = times.hour + times.minute / 60
    weekend = times.day_of_week >= 5
    weekday_shape = 20 + 150 * np.exp(-((hour - 8) ** 2) / 2) + 120 * np.exp(-((hour - 17) ** 2) / 3)
    weekend_shape = 20 + 90 * np.exp(-((hour - 13) ** 2) / 8)
    shape = np.where(weekend, weekend_shape, weekday_shape) * interval_min / 15
    anomaly = np.zeros(len(times))
    for i in range(1, len(times)):
        anomaly[i] = 0.97 * anomaly[i - 1] + rng.normal(0, 0.03)
    obs = []
    for k, (det, _, _) in enumerate(DETECTORS):
        lam = np.clip(shape * (0.5 + 0.3 * k) * (1 + anomaly), 0, None)
        obs.append(pd.DataFrame({"detector_id": det, "ts": times, "value": rng.poisson(lam).astype(float)}))
    observations = pd.concat(obs, ignore_index=True)
    drop = pd.Series(False, index=observations.index)
    for det, ts in MISSING:
        drop |= (observations["detector_id"] == det) & (observations["ts"] == pd.Timestamp(ts))
    observations = observations[~drop].reset_index(drop=True)
    sites = pd.DataFrame({"site_id": list(SITES), "name": [f"Site {s}" for s in SITES],
                          "lat": [v[0] for v in SITES.values()], "lon": [v[1] for v in SITES.values()]})
    detectors = pd.DataFrame({
        "detector_id": [d for d, _, _ in DETECTORS], "site_id": [s for _, s, _ in DETECTORS],
        "approach": [a for _, _, a in DETECTORS], "description": [f"{a} approach" for _, _, a in DETECTORS],
        "measure": "volume", "interval_s": interval_min * 60,
    })
    adjacency = pd.DataFrame({"src": ["A", "B", "B", "C"], "dst": ["B", "A", "C", "B"], "weight": 1000.0,
                              "kind": "road"})
    info = DatasetInfo(synthetic=True, source=source, timezone="UTC", interval_s=interval_min * 60)
    return CanonicalTables(info=info, sites=sites, detectors=detectors, observations=observations,
                           adjacency=adjacency)


def panel(tmp_path, name: str = "tiny", **kwargs):
    store = Store(tmp_path / "tiny.duckdb")
    store.ingest(name, tables(**kwargs))
    return load_panel(store, name), store
