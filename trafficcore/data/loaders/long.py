"""The documented generic long format (docs/FORMATS.md): three CSVs any city can write.

- observations: detector_id, timestamp, value (one row per detector per interval)
- sites:        site_id, name, lat, lon [, description]
- detectors:    detector_id, site_id [, approach, description, road, lanes, measure, interval_s, lat, lon]

Everything is checked before anything is returned, and the first problem ends the load with one
`DataError` naming file, row and column: a city's export is usually produced by a script, and a
precise pointer is what lets its author fix the script. Unknown columns are errors too, so that a
misspelt optional column ("lane" for "lanes") is not silently ignored.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from trafficcore.data.schema import MEASURES, CanonicalTables, DatasetInfo
from trafficcore.data.validate import (
    check_file,
    check_known,
    check_range,
    check_time_window,
    check_timezone,
    check_unique,
    check_values,
    mode_step,
    parse_interval,
    parse_local_times,
    read_csv,
    to_numbers,
)
from trafficcore.errors import DataError, shown

#: column -> required?, per file; the order is the documented order.
OBSERVATION_COLUMNS = {"detector_id": True, "timestamp": True, "value": True}
SITE_COLUMNS = {"site_id": True, "name": True, "lat": True, "lon": True, "description": False}
DETECTOR_COLUMNS = {
    "detector_id": True,
    "site_id": True,
    "approach": False,
    "description": False,
    "road": False,
    "lanes": False,
    "measure": False,
    "interval_s": False,
    "lat": False,
    "lon": False,
}

FIRST_ROW = 2  # CSV header is row 1


def load(
    observations: str | Path,
    sites: str | Path,
    detectors: str | Path,
    timezone: str = "UTC",
    interval: str | int | None = None,
) -> CanonicalTables:
    """Read and validate the three long-format CSVs into canonical tables.

    A detector's interval is its `interval_s` cell, else `interval`, else the most common step
    between its own timestamps; the dataset's interval is `interval`, else the most common
    detector interval.
    """
    for path in (observations, sites, detectors):
        check_file(path)
    check_timezone(timezone, observations)
    default_step = parse_interval(interval, observations) if interval is not None else None

    site_df = _load_sites(sites)
    det_df = _load_detectors(detectors, set(site_df["site_id"]))
    obs_df = load_observations(observations, set(det_df["detector_id"]))
    det_df = _assign_intervals(det_df, obs_df, default_step, observations, detectors)
    _check_plausible(obs_df, det_df, observations)

    step = default_step if default_step is not None else int(det_df["interval_s"].mode().min())
    measure = str(det_df["measure"].mode().iloc[0])
    obs_df = obs_df.drop(columns="row").reset_index(drop=True)
    return CanonicalTables(
        info=DatasetInfo(
            synthetic=False,
            source=f"long:{Path(observations).name}",
            timezone=timezone,
            interval_s=step,
            measure=measure,
        ),
        sites=site_df,
        detectors=det_df,
        observations=obs_df,
    )


# ---------------------------------------------------------------------------------------------- files
def _read(path, spec: dict[str, bool]) -> pd.DataFrame:
    """The CSV as stripped strings with lower-case headers; unknown, repeated or missing columns rejected."""
    df = read_csv(path)
    df.columns = [c.lower() for c in df.columns]
    allowed = list(spec)
    for c in df.columns:
        if c in spec:
            continue
        m = re.fullmatch(r"(.+)\.\d+", c)
        if m and m.group(1) in df.columns:
            raise DataError(str(path), f"column {shown(m.group(1))} appears twice", row=1, column=m.group(1))
        raise DataError(str(path), f"unknown column {shown(c)}; the columns of this file are {allowed}", row=1,
                        column=c)
    missing = [c for c, required in spec.items() if required and c not in df.columns]
    if missing:
        raise DataError(
            str(path), f"missing required column {missing[0]!r}; found {shown(list(df.columns))}", row=1,
            column=missing[0],
        )
    return df.apply(lambda s: s.str.strip())


def _require(df: pd.DataFrame, column: str, path) -> None:
    """An id cell may not be blank."""
    empty = df[column] == ""
    if empty.any():
        raise DataError(
            str(path), "value is missing", row=FIRST_ROW + int(np.flatnonzero(empty.to_numpy())[0]), column=column
        )


def _reject_conflicts(df: pd.DataFrame, key: str, path) -> pd.DataFrame:
    """Drop exact repeats; two different records for one id are an error naming the second."""
    distinct = df[~df.duplicated(keep="first")]
    dup = distinct.duplicated(key)
    if dup.any():
        i = distinct.index[int(np.flatnonzero(dup.to_numpy())[0])]
        raise DataError(
            str(path),
            f"{key} {shown(df.loc[i, key])} is listed twice with different values",
            row=FIRST_ROW + int(i),
            column=key,
        )
    return distinct


def _load_sites(path) -> pd.DataFrame:
    df = _read(path, SITE_COLUMNS)
    _require(df, "site_id", path)
    lat = to_numbers(df["lat"], path, "lat", FIRST_ROW)
    lon = to_numbers(df["lon"], path, "lon", FIRST_ROW)
    check_range(lat, -90, 90, path, "lat", FIRST_ROW)
    check_range(lon, -180, 180, path, "lon", FIRST_ROW)
    out = pd.DataFrame(
        {
            "site_id": df["site_id"],
            "name": df["name"].where(df["name"] != "", df["site_id"]),
            "lat": lat,
            "lon": lon,
            "description": _optional_text(df, "description"),
        }
    )
    return _reject_conflicts(out, "site_id", path).reset_index(drop=True)


def _load_detectors(path, known_sites: set[str]) -> pd.DataFrame:
    df = _read(path, DETECTOR_COLUMNS)
    _require(df, "detector_id", path)
    _require(df, "site_id", path)
    check_known(df["site_id"], known_sites, path, "site_id", FIRST_ROW, what="site")
    out = pd.DataFrame({"detector_id": df["detector_id"], "site_id": df["site_id"]})
    for c in ("approach", "description", "road"):
        out[c] = _optional_text(df, c)
    out["lanes"] = _whole_numbers(df, "lanes", path)
    measure = df["measure"].str.lower() if "measure" in df else pd.Series("", index=df.index)
    measure = measure.where(measure != "", "volume")
    bad = ~measure.isin(MEASURES)
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(
            str(path),
            f"measure must be one of {list(MEASURES)} (or empty for volume), got {shown(df['measure'].iloc[i])}",
            row=FIRST_ROW + i,
            column="measure",
        )
    out["measure"] = measure
    out["interval_s"] = _whole_numbers(df, "interval_s", path)
    for c, lo, hi in (("lat", -90, 90), ("lon", -180, 180)):
        if c in df:
            vals = to_numbers(df[c], path, c, FIRST_ROW, allow_missing=True)
            check_range(vals, lo, hi, path, c, FIRST_ROW)
            out[c] = vals
        else:
            out[c] = np.nan
    return _reject_conflicts(out, "detector_id", path).reset_index(drop=True)


def load_observations(path, known_detectors: set[str]) -> pd.DataFrame:
    """An observations CSV validated against the known detectors (the watcher reads new files through it)."""
    df = _read(path, OBSERVATION_COLUMNS)
    _require(df, "detector_id", path)
    ts = parse_local_times(df["timestamp"], path, "timestamp", FIRST_ROW)
    value = to_numbers(df["value"], path, "value", FIRST_ROW, non_negative=True)
    obs = pd.DataFrame({"detector_id": df["detector_id"], "ts": ts, "value": value.astype(float)})
    obs = check_unique(obs, ["detector_id", "ts"], "value", path, FIRST_ROW)
    check_known(obs["detector_id"], known_detectors, path, "detector_id", FIRST_ROW)
    obs = obs.copy()
    obs["row"] = obs.index + FIRST_ROW  # kept until the interval check can name offending rows
    return obs


def _check_plausible(obs: pd.DataFrame, det: pd.DataFrame, path) -> None:
    """The shared plausibility rules (`validate`): no reading far from the rest, none beyond its measure's bound."""
    obs = obs.reset_index(drop=True)
    measure = obs["detector_id"].map(dict(zip(det["detector_id"], det["measure"], strict=True)))
    interval = obs["detector_id"].map(dict(zip(det["detector_id"], det["interval_s"].astype("int64"), strict=True)))
    try:
        check_time_window(obs["ts"], path, "timestamp", 0)
        check_values(obs["value"], measure, interval.to_numpy(dtype=float), path, "value", 0)
    except DataError as e:
        raise DataError(e.file, e.message, row=int(obs["row"].iloc[int(e.row)]), column=e.column) from None


