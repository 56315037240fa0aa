"""Wide time x node matrices (CSV or HDF5, as METR-LA and PEMS-BAY publish them) -> canonical tables.

A matrix has one row per time slot and one column per node (sensor, segment, intersection); each
node becomes one site with one detector (site_id = detector_id = node id) because the format says
nothing finer. Empty cells mean "no observation", so a sparse matrix costs nothing in the store.

Row numbers in errors: for a CSV, the line as a spreadsheet shows it (header = row 1); for HDF5,
the 1-based record number (the first data row is row 1), since an HDF5 file has no header line.

The helpers for intervals, time zones and coordinate ranges live in `validate`, shared with the
`long` loader, so both formats accept the same spellings ("300", "5min", "1h").
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from trafficcore.data.loaders import hdf5
from trafficcore.data.schema import MEASURES, CanonicalTables, DatasetInfo
from trafficcore.data.validate import (
    check_file,
    check_known,
    check_range,
    check_timezone,
    mode_step,
    parse_interval,
    parse_local_times,
    read_csv,
    read_text,
    to_numbers,
)
from trafficcore.errors import DataError, shown

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"

#: First-column headers that mean "this column holds the time of the row".
TIME_NAMES = {"timestamp", "time", "datetime", "date", "date_time", "ts", "period_start", "interval_start"}
#: First-column headers pandas writes for an unnamed index (times, or plain row numbers).
INDEX_NAMES = {"", "index"}

#: Accepted spellings of the location and adjacency columns (compared lower-case).
ID_NAMES = ("id", "sensor_id", "node_id", "detector_id", "site_id", "station_id", "sensor", "node", "station")
LAT_NAMES = ("lat", "latitude", "y")
LON_NAMES = ("lon", "lng", "long", "longitude", "x")
NAME_NAMES = ("name", "site_name", "label")
DESCRIPTION_NAMES = ("description", "desc")
FROM_NAMES = ("from", "src", "source", "from_id", "origin")
TO_NAMES = ("to", "dst", "target", "to_id", "destination")
WEIGHT_NAMES = ("cost", "weight", "distance", "dist", "w")

#: An ISO time followed by a zone designator ("Z", "+02:00"): the formats want local wall-clock time.


@dataclass
class _Grid:
    """The matrix as read: values[t, n] for node ids[n]; times[t] when the file carries them."""

    values: np.ndarray
    ids: list[str]
    times: np.ndarray | None
    first_row: int
    time_column: str | None


def load(
    path: str | Path,
    locations: str | Path | None = None,
    adjacency: str | Path | None = None,
    start: str | pd.Timestamp | None = None,
    interval: str | int | float | None = None,
    measure: str = "volume",
    timezone: str = "UTC",
    zero_is_missing: bool = False,
) -> CanonicalTables:
    """Read a wide matrix (+ optional locations and adjacency CSVs) into canonical tables.

    `start`/`interval` place rows in time when the file has no times; with times present the
    interval is inferred (the most common step) unless given, and every step must be a whole
    multiple of it (gaps are fine, off-grid rows are not). `zero_is_missing` drops zeros, which
    METR-LA and PEMS-BAY use for "no reading" in their speed matrices.
    """
    p = check_file(path)
    check_timezone(timezone, p)
    if measure not in MEASURES:
        raise DataError(str(p), f"--measure must be one of {list(MEASURES)}, got {measure!r}")
    step = parse_interval(interval, p) if interval is not None else None
    grid = _read_hdf(p, timezone) if _is_hdf5(p) else _read_csv(p)
    times, step = _place_in_time(grid, p, start, step)

    values = grid.values
    if zero_is_missing:
        values = np.where(values == 0, np.nan, values)
    _check_values(values, grid, p)

    ids = np.asarray(grid.ids, dtype=object)
    cols, rows = np.nonzero(~np.isnan(values.T))  # detector-major, time-sorted within a detector
    observations = pd.DataFrame(
        {"detector_id": ids[cols], "ts": times[rows].astype("datetime64[ns]"), "value": values[rows, cols]}
    )

    sites = pd.DataFrame(
        {
            "site_id": ids,
            "name": ids,
            "lat": np.full(len(ids), np.nan),
            "lon": np.full(len(ids), np.nan),
            "description": pd.Series([None] * len(ids), dtype=object),
        }
    )
    if locations is not None:
        loc = _read_locations(locations, set(grid.ids))
        sites = sites.set_index("site_id")
        sites.loc[loc["site_id"], "lat"] = loc["lat"].to_numpy()
        sites.loc[loc["site_id"], "lon"] = loc["lon"].to_numpy()
        if "name" in loc:
            named = loc.dropna(subset=["name"])
            sites.loc[named["site_id"], "name"] = named["name"].to_numpy()
        if "description" in loc:
            described = loc.dropna(subset=["description"])
            sites.loc[described["site_id"], "description"] = described["description"].to_numpy()
        sites = sites.reset_index()

    detectors = pd.DataFrame(
        {
            "detector_id": ids,
            "site_id": ids,
            "measure": measure,
            "interval_s": pd.Series([step] * len(ids), dtype="Int64"),
        }
    )
    tables = CanonicalTables(
        info=DatasetInfo(
            synthetic=False, source=f"matrix:{p.name}", timezone=timezone, interval_s=step, measure=measure
        ),
        sites=sites,
        detectors=detectors,
        observations=observations,
    )
    if adjacency is not None:
        order = list(loc["site_id"]) if locations is not None else list(grid.ids)
        tables.adjacency = _read_adjacency(adjacency, set(grid.ids), order)
    return tables


def pick_column(columns, names: tuple[str, ...]) -> str | None:
    """The first column whose lower-cased name is among `names` (in the order of `names`)."""
    lower = {str(c).strip().lower(): c for c in columns}
    for n in names:
        if n in lower:
            return lower[n]
    return None


# ---------------------------------------------------------------------------------------------- reading
def _is_hdf5(p: Path) -> bool:
    with open(p, "rb") as f:
        head = f.read(8)
    if head == HDF5_MAGIC:
        return True
    if p.suffix.lower() in (".h5", ".hdf5", ".hdf"):
        raise DataError(str(p), "named like an HDF5 file but is not one (no HDF5 signature)")
    return False


def _read_csv(p: Path) -> _Grid:
    text = read_text(p)
    if not text.strip():
        raise DataError(str(p), "file is empty")
    try:
        header = [h.strip() for h in next(csv.reader(io.StringIO(text)))]
    except csv.Error as e:  # e.g. a header cell over the csv module's field size limit
        raise DataError(str(p), f"cannot parse CSV: {e}", row=1) from None
    if len(header) < 2 and header[0].lower() in TIME_NAMES | INDEX_NAMES:
        raise DataError(str(p), "no node columns: expected one column per node", row=1)
    seen: set[str] = set()
    for j, h in enumerate(header):
        if h in seen:
            raise DataError(str(p), f"node column {shown(h)} appears twice", row=1, column=h)
        if not h and j > 0:
            raise DataError(str(p), f"column {j + 1} has no name (a node id is expected)", row=1)
        seen.add(h)
    _check_widths(text, len(header), p)
    positional = [str(j) for j in range(len(header))]
    try:
        df = pd.read_csv(
            io.StringIO(text),
            header=0,
            names=positional,
            dtype={"0": str},
            keep_default_na=False,
            na_values=[""],
            low_memory=False,
        )
    except (pd.errors.ParserError, ValueError) as e:
        m = re.search(r"line (\d+)", str(e))
        raise DataError(str(p), f"cannot parse CSV: {str(e).strip()}", row=int(m.group(1)) if m else None) from None
    if df.empty:
        raise DataError(str(p), "file has a header but no records", row=2)

    first = df["0"].fillna("").astype(str).str.strip()
    kind = _first_column_kind(header[0], first)
    times = None
    time_column = None
    if kind == "time":
        time_column = header[0] or "(first column)"
        times = parse_local_times(first, p, time_column, 2).to_numpy()
    node_positions = list(range(1, len(header))) if kind in ("time", "rownumber") else list(range(len(header)))
    ids = [header[j] for j in node_positions]
    values = np.empty((len(df), len(node_positions)), dtype=float)
    for k, j in enumerate(node_positions):
        s = df[str(j)]
        if s.dtype == bool:
            s = s.astype(str)
        values[:, k] = to_numbers(s, p, header[j], 2, allow_missing=True).to_numpy(dtype=float)
    return _Grid(values=values, ids=ids, times=times, first_row=2, time_column=time_column)


def _check_widths(text: str, width: int, p: Path) -> None:
    """Every record has as many fields as the header, else a DataError naming the first that does not.

    pandas pads a short row with empty cells (silently "no observation") and reads a long first
    record's extra field as an index, which then surfaced as a bogus "not a date/time". Without
    quotes, fields are counted per line (fast); with them, by the csv module.
    """
    if '"' not in text:
        for row, line in enumerate(io.StringIO(text), start=1):
            n = line.count(",") + 1
            if n != width and line.strip():
                raise DataError(str(p), f"{n} fields, but the header has {width}", row=row)
        return
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        for fields in reader:
            if fields and len(fields) != width:
                raise DataError(str(p), f"{len(fields)} fields, but the header has {width}", row=reader.line_num)
    except csv.Error as e:
        raise DataError(str(p), f"cannot parse CSV: {e}", row=reader.line_num) from None


def _first_column_kind(name: str, values: pd.Series) -> str:
    """'time', 'rownumber' (a written-out RangeIndex) or 'node' for the first CSV column."""
    lname = name.lower()
    numeric = pd.to_numeric(values, errors="coerce").notna()
    if lname in INDEX_NAMES or lname.startswith("unnamed"):
        return "rownumber" if numeric.all() else "time"
    if lname in TIME_NAMES:
        return "time"
    if numeric.mean() > 0.5:
        return "node"
    dates = pd.to_datetime(values.where(~numeric), errors="coerce", format="ISO8601").notna()
    return "time" if dates.mean() > 0.5 else "node"


def _read_hdf(p: Path, timezone: str) -> _Grid:
    """A pandas fixed-format frame (key 'df', else its only key) or a plain 2-D dataset without times.

    Read by `hdf5.read_frame` with h5py, never by pandas/PyTables: those unpickle object columns.
    """
    return _grid_from_frame(hdf5.read_frame(p), p, timezone)


def _grid_from_frame(df: pd.DataFrame, p: Path, timezone: str) -> _Grid:
    if df.shape[1] == 0 or df.shape[0] == 0:
        raise DataError(str(p), f"HDF5 table is empty ({df.shape[0]} rows x {df.shape[1]} columns)")
    ids = [str(c).strip() for c in df.columns]
    dup = pd.Index(ids).duplicated()
    if dup.any():
        raise DataError(str(p), f"node column {shown(ids[int(np.flatnonzero(dup)[0])])} appears twice")
    values = np.empty(df.shape, dtype=float)
    for k, c in enumerate(df.columns):
        values[:, k] = to_numbers(df[c], p, ids[k], 1, allow_missing=True).to_numpy(dtype=float)
    idx = df.index
    times = None
    if isinstance(idx, pd.DatetimeIndex):
        if idx.tz is not None:  # an aware index names its instants exactly: express them in local time
            idx = idx.tz_convert(timezone).tz_localize(None)
        if idx.isna().any():
            raise DataError(str(p), "time index has a missing value", row=int(np.flatnonzero(idx.isna())[0]) + 1)
        times = idx.to_numpy()
    elif not pd.api.types.is_integer_dtype(idx):
        raise DataError(str(p), f"index is neither times nor row numbers (dtype {idx.dtype})")
    return _Grid(values=values, ids=ids, times=times, first_row=1, time_column="index" if times is not None else None)


# ---------------------------------------------------------------------------------------------- checks
def _place_in_time(grid: _Grid, p: Path, start, step: int | None) -> tuple[np.ndarray, int]:
    """Timestamps for every row and the interval in seconds, from the file's times or --start/--interval."""
    n = grid.values.shape[0]
    if grid.times is None:
        if start is None or step is None:
            missing = " and ".join(x for x, v in (("--start", start), ("--interval", step)) if v is None)
            raise DataError(
                str(p),
                f"the file has no time column, so {missing} must be given (e.g. --start "
                "'2012-03-01 00:00' --interval 5min)",
            )
        try:
            t0 = pd.Timestamp(start)
        except (ValueError, TypeError):
            raise DataError(str(p), f"--start {start!r} is not a date/time") from None
        if pd.isna(t0):
            raise DataError(str(p), f"--start {start!r} is not a date/time")
        if t0.tz is not None:
            raise DataError(str(p), f"--start {start!r} carries a time zone; give local time and --timezone")
        times = t0.to_datetime64().astype("datetime64[ns]") + np.arange(n) * np.timedelta64(step, "s")
        return times, step
    if start is not None:
        raise DataError(str(p), "the file has its own times; --start is only for files without a time column")
    times = grid.times.astype("datetime64[ns]")
    diffs = np.diff(times).astype("int64")
    back = np.flatnonzero(diffs <= 0)
    if back.size:
        i = int(back[0]) + 1
        raise DataError(
            str(p),
            f"time {pd.Timestamp(times[i])} is not after the row before it (rows must be in "
            "time order, each time once)",
            row=grid.first_row + i,
            column=grid.time_column,
        )
    if step is None:
        step = mode_step(diffs)
        if step is None:
            raise DataError(
                str(p),
                "cannot infer the interval from the times (one row, or sub-second steps); give --interval",
                column=grid.time_column,
            )
    off = np.flatnonzero(diffs % (step * 1_000_000_000) != 0)
    if off.size:
        i = int(off[0]) + 1
        raise DataError(
            str(p),
            f"time {pd.Timestamp(times[i])} is {diffs[i - 1] / 1e9:g} s after the row before it, not a multiple "
            f"of the {step} s interval (the times must sit on a regular grid; gaps are fine)",
            row=grid.first_row + i,
            column=grid.time_column,
        )
    return times, step


