"""Importing files from the browser: which files each format needs, reading them, and errors in plain words.

The loaders read paths, so uploads are written to a private temporary folder under their own
file names; an error therefore names the file the user picked, not a temporary path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from trafficcore.data import validate
from trafficcore.data.schema import CanonicalTables
from trafficcore.errors import DataError
from trafficcore.ui.safe import md


@dataclass(frozen=True)
class FileRole:
    """One file a format reads: its argument name, a label, accepted extensions, and whether it is needed."""

    name: str
    label: str
    types: tuple[str, ...]
    required: bool = True
    help: str = ""


@dataclass(frozen=True)
class UploadFormat:
    """A loader as the import page offers it."""

    key: str
    label: str
    files: tuple[FileRole, ...]
    options: tuple[str, ...] = field(default_factory=tuple)
    note: str = ""


FORMATS: dict[str, UploadFormat] = {
    "long": UploadFormat(
        "long",
        "Generic long format (3 CSVs)",
        (
            FileRole("observations", "Observations CSV", ("csv",), help="detector_id, timestamp, value"),
            FileRole("sites", "Sites CSV", ("csv",), help="site_id, name, lat, lon [, description]"),
            FileRole("detectors", "Detectors CSV", ("csv",),
                     help="detector_id, site_id [, approach, lanes, measure ...]"),
        ),
        ("timezone", "interval"),
        "Any city can write this format; see docs/FORMATS.md.",
    ),
    "scats": UploadFormat(
        "scats",
        "VicRoads SCATS volume workbook",
        (
            FileRole("path", "SCATS workbook", ("xls", "xlsx", "csv"), help="sheet 'Data', V00..V95 counts"),
            FileRole("sites_listing", "Site listing (optional)", ("xls", "xlsx", "csv"), required=False,
                     help="VicRoads site listing, for intersection names"),
        ),
    ),
    "matrix": UploadFormat(
        "matrix",
        "Wide matrix (time x sensors; CSV or HDF5)",
        (
            FileRole("path", "Matrix file", ("csv", "h5", "hdf5"), help="rows = time, columns = sensor ids"),
            FileRole("locations", "Locations CSV (optional)", ("csv",), required=False, help="id, lat, lon"),
            FileRole("adjacency", "Adjacency CSV (optional)", ("csv",), required=False,
                     help="from, to, cost; or an N x N weight matrix without a header, in the locations order"),
        ),
        ("timezone", "interval", "start", "measure", "zero_is_missing"),
    ),
}

CLI_ONLY = {
    "citypulse": "The Aarhus CityPulse format is a folder of files; import it with "
    "`trafficcore import citypulse FOLDER --events EVENTS.csv --dataset aarhus`.",
}

#: Longest dataset name (the data layer's rule), for the name box.
NAME_MAX = validate.DATASET_NAME_MAX


def check_dataset_name(name: str, existing: list[str]) -> str | None:
    """None when `name` can be used; else a sentence saying what to change."""
    if not name:
        return "Give the dataset a name."
    try:
        validate.check_dataset_name(name)
    except DataError:
        return (f"A dataset name may use letters, digits, '-' and '_' only, starting with a letter or digit "
                f"(at most {validate.DATASET_NAME_MAX} characters).")
    if name in existing:
        return f"A dataset called '{name}' exists; importing adds to it and replaces readings it already has."
    return None


def safe_filename(name: str) -> str:
    """The last path part of an uploaded name, with characters a file system might reject replaced."""
    base = Path(str(name).replace("\\", "/")).name or "upload"
    return re.sub(r"[^A-Za-z0-9._ -]", "_", base)[:120]


def save_upload(name: str, data: bytes, folder: Path) -> Path:
    """Write uploaded bytes under their own (sanitised) name in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / safe_filename(name)
    path.write_bytes(data)
    return path


def load(fmt: str, files: dict[str, Path], options: dict | None = None) -> CanonicalTables:
    """Run the format's loader on saved files; bad input raises DataError (from the loader)."""
    options = {k: v for k, v in (options or {}).items() if v not in (None, "")}
    spec = FORMATS.get(fmt)
    if spec is None:
        raise ValueError(CLI_ONLY.get(fmt, f"unknown format {fmt!r}"))
    missing = [r.label for r in spec.files if r.required and r.name not in files]
    if missing:
        raise DataError(", ".join(missing), "this file is needed for the format; choose it above")
    kwargs = {r.name: files[r.name] for r in spec.files if r.name in files}
    kwargs.update({k: v for k, v in options.items() if k in spec.options})
    if fmt == "long":
        from trafficcore.data.loaders import long

        return long.load(**kwargs)
    if fmt == "scats":
        from trafficcore.data.loaders import scats

        return scats.load(**kwargs)
    from trafficcore.data.loaders import matrix

    return matrix.load(**kwargs)


def plain_error(err: Exception, names: dict[str, str] | None = None) -> str:
    """One readable sentence for an import problem, naming the user's file, row and column, as Markdown.

    The file name, column and message (which quotes the offending cell) are the user's text: escaped
    (`safe.md`), so a cell holding a Markdown link or an `<img>` is shown, not rendered.

    `names` maps saved paths back to the names the user uploaded. Anything that is not a
    DataError is an unexpected failure of a reader: its type is kept out of the message.
    """
    names = names or {}
    if isinstance(err, DataError):
        file = names.get(err.file, Path(err.file).name if err.file else "the file")
        where = [f"In **{md(file)}**"]
        if err.row is not None:
            where.append(f"row {err.row}")
        if err.column is not None:
            where.append(f"column '{md(err.column)}'")
        message = err.message
        for path, shown in names.items():
            message = message.replace(path, shown)
        return f"{', '.join(where)}: {md(message)}"
    text = str(err).strip().splitlines()[0] if str(err).strip() else "the file could not be read"
    for path, shown in names.items():
        text = text.replace(path, shown)
    return (f"The file could not be read in this format ({md(text[:300])}). Check that the format above matches "
            "the file.")


def summary(tables: CanonicalTables) -> pd.DataFrame:
    """What an import will write: rows per table and the time range, before anything is stored."""
    obs = tables.observations
    rows = [{"table": t, "rows": int(len(getattr(tables, t)))} for t in
            ("sites", "detectors", "observations", "events", "weather", "adjacency")]
    out = pd.DataFrame(rows)
    if len(obs):
        out.attrs["start"] = pd.Timestamp(obs["ts"].min())
        out.attrs["end"] = pd.Timestamp(obs["ts"].max())
    return out