def _optional_text(df: pd.DataFrame, column: str) -> pd.Series:
    if column not in df:
        return pd.Series([None] * len(df), index=df.index, dtype=object)
    return df[column].where(df[column] != "", None)


def _whole_numbers(df: pd.DataFrame, column: str, path) -> pd.Series:
    """An optional column of positive whole numbers (lanes, interval_s); blank cells are null."""
    if column not in df:
        return pd.Series([pd.NA] * len(df), index=df.index, dtype="Int64")
    vals = to_numbers(df[column], path, column, FIRST_ROW, allow_missing=True)
    bad = vals.notna() & ((vals <= 0) | (vals != vals.round()))
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(
            str(path), f"must be a positive whole number, got {shown(df[column].iloc[i])}", row=FIRST_ROW + i,
            column=column,
        )
    return vals.round().astype("Int64")


# ---------------------------------------------------------------------------------------------- intervals
def _assign_intervals(
    det: pd.DataFrame, obs: pd.DataFrame, default_step: int | None, obs_path, det_path
) -> pd.DataFrame:
    """Fill each detector's interval_s and check its timestamps sit on that grid (gaps allowed)."""
    obs = obs.sort_values(["detector_id", "ts"], kind="stable")
    same = obs["detector_id"].eq(obs["detector_id"].shift())
    diff_ns = obs["ts"].diff().to_numpy().astype("int64")
    steps = pd.DataFrame({"detector_id": obs["detector_id"], "step": diff_ns, "row": obs["row"]})[same.to_numpy()]

    inferred = {
        did: s for did, g in steps.groupby("detector_id", sort=False) if (s := _infer_step(g["step"].to_numpy()))
    }

    det = det.copy()
    fallback = default_step
    if fallback is None and inferred:
        fallback = int(pd.Series(list(inferred.values())).mode().min())
    chosen = []
    for i, (did, declared) in enumerate(zip(det["detector_id"], det["interval_s"], strict=True)):
        if not pd.isna(declared):
            chosen.append(int(declared))
        elif default_step is not None:
            chosen.append(default_step)
        elif did in inferred:
            chosen.append(int(inferred[did]))
        elif fallback is not None:
            chosen.append(fallback)
        else:
            raise DataError(
                str(det_path),
                f"cannot infer the interval of detector {shown(did)} (too few observations); "
                "fill interval_s or give --interval",
                row=FIRST_ROW + i,
                column="interval_s",
            )
    det["interval_s"] = pd.Series(chosen, index=det.index, dtype="Int64")

    if not steps.empty:
        per = steps["detector_id"].map(dict(zip(det["detector_id"], det["interval_s"].astype("int64"), strict=True)))
        off = (steps["step"].to_numpy() % (per.to_numpy(dtype="int64") * 1_000_000_000)) != 0
        if off.any():
            k = int(np.flatnonzero(off)[0])
            row = steps.iloc[k]
            raise DataError(
                str(obs_path),
                f"observation of detector {shown(row['detector_id'])} is {row['step'] / 1e9:g} s after the one "
                "before it, "
                f"not a multiple of its {int(per.iloc[k])} s interval",
                row=int(row["row"]),
                column="timestamp",
            )
    return det


def _infer_step(steps_ns: np.ndarray) -> int | None:
    """A detector's interval in seconds: its most common step, or its smallest when gaps make the mode
    inconsistent (a mostly-missing 5-minute series can have more 10-minute steps than 5-minute ones)."""
    mode = mode_step(steps_ns)
    if mode is None:
        return None
    if (steps_ns % (mode * 1_000_000_000) == 0).all():
        return mode
    smallest = int(steps_ns.min())
    if smallest % 1_000_000_000 == 0 and (steps_ns % smallest == 0).all():
        return smallest // 1_000_000_000
    return mode  # the off-grid steps are then reported by the grid check