def _check_values(values: np.ndarray, grid: _Grid, p: Path) -> None:
    """Counts and speeds are finite and never negative; the first offender is named."""
    bad = np.isinf(values) | (values < 0)
    if bad.any():
        r, c = (int(x[0]) for x in np.nonzero(bad))
        raise DataError(
            str(p), f"value {values[r, c]:g} is not a non-negative number", row=grid.first_row + r, column=grid.ids[c]
        )


def _read_table(path) -> tuple[pd.DataFrame, int]:
    """A small CSV as stripped strings; the record-0 row number (2, or 1 when the file has no header)."""
    df = read_csv(path)
    df = df.apply(lambda s: s.str.strip())
    return df, 2


def _read_locations(path, known: set[str]) -> pd.DataFrame:
    """site_id, lat, lon (+ name, description where given) for nodes of the matrix."""
    p = check_file(path)
    df, first = _read_table(p)
    id_col = pick_column(df.columns, ID_NAMES)
    lat_col = pick_column(df.columns, LAT_NAMES)
    lon_col = pick_column(df.columns, LON_NAMES)
    if id_col is None and len(df.columns) == 3 and pd.to_numeric(pd.Series(df.columns), errors="coerce").notna().all():
        # PEMS-BAY's graph_sensor_locations_bay.csv has no header: id, lat, lon
        df = read_csv(p, header=None, names=["id", "lat", "lon"]).apply(lambda s: s.str.strip())
        id_col, lat_col, lon_col, first = "id", "lat", "lon", 1
    for col, want in ((id_col, "id"), (lat_col, "lat"), (lon_col, "lon")):
        if col is None:
            raise DataError(
                str(p),
                f"missing a {want!r} column (accepted names for it: "
                f"{dict(id=ID_NAMES, lat=LAT_NAMES, lon=LON_NAMES)[want]}); found {shown(list(df.columns))}",
                row=1,
                column=want,
            )
    ids = df[id_col]
    if (ids == "").any():
        raise DataError(
            str(p), "id is missing", row=first + int(np.flatnonzero((ids == "").to_numpy())[0]), column=id_col
        )
    lat = to_numbers(df[lat_col], p, lat_col, first)
    lon = to_numbers(df[lon_col], p, lon_col, first)
    check_range(lat, -90, 90, p, lat_col, first)
    check_range(lon, -180, 180, p, lon_col, first)
    check_known(ids, known, p, id_col, first, what="node (not a column of the matrix)")
    out = pd.DataFrame({"site_id": ids, "lat": lat, "lon": lon})
    for key, names in (("name", NAME_NAMES), ("description", DESCRIPTION_NAMES)):
        col = pick_column(df.columns, names)
        if col is not None:
            out[key] = df[col].where(df[col] != "", None)
    _reject_conflicts(out, "site_id", p, first, id_col)
    return out.drop_duplicates("site_id")


