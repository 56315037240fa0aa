"""Models that answer without a training run of their own: the shipped demo model and on-the-spot baselines.

Used by `trafficcore.live.serving` (which model serves a dataset) and by the dashboard's picker, so it
lives below the UI: `trafficcore.live` must not import `trafficcore.ui`.

The on-the-spot baseline is fitted on the training and validation days of the standard protocol, so
forecasts issued in the test days are out of sample; the returned note says which days it learnt from.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from trafficcore.data.panel import Panel
from trafficcore.data.windows import WindowSpec

#: Horizons asked of baselines fitted on the spot (the map's slider runs 15-120 minutes).
FIT_HORIZONS_MIN = tuple(range(15, 121, 15))
#: On-the-spot gradient boosting is a lighter fit than the benchmark's (fewer samples and rounds, at most 100,000
#: validation samples: the demo city has 26,000, a region of 8,000 detectors a million), so a user who picks it
#: waits about two minutes on a 2-core CPU rather than ten.
FIT_KWARGS = {"gbt": {"max_train_samples": 30_000, "max_rounds": 300, "early_stopping": 20, "num_leaves": 31,
                      "max_val_samples": 100_000}}


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
