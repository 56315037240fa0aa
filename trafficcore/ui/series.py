"""Time series of one site for the detail page: recent history, typical day, forecast against observed."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from trafficcore.data.panel import Panel

WEEK = pd.Timedelta(days=7)


def site_detectors(panel: Panel, site_id: str, measure: str | None = None) -> pd.DataFrame:
    """Detectors of a site (optionally one measure) with a display label per approach."""
    det = panel.detectors[panel.detectors["site_id"] == site_id]
    if measure is not None:
        det = det[det["measure"] == measure]
    det = det.copy()
    det["label"] = [
        f"{a} ({d})" if isinstance(a, str) and a else str(d) for a, d in zip(det["approach"], det["detector_id"],
                                                                             strict=True)
    ]
    return det.reset_index(drop=True)


def site_options(panel: Panel) -> pd.DataFrame:
    """Sites that have detectors, with "id · name" labels, sorted by name, for pickers."""
    have = set(panel.detectors["site_id"])
    s = panel.sites[panel.sites["site_id"].isin(have)].copy()
    s["label"] = [f"{n} · {i}" if isinstance(n, str) and n and n != i else str(i) for i, n in
                  zip(s["site_id"], s["name"], strict=True)]
    return s.sort_values("label").reset_index(drop=True)


def window(panel: Panel, detectors: pd.DataFrame, start, end) -> pd.DataFrame:
    """Long readings (ts, label, value) of the given detectors in [start, end)."""
    wide = panel.frame(list(detectors["detector_id"]), start, end - pd.Timedelta(1, "ns"))
    wide.columns = list(detectors["label"])
    long = wide.rename_axis("ts").reset_index().melt(id_vars="ts", var_name="approach", value_name="value")
    return long


def history(panel: Panel, detectors: pd.DataFrame, issued_at, hours: float = 24) -> pd.DataFrame:
    """The last `hours` of readings before the issue time (what was known when it was issued)."""
    t = pd.Timestamp(issued_at)
    return window(panel, detectors, t - pd.Timedelta(hours=hours), t)


def typical_day(panel: Panel, detectors: pd.DataFrame, day, weeks: int = 4) -> pd.DataFrame:
    """Mean profile by time of day over the same weekday in the `weeks` weeks before `day`.

    Returns ts (placed on `day`), approach, typical, low and high (min and max across those weeks)
    and weeks (how many had a reading), so the page can draw the typical day as a band under
    today's readings. Read straight from the panel's grid (the detail page draws several of these
    per interaction, so this stays a few array operations).
    """
    day = pd.Timestamp(day).normalize()
    steps = int(pd.Timedelta(days=1) / panel.interval)
    cols = np.array([panel.column(d) for d in detectors["detector_id"]], dtype=np.int64)
    first = int((day - panel.times[0]) // panel.interval)
    week = int(WEEK / panel.interval)
    stack = np.full((weeks, steps, len(cols)), np.nan, dtype=np.float64)
    for k in range(1, weeks + 1):
        rows = first - k * week + np.arange(steps)
        ok = (rows >= 0) & (rows < len(panel.times))
        stack[k - 1, ok] = panel.values[rows[ok]][:, cols]
    count = np.sum(~np.isnan(stack), axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a slot never seen: NaN, dropped below
        typical, low, high = np.nanmean(stack, axis=0), np.nanmin(stack, axis=0), np.nanmax(stack, axis=0)
    ts = day + np.arange(steps) * panel.interval
    out = pd.DataFrame({
        "ts": np.repeat(ts, len(cols)),
        "approach": np.tile(np.asarray(detectors["label"], dtype=object), steps),
        "typical": typical.ravel(), "low": low.ravel(), "high": high.ravel(), "weeks": count.ravel(),
    })
    out = out[out["weeks"] > 0]
    return out.sort_values(["ts", "approach"], kind="stable").reset_index(drop=True)


def forecast_table(fcx: pd.DataFrame, detectors: pd.DataFrame) -> pd.DataFrame:
    """The site's forecasts with labels, and for targets already observed: error and whether inside P10-P90."""
    part = fcx[fcx["detector_id"].isin(set(detectors["detector_id"]))].copy()
    labels = detectors.set_index("detector_id")["label"]
    part["approach"] = labels.loc[part["detector_id"]].to_numpy()
    part["error"] = part["p50"] - part["observed"]
    part["inside_band"] = np.where(
        part["observed"].notna(), (part["observed"] >= part["p10"]) & (part["observed"] <= part["p90"]), np.nan
    )
    return part.sort_values(["approach", "target_ts"]).reset_index(drop=True)


def accuracy(table: pd.DataFrame) -> dict | None:
    """Headline accuracy of the observed part of a forecast table (None when nothing is observed yet)."""
    seen = table[table["observed"].notna()]
    if seen.empty:
        return None
    return {
        "targets": int(len(seen)),
        "mae": float(np.mean(np.abs(seen["error"]))),
        "coverage_pct": float(100.0 * seen["inside_band"].astype(float).mean()),
        "bias": float(np.mean(seen["error"])),
    }