def _read_adjacency(path, known: set[str], order: list[str]) -> pd.DataFrame:
    """src, dst, weight (cost; 1.0 when the file has no weight column), kind='graph'.

    Besides an edge list with a header, a headerless N x N weight matrix (as T-GCN-style datasets
    publish it) is accepted when N is the number of nodes in `order` (the locations file's order,
    else the matrix's columns): row i, column j non-zero is an edge order[i] -> order[j].
    """
    p = check_file(path)
    df, first = _read_table(p)
    src_col = pick_column(df.columns, FROM_NAMES)
    dst_col = pick_column(df.columns, TO_NAMES)
    w_col = pick_column(df.columns, WEIGHT_NAMES)
    if (src_col is None or dst_col is None) and _looks_dense(df, len(order)):
        return _dense_adjacency(p, order)
    for col, want, names in ((src_col, "from", FROM_NAMES), (dst_col, "to", TO_NAMES)):
        if col is None:
            raise DataError(
                str(p),
                f"missing a {want!r} column (accepted names: {names}); found {shown(list(df.columns))} "
                f"(a weight matrix without a header must be {len(order)} x {len(order)}, one row and column "
                "per node)",
                row=1,
                column=want,
            )
    for col in (src_col, dst_col):
        empty = df[col] == ""
        if empty.any():
            raise DataError(
                str(p), "node id is missing", row=first + int(np.flatnonzero(empty.to_numpy())[0]), column=col
            )
        check_known(df[col], known, p, col, first, what="node (not a column of the matrix)")
    weight = to_numbers(df[w_col], p, w_col, first) if w_col else pd.Series(1.0, index=df.index)
    out = pd.DataFrame({"src": df[src_col], "dst": df[dst_col], "weight": weight.astype(float), "kind": "graph"})
    out = out.drop_duplicates()
    dup = out.duplicated(["src", "dst"])
    if dup.any():
        i = out.index[int(np.flatnonzero(dup.to_numpy())[0])]
        raise DataError(
            str(p),
            f"edge {out.loc[i, 'src']} -> {out.loc[i, 'dst']} is listed twice with different weights",
            row=first + int(i),
            column=w_col,
        )
    return out.reset_index(drop=True)


