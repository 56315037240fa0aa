"""Paired moving-block bootstrap: is one model's error really below another's on the same test samples?

Forecast errors of neighbouring issue times are strongly correlated (a bad afternoon is bad for every
detector and every issue time in it), so resampling single samples would make intervals far too narrow.
Instead whole blocks of consecutive issue times are resampled, each block carrying every detector's
errors at those times (Künsch's moving-block bootstrap: any run of ``block_len`` consecutive issue times
can be drawn, blocks overlap). The statistic is the pooled mean of the paired differences
``error_a - error_b`` over the resampled samples, so a replicate weighs each issue time by how many
valid samples it has, exactly as the pooled MAE does.

numpy only, so the metrics package can use it without loading models or the store.
"""

from __future__ import annotations

import math

import numpy as np

DEFAULT_BLOCK_HOURS = 4.0
DEFAULT_REPLICATES = 2000
DEFAULT_SEED = 0


def per_issue_sums(diff: np.ndarray, issue_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorted distinct issue rows, and per row the sum and count of the finite differences.

    `diff` is one value per sample (NaN where either model has no error, e.g. a missing target);
    `issue_idx` the sample's issue row. Rows whose samples are all NaN keep a count of 0, so a block
    still spans the same stretch of time.
    """
    diff = np.asarray(diff, dtype=np.float64).ravel()
    issue_idx = np.asarray(issue_idx).ravel()
    if diff.shape != issue_idx.shape:
        raise ValueError(f"diff has {diff.size} values but issue_idx {issue_idx.size}")
    rows, inv = np.unique(issue_idx, return_inverse=True)
    ok = np.isfinite(diff)
    sums = np.bincount(inv[ok], weights=diff[ok], minlength=len(rows))
    counts = np.bincount(inv[ok], minlength=len(rows)).astype(np.float64)
    return rows, sums, counts


def block_starts(n: int, block_len: int, replicates: int, rng: np.random.Generator) -> np.ndarray:
    """(replicates, ceil(n / block_len)) start positions, each uniform over 0..n-block_len."""
    n_blocks = math.ceil(n / block_len)
    return rng.integers(0, n - block_len + 1, size=(replicates, n_blocks))


def replicate_means(sums: np.ndarray, counts: np.ndarray, block_len: int, replicates: int = DEFAULT_REPLICATES,
                    seed: int = DEFAULT_SEED) -> np.ndarray:
    """The pooled mean difference of each bootstrap replicate.

    A replicate concatenates ceil(n / block_len) blocks of `block_len` consecutive issue times and cuts
    the result to n issue times, so every replicate covers as much time as the test period.
    """
    n = len(sums)
    if n == 0:
        raise ValueError("no issue times to resample")
    block_len = int(min(max(1, block_len), n))
    starts = block_starts(n, block_len, replicates, np.random.default_rng(seed))
    picks = (starts[:, :, None] + np.arange(block_len)[None, None, :]).reshape(replicates, -1)[:, :n]
    total, count = sums[picks].sum(axis=1), counts[picks].sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return total / count


def paired_interval(diff: np.ndarray, issue_idx: np.ndarray, block_len: int, *, replicates: int = DEFAULT_REPLICATES,
                    seed: int = DEFAULT_SEED, level: float = 0.95) -> dict:
    """Percentile interval of the pooled mean of `diff` under the moving-block bootstrap over issue times.

    Returns ``{"mean", "lo", "hi", "share_below_zero", "n", "issue_times", "block_len", "replicates",
    "level", "seed"}``: `mean` is the observed pooled difference, `lo`/`hi` the (1-level)/2 and
    (1+level)/2 quantiles of the replicates, `share_below_zero` the share of replicates whose mean is
    below zero (for errors: how often model a came out ahead).
    """
    rows, sums, counts = per_issue_sums(diff, issue_idx)
    n = int(counts.sum())
    if n == 0:
        raise ValueError("no finite paired differences")
    reps = replicate_means(sums, counts, block_len, replicates, seed)
    reps = reps[np.isfinite(reps)]
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(reps, [alpha, 1.0 - alpha])
    return {"mean": float(sums.sum() / n), "lo": float(lo), "hi": float(hi),
            "share_below_zero": float(np.mean(reps < 0)), "n": n, "issue_times": len(rows),
            "block_len": int(min(max(1, block_len), len(rows))), "replicates": int(replicates), "level": level,
            "seed": int(seed)}


def block_len_for(issue_step_s: float, block_hours: float = DEFAULT_BLOCK_HOURS) -> int:
    """How many consecutive issue times make a block of `block_hours` when issue times are `issue_step_s` apart."""
    if issue_step_s <= 0:
        raise ValueError("issue times must be a positive number of seconds apart")
    return max(1, round(block_hours * 3600.0 / issue_step_s))
