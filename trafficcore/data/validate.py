"""Checks shared by every loader, each ending in one `DataError` that names file, row and column.

Row numbers are the ones a person sees when they open the file: for a CSV the header is row 1
and the first record is row 2; for a spreadsheet, the sheet's own row number. Loaders keep a
RangeIndex over their records and pass `first_row`, the row number of record 0.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd

from trafficcore import config
from trafficcore.data.files import read_bytes
from trafficcore.data.schema import KEYS
from trafficcore.errors import DataError, shown

_ZONED = re.compile(r"\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?\s*(?:Z|[+-]\d{2}(?::?\d{2})?)$", re.IGNORECASE)


def check_file(path: str | Path) -> Path:
    """The file exists, is not empty and is under the configured size limit."""
    p = Path(path)
    if not p.exists():
        raise DataError(str(p), "file not found")
    if p.is_dir():
        raise DataError(str(p), "is a folder, expected a file")
    size = p.stat().st_size
    if size == 0:
        raise DataError(str(p), "file is empty")
    limit = config.max_file_bytes()
    if size > limit:
        raise DataError(
            str(p),
            f"file is {size / 2**20:.1f} MB, over the {limit / 2**20:.1f} MB limit "
            "(raise it with TRAFFICCORE_MAX_FILE_MB)",
        )
    return p


def read_text(path: str | Path) -> str:
    """Decode a text file as UTF-8 (BOM allowed); a bad byte is reported with its row."""
    p = check_file(path)
    raw = read_bytes(p)  # a .gz is unpacked here, stopping at the size limit
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        row = raw[: e.start].count(b"\n") + 1
        raise DataError(str(p), f"not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start})", row=row) from None


def read_csv(path: str | Path, required: Iterable[str] = (), **kwargs) -> pd.DataFrame:
    """Read a CSV as strings, checking encoding, emptiness and required columns."""
    import io

    text = read_text(path)
    if not text.strip():
        raise DataError(str(path), "file is empty")
    try:
        df = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, **kwargs)
    except pd.errors.ParserError as e:
        raise DataError(str(path), f"cannot parse CSV: {e}") from None
    df.columns = [str(c).strip() for c in df.columns]
    check_columns(df, required, path, header_row=1)
    if df.empty:
        raise DataError(str(path), "file has a header but no records", row=2)
    return df


def check_columns(df: pd.DataFrame, required: Iterable[str], path, header_row: int = 1) -> None:
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataError(
            str(path),
            f"missing required column(s) {missing}; found {shown(list(df.columns))}",
            row=header_row,
            column=missing[0],
        )


def to_numbers(
    s: pd.Series, path, column: str, first_row: int, allow_missing: bool = False, non_negative: bool = False
) -> pd.Series:
    """Parse a column of numbers; the first bad cell ends with a DataError naming it."""
    if pd.api.types.is_numeric_dtype(s):
        vals = s.astype(float)
        bad = pd.Series(False, index=s.index)
    else:
        text = s.astype(str).str.strip()
        empty = text.isin(["", "nan", "NaN", "None"]) | s.isna()
        vals = pd.to_numeric(text.where(~empty), errors="coerce")
        bad = vals.isna() & ~empty
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(str(path), f"not a number: {shown(s.iloc[i])}", row=first_row + i, column=column)
    if not allow_missing and vals.isna().any():
        i = int(np.flatnonzero(vals.isna().to_numpy())[0])
        raise DataError(str(path), "value is missing", row=first_row + i, column=column)
    if not np.isfinite(vals.dropna().to_numpy()).all():
        i = int(np.flatnonzero(~np.isfinite(vals.fillna(0).to_numpy()))[0])
        raise DataError(str(path), f"not a finite number: {shown(s.iloc[i])}", row=first_row + i, column=column)
    if non_negative and (vals < 0).any():
        i = int(np.flatnonzero((vals < 0).to_numpy())[0])
        raise DataError(
            str(path), f"negative value {vals.iloc[i]:g} (counts cannot be negative)", row=first_row + i, column=column
        )
    return vals




def to_timestamps(s: pd.Series, path, column: str, first_row: int, fmt: str | None = None) -> pd.Series:
    """Parse timestamps (ISO by default); the first unparsable cell ends with a DataError."""
    if pd.api.types.is_datetime64_any_dtype(s):
        ts = s
    else:
        try:
            ts = pd.to_datetime(s.astype(str).str.strip(), errors="coerce", format=fmt if fmt else "mixed")
        except ValueError:  # pandas refuses a mix of zoned and naive times outright
            _check_no_zone(s, path, column, first_row)
            raise DataError(
                str(path), "timestamps mix local times and times with a UTC offset", column=column
            ) from None
    bad = ts.isna()
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(str(path), f"not a date/time: {shown(s.iloc[i])}", row=first_row + i, column=column)
    if getattr(ts.dt, "tz", None) is not None:
        raise DataError(
            str(path),
            "timestamps carry a time zone; give local times and the dataset's --timezone",
            row=first_row,
            column=column,
        )
    check_time_bounds(ts, s, path, column, first_row)
    return ts.astype("datetime64[ns]")


# ---------------------------------------------------------------- plausibility: one rule for every way data enter
# Imports (every loader), the store's own backstop and live ingest (API, folder watcher, replay) all
# apply these, so a reading refused one way cannot slip in another.

#: Readings before this or from this on are typos (traffic detectors logged nothing before 1970).
EARLIEST = pd.Timestamp("1970-01-01")
LATEST = pd.Timestamp("2100-01-01")
#: Largest gap allowed between a reading and the rest of its dataset, on import.
#: Why: a panel is dense from the first to the newest reading, so one reading decades away from the
#: rest makes every load allocate decades of empty intervals (one 1900 row in SCATS: 1.95 GiB).
MAX_IMPORT_GAP = pd.Timedelta(days=366)
#: The same for live readings, which arrive as the clock moves: a week covers an outage's backlog.
MAX_LIVE_GAP = pd.Timedelta(days=7)
#: Vehicles per hour one detector can count (an approach of 8 lanes at 2,500 vehicles/h); scaled to
#: the interval. The busiest real detector here counts 695 in 15 minutes (2,780/h).
MAX_VOLUME_PER_HOUR = 20_000.0
#: Fastest plausible speed, in km/h or mph (datasets differ; 148 is the real maximum seen).
MAX_SPEED = 400.0
#: Dataset names: a letter or digit, then letters, digits, '-' or '_'; 40 characters at most. They
#: name folders of saved models and appear in URLs, so nothing that needs quoting gets in.
DATASET_NAME_MAX = 40
DATASET_NAME_PATTERN = rf"^[A-Za-z0-9][A-Za-z0-9_-]{{0,{DATASET_NAME_MAX - 1}}}$"
_DATASET_NAME = re.compile(DATASET_NAME_PATTERN)


def check_dataset_name(name: object, where: str = "--dataset") -> str:
    """The one rule for dataset names (CLI, API, dashboard, store); a `DataError` naming `where` otherwise."""
    if not isinstance(name, str) or not _DATASET_NAME.fullmatch(name):
        label = repr(name) if not isinstance(name, str) or len(name) <= 60 else repr(name[:60]) + "..."
        raise DataError(where, f"dataset name {label} is not allowed: use 1-{DATASET_NAME_MAX} letters, digits, "
                               "'-' or '_', starting with a letter or digit")
    return name


def max_reading(measure: str, interval_s: int) -> float:
    """The largest plausible reading of a detector measuring `measure` over `interval_s` seconds."""
    if measure == "speed":
        return MAX_SPEED
    return MAX_VOLUME_PER_HOUR * max(int(interval_s), 60) / 3600.0


def check_values(vals: pd.Series, measure: str | pd.Series, interval_s: int | np.ndarray, path, column: str,
                 first_row: int) -> None:
    """Every reading is at most `max_reading` for its measure and interval (one for all, or one per record)."""
    v = vals.to_numpy(dtype=float)
    is_speed = np.broadcast_to(np.asarray(measure) == "speed", v.shape)
    seconds = np.broadcast_to(np.maximum(np.asarray(interval_s, dtype=float), 60.0), v.shape)
    limit = np.where(is_speed, MAX_SPEED, MAX_VOLUME_PER_HOUR * seconds / 3600.0)
    with np.errstate(invalid="ignore"):
        bad = v > limit
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        what = "speed" if is_speed[i] else f"count in {seconds[i]:g} s"
        raise DataError(str(path), f"implausible {what}: {v[i]:g} (the most a detector can plausibly read is "
                                   f"{limit[i]:g})", row=first_row + i, column=column)


def check_time_bounds(ts: pd.Series, cells: pd.Series, path, column: str, first_row: int) -> None:
    """Every time lies in [EARLIEST, LATEST); `cells` are the original cells, for the message."""
    out_of_range = ((ts < EARLIEST) | (ts >= LATEST)).to_numpy()
    if out_of_range.any():
        i = int(np.flatnonzero(out_of_range)[0])
        raise DataError(str(path), f"date/time out of range ({EARLIEST.year}-{LATEST.year - 1}): "
                        f"{shown(cells.iloc[i])}", row=first_row + i, column=column)


def check_time_window(ts: pd.Series, path, column: str, first_row: int, stored: tuple | None = None,
                      max_gap: pd.Timedelta = MAX_IMPORT_GAP, dataset: str = "") -> None:
    """No reading lies more than `max_gap` from the rest of its dataset (the readings in `ts` and the
    stored range `stored` = (first, newest), taken as one unbroken stretch).

    At the first gap too wide, the reading named is the one on the side without stored readings (else
    on the side with fewer readings): the stray row, not the thousands it strayed from.
    """
    t = pd.to_datetime(ts).to_numpy(dtype="datetime64[ns]").astype(np.int64)
    if not len(t):
        return
    lo = hi = None
    if stored is not None and stored[0] is not None and not pd.isna(stored[0]):
        lo, hi = pd.Timestamp(stored[0]), pd.Timestamp(stored[1])
        points = np.unique(np.concatenate([t, [lo.value, hi.value]]))
    else:
        points = np.unique(t)
    gaps = np.diff(points)
    wide = gaps > max_gap.value
    if lo is not None:
        wide &= ~((points[:-1] >= lo.value) & (points[1:] <= hi.value))
    if not wide.any():
        return
    k = int(np.flatnonzero(wide)[0])
    if lo is not None:
        left = points[k] < lo.value
    else:
        left = (t <= points[k]).sum() <= (t > points[k]).sum()
    stray = points[k] if left else points[k + 1]
    i = int(np.flatnonzero(t == stray)[0])
    when = pd.Timestamp(stray)
    if lo is not None and (when < lo - max_gap or when > hi + max_gap):
        msg = (f"{when} is more than {max_gap.days} days outside the stored readings of {dataset!r} "
               f"({lo} .. {hi})")
    else:
        msg = f"{when} is more than {max_gap.days} days from any other reading of the dataset"
    raise DataError(str(path), msg + "; a date typo?", row=first_row + i, column=column)


def check_readings(obs: pd.DataFrame, measure_of: dict, interval_s: int, stored: tuple | None, source: str,
                   dataset: str, max_gap: pd.Timedelta = MAX_IMPORT_GAP) -> None:
    """Backstop run by the store on every import: the plausibility rules above on canonical
    observations, and against the readings already stored. Rows of the source file are not known
    here, so the reading is named by its detector and time.
    """
    if obs.empty:
        return
    obs = obs.reset_index(drop=True)
    measure = obs["detector_id"].map(measure_of).fillna("volume")
    try:
        check_time_bounds(obs["ts"], obs["ts"], source, "ts", 0)
        check_time_window(obs["ts"], source, "ts", 0, stored, max_gap, dataset)
        check_values(obs["value"], measure, interval_s, source, "value", 0)
    except DataError as e:
        r = obs.iloc[int(e.row)]
        raise DataError(source, f"reading of detector {r['detector_id']!r} at {pd.Timestamp(r['ts'])}: {e.message}",
                        column=e.column) from None


def check_unique(df: pd.DataFrame, keys: list[str], value: str | None, path, first_row: int) -> pd.DataFrame:
    """Drop exact duplicate records; reject duplicates that disagree (naming the second one)."""
    dup = df.duplicated(keys, keep=False)
    if not dup.any():
        return df
    cols = keys + ([value] if value else [])
    exact = df.duplicated(cols, keep="first")
    remaining = df[~exact]
    conflict = remaining.duplicated(keys, keep="first")
    if conflict.any():
        pos = int(np.flatnonzero(conflict.to_numpy())[0])
        i = remaining.index[pos]
        key = ", ".join(f"{k}={remaining.loc[i, k]}" for k in keys)
        raise DataError(str(path), f"conflicting duplicate for {key}", row=first_row + int(i), column=value or keys[-1])
    return remaining


def check_known(s: pd.Series, known: set, path, column: str, first_row: int, what: str = "detector") -> None:
    """Every id in `s` is among `known`."""
    unknown = ~s.isin(known)
    if unknown.any():
        i = int(np.flatnonzero(unknown.to_numpy())[0])
        raise DataError(str(path), f"unknown {what} id {shown(s.iloc[i])}", row=first_row + i, column=column)


def check_tables(frames: dict[str, pd.DataFrame], known_sites: set, known_detectors: set) -> None:
    """Backstop run by the store on every ingest: keys unique, references resolvable, measures valid.

    Loaders report problems with file context first; this catches a loader bug before it can
    write an inconsistent store.
    """
    for table, df in frames.items():
        keys = [k for k in KEYS[table] if k != "dataset"]
        if df.empty:
            continue
        if df[keys].isna().any().any():
            raise DataError(f"<{table}>", f"null key in columns {keys}")
        if df.duplicated(keys).any():
            row = df[df.duplicated(keys)].iloc[0]
            raise DataError(f"<{table}>", f"duplicate key {dict(row[keys])}")
    sites = known_sites | set(frames["sites"]["site_id"])
    detectors = known_detectors | set(frames["detectors"]["detector_id"])
    det = frames["detectors"]
    if not det.empty:
        check_known(det["site_id"], sites, "<detectors>", "site_id", 0, what="site")
        bad = ~det["measure"].isin(["volume", "speed"])
        if bad.any():
            raise DataError("<detectors>", f"measure must be volume or speed, got {shown(det['measure'][bad].iloc[0])}")
    obs = frames["observations"]
    if not obs.empty:
        check_known(obs["detector_id"], detectors, "<observations>", "detector_id", 0)
        if not np.isfinite(obs["value"].to_numpy(dtype=float)).all():
            raise DataError("<observations>", "non-finite value")


# ---------------------------------------------------------------- intervals, zones, ranges (matrix + long)
def check_timezone(timezone: str, path: str | Path) -> None:
    """The dataset's zone must be a real IANA name: every timestamp is later placed on UTC with it."""
    try:
        ZoneInfo(str(timezone))
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise DataError(
            str(path), f"unknown time zone {timezone!r}; give an IANA name such as Europe/Copenhagen"
        ) from None


