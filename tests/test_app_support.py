"""A small synthetic city for the dashboard tests (no tests here; imported by test_app*.py).

Six intersections on a 2 x 3 grid, four approaches each, four weeks of 15-minute counts with
weekday AM/PM peaks, quieter weekends, Poisson noise, one concert with free text, some rain, and
three injected detector faults (a stuck run, a dead loop reading zero through a peak, a gap), so
every page has something real to draw and the quality page has faults to find.
"""

from __future__ import annotations

import threading

import numpy as np
import pandas as pd

from trafficcore.data.schema import CanonicalTables, DatasetInfo
from trafficcore.data.store import Store

START = "2025-03-03"  # a Monday
APPROACHES = ("N", "E", "S", "W")
STUCK = ("S2:E", "2025-03-20 10:00", 16)  # detector, start, intervals
ZERO = ("S3:N", "2025-03-19 06:00", 16)
GAP = ("S4:W", "2025-03-18 00:00", 24)


def city_tables(days: int = 28, seed: int = 0) -> CanonicalTables:
    rng = np.random.default_rng(seed)
    times = pd.date_range(START, periods=96 * days, freq="15min")
    sites = pd.DataFrame(
        {
            "site_id": [f"S{i}" for i in range(1, 7)],
            "name": ["Mill St / 1st Ave", "Mill St / 2nd Ave", "Mill St / 3rd Ave", "King St / 1st Ave",
                     "King St / 2nd Ave", "King St / 3rd Ave"],
            "lat": [52.040, 52.045, 52.050, 52.040, 52.045, 52.050],
            "lon": [5.100, 5.100, 5.100, 5.110, 5.110, 5.110],
            "description": ["Residential streets", "Shops and offices", "Next to the arena", "School nearby",
                            "Central business district", "Park and sports fields"],
        }
    )
    dets = pd.DataFrame(
        [
            {"detector_id": f"{s}:{a}", "site_id": s, "approach": a, "lanes": 2, "measure": "volume",
             "interval_s": 900, "road": "Mill St" if a in "NS" else "1st Ave"}
            for s in sites["site_id"]
            for a in APPROACHES
        ]
    )
    hour = times.hour.to_numpy() + times.minute.to_numpy() / 60
    weekend = times.day_of_week.to_numpy() >= 5
    am = np.exp(-0.5 * ((hour - 8.0) / 1.0) ** 2)
    pm = np.exp(-0.5 * ((hour - 17.0) / 1.3) ** 2)
    day = np.exp(-0.5 * ((hour - 13.0) / 4.0) ** 2)
    values = []
    for j, det in dets.iterrows():
        size = 30 + 6 * (j % 5)
        inbound = det["approach"] in ("N", "W")
        shape = np.where(weekend, 0.15 + 0.55 * day, 0.1 + (0.9 if inbound else 0.4) * am
                         + (0.4 if inbound else 0.9) * pm + 0.35 * day)
        values.append(rng.poisson(size * shape).astype(float))
    vals = np.stack(values, axis=1)
    col = {d: i for i, d in enumerate(dets["detector_id"])}
    for det, start, n in (STUCK, ZERO):
        r = times.get_loc(pd.Timestamp(start))
        vals[r : r + n, col[det]] = 17.0 if det == STUCK[0] else 0.0
    r = times.get_loc(pd.Timestamp(GAP[1]))
    vals[r : r + GAP[2], col[GAP[0]]] = np.nan
    obs = pd.DataFrame(
        {"detector_id": np.repeat(dets["detector_id"].to_numpy(), len(times)), "ts": np.tile(times, len(dets)),
         "value": vals.T.ravel()}
    ).dropna()
    events = pd.DataFrame(
        {"event_id": ["E1"], "start_ts": [pd.Timestamp("2025-03-27 19:00")],
         "end_ts": [pd.Timestamp("2025-03-27 22:00")],
         "lat": [52.050], "lon": [5.100], "site_id": ["S3"], "kind": ["concert"],
         "text": ["Sold-out concert at the arena, 12,000 visitors expected"], "source": ["test"]}
    )
    wtimes = pd.date_range(START, periods=24 * days, freq="h")
    rain = np.where(np.arange(len(wtimes)) % 50 == 0, 2.0, 0.0)
    weather = pd.DataFrame({"ts": wtimes, "temp_c": 8.0, "precip_mm": rain,
                            "humidity_pct": 80.0, "wind_kmh": 10.0, "condition": "cloudy"})
    pairs = [("S1", "S2"), ("S2", "S3"), ("S4", "S5"), ("S5", "S6"), ("S1", "S4"), ("S2", "S5"), ("S3", "S6")]
    adj = pd.DataFrame([{"src": a, "dst": b, "weight": 1.0, "kind": "road"} for p in pairs for a, b in (p, p[::-1])])
    return CanonicalTables(
        DatasetInfo(synthetic=True, source="test-city", timezone="Europe/Amsterdam", interval_s=900,
                    description="Test city for the dashboard tests"),
        sites=sites, detectors=dets, observations=obs, events=events, weather=weather, adjacency=adj,
    )


def make_city_db(path, name: str = "city") -> str:
    """A DuckDB store holding the test city as dataset `name`; returns the path as text."""
    Store(path).ingest(name, city_tables())
    return str(path)


def gate_model_load(monkeypatch) -> threading.Event:
    """Hold the dashboard's saved-model load until the returned event is set (at most 30 s)."""
    from trafficcore.live import serving

    gate = threading.Event()
    original = serving.load_saved

    def slow_load(path):
        gate.wait(30)
        return original(path)

    monkeypatch.setattr(serving, "load_saved", slow_load)
    return gate
