"""The alerts that watch the service itself: accuracy decay, band coverage and detector drift.

Called by `trafficcore.live.alerts.current_alerts` (kinds `accuracy_decay`, `coverage` and
`detector_drift`; see its module docstring for what each means). Thresholds are
`trafficcore.config.MONITOR_THRESHOLDS`, passed in as `th`.

Why detector drift is judged against the detector's *own* history: detectors differ tenfold in
volume and in how much they vary day to day, so one global tolerance either misses a halved
count on a steady arterial or cries wolf on a noisy side street. The statistic is the ratio of the
last window's readings to the detector's typical day (same day type and time of day, the
`profile_days` before today); the tolerated range is the span of that same ratio over those days,
widened by `drift_margin`. The ranges are computed once per day and detector set (cached).
"""

from __future__ import annotations

import threading
import warnings

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from trafficcore.data.panel import Panel
from trafficcore.data.profile import daytype_slot, slot_means, slots_per_day
from trafficcore.data.store import Store
from trafficcore.live.alerts import alert_row, trailing_run

#: Fewest valid history windows a detector needs before its range means anything (two days' worth of 2 h windows).
MIN_HISTORY_WINDOWS = 24
#: Added to the window's variation ratio before taking logs (a perfectly flat window is log(EPS), not -inf).
EPS = 0.001


# ------------------------------------------------------------------------------------------ accuracy
def accuracy_alerts(store: Store, panel: Panel, end: int, th: dict) -> pd.DataFrame:
    """`accuracy_decay` and `coverage` alerts of the serving run as of panel row `end` (exclusive)."""
    from trafficcore.live.monitor import reference, rolling, serving_run

    run = serving_run(store, panel.dataset)
    if run is None or end <= 0:
        return pd.DataFrame()
    span = 2 * max(int(th["decay_hours"]), int(th["coverage_hours"]), int(th["rolling_hours"]))
    roll = rolling(store, panel.dataset, run, int(th["rolling_hours"]), span, end=panel.times[end - 1])
    if roll.empty:
        return pd.DataFrame()
    usable = (roll["hours_scored"] >= int(th["min_hours"])).to_numpy()
    hours = roll["hour_ts"].to_numpy()
    name = run.removeprefix("live:")
    w = int(th["rolling_hours"])
    out = []
    ref = reference(store, panel.dataset, run)["val_mae"]
    if ref is not None and ref > 0:
        limit = ref * (1 + float(th["decay_margin"]))
        mae = roll["mae"].to_numpy(float)
        n = trailing_run(usable & (mae > limit))
        if n >= int(th["decay_hours"]):
            over = mae[-1] / ref - 1
            sev = "critical" if over > 2 * float(th["decay_margin"]) else "warning"
            out.append(alert_row(
                "accuracy_decay", sev, None, None, hours[-n], hours[-1] + pd.Timedelta(hours=1) - panel.interval,
                f"model {name}: MAE over the last {w} h is {mae[-1]:.2f}, {over:+.0%} against the validation MAE "
                f"{ref:.2f} it recorded (alert above {float(th['decay_margin']):+.0%}), for {n} hours in a row; "
                "consider an update or a rollback"))
    cov = roll["coverage_p10_p90"].to_numpy(float)
    lo, hi = float(th["coverage_low"]), float(th["coverage_high"])
    n = trailing_run(usable & ((cov < lo) | (cov > hi)))
    if n >= int(th["coverage_hours"]):
        side = "below" if cov[-1] < lo else "above"
        what = "too narrow" if side == "below" else "too wide"
        out.append(alert_row(
            "coverage", "warning", None, None, hours[-n], hours[-1] + pd.Timedelta(hours=1) - panel.interval,
            f"model {name}: {cov[-1]:.0%} of readings fell inside the P10-P90 band over the last {w} h, {side} "
            f"the {lo:.0%}-{hi:.0%} range, for {n} hours in a row: the band is {what}"))
    return pd.DataFrame(out)


# ------------------------------------------------------------------------------------------ detector drift
def window_rows(panel: Panel, th: dict) -> int:
    """Readings in a drift window (`drift_window_min` minutes, at least 2)."""
    return max(2, int(round(pd.Timedelta(minutes=int(th["drift_window_min"])) / panel.interval)))


