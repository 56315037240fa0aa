"""Metrics, evaluation protocols (standard, tgcn, cold-start) and the benchmark runner.

Import the runner from `trafficcore.evaluation.benchmark` and the command from
`trafficcore.evaluation.cli`; this package root stays light (numpy only) so that metrics can be
used anywhere without loading models or the store.
"""

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
