"""HDF5 matrices read with h5py, numbers only, so that opening a file can never run code in it.

pandas (through PyTables) stores object columns of a "fixed"-format frame as pickles and unpickles
them on read: a crafted `.h5` runs its code the moment `pd.read_hdf` or `HDFStore[key]` touches
it. So this module never hands a file to pandas/PyTables. It walks the file with h5py and reads
only numeric and fixed-width string datasets; a node holding Python objects (a PyTables VLARRAY,
any variable-length or compound type) is refused by name without its bytes being read. Attributes
PyTables pickled (an index's `freq`, say) are never decoded.

Layouts understood (what METR-LA and PEMS-BAY publish, and what `DataFrame.to_hdf` writes):

- a pandas fixed-format frame: group with `pandas_type='frame'`, `axis0` (columns), `axis1`
  (index: times or row numbers), and `block{i}_items` / `block{i}_values` per dtype block;
- a pandas fixed-format series: `pandas_type='series'`, `index` and `values`;
- a plain 2-D numeric dataset (no times), node ids from a 1-D `ids`/`node_ids`/... dataset.

pandas' "table" format keeps column names only in pickled attributes, so it is refused with a
note on how to write the file instead.
"""

from __future__ import annotations

import datetime
import re
from pathlib import Path

import numpy as np
import pandas as pd

from trafficcore.errors import DataError

#: dtype kinds read as values: floats, signed and unsigned integers.
NUMERIC = "fiu"
#: 1-D datasets whose entries name the columns of a plain 2-D dataset.
ID_DATASETS = ("ids", "node_ids", "sensor_ids", "columns", "nodes")


def read_frame(p: Path) -> pd.DataFrame:
    """The matrix as a frame: an index of times (or row numbers) and one float column per node."""
    import h5py

    try:
        with h5py.File(p, "r") as f:
            groups = _pandas_groups(f)
            if groups:
                return _pandas_frame(_pick(groups, p), p)
            return _plain_frame(f, p)
    except DataError:
        raise
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as e:
        raise DataError(str(p), f"cannot read HDF5 file: {_first_line(e)}") from None


# ---------------------------------------------------------------------------------------------- pandas layout
def _pandas_groups(f) -> dict[str, object]:
    import h5py

    found: dict[str, object] = {}

    def visit(name, obj):
        if isinstance(obj, h5py.Group) and "pandas_type" in obj.attrs:
            found["/" + name] = obj

    f.visititems(visit)
    return found


def _pick(groups: dict[str, object], p: Path):
    if "/df" in groups:
        return groups["/df"]
    if len(groups) == 1:
        return next(iter(groups.values()))
    raise DataError(str(p), f"HDF5 store holds several tables {sorted(groups)}; expected one named 'df'")


def _pandas_frame(g, p: Path) -> pd.DataFrame:
    import h5py

    kind = _text(g.attrs.get("pandas_type"))
    if kind not in ("frame", "series"):
        raise DataError(
            str(p),
            f"pandas layout {kind!r} is not supported; write the matrix with DataFrame.to_hdf(path, key='df', "
            "format='fixed')",
        )
    for node in g.values():  # refuse pickles before reading anything
        if isinstance(node, h5py.Dataset):
            _check_plain(node, p)
    if kind == "series":
        index = _axis(g["index"], p)
        values = _values(g["values"], p)
        name = _text(g.attrs.get("name"))
        name = "0" if name in ("", "N.") else name  # "N." is PyTables' pickle of None, seen but not loaded
        if values.ndim != 1 or len(values) != len(index):
            raise DataError(str(p), f"series values have shape {values.shape}, index has {len(index)} entries")
        return pd.DataFrame({name: values.astype(float)}, index=index)
    for axis in ("axis0", "axis1"):
        variety = _text(g.attrs.get(f"{axis}_variety", b"regular"))
        if variety != "regular":
            raise DataError(str(p), f"{axis} is a {variety} index (a MultiIndex?); expected one level")
    columns = _axis(g["axis0"], p)
    index = _axis(g["axis1"], p)
    if columns.has_duplicates:
        raise DataError(str(p), f"node column {str(columns[columns.duplicated()][0])!r} appears twice")
    values = np.full((len(index), len(columns)), np.nan)
    for i in range(int(g.attrs.get("nblocks", 0))):
        items = _axis(g[f"block{i}_items"], p)
        node = g[f"block{i}_values"]
        block = _values(node, p)
        if block.ndim != 2:
            raise DataError(str(p), f"node {node.name!r} is not a 2-D block")
        if not g[f"block{i}_values"].attrs.get("transposed", 0):
            block = block.T  # stored items x rows
        if block.shape != (len(index), len(items)):
            raise DataError(str(p), f"node {node.name!r} has shape {block.shape}, expected "
                                    f"{(len(index), len(items))}")
        pos = columns.get_indexer(items)
        if (pos < 0).any():
            raise DataError(str(p), f"node {node.name!r} holds column {str(items[pos < 0][0])!r}, not in axis0")
        values[:, pos] = block
    return pd.DataFrame(values, index=index, columns=[str(c) for c in columns])


