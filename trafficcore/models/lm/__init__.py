"""The language-model forecaster: architecture (`config`), inputs, network, recipes, and the forecaster itself."""

from trafficcore.models.lm.config import LMConfig
from trafficcore.models.lm.forecaster import LMForecaster
from trafficcore.models.lm.recipes import RECIPES, Phase, Recipe

__all__ = ["LMConfig", "LMForecaster", "Phase", "RECIPES", "Recipe"]
