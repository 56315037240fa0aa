"""Observations in a hive-partitioned Parquet folder, read by the store as if they were its own table.

Why: a state network's history (tens of thousands of detectors, years of 15-minute readings) is best kept in
files that any engine reads (DuckDB, Spark, Polars, Arrow), partitioned so that a reader touches only what
it needs. The layout is the one `export_observations` writes:

    DIR/dataset=<name>/month=<YYYY-MM>/part-0.parquet    columns detector_id (string), ts (timestamp), value (double)

rows sorted by detector_id then ts inside each file, so that a read of some detectors skips the row groups
of the others (DuckDB pushes `detector_id` filters, and the join filters of `load_panel`, into the scan).
A `Store` given such a folder (`Store(..., observations_parquet=DIR)`, `--observations-parquet DIR` or
``TRAFFICCORE_OBSERVATIONS_PARQUET``) reads every dataset that has a `dataset=<name>` folder there from the
files, and every other dataset from its DuckDB table, through one temporary view named `observations`; the
rest of the product's SQL does not change. Observations are then read-only: imports and live ingest write
the DuckDB table, so they run on a store without the setting (and `export` moves the result to the files).
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import duckdb

from trafficcore.data.validate import check_dataset_name
from trafficcore.errors import DataError

#: Rows per Parquet row group: the unit a detector-filtered read skips (DuckDB's default).
ROW_GROUP_ROWS = 122_880
PREFIX = "dataset="


def parquet_datasets(folder: str | os.PathLike) -> list[str]:
    """Datasets with a `dataset=<name>` partition holding at least one Parquet file in `folder` (sorted).

    A partition whose name breaks the dataset naming rule is an error naming it: its name would be
    spliced into SQL and shown in the UI."""
    root = Path(folder)
    if not root.is_dir():
        raise DataError(str(root), "is not a folder of Parquet files (expected dataset=<name>/month=<YYYY-MM>/"
                                   "part-0.parquet inside)")
    out = []
    for p in sorted(root.iterdir()):
        if p.is_dir() and p.name.startswith(PREFIX):
            name = p.name[len(PREFIX):]
            check_dataset_name(name, where=str(p))
            if next(p.rglob("*.parquet"), None) is not None:
                out.append(name)
    return out


def _sql_text(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def observations_view_sql(folder: str | os.PathLike, catalog: str, datasets: list[str]) -> str:
    """The temporary view `observations`: the Parquet datasets from the files, the others from the table of
    the store's own catalog (named explicitly: inside a temporary view, `observations` is the view itself)."""
    table = f'"{catalog.replace(chr(34), chr(34) * 2)}".main.observations'
    if not datasets:
        return f"CREATE OR REPLACE TEMP VIEW observations AS SELECT dataset, detector_id, ts, value FROM {table}"
    glob = _sql_text(str(Path(folder).resolve() / f"{PREFIX}*" / "**" / "*.parquet"))
    names = ", ".join(_sql_text(d) for d in datasets)  # checked by check_dataset_name
    return (
        "CREATE OR REPLACE TEMP VIEW observations AS "
        "SELECT dataset, detector_id, CAST(ts AS TIMESTAMP) AS ts, CAST(value AS DOUBLE) AS value "
        f"FROM read_parquet({glob}, hive_partitioning = true, hive_types_autocast = false) "
        f"UNION ALL SELECT dataset, detector_id, ts, value FROM {table} WHERE dataset NOT IN ({names})"
    )


def attach_view(con: duckdb.DuckDBPyConnection, folder: str | os.PathLike) -> list[str]:
    """Create the `observations` view on this connection; returns the datasets read from the files."""
    datasets = parquet_datasets(folder)
    catalog = con.execute("SELECT current_database()").fetchone()[0]
    try:
        con.execute(observations_view_sql(folder, catalog, datasets))
    except duckdb.Error as e:
        raise DataError(str(folder), f"cannot be read as Parquet observations: {str(e).splitlines()[0]}") from None
    return datasets


def export_observations(con: duckdb.DuckDBPyConnection, dataset: str, folder: str | os.PathLike,
                        row_group_rows: int = ROW_GROUP_ROWS) -> dict:
    """Write one dataset's observations from the DuckDB table to `folder/dataset=<name>/month=.../part-0.parquet`.

    All or nothing: the files are written to a temporary folder beside the partition, which then replaces it
    (an earlier export of the dataset included). Returns rows, files and bytes written."""
    check_dataset_name(dataset)
    root = Path(folder)
    if root.exists() and not root.is_dir():
        raise DataError(str(root), "exists and is not a folder")
    root.mkdir(parents=True, exist_ok=True)
    catalog = con.execute("SELECT current_database()").fetchone()[0]
    table = f'"{catalog.replace(chr(34), chr(34) * 2)}".main.observations'
    n = con.execute(f"SELECT count(*) FROM {table} WHERE dataset = ?", [dataset]).fetchone()[0]
    if not n:
        raise DataError(dataset, "has no observations in the DuckDB store to export")
    final = root / f"{PREFIX}{dataset}"
    tmp = root / f".{PREFIX}{dataset}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        con.execute(
            f"COPY (SELECT detector_id, ts, value, strftime(ts, '%Y-%m') AS month FROM {table} "
            f"WHERE dataset = {_sql_text(dataset)} ORDER BY month, detector_id, ts) "
            f"TO {_sql_text(str(tmp))} (FORMAT parquet, PARTITION_BY (month), FILENAME_PATTERN 'part-{{i}}', "
            f"ROW_GROUP_SIZE {int(row_group_rows)})"
        )
        old = None
        if final.exists():
            old = root / f".{PREFIX}{dataset}.{uuid.uuid4().hex[:8]}.old"
            final.rename(old)
        tmp.rename(final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    files = sorted(final.rglob("*.parquet"))
    return {"dataset": dataset, "rows": int(n), "files": len(files), "bytes": sum(f.stat().st_size for f in files),
            "folder": str(final)}