def _check_plain(node, p: Path) -> None:
    """Refuse a dataset of Python objects (pickled), variable-length or compound entries, unread."""
    pickled = _text(node.attrs.get("CLASS")) == "VLARRAY" or "PSEUDOATOM" in node.attrs
    if pickled or node.dtype.kind not in NUMERIC + "S":
        raise DataError(
            str(p),
            f"node {node.name!r} holds Python objects or variable-length data (dtype {node.dtype}), which are "
            "never read because pandas stores them as pickles that could run code; save only numeric columns",
        )


def _values(node, p: Path) -> np.ndarray:
    value_type = _text(node.attrs.get("value_type"))
    if node.dtype.kind not in NUMERIC or value_type:
        what = value_type or str(node.dtype)
        raise DataError(str(p), f"node {node.name!r} holds {what} values, not numbers")
    return node[()]


def _axis(node, p: Path) -> pd.Index:
    """An index as pandas fixed format writes it: its `kind` attribute says how to read the numbers."""
    kind = _text(node.attrs.get("kind"))
    raw = node[()]
    if raw.ndim != 1:
        raise DataError(str(p), f"node {node.name!r} is not a 1-D index")
    if kind == "string" and raw.dtype.kind == "S":
        encoding = _text(node.parent.attrs.get("encoding")) or "UTF-8"
        try:
            return pd.Index([x.decode(encoding) for x in raw], dtype=object)
        except (UnicodeDecodeError, LookupError):
            raise DataError(str(p), f"node {node.name!r} holds names that are not {encoding} text") from None
    if kind in ("integer", "float") and raw.dtype.kind in NUMERIC:
        return pd.Index(raw)
    if kind.startswith("datetime64") and raw.dtype.kind == "i":
        unit = kind[len("datetime64[") : -1] if "[" in kind else "ns"
        if unit not in ("s", "ms", "us", "ns"):
            raise DataError(str(p), f"node {node.name!r}: unknown time unit {unit!r}")
        idx = pd.DatetimeIndex(raw.astype("int64").view(f"datetime64[{unit}]"))
        tz = _zone(_text(node.attrs.get("tz")), node, p)
        if tz is not None:  # pandas stores an aware index as UTC instants plus the zone
            try:
                idx = idx.tz_localize("UTC").tz_convert(tz)
            except (ValueError, KeyError) as e:
                raise DataError(str(p), f"node {node.name!r}: unknown time zone {tz!r} ({_first_line(e)})") from None
        return idx
    raise DataError(str(p), f"node {node.name!r} is an index of kind {kind or 'unknown'!r} ({raw.dtype}); "
                            "expected times, row numbers or names")


#: How PyTables pickles a fixed-offset zone (`datetime.timezone.utc` among them): read by pattern, never loaded.
_PICKLED_OFFSET = re.compile(r"^cdatetime\ntimezone\n.*?cdatetime\ntimedelta\n.*?\(I(-?\d+)\nI(-?\d+)\nI(-?\d+)\n",
                             re.DOTALL)


def _zone(tz: str, node, p: Path) -> str | datetime.timezone | None:
    """The index's zone: an IANA name as written, a pickled fixed offset recognised by its text, else an error."""
    if not tz:
        return None
    if "\n" not in tz:
        return tz
    m = _PICKLED_OFFSET.match(tz)
    if m is None:
        raise DataError(str(p), f"node {node.name!r}: the time zone is stored as a pickle, which is never loaded; "
                                "save the index in local time or with a named zone")
    days, seconds, micros = (int(x) for x in m.groups())
    return datetime.timezone(datetime.timedelta(days=days, seconds=seconds, microseconds=micros))


# ---------------------------------------------------------------------------------------------- plain layout
def _plain_frame(f, p: Path) -> pd.DataFrame:
    import h5py

    found: dict[str, h5py.Dataset] = {}
    f.visititems(lambda name, obj: found.__setitem__(name, obj) if isinstance(obj, h5py.Dataset) else None)
    matrices = {n: d for n, d in found.items() if d.ndim == 2 and d.dtype.kind in NUMERIC}
    if not matrices:
        raise DataError(str(p), f"no 2-D numeric dataset in the HDF5 file (found {sorted(found)[:20]})")
    if len(matrices) > 1:
        named = [n for n in matrices if n.split("/")[-1] in ("df", "data", "values")]
        if len(named) != 1:
            raise DataError(str(p), f"several 2-D datasets {sorted(matrices)[:20]}; expected one (or one named 'data')")
        matrices = {named[0]: matrices[named[0]]}
    name, dset = next(iter(matrices.items()))
    values = dset[()].astype(float)
    n = values.shape[1]
    if values.shape[0] == 0 or n == 0:
        raise DataError(str(p), f"dataset {name!r} is empty ({values.shape[0]} rows x {n} columns)")
    ids = [str(j) for j in range(n)]
    for cand in ID_DATASETS:
        d = found.get(cand)
        if d is not None and d.ndim == 1 and d.shape[0] == n and (d.dtype.kind in NUMERIC + "S" or
                                                                   h5py.check_string_dtype(d.dtype) is not None):
            ids = [x.decode() if isinstance(x, bytes) else str(x) for x in d[()]]
            break
    return pd.DataFrame(values, columns=[i.strip() for i in ids])


def _text(value) -> str:
    """An attribute as text: PyTables writes names as bytes; anything else (or nothing) as its str."""
    if value is None:
        return ""
    if isinstance(value, bytes | np.bytes_):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
