"""Forecasters: the protocol, baselines, the language-model forecaster, and the registry."""

from trafficcore.models.base import QUANTILES, Forecaster, forecast_frame, predict
from trafficcore.models.registry import MODEL_CLASSES, create, load_model

__all__ = ["MODEL_CLASSES", "QUANTILES", "Forecaster", "create", "forecast_frame", "load_model", "predict"]
