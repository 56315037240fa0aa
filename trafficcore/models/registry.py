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
    "stack": "trafficcore.models.stack:StackForecaster",
}

#: What users read for each model: the dashboard, the API and the CLI name models with these.
DISPLAY_NAMES: dict[str, str] = {
    "persistence": "Persistence",
    "seasonal_naive": "Seasonal naive",
    "historical_average": "Historical average",
    "gbt": "Gradient boosting",
    "lm": "Language model",
}


def model_class(name: str):
    """The class registered under `name`."""
    try:
        target = MODEL_CLASSES[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; choose from {sorted(MODEL_CLASSES)}") from None
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)


def display_name(name: str) -> str:
    """The human name of a registry model (the name itself when it has none)."""
    return DISPLAY_NAMES.get(name, name)


def model_display_name(model: object) -> str:
    """The human name of a model object: its own `display_name` (a stack names its members), else its class's."""
    own = getattr(model, "display_name", None)
    if isinstance(own, str) and own:
        return own
    return display_name(str(getattr(model, "model_class", None) or getattr(model, "name", type(model).__name__)))


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
