"""The Forecaster protocol: one call, one frame, for every model (baseline or language model).

`predict(panel, issued_at, detector_ids, horizons_min)` returns the Forecast frame
(detector_id, issued_at, target_ts, horizon_min, p10, p50, p90) where `target_ts` is the start
of the interval that ends `horizon_min` after `issued_at` (see trafficcore.data.windows).
Training data reach a model only as a Panel plus the rows it may learn from; evaluation code
never hands a model anything at or after an issue time except through `predict`'s inputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import pandas as pd

from trafficcore.data.panel import Panel
from trafficcore.data.schema import FORECAST_COLUMNS
from trafficcore.data.windows import Samples, WindowSpec
from trafficcore.notes import NoteLanguage

QUANTILES = (0.1, 0.5, 0.9)


@runtime_checkable
class Forecaster(Protocol):
    """What every model offers. `name` identifies it in reports and the registry."""

    name: str
    spec: WindowSpec

    def fit(self, panel: Panel, train_rows: np.ndarray, val_rows: np.ndarray) -> Forecaster: ...

    def predict_samples(self, panel: Panel, samples: Samples) -> np.ndarray:
        """(N, S, 3) quantiles P10/P50/P90 per sample and horizon, in the data's units."""
        ...

    def save(self, directory: Path) -> None: ...


# ------------------------------------------------------------------------------ optional capabilities
@runtime_checkable
class ReadsText(Protocol):
    """A model whose forecast can depend on words: explanations credit its phrases, the dashboard offers a
    scenario note. `reads_text` is False for a variant without text, or when training left the text path off."""

    reads_text: bool

    def text_parts(self, panel: Panel, samples: Samples, note: str | None = None) -> list[list[str]]: ...

    def predict_with_texts(self, panel: Panel, samples: Samples, texts: list[str]) -> np.ndarray: ...


@runtime_checkable
class HasAblations(Protocol):
    """A model whose benchmark can also fit and score variants that each remove one part."""

    def ablation_variants(self) -> dict[str, Forecaster]: ...


@runtime_checkable
class SupportsColdStart(Protocol):
    """A model that can be told which detectors to treat as never seen (cold-start protocol)."""

    def configure_cold_start(self, held_out_detector_ids) -> None: ...


@runtime_checkable
class TreeEnsemble(Protocol):
    """A tree model explained exactly by TreeSHAP over its feature matrix."""

    boosters: list

    def features(self, panel: Panel, samples: Samples) -> tuple[list[np.ndarray], list[str]]: ...


def reads_text(model) -> bool:
    """Whether this model's forecasts change with the words of their context."""
    return isinstance(model, ReadsText) and bool(model.reads_text)


def note_language(model) -> NoteLanguage:
    """How `model` reads a scenario note (`trafficcore.notes.NoteLanguage`): its own answer where it gives one
    (`LMForecaster.note_language`), else the training texts' plain words and the default event window."""
    own = getattr(model, "note_language", None)
    return own() if callable(own) else NoteLanguage.for_spec(model.spec)


def forecast_frame(panel: Panel, samples: Samples, quantiles: np.ndarray) -> pd.DataFrame:
    """Turn (N, S, 3) quantiles into the tidy Forecast frame; sorts P10 <= P50 <= P90."""
    q = np.sort(np.asarray(quantiles, dtype=float), axis=-1)
    n, s, _ = q.shape
    hs = np.array(samples.spec.horizons_min)
    issued = panel.time_at(np.repeat(samples.issue_idx, s))
    horizon = np.tile(hs, n)
    target = issued + pd.to_timedelta(horizon, unit="min") - panel.interval
    return pd.DataFrame(
        {
            "detector_id": panel.detectors["detector_id"].to_numpy()[np.repeat(samples.detector_idx, s)],
            "issued_at": issued,
            "target_ts": target,
            "horizon_min": horizon.astype(int),
            "p10": q[..., 0].ravel(),
            "p50": q[..., 1].ravel(),
            "p90": q[..., 2].ravel(),
        },
        columns=FORECAST_COLUMNS,
    )


def predict(model: Forecaster, panel: Panel, issued_at, detector_ids=None) -> pd.DataFrame:
    """Forecast frame for one issue time (on the panel's grid, at most one interval past its end)."""
    from trafficcore.data.windows import build_samples

    row = panel.index_of(issued_at)
    if row > len(panel.times):
        raise ValueError(f"issue time {issued_at} is beyond the data ({panel.times[-1]} is the newest reading)")
    dets = None if detector_ids is None else np.array([panel.column(d) for d in detector_ids])
    samples = build_samples(panel, np.array([row]), dets, model.spec)
    return forecast_frame(panel, samples, model.predict_samples(panel, samples))
