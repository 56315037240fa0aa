"""Metrics, evaluation protocols (standard, tgcn, cold-start) and the benchmark runner.

Import the runner from `trafficcore.evaluation.benchmark` and the command from
`trafficcore.evaluation.cli`; this package root stays light so that metrics can be used anywhere
without loading models or the store. The metrics are resolved lazily: the command line imports
`trafficcore.evaluation.cli` for every command, which must not load numpy for it (issue 15).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trafficcore._lazy import lazy_exports

if TYPE_CHECKING:
    from trafficcore.evaluation.metrics import (
        coverage,
        explained_variance,
        mae,
        pinball,
        quantile_metrics,
        r2,
        rmse,
        tgcn_accuracy,
        tgcn_metrics,
        wape,
    )

__all__ = [
    "coverage",
    "explained_variance",
    "mae",
    "pinball",
    "quantile_metrics",
    "r2",
    "rmse",
    "tgcn_accuracy",
    "tgcn_metrics",
    "wape",
]

lazy_exports(__name__, {name: "trafficcore.evaluation.metrics" for name in __all__})