def parse_interval(value: str | int | float, path: str | Path) -> int:
    """Seconds from `300`, `"300"`, `"5min"`, `"1h"`; a positive whole number of seconds or a DataError."""
    seconds: float | None
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        text = str(value).strip()
        if re.fullmatch(r"\d+(\.\d+)?", text):
            seconds = float(text)
        else:
            try:
                seconds = pd.Timedelta(text).total_seconds()
            except (ValueError, TypeError):
                seconds = None
    if seconds is None or not np.isfinite(seconds) or seconds <= 0 or seconds != int(seconds):
        raise DataError(str(path), f"interval {value!r} is not a positive whole number of seconds (e.g. 300 or 5min)")
    return int(seconds)


def mode_step(diffs_ns: np.ndarray) -> int | None:
    """The most common positive step, in whole seconds (the smaller on a tie); None when there is none."""
    d = diffs_ns[diffs_ns > 0]
    if d.size == 0:
        return None
    steps, counts = np.unique(d, return_counts=True)
    best = int(steps[np.argmax(counts)])  # np.unique sorts, so argmax picks the smallest of tied steps
    return best // 1_000_000_000 if best % 1_000_000_000 == 0 else None


def check_range(vals: pd.Series, lo: float, hi: float, path, column: str, first_row: int) -> None:
    """Every non-null value lies in [lo, hi] (latitude, longitude)."""
    bad = (vals < lo) | (vals > hi)
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(str(path), f"{vals.iloc[i]:g} is outside {lo:g}..{hi:g}", row=first_row + i, column=column)


def parse_local_times(s: pd.Series, path, column: str, first_row: int) -> pd.Series:
    """ISO 8601 local wall-clock times; one carrying a UTC offset is refused, naming its row.

    The offset check runs only when parsing shows there is one (pandas either returns aware times
    or refuses a mix of aware and naive), so the common case costs nothing extra.
    """
    try:
        return to_timestamps(s, path, column, first_row, fmt="ISO8601")
    except DataError as e:
        if "time zone" not in e.message:
            raise
        _check_no_zone(s, path, column, first_row)
        raise
    except ValueError:  # "Mixed timezones detected"
        _check_no_zone(s, path, column, first_row)
        raise DataError(str(path), "timestamps mix local times and times with a UTC offset", column=column) from None


def _check_no_zone(s: pd.Series, path, column: str, first_row: int) -> None:
    zoned = s.astype(str).str.strip().str.contains(_ZONED)
    if zoned.any():
        i = int(np.flatnonzero(zoned.to_numpy())[0])
        raise DataError(
            str(path),
            f"{shown(s.iloc[i])} carries a time zone; give local wall-clock times and the dataset's --timezone",
            row=first_row + i,
            column=column,
        )