def _window_stats(v: np.ndarray, t: np.ndarray, w: int, min_typical: float) -> tuple[np.ndarray, np.ndarray]:
    """Per window of `w` rows ending at each row from w-1 on (shape (H-w+1, D)): the log level ratio, the median
    over the window's readings of log((v + c) / (t + c)), c = `min_typical`, less its median over the detectors
    in the same window; and the log variation log(mean |dv| / mean v + EPS) over steps between consecutive
    readings. NaN where fewer than half the readings (with a typical value; for the variation, half the steps)
    are known or the typical mean is below `min_typical`.

    Why a median over the window: a level shift is sustained; a spike of two readings (an incident,
    which `band_exceedance` reports) moves the median of eight readings little. Why less the median
    over detectors: traffic on every road moves together (a wet evening, a school holiday, a
    Friday); what marks one detector as drifting is moving away from the others. Removing the
    common part narrows each detector's historical range about twofold on SCATS, so a halved count
    stands out of it."""
    ok = np.isfinite(v) & np.isfinite(t)
    vv, tt = np.where(ok, v, 0.0), np.where(ok, t, 0.0)
    dv = np.zeros_like(vv)
    both = ok[1:] & ok[:-1]
    dv[1:] = np.where(both, np.abs(vv[1:] - vv[:-1]), 0.0)

    def win(a: np.ndarray) -> np.ndarray:
        c = np.cumsum(np.vstack([np.zeros((1, a.shape[1])), a]), axis=0)
        return c[w:] - c[:-w]

    pair = np.zeros_like(vv)
    pair[1:] = both
    n, sv, st = win(ok.astype(float)), win(vv), win(tt)
    # a window's first difference reaches the row before it: not counted
    sd, nd = win(dv) - dv[: len(dv) - w + 1], win(pair) - pair[: len(pair) - w + 1]
    c = float(min_typical)
    valid = (n >= w / 2) & (st / np.maximum(n, 1) >= c)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN windows: NaN, as wanted
        ratio = np.where(ok, np.log((vv + c) / (tt + c)), np.nan)
        level = np.where(valid, np.nanmedian(sliding_window_view(ratio, w, axis=0), axis=-1), np.nan)
        # mean step between consecutive readings over the mean reading; a gap breaks the chain of steps
        rough = (np.maximum(sd, 0.0) / np.maximum(nd, 1)) / ((sv + c) / np.maximum(n, 1))
        variation = np.where(valid & (nd >= (w - 1) / 2), np.log(rough + EPS), np.nan)
    with warnings.catch_warnings():  # a window where no detector is valid has no median: stays NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        common = np.nanmedian(level, axis=1, keepdims=True) if level.shape[1] else 0.0
    return level - common, variation