def _looks_dense(df: pd.DataFrame, n: int) -> bool:
    """The header row is numbers and the file is n rows (header included) by n columns."""
    header_numeric = pd.to_numeric(pd.Series(list(df.columns)), errors="coerce").notna().all()
    return bool(header_numeric) and df.shape == (n - 1, n)


def _dense_adjacency(p: Path, order: list[str]) -> pd.DataFrame:
    """Edges of a headerless N x N weight matrix (0 = no edge); every cell must be a number >= 0."""
    df = read_csv(p, header=None)
    values = np.empty(df.shape, dtype=float)
    for j in range(df.shape[1]):
        values[:, j] = to_numbers(df.iloc[:, j], p, order[j], 1).to_numpy(dtype=float)
    bad = values < 0
    if bad.any():
        r, c = (int(x[0]) for x in np.nonzero(bad))
        raise DataError(str(p), f"weight {shown(values[r, c])} is negative", row=r + 1, column=order[c])
    src, dst = np.nonzero(values)
    ids = np.asarray(order, dtype=object)
    return pd.DataFrame({"src": ids[src], "dst": ids[dst], "weight": values[src, dst], "kind": "graph"})


def _reject_conflicts(df: pd.DataFrame, key: str, p: Path, first: int, column: str) -> None:
    """Exact repeats are harmless; two different records for one id are an error (naming the second)."""
    distinct = df.drop_duplicates()
    dup = distinct.duplicated(key)
    if dup.any():
        i = distinct.index[int(np.flatnonzero(dup.to_numpy())[0])]
        raise DataError(
            str(p), f"{key} {shown(df.loc[i, key])} is listed twice with different values", row=first + int(i),
            column=column,
        )
