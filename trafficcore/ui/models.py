"""The dashboard's model picker, and forecasts for it.

The picker's first entry is the model that serves the dataset everywhere (`trafficcore.live.serving`:
the promoted version, else the best saved model on validation, else the shipped demo model or the
newest version, else a baseline fitted on the spot); the other saved models and the baselines follow,
for a user who wants to compare. A baseline is fitted once per dataset on the training and validation
days of the standard protocol (`trafficcore.live.fallback`), so forecasts issued in the test days are
out of sample, and the sidebar says which days it learnt from.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from trafficcore.data.panel import Panel
from trafficcore.data.store import Store
from trafficcore.live.serving import Candidate, candidates

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


def _label(c: Candidate) -> str:
    """The picker's text: the model's honest name, and which version."""
    shown = c.display_name[0].lower() + c.display_name[1:]
    if c.source == "shipped":
        return f"Shipped demo model ({shown})"
    when = f"{c.created_at:%Y-%m-%d %H:%M}" if c.created_at is not None else ""
    tag = "promoted, " if c.source == "promoted" else ""
    return f"{c.display_name} trained {when} ({tag}{c.run_id})"


def choices(store: Store, dataset: str, info: dict, model_dir: Path) -> list[ModelChoice]:
    """Models that can answer for this dataset, the serving one first (see module docstring).

    `model_dir` is the shipped model's folder; `info` is unused (the store says which dataset it is).
    """
    try:
        found = candidates(store, dataset, model_dir)
    except KeyError:  # a dataset not (yet) in this store: only baselines
        found = []
    out = [ModelChoice(c.key, _label(c), "saved", path=c.path) for c in found if c.kind == "saved"]
    fits = [ModelChoice(f"fit:{n}", label, "fit", name=n) for n, label in FIT_LABELS.items()]
    first = next((c for c in found[:1] if c.kind == "fit"), None)
    if first is not None:  # nothing saved serves: the serving baseline heads the baselines
        fits.sort(key=lambda m: m.name != first.name)
    return out + fits


def reads_text(choice: ModelChoice) -> bool:
    """Whether the model behind a choice reads text (a scenario note), told from its saved config without loading
    it: a language model with its text path on, which training kept (`LMForecaster.reads_text`). Baselines,
    gradient boosting and the stack read numbers only."""
    if choice.kind != "saved" or not choice.path:
        return False
    try:
        cfg = json.loads((Path(choice.path) / "config.json").read_text())
    except (OSError, ValueError):
        return False
    arch = cfg.get("model") if isinstance(cfg.get("model"), dict) else {}
    used = (cfg.get("metrics") or {}).get("transformer_used", True) if isinstance(cfg.get("metrics"), dict) else True
    return (cfg.get("model_class") == "lm" and arch.get("transformer", True) is not False
            and arch.get("use_text", True) is not False and used is not False)


def describe(choice: ModelChoice, model: object, note: dict | None) -> str:
    """One line for the sidebar: what is answering, and what it learnt from."""
    horizons = ", ".join(str(h) for h in getattr(getattr(model, "spec", None), "horizons_min", ()))
    if choice.kind == "fit" and note:
        return (f"{choice.label.split(' (')[0]}, learnt from {note['first']:%d %b %Y} to {note['last']:%d %b %Y}; "
                f"forecasts issued later are out of sample. Horizons: {horizons} min.")
    return f"{choice.label}, folder {short_path(choice.path)}. Horizons: {horizons} min."


def short_path(path: str | Path | None) -> str:
    """A model folder as the sidebar shows it: its last two parts ("models/scats-lm"), never the absolute path
    (which clipped the sidebar; the full path goes in a tooltip, `path_help`)."""
    if not path:
        return ""
    parts = Path(str(path)).parts
    return "/".join(parts[-2:]) if len(parts) > 1 else str(path)


def path_help(choice: ModelChoice) -> str | None:
    """The model's full folder, for a tooltip (None for a model fitted in the app)."""
    return f"Model folder: {choice.path}" if choice.kind == "saved" and choice.path else None


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

