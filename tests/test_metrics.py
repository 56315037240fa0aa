"""Metrics against hand computations, NaN masking and interval coverage."""

from __future__ import annotations

import math

import numpy as np
import pytest

from trafficcore.evaluation import metrics as M

Y = np.array([10.0, 20.0, np.nan, 40.0])
P = np.array([12.0, 17.0, 99.0, 40.0])  # errors 2, -3, (masked), 0


def test_point_metrics_by_hand():
    assert M.mae(Y, P) == pytest.approx((2 + 3 + 0) / 3)
    assert M.rmse(Y, P) == pytest.approx(math.sqrt((4 + 9 + 0) / 3))
    assert M.wape(Y, P) == pytest.approx(5 / 70)
    assert M.count(Y) == 3


def test_nan_target_is_masked_but_nan_prediction_is_an_error():
    # the masked position may hold anything, even NaN, in the prediction
    assert M.mae(Y, np.array([12.0, 17.0, np.nan, 40.0])) == pytest.approx(5 / 3)
    with pytest.raises(ValueError, match="NaN"):
        M.mae(Y, np.array([np.nan, 17.0, 1.0, 40.0]))
    with pytest.raises(ValueError, match="shape"):
        M.mae(Y, P[:3])


def test_all_missing_gives_nan_not_zero():
    y = np.full(3, np.nan)
    assert math.isnan(M.mae(y, np.zeros(3)))
    assert math.isnan(M.wape(np.zeros(3), np.ones(3)))  # nothing to weigh by


def test_coverage_counts_inclusive_bounds_and_masks_nan():
    y = np.array([1.0, 5.0, 9.0, 10.0, np.nan])
    lo = np.array([0.0, 5.0, 10.0, 0.0, 0.0])
    hi = np.array([2.0, 6.0, 12.0, 10.0, 1.0])
    # inside: 1 in [0,2], 5 in [5,6] (edge), 9 not in [10,12], 10 in [0,10] (edge) -> 3 of 4
    assert M.coverage(y, lo, hi) == pytest.approx(0.75)


def test_pinball_by_hand():
    y = np.array([10.0, 10.0])
    q = np.array([8.0, 13.0])  # e = +2 (under-forecast), -3 (over-forecast)
    assert M.pinball(y, q, 0.9) == pytest.approx((0.9 * 2 + 0.1 * 3) / 2)
    assert M.pinball(y, q, 0.1) == pytest.approx((0.1 * 2 + 0.9 * 3) / 2)
    assert M.pinball(y, q, 0.5) == pytest.approx(M.mae(y, q) / 2)
    with pytest.raises(ValueError):
        M.pinball(y, q, 1.0)


def test_quantile_metrics_uses_the_median_and_the_band():
    y = np.array([[10.0, 20.0], [30.0, np.nan]])
    q = np.zeros((2, 2, 3))
    q[..., 0], q[..., 1], q[..., 2] = y - 1, y + 2, y + 3
    q = np.nan_to_num(q, nan=0.0)
    out = M.quantile_metrics(y, q)
    assert out["mae"] == pytest.approx(2.0)
    assert out["coverage_p10_p90"] == pytest.approx(1.0)
    assert out["n"] == 3


def test_tgcn_metrics_by_hand():
    a = np.array([[1.0, 2.0], [3.0, 4.0]])
    b = np.array([[1.0, 3.0], [2.0, 4.0]])  # errors 0, -1, 1, 0
    out = M.tgcn_metrics(a, b)
    assert out["rmse"] == pytest.approx(math.sqrt(0.5))
    assert out["mae"] == pytest.approx(0.5)
    assert out["accuracy"] == pytest.approx(1 - math.sqrt(2) / math.sqrt(30))
    assert out["r2"] == pytest.approx(1 - 2 / 5)  # SS_tot = 2.25+0.25+0.25+2.25
    assert out["explained_variance"] == pytest.approx(1 - 0.5 / 1.25)


def test_tgcn_metrics_mask_missing_truth():
    a = np.array([[1.0, np.nan], [3.0, 4.0]])
    b = np.array([[1.0, 7.0], [2.0, 4.0]])
    full = M.tgcn_metrics(np.array([1.0, 3.0, 4.0]), np.array([1.0, 2.0, 4.0]))
    assert M.tgcn_metrics(a, b) == pytest.approx(full)


def test_perfect_forecast():
    y = np.array([3.0, 5.0, 8.0])
    out = M.tgcn_metrics(y, y)
    assert out == pytest.approx({"rmse": 0.0, "mae": 0.0, "accuracy": 1.0, "r2": 1.0, "explained_variance": 1.0})
