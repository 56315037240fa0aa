"""Tiny canonical datasets built in memory, for tests that must not depend on real files."""

from __future__ import annotations

import numpy as np
import pandas as pd

from trafficcore.data.schema import CanonicalTables, DatasetInfo


def tiny_tables(days: int = 15, start: str = "2025-01-01", value_offset: float = 0.0) -> CanonicalTables:
    """Three sites on a line, one detector each; value = a unique running number (+ offset)."""
    times = pd.date_range(start, periods=96 * days, freq="15min")
    sites = pd.DataFrame(
        {
            "site_id": ["A", "B", "C"],
            "name": ["A St", "B St", "C St"],
            "lat": [52.0, 52.01, 52.02],
            "lon": [5.0, 5.0, 5.01],
        }
    )
    dets = pd.DataFrame(
        {
            "detector_id": ["A:N", "B:N", "C:S"],
            "site_id": ["A", "B", "C"],
            "approach": ["N", "N", "S"],
            "measure": "volume",
            "interval_s": 900,
        }
    )
    obs = pd.DataFrame(
        {
            "detector_id": np.repeat(dets["detector_id"].to_numpy(), len(times)),
            "ts": np.tile(times, 3),
            "value": np.arange(3 * len(times), dtype=float) + value_offset,
        }
    )
    adj = pd.DataFrame({"src": ["A", "B", "B", "C"], "dst": ["B", "A", "C", "B"], "weight": 1.0, "kind": "road"})
    return CanonicalTables(
        DatasetInfo(synthetic=True, source="test", timezone="UTC", interval_s=900),
        sites=sites,
        detectors=dets,
        observations=obs,
        adjacency=adj,
    )
