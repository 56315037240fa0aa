"""Which model answers the dashboard's forecasts, and how a baseline is fitted when no saved model fits.

Order of preference for a dataset:

1. the version promoted in the model registry (``trafficcore models promote``), if any;
2. the shipped demo model (``data/demo_model``) on the demo city it was trained on: the first
   start trains nothing;
3. other versions recorded in the store's ``model_runs`` (newest first; rejected update
   candidates and forecast records left out);
4. a baseline fitted on the spot (historical average by default: a second or so; gradient
   boosting on request: longer). It is fitted once per dataset on the training and validation
   days of the standard protocol, so forecasts issued in the test days are out of sample, and
   the sidebar says which days it learnt from.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from trafficcore.data.panel import Panel
from trafficcore.data.store import Store
from trafficcore.live.fallback import (  # noqa: F401 - moved below the UI; re-exported for pages and commands
    FIT_HORIZONS_MIN,
    FIT_KWARGS,
    fit_baseline,
    fit_rows,
    fit_spec,
    shipped_applies,
)

FIT_LABELS = {
    "historical_average": "Historical average (fitted now)",
    "gbt": "Gradient boosting (fitted now, light; about 2 min)",
    "seasonal_naive": "Seasonal naive: same time last week (fitted now)",
    "persistence": "Persistence: newest reading (fitted now)",
}


@dataclass(frozen=True)
class ModelChoice:
    """One entry of the sidebar's model picker. `key` is stable text used in caches and URLs."""

    key: str
    label: str
    kind: str  # "saved" (load from `path`) or "fit" (registry name in `name`)
    path: str | None = None
    name: str | None = None


def choices(store: Store, dataset: str, info: dict, model_dir: Path) -> list[ModelChoice]:
    """Models that can answer for this dataset, best first (see module docstring)."""
    from trafficcore.live import registry

    out: list[ModelChoice] = []
    versions = registry.runs(store, dataset)
    versions = versions[versions["status"].fillna("registered") != "rejected"]  # failed update candidates
    versions = versions.sort_values("promoted", ascending=False, kind="stable")  # the promoted one first
    saved = []
    for r in versions.itertuples(index=False):
        if isinstance(r.path, str) and (Path(r.path) / "config.json").exists():
            when = pd.Timestamp(r.created_at).strftime("%Y-%m-%d %H:%M") if pd.notna(r.created_at) else ""
            tag = "promoted, " if r.promoted else ""
            saved.append(ModelChoice(f"run:{r.run_id}", f"{r.model} trained {when} ({tag}{r.run_id})", "saved",
                                     path=r.path))
    if saved and versions["promoted"].fillna(False).any():
        out.append(saved.pop(0))
    if shipped_applies(info, model_dir):
        out.append(ModelChoice("shipped", "Shipped demo model (language model)", "saved", path=str(model_dir)))
    out += saved
    for name, label in FIT_LABELS.items():
        out.append(ModelChoice(f"fit:{name}", label, "fit", name=name))
    return out


def load_saved(path: str) -> object:
    """A saved model folder (config.json + safetensors), via the registry."""
    from trafficcore.models import registry

    return registry.load_model(path)


def describe(choice: ModelChoice, model: object, note: dict | None) -> str:
    """One line for the sidebar: what is answering, and what it learnt from."""
    horizons = ", ".join(str(h) for h in getattr(getattr(model, "spec", None), "horizons_min", ()))
    if choice.kind == "fit" and note:
        return (f"{choice.label.split(' (')[0]}, learnt from {note['first']:%d %b %Y} to {note['last']:%d %b %Y}; "
                f"forecasts issued later are out of sample. Horizons: {horizons} min.")
    return f"{choice.label} from {choice.path}. Horizons: {horizons} min."


def forecast(model, panel: Panel, issue_times, detector_ids=None, neighbour_idx: np.ndarray | None = None):
    """Forecast frame for one or more issue times in one batch (`models.base.predict`, vectorised).

    `neighbour_idx` is the panel's neighbour matrix for the model's spec; passing a cached one
    matters: building it costs far more than a baseline's forecast.
    """
    from trafficcore.data.windows import build_samples
    from trafficcore.models.base import forecast_frame

    times = pd.DatetimeIndex([pd.Timestamp(t) for t in np.atleast_1d(issue_times)])
    rows = np.array([panel.index_of(t) for t in times], dtype=np.int64)
    if len(rows) and rows.max() > len(panel.times):
        raise ValueError(f"issue time {times.max()} is beyond the data ({panel.times[-1]} is the newest reading)")
    dets = None if detector_ids is None else np.array([panel.column(d) for d in detector_ids], dtype=np.int64)
    samples = build_samples(panel, rows, dets, model.spec, neighbour_idx=neighbour_idx)
    return forecast_frame(panel, samples, model.predict_samples(panel, samples))

