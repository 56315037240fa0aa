"""Forecast error measures, all NaN-aware: a target that is NaN (a missing reading) is left out.

Two families:
- the product's own (MAE, RMSE, WAPE, P10-P90 coverage, pinball loss), reported per horizon;
- the T-GCN paper's (RMSE, MAE, accuracy = 1 - ||Y - Y^||_F / ||Y||_F, R^2, explained
  variance), computed exactly as the T-GCN reference code does (`evaluation(a, b)` over the
  pooled, de-normalised test matrix) so that our numbers sit beside its published tables.

Only the *truth* may be missing. A NaN prediction where the truth is known is a model bug, and
hiding it would flatter the model, so it raises instead.
"""

from __future__ import annotations

import numpy as np


def _pair(y, yhat) -> tuple[np.ndarray, np.ndarray]:
    """Flattened truth and prediction where the truth is known."""
    y = np.asarray(y, dtype=np.float64)
    yhat = np.asarray(yhat, dtype=np.float64)
    if y.shape != yhat.shape:
        raise ValueError(f"truth has shape {y.shape} but prediction has shape {yhat.shape}")
    keep = np.isfinite(y)
    y, yhat = y[keep], yhat[keep]
    if not np.isfinite(yhat).all():
        raise ValueError(f"{int((~np.isfinite(yhat)).sum())} predictions are NaN/inf where the truth is known")
    return y, yhat


def count(y) -> int:
    """How many targets are known (the sample size behind every other number)."""
    return int(np.isfinite(np.asarray(y, dtype=np.float64)).sum())


def mae(y, yhat) -> float:
    """Mean absolute error over known targets (NaN when none are known)."""
    y, yhat = _pair(y, yhat)
    return float(np.mean(np.abs(y - yhat))) if y.size else float("nan")


def rmse(y, yhat) -> float:
    """Root mean squared error over known targets."""
    y, yhat = _pair(y, yhat)
    return float(np.sqrt(np.mean((y - yhat) ** 2))) if y.size else float("nan")


def wape(y, yhat) -> float:
    """Weighted absolute percentage error: sum|y - y^| / sum|y| (a ratio, not x100).

    Unlike MAPE it stays finite on the zero counts of the small hours.
    """
    y, yhat = _pair(y, yhat)
    denom = np.sum(np.abs(y))
    return float(np.sum(np.abs(y - yhat)) / denom) if denom > 0 else float("nan")


def coverage(y, lower, upper) -> float:
    """Share of known targets inside [lower, upper] (0.8 is the goal for P10-P90)."""
    y = np.asarray(y, dtype=np.float64)
    lo, hi = np.asarray(lower, dtype=np.float64), np.asarray(upper, dtype=np.float64)
    if not (y.shape == lo.shape == hi.shape):
        raise ValueError(f"shapes differ: truth {y.shape}, lower {lo.shape}, upper {hi.shape}")
    keep = np.isfinite(y)
    y, lo, hi = y[keep], lo[keep], hi[keep]
    if not (np.isfinite(lo).all() and np.isfinite(hi).all()):
        raise ValueError("interval bounds are NaN/inf where the truth is known")
    return float(np.mean((y >= lo) & (y <= hi))) if y.size else float("nan")


def pinball(y, q, tau: float) -> float:
    """Mean pinball (quantile) loss of quantile forecast `q` at level `tau`."""
    if not 0.0 < tau < 1.0:
        raise ValueError(f"tau must lie in (0, 1), got {tau}")
    y, q = _pair(y, q)
    if not y.size:
        return float("nan")
    e = y - q
    return float(np.mean(np.maximum(tau * e, (tau - 1.0) * e)))


def quantile_metrics(y, quantiles, levels=(0.1, 0.5, 0.9)) -> dict[str, float]:
    """MAE/RMSE/WAPE of the median, P10-P90 coverage and mean pinball loss, for one horizon.

    `quantiles` has a last axis of 3 (P10, P50, P90); `y` has the shape without it.
    """
    q = np.asarray(quantiles, dtype=np.float64)
    if q.shape[-1] != len(levels):
        raise ValueError(f"expected {len(levels)} quantiles on the last axis, got shape {q.shape}")
    p50 = q[..., 1]
    return {
        "mae": mae(y, p50),
        "rmse": rmse(y, p50),
        "wape": wape(y, p50),
        "coverage_p10_p90": coverage(y, q[..., 0], q[..., 2]),
        "pinball": float(np.mean([pinball(y, q[..., i], t) for i, t in enumerate(levels)])),
        "n": count(y),
    }


