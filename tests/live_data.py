"""A small live-test city: two signalised sites with compass approaches and a clear daily profile."""

from __future__ import annotations

import numpy as np
import pandas as pd

from trafficcore.data.schema import CanonicalTables, DatasetInfo

DETECTORS = ["X:N", "X:E", "X:S", "X:W", "Y:N", "Y:S"]


def daily(times: pd.DatetimeIndex, scale: float = 1.0) -> np.ndarray:
    """Counts per 15 minutes: quiet nights, morning and evening peaks (always > 5 from 06:00 to 22:00)."""
    h = times.hour + times.minute / 60
    base = 4 + 60 * np.exp(-((h - 8) ** 2) / 3) + 50 * np.exp(-((h - 17) ** 2) / 4) + 25 * ((h > 6) & (h < 22))
    return scale * np.asarray(base)


def city(days: int = 14, start: str = "2025-03-03", seed: int = 0) -> CanonicalTables:
    times = pd.date_range(start, periods=96 * days, freq="15min")
    rng = np.random.default_rng(seed)
    sites = pd.DataFrame({"site_id": ["X", "Y"], "name": ["X Rd / Main St", "Y Rd / Main St"],
                          "lat": [-37.81, -37.82], "lon": [144.96, 144.97]})
    dets = pd.DataFrame({
        "detector_id": DETECTORS,
        "site_id": [d.split(":")[0] for d in DETECTORS],
        "approach": [d.split(":")[1] for d in DETECTORS],
        "lanes": 2,
        "measure": "volume",
        "interval_s": 900,
    })
    frames = []
    for i, d in enumerate(DETECTORS):
        v = daily(times, 1.0 + 0.1 * i) * rng.uniform(0.9, 1.1, len(times))
        frames.append(pd.DataFrame({"detector_id": d, "ts": times, "value": np.round(v)}))
    return CanonicalTables(
        DatasetInfo(synthetic=True, source="live-test", timezone="UTC", interval_s=900),
        sites=sites, detectors=dets, observations=pd.concat(frames, ignore_index=True),
    )


def live_store(store, name: str = "town", days: int = 14):
    """`store` with the test city imported as `name`; returns the store."""
    store.ingest(name, city(days))
    return store


def readings(ts, values: dict[str, float] | None = None, dets=DETECTORS) -> pd.DataFrame:
    """One interval of readings at `ts` (the typical value unless given)."""
    t = pd.DatetimeIndex([pd.Timestamp(ts)])
    rows = [{"detector_id": d, "ts": pd.Timestamp(ts),
             "value": float((values or {}).get(d, typical(d, t)))} for d in dets]
    return pd.DataFrame(rows)


def typical(det: str, t: pd.DatetimeIndex) -> float:
    """The noise-free reading of detector `det` at the single time `t`."""
    return round(float(daily(t, 1.0 + 0.1 * DETECTORS.index(det))[0]))


def copy_of(template, dest):
    """A Store on a copy of the template file (building the city once per module keeps the tests fast)."""
    import shutil

    from trafficcore.data.store import Store

    shutil.copy(template, dest)
    return Store(dest)
