"""Which model answers the dashboard's forecasts, and how a baseline is fitted when no saved model fits.

Order of preference for a dataset:

1. the shipped demo model (``data/demo_model``) on the demo city it was trained on: the first
   start trains nothing;
2. models trained on this dataset and recorded in the store's ``model_runs`` (newest first);
3. a baseline fitted on the spot (historical average by default: a second or so; gradient
   boosting on request: longer). It is fitted once per dataset on the training and validation
   days of the standard protocol, so forecasts issued in the test days are out of sample, and
   the sidebar says which days it learnt from.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from trafficcore.data.panel import Panel
from trafficcore.data.store import Store
from trafficcore.data.windows import WindowSpec

#: Horizons asked of baselines fitted on the spot (the map's slider runs 15-120 minutes).
FIT_HORIZONS_MIN = tuple(range(15, 121, 15))
#: On-the-spot gradient boosting is a lighter fit than the benchmark's (fewer samples and rounds), so a
#: user who picks it waits about two minutes on a 2-core CPU rather than ten.
FIT_KWARGS = {"gbt": {"max_train_samples": 30_000, "max_rounds": 300, "early_stopping": 20, "num_leaves": 31}}
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


def shipped_applies(info: dict, model_dir: Path) -> bool:
    """The shipped model is offered on the dataset it was trained on (the demo city by default)."""
    cfg_path = Path(model_dir) / "config.json"
    if not cfg_path.exists():
        return False
    try:
        cfg = json.loads(cfg_path.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    trained_on = cfg.get("dataset_source") or cfg.get("source")
    source = str(info.get("source", ""))
    if trained_on:
        return source == str(trained_on) or (bool(info.get("synthetic")) and str(trained_on) in source)
    return bool(info.get("synthetic")) and "demo" in source.lower()


def choices(store: Store, dataset: str, info: dict, model_dir: Path) -> list[ModelChoice]:
    """Models that can answer for this dataset, best first (see module docstring)."""
    out: list[ModelChoice] = []
    if shipped_applies(info, model_dir):
        out.append(ModelChoice("shipped", "Shipped demo model (language model)", "saved", path=str(model_dir)))
    runs = store.query(
        "SELECT run_id, model, created_at, path FROM model_runs WHERE dataset = ? ORDER BY created_at DESC",
        [dataset],
    )
    for r in runs.itertuples(index=False):
        if isinstance(r.path, str) and (Path(r.path) / "config.json").exists():
            when = pd.Timestamp(r.created_at).strftime("%Y-%m-%d %H:%M") if pd.notna(r.created_at) else ""
            out.append(ModelChoice(f"run:{r.run_id}", f"{r.model} trained {when} ({r.run_id})", "saved", path=r.path))
    for name, label in FIT_LABELS.items():
        out.append(ModelChoice(f"fit:{name}", label, "fit", name=name))
    return out


def fit_spec(panel: Panel) -> WindowSpec:
    """The window spec for on-the-spot baselines: the slider's horizons that fit the data's grid."""
    step = panel.interval / pd.Timedelta(minutes=1)
    hs = tuple(h for h in FIT_HORIZONS_MIN if h % step == 0 and h >= step) or (int(step),)
    return WindowSpec(horizons_min=hs)


def fit_rows(panel: Panel, spec: WindowSpec) -> tuple[np.ndarray, np.ndarray, dict]:
    """Training and validation issue rows: the standard protocol's, else the first 80% of the data.

    Returns the rows and a note of the days learnt from, for the sidebar.
    """
    from trafficcore.evaluation.protocols import standard_split

    try:
        split = standard_split(panel, spec)
        train, val = split.train, split.val
    except Exception:  # noqa: BLE001 - any dataset the protocol cannot split falls back to 80/20
        hmax = int(spec.horizon_steps(panel.interval).max())
        usable = np.arange(spec.history_steps, max(spec.history_steps, len(panel.times) - hmax + 1))
        if usable.size < 2:
            raise ValueError(f"dataset {panel.dataset!r} is too short to fit a model on") from None
        cut = int(usable.size * 0.8)
        n_val = max(1, int(usable.size * 0.1))
        train, val = usable[: cut - n_val], usable[cut - n_val : cut]
    rows = np.concatenate([train, val])
    last = panel.times[int(rows.max())] + spec.horizon_steps(panel.interval).max() * panel.interval
    note = {"first": panel.times[int(rows.min())], "last": last}
    return train, val, note


def fit_baseline(name: str, panel: Panel) -> tuple[object, dict]:
    """A registry baseline fitted on this panel (see `fit_rows`); returns the model and the fit note."""
    from trafficcore.models import registry

    spec = fit_spec(panel)
    model = registry.create(name, spec=spec, **FIT_KWARGS.get(name, {}))
    train, val, note = fit_rows(panel, spec)
    model.fit(panel, train, val if name != "gbt" else val[::4])
    return model, note


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

