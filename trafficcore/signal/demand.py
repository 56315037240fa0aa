"""Demand for the timing lab: flow rates (veh/h) per approach and interval, with the P10/P50/P90 band.

The demand frame every function here returns has the columns of `DEMAND_COLUMNS`:

- ``approach``       the plan's approach id (``"N"``),
- ``interval_start`` naive local timestamp of the interval start,
- ``interval_min``   interval length in minutes (15 unless told otherwise),
- ``p10``, ``p50``, ``p90`` flow rates in **vehicles per hour** over the interval, already divided by
  the peak-hour factor when one is given.

Why flow rates: HCM's capacity, v/c and delay formulas are written in veh/h, and a rate does not
change meaning when the interval length changes. Why a PHF at all: HCM converts an *hourly*
volume to the flow rate of its peak 15 minutes by dividing by the PHF. A 15-minute forecast is
already a 15-minute rate, so for 15-minute intervals leave ``phf`` unset (= 1); use it with hourly
intervals, or as a deliberate safety margin.

Two ways in: `demand_from_forecast` (the Forecast frame of the forecasting engine plus a
detector -> approach map) and `read_demand_csv` (a hand-written CSV).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from trafficcore.data.schema import FORECAST_COLUMNS
from trafficcore.data.validate import check_columns, read_csv, to_numbers, to_timestamps
from trafficcore.errors import DataError, shown
from trafficcore.signal.plan import MAX_LANES, MAX_SAT_FLOW, Plan

DEMAND_COLUMNS = ["approach", "interval_start", "interval_min", "p10", "p50", "p90"]
QUANTILES = ("p10", "p50", "p90")
UNITS = ("veh", "veh/h")
#: Demand above this many times what an approach's lanes can discharge (base saturation flow x lanes)
#: is not traffic but a unit slip or a typo: refused rather than analysed into nonsense.
MAX_DEMAND_OVER_SATURATION = 10.0
#: The same bound before the plan is known: 10 x the highest saturation flow x the most lanes (veh/h).
MAX_FLOW_VEH_H = MAX_DEMAND_OVER_SATURATION * MAX_SAT_FLOW * MAX_LANES


def _check_phf(phf: float | None, source: str) -> float:
    if phf is None:
        return 1.0
    if not np.isfinite(phf) or not 0.25 <= phf <= 1.0:
        raise DataError(source, f"peak-hour factor must be between 0.25 and 1, got {phf!r}", column="phf")
    return float(phf)


def demand_from_forecast(
    forecast_df: pd.DataFrame,
    detector_approach: Mapping[str, str],
    interval_min: int = 15,
    phf: float | None = None,
    step_min: float | None = None,
) -> pd.DataFrame:
    """Turn a Forecast frame into approach flow rates per `interval_min` interval.

    `forecast_df` has the Forecast columns (detector_id, issued_at, target_ts, horizon_min, p10,
    p50, p90) with values in vehicles per forecast step (`step_min` minutes; inferred from the
    spacing of target_ts, else taken equal to `interval_min`). Where several forecasts target the
    same time, the most recently issued one is used. Detectors not in `detector_approach` are
    ignored; the detectors of one approach are added up (their quantiles too, which assumes the
    detectors move together: it widens rather than narrows the band). Negative quantiles, which
    some models produce at night, are clipped to 0.

    Each approach's rate in an interval is the mean of its forecast steps in that interval times
    60/step_min, so an interval only partly covered by the horizon is still a rate, not a short sum.
    Every approach must have forecasts for every interval that any approach has.
    """
    src = "<forecast>"
    phf_v = _check_phf(phf, src)
    if interval_min <= 0 or 60 % interval_min and interval_min % 60:
        raise DataError(src, f"interval_min must divide an hour or be whole hours, got {interval_min!r}",
                        column="interval_min")
    check_columns(forecast_df, FORECAST_COLUMNS, src, header_row=None)
    if not detector_approach:
        raise DataError(src, "detector_approach is empty: map each detector_id to a plan approach")
    mapping = {str(k): str(v) for k, v in detector_approach.items()}
    df = forecast_df[forecast_df["detector_id"].astype(str).isin(mapping)].copy()
    if df.empty:
        raise DataError(src, f"no forecasts for the mapped detectors {sorted(mapping)[:8]}", column="detector_id")
    df["detector_id"] = df["detector_id"].astype(str)
    for q in QUANTILES:
        df[q] = pd.to_numeric(df[q], errors="coerce").astype(float)
        if not np.isfinite(df[q].to_numpy()).all():
            raise DataError(src, "forecast has missing or non-finite values", column=q)
        df[q] = df[q].clip(lower=0.0)
    if ((df["p10"] > df["p50"] + 1e-9) | (df["p50"] > df["p90"] + 1e-9)).any():
        bad = df[(df["p10"] > df["p50"] + 1e-9) | (df["p50"] > df["p90"] + 1e-9)].iloc[0]
        raise DataError(src, f"quantiles cross for detector {bad['detector_id']} at {bad['target_ts']}: "
                             f"p10={bad['p10']:g}, p50={bad['p50']:g}, p90={bad['p90']:g}", column="p50")
    df["target_ts"] = pd.to_datetime(df["target_ts"])
    df["issued_at"] = pd.to_datetime(df["issued_at"])
    df = df.sort_values("issued_at").drop_duplicates(["detector_id", "target_ts"], keep="last")
    if step_min is None:
        diffs = []
        for _, g in df.groupby("detector_id"):
            d = np.diff(np.sort(g["target_ts"].unique())).astype("timedelta64[s]").astype(float) / 60.0
            diffs.extend(d[d > 0])
        step_min = float(np.min(diffs)) if diffs else float(interval_min)
    if step_min <= 0 or step_min > interval_min:
        raise DataError(src, f"forecast step {step_min:g} min is longer than the {interval_min} min interval",
                        column="target_ts")
    df["approach"] = df["detector_id"].map(mapping)
    df["interval_start"] = df["target_ts"].dt.floor(f"{interval_min}min")
    per_det = df.groupby(["approach", "detector_id", "interval_start"])[list(QUANTILES)].mean() * (60.0 / step_min)
    counts = per_det.groupby(["approach", "detector_id"]).size()
    n_intervals = per_det.reset_index()["interval_start"].nunique()
    short = counts[counts < n_intervals]
    if len(short):
        (app, det), n = short.index[0], int(short.iloc[0])
        raise DataError(src, f"detector {det} (approach {app}) has forecasts for {n} of {n_intervals} intervals; "
                             "every detector needs the same horizon", column="target_ts")
    out = per_det.groupby(["approach", "interval_start"]).sum().reset_index()
    for q in QUANTILES:
        out[q] = out[q] / phf_v
    out["interval_min"] = int(interval_min)
    return out[DEMAND_COLUMNS].sort_values(["interval_start", "approach"]).reset_index(drop=True)


def read_demand_csv(
    path: str | Path, interval_min: int = 15, unit: str = "veh", phf: float | None = None
) -> pd.DataFrame:
    """Read a demand CSV: approach, interval_start, p50 (+ optional p10, p90, unit).

    Values are vehicles per interval (``unit`` = ``veh``, the default, like the Forecast frame) or
    flow rates (``veh/h``). A ``unit`` column, when present, sets the unit row by row; otherwise
    the `unit` argument applies to every row. Missing p10/p90 default to p50.
    """
    src = str(path)
    phf_v = _check_phf(phf, src)
    if not isinstance(interval_min, int) or interval_min <= 0:
        raise DataError(src, f"interval length must be a whole number of minutes above 0, got {interval_min!r}",
                        column="interval_start")
    if unit not in UNITS:
        raise DataError(src, f"unit must be one of {list(UNITS)}, got {unit!r}", column="unit")
    raw = read_csv(path, required=["approach", "interval_start", "p50"])
    first = 2
    approach = raw["approach"].astype(str).str.strip()
    empty = approach == ""
    if empty.any():
        raise DataError(src, "approach is empty", row=first + int(np.flatnonzero(empty.to_numpy())[0]),
                        column="approach")
    ts = to_timestamps(raw["interval_start"], src, "interval_start", first)
    vals = {}
    for q in QUANTILES:
        if q in raw.columns:
            vals[q] = to_numbers(raw[q], src, q, first, allow_missing=q != "p50", non_negative=True)
    for q in ("p10", "p90"):
        vals[q] = vals[q].fillna(vals["p50"]) if q in vals else vals["p50"].copy()
    bad = (vals["p10"] > vals["p50"] + 1e-9) | (vals["p50"] > vals["p90"] + 1e-9)
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(src, f"need p10 <= p50 <= p90, got {vals['p10'].iloc[i]:g}, {vals['p50'].iloc[i]:g}, "
                             f"{vals['p90'].iloc[i]:g}", row=first + i, column="p50")
    if "unit" in raw.columns:
        units = raw["unit"].astype(str).str.strip().replace("", unit)
        wrong = ~units.isin(UNITS)
        if wrong.any():
            i = int(np.flatnonzero(wrong.to_numpy())[0])
            raise DataError(src, f"unit must be one of {list(UNITS)}, got {units.iloc[i]!r}", row=first + i,
                            column="unit")
    else:
        units = pd.Series(unit, index=raw.index)
    per_interval = (units == "veh").to_numpy()
    to_rate = np.where(per_interval, 60.0 / interval_min, 1.0) / phf_v
    out = pd.DataFrame({"approach": approach, "interval_start": ts, "interval_min": int(interval_min)})
    for q in QUANTILES:
        out[q] = vals[q].to_numpy(dtype=float) * to_rate
        huge = ~(out[q].to_numpy() <= MAX_FLOW_VEH_H)
        if huge.any():
            i = int(np.flatnonzero(huge)[0])
            raise DataError(src, f"{vals[q].iloc[i]:g} {units.iloc[i]} is {out[q].iloc[i]:g} veh/h, above the "
                                 f"{MAX_FLOW_VEH_H:g} veh/h any approach can carry (check the unit)",
                            row=first + i, column=q)
    dup = out.duplicated(["approach", "interval_start"], keep="first")
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise DataError(src, f"second row for approach {out['approach'].iloc[i]!r} at {out['interval_start'].iloc[i]}",
                        row=first + i, column="interval_start")
    misaligned = (out["interval_start"] != out["interval_start"].dt.floor(f"{interval_min}min")).to_numpy()
    if misaligned.any():
        i = int(np.flatnonzero(misaligned)[0])
        raise DataError(src, f"interval_start {out['interval_start'].iloc[i]} is not on a {interval_min}-minute "
                             "boundary", row=first + i, column="interval_start")
    out.attrs["source"] = src
    # Keep the file-order index so later checks can still name the row a user sees (index + 2).
    return out.sort_values(["interval_start", "approach"], kind="stable")


def check_demand(demand: pd.DataFrame, plan: Plan) -> pd.DataFrame:
    """Demand covers exactly the plan's approaches, every interval, with finite non-negative rates."""
    demand_matrix(demand, plan, "p50")
    return demand