def _trimmed(stat: np.ndarray, k: float) -> np.ndarray:
    """`stat` (windows x detectors) without the windows more than `k` robust standard deviations (1.4826 x the
    median absolute deviation) from the detector's median: a past fault, or the current one persisting.

    Why: the range is a quantile of the detector's own history, and a shift that lasted a day would otherwise
    become part of it and silence the alert the next day. On SCATS, trimming at 3 to 6 deviations left the
    normal week without alerts and the 2-hour detection rate as it was (docs/LIVE.md)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        centre = np.nanmedian(stat, axis=0)
        scale = 1.4826 * np.nanmedian(np.abs(stat - centre), axis=0)
    with np.errstate(invalid="ignore"):
        far = np.abs(stat - centre) > k * np.maximum(scale, 1e-9)
    return np.where(far, np.nan, stat)


_RANGES: dict[tuple, dict] = {}
_LOCK = threading.Lock()
_CACHE_MAX = 16


def _ranges(store: Store, panel: Panel, day_row: int, w: int, th: dict) -> dict | None:
    """Each detector's typical day and the range of its window statistics over the `profile_days` before
    panel row `day_row` (the start of today); cached per (store, dataset, day, history fingerprint)."""
    per_day = slots_per_day(panel)
    hist = np.arange(max(0, day_row - int(th["profile_days"]) * per_day), day_row)
    if len(hist) < 2 * per_day:
        return None
    vals = panel.values[hist]
    q, c = float(th["drift_quantile"]), float(th["drift_min_typical"])
    key = (str(store.path), panel.dataset, panel.times[day_row] if day_row < len(panel.times) else day_row,
           tuple(panel.detectors["detector_id"]), w, q, c, int(th["profile_days"]), float(th["drift_trim"]),
           float(np.nansum(vals)))
    with _LOCK:
        hit = _RANGES.get(key)
    if hit is not None:
        return hit
    table = slot_means(panel, hist)  # (D, 2, slots)
    daytype, slot = daytype_slot(panel, hist)
    typical = table[:, daytype, slot].T  # (H, D)
    level, variation = _window_stats(vals.astype(float), typical, w, c)
    level, variation = _trimmed(level, float(th["drift_trim"])), _trimmed(variation, float(th["drift_trim"]))
    counts = np.isfinite(level).sum(axis=0)
    with warnings.catch_warnings():  # a detector without history has an all-NaN column: no range, no warning
        warnings.simplefilter("ignore", RuntimeWarning)
        lo, hi = np.nanquantile(level, [q, 1 - q], axis=0)
        vlo = np.nanquantile(variation, q, axis=0)
    enough = counts >= MIN_HISTORY_WINDOWS
    out = {"table": table, "lo": np.where(enough, lo, np.nan), "hi": np.where(enough, hi, np.nan),
           "var_lo": np.where(enough, vlo, np.nan)}
    with _LOCK:
        if len(_RANGES) >= _CACHE_MAX:
            _RANGES.pop(next(iter(_RANGES)), None)
        _RANGES[key] = out
    return out


def detector_drift(store: Store, panel: Panel, end: int, th: dict) -> pd.DataFrame:
    """`detector_drift` alerts for the window of readings ending at panel row `end` (exclusive)."""
    w = window_rows(panel, th)
    if end < w:
        return pd.DataFrame()
    first = end - w
    day_row = int((panel.times[first].normalize() - panel.times[0]) // panel.interval)
    day_row = max(day_row, 0)
    r = _ranges(store, panel, day_row, w, th)
    if r is None:
        return pd.DataFrame()
    rows = np.arange(first, end)
    daytype, slot = daytype_slot(panel, rows)
    typical = r["table"][:, daytype, slot].T  # (w, D)
    vals = panel.values[first:end].astype(float)
    level, variation = (a[-1] for a in _window_stats(vals, typical, w, float(th["drift_min_typical"])))
    margin = np.log1p(float(th["drift_margin"]))
    low, high = level < r["lo"] - margin, level > r["hi"] + margin
    flat = variation < r["var_lo"] + np.log(float(th["drift_flat_ratio"]))
    minutes = int(th["drift_window_min"])
    days = int(th["profile_days"])
    out = []
    for j in np.flatnonzero(np.nan_to_num(low | high | flat, nan=False).astype(bool)):
        det = str(panel.detectors["detector_id"].iloc[j])
        site = panel.detectors["site_id"].iloc[j]
        site = None if pd.isna(site) else str(site)
        seen = np.flatnonzero(np.isfinite(vals[:, j]))
        t0, t1 = panel.times[first + seen[0]], panel.times[first + seen[-1]]
        span = f"{np.exp(r['lo'][j]):.0%}-{np.exp(r['hi'][j]):.0%}"
        if low[j] or high[j]:
            msg = (f"{det}: readings of the last {minutes} min at {np.exp(level[j]):.0%} of its typical level for "
                   f"this time of day (relative to the other detectors); over the previous {days} days that ratio "
                   f"ranged {span} (level shift: a lost lane, a moved or double-counting loop, or a real change in "
                   "traffic)")
        else:
            msg = (f"{det}: readings of the last {minutes} min hardly vary ({max(np.exp(variation[j]) - EPS, 0):.1%} "
                   f"from one interval to the next, never below {max(np.exp(r['var_lo'][j]) - EPS, 0):.1%} over the "
                   f"previous {days} days): the detector may be flat-lining")
        out.append(alert_row("detector_drift", "warning", det, site, t0, t1, msg))
    return pd.DataFrame(out)


def clear_cache() -> None:
    """Forget the cached ranges (tests)."""
    with _LOCK:
        _RANGES.clear()
