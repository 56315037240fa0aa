"""Model classes by name, and loading any saved model from its folder.

A saved model is a folder with `config.json` (holding at least `model_class`, a key of
MODEL_CLASSES) and tensors in `*.safetensors`; nothing is ever unpickled. Classes are imported
lazily so that listing models does not load torch.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

MODEL_CLASSES: dict[str, str] = {
    "persistence": "trafficcore.models.baselines:Persistence",
    "seasonal_naive": "trafficcore.models.baselines:SeasonalNaive",
    "historical_average": "trafficcore.models.baselines:HistoricalAverage",
    "gbt": "trafficcore.models.baselines:GradientBoosting",
    "lm": "trafficcore.models.lm:LMForecaster",
}


def model_class(name: str):
    """The class registered under `name`."""
    try:
        target = MODEL_CLASSES[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; choose from {sorted(MODEL_CLASSES)}") from None
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)


def create(name: str, **kwargs):
    """A new, unfitted model (tsl-style: class by name + keyword arguments)."""
    return model_class(name)(**kwargs)


def load_model(directory: str | Path):
    """Load a saved model folder (config.json + safetensors) without unpickling anything."""
    directory = Path(directory)
    cfg_path = directory / "config.json"
    if not cfg_path.exists():
        raise FileNotFoundError(f"{directory} is not a saved model: config.json is missing")
    cfg = json.loads(cfg_path.read_text())
    return model_class(cfg["model_class"]).load(directory)