def _row(df: pd.DataFrame, i: int) -> int | None:
    """The file row of positional record `i` of a frame read by `read_demand_csv`, else None."""
    if not df.attrs.get("source"):
        return None
    label = df.index[i]
    return int(label) + 2 if isinstance(label, (int, np.integer)) else None


def demand_matrix(demand: pd.DataFrame, plan: Plan, quantile: str = "p50") -> tuple[pd.DatetimeIndex, np.ndarray]:
    """(interval starts, flows[n_intervals, n_approaches]) in the plan's approach order.

    Checks on the way that the frame has the demand columns, only the plan's approaches, one
    interval length, finite non-negative rates no more than 10 x what each approach's lanes can
    discharge (more is a unit slip, not traffic) and a value for every approach in every interval.
    """
    src = str(demand.attrs.get("source", "<demand>"))
    if quantile not in QUANTILES:
        raise DataError(src, f"quantile must be one of {list(QUANTILES)}, got {quantile!r}", column="quantile")
    check_columns(demand, DEMAND_COLUMNS, src, header_row=1 if src != "<demand>" else None)
    if demand.empty:
        raise DataError(src, "demand has no rows")
    names = plan.approach_names
    approach = demand["approach"].astype(str).to_numpy()
    a_pos = pd.Index(names).get_indexer(approach)
    if (a_pos < 0).any():
        i = int(np.flatnonzero(a_pos < 0)[0])
        raise DataError(src, f"approach {approach[i]!r} is not in plan {plan.name!r} (approaches: {sorted(names)})",
                        row=_row(demand, i), column="approach")
    for q in QUANTILES:
        v = demand[q].to_numpy(dtype=float)
        bad = ~np.isfinite(v) | (v < 0)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(src, f"flow must be finite and non-negative, got {v[i]!r}", row=_row(demand, i), column=q)
        sat = np.array([a.sat_flow_base * a.lanes for a in plan.approaches])[a_pos]
        over = v > MAX_DEMAND_OVER_SATURATION * sat
        if over.any():
            i = int(np.flatnonzero(over)[0])
            a = plan.approaches[int(a_pos[i])]
            raise DataError(src, f"{v[i]:g} veh/h on approach {shown(a.name)} is above "
                                 f"{MAX_DEMAND_OVER_SATURATION * sat[i]:g} veh/h, {MAX_DEMAND_OVER_SATURATION:g} x "
                                 f"what its {a.lanes} lane(s) at {a.sat_flow_base:g} pc/h/ln can discharge; check the "
                                 "unit (veh per interval or veh/h) and the lanes", row=_row(demand, i), column=q)
    lengths = pd.unique(demand["interval_min"])
    if len(lengths) != 1:
        raise DataError(src, f"mixed interval lengths {sorted(lengths)}", column="interval_min")
    starts = pd.DatetimeIndex(demand["interval_start"])
    intervals = starts.unique().sort_values()
    t_pos = intervals.get_indexer(starts)
    flows = np.full((len(intervals), len(names)), np.nan)
    seen = np.zeros(flows.shape, dtype=int)
    np.add.at(seen, (t_pos, a_pos), 1)
    if (seen > 1).any():
        t, a = np.argwhere(seen > 1)[0]
        raise DataError(src, f"more than one row for approach {names[a]!r} at {intervals[t]}", column="interval_start")
    if (seen == 0).any():
        t, a = np.argwhere(seen == 0)[0]
        raise DataError(src, f"approach {names[a]!r} has no demand for {int((seen[:, a] == 0).sum())} interval(s), "
                             f"first {intervals[t]}", column="approach")
    flows[t_pos, a_pos] = demand[quantile].to_numpy(dtype=float)
    return intervals, flows


def interval_hours(demand: pd.DataFrame) -> float:
    """The analysis period T (hours) of one interval."""
    return float(demand["interval_min"].iloc[0]) / 60.0