# ---------------------------------------------------------------------------- T-GCN family
def tgcn_accuracy(y, yhat) -> float:
    """1 - ||Y - Y^||_F / ||Y||_F over known targets (the T-GCN paper's "accuracy")."""
    y, yhat = _pair(y, yhat)
    norm = np.linalg.norm(y)
    return float(1.0 - np.linalg.norm(y - yhat) / norm) if norm > 0 else float("nan")


def r2(y, yhat) -> float:
    """Coefficient of determination, 1 - SS_res / SS_tot, pooled over all known targets."""
    y, yhat = _pair(y, yhat)
    ss_tot = np.sum((y - y.mean()) ** 2) if y.size else 0.0
    return float(1.0 - np.sum((y - yhat) ** 2) / ss_tot) if ss_tot > 0 else float("nan")


def explained_variance(y, yhat) -> float:
    """1 - Var(y - y^) / Var(y), pooled (the T-GCN code's `var`)."""
    y, yhat = _pair(y, yhat)
    v = np.var(y) if y.size else 0.0
    return float(1.0 - np.var(y - yhat) / v) if v > 0 else float("nan")


def tgcn_metrics(y, yhat) -> dict[str, float]:
    """The five numbers of the T-GCN tables, errors pooled over every node and predicted step."""
    return {
        "rmse": rmse(y, yhat),
        "mae": mae(y, yhat),
        "accuracy": tgcn_accuracy(y, yhat),
        "r2": r2(y, yhat),
        "explained_variance": explained_variance(y, yhat),
    }


# ---------------------------------------------------------------------------- additive form (rolling windows)
#: The sums MAE, WAPE and P10-P90 coverage are ratios of; stored per bucket, they add up over any window.
ERROR_SUMS = ("n", "abs_err", "abs_obs", "inside")


def error_terms(y, lower, median, upper) -> dict[str, np.ndarray]:
    """Per target, the terms that `mae`, `wape` and `coverage` average: 1 (counted), |y - P50|, |y| and
    whether y lies within [P10, P90]; all zero where the truth is unknown.

    Why a second form: served forecasts are scored as readings arrive, a few at a time, and shown over
    rolling windows. Storing these sums per bucket lets a window's metrics be a sum of rows instead of
    a pass over every pair; `from_sums` turns them into exactly the numbers the functions above give.
    """
    y = np.asarray(y, dtype=np.float64)
    lo, mid, hi = (np.asarray(a, dtype=np.float64) for a in (lower, median, upper))
    if not (y.shape == lo.shape == mid.shape == hi.shape):
        raise ValueError(f"shapes differ: truth {y.shape}, lower {lo.shape}, median {mid.shape}, upper {hi.shape}")
    known = np.isfinite(y)
    bad = known & ~(np.isfinite(lo) & np.isfinite(mid) & np.isfinite(hi))
    if bad.any():
        raise ValueError(f"{int(bad.sum())} forecasts are NaN/inf where the truth is known")
    yk = np.where(known, y, 0.0)
    return {
        "n": known.astype(np.int64),
        "abs_err": np.where(known, np.abs(yk - np.where(known, mid, 0.0)), 0.0),
        "abs_obs": np.abs(yk),
        "inside": (known & (y >= lo) & (y <= hi)).astype(np.int64),
    }


def from_sums(n, abs_err, abs_obs, inside) -> dict[str, np.ndarray]:
    """MAE, WAPE and P10-P90 coverage from summed `error_terms` (scalars or arrays); NaN where nothing was
    counted (and WAPE NaN where the readings sum to zero, as `wape`)."""
    n, abs_err, abs_obs, inside = (np.asarray(a, dtype=np.float64) for a in (n, abs_err, abs_obs, inside))
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "mae": np.where(n > 0, abs_err / np.maximum(n, 1), np.nan),
            "wape": np.where(abs_obs > 0, abs_err / np.where(abs_obs > 0, abs_obs, 1.0), np.nan),
            "coverage_p10_p90": np.where(n > 0, inside / np.maximum(n, 1), np.nan),
        }
