"""The embedded DuckDB store: one file, several datasets side by side, all-or-nothing ingest.

Why delete-then-insert rather than DuckDB primary keys: an upsert of millions of observations
through an ART index costs several times the memory and time of a keyed delete followed by a
bulk insert, and the loaders already guarantee keys are unique within a load (conflicting
duplicates are rejected there). Both statements run inside one transaction, so a failure leaves
the store exactly as it was.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

import duckdb
import pandas as pd

from trafficcore import config
from trafficcore.data.schema import COLUMNS, KEYS, LOADED_TABLES, CanonicalTables
from trafficcore.data.validate import check_dataset_name, check_readings, check_tables
from trafficcore.errors import DataError


class Store:
    """A handle on one DuckDB file. Cheap to create; opens a connection per call."""

    def __init__(self, path: str | os.PathLike | None = None, read_only: bool = False):
        self.path = config.db_path(path)
        self.read_only = read_only
        if not read_only:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise DataError(str(self.path), f"cannot create the store's folder: {e.strerror}") from None
            with self.connect() as con:
                for stmt in _ddl():
                    con.execute(stmt)
                _add_missing_columns(con)

    @contextmanager
    def connect(self):
        """A connection; a file that is no usable store ends in one `DataError` naming it (exit 2 in the CLI)."""
        read_only = self.read_only and self.path.exists()
        con = _connect_retrying(str(self.path), read_only)
        try:
            yield con
        except duckdb.IOException as e:  # a truncated file can open and fail on the first read
            if "lock" in str(e).lower():
                raise
            raise _not_a_store(str(self.path), e) from None
        finally:
            con.close()

    @contextmanager
    def transaction(self):
        """A connection inside BEGIN ... COMMIT; any error rolls everything back (all-or-nothing writes)."""
        with self.connect() as con:
            con.execute("BEGIN TRANSACTION")
            try:
                yield con
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise

    @contextmanager
    def held(self):
        """Keep one connection open for the duration of the block.

        Why: opening the file when no connection is open costs tens of milliseconds (catalog and write-ahead log
        are read again), and a page refresh makes a dozen short connections; while one stays open, DuckDB reuses
        the open database and each costs about a millisecond. Other processes wait for the file meanwhile (the
        store retries), so hold it for one refresh, not longer.
        """
        con = _connect_retrying(str(self.path), self.read_only and self.path.exists())
        try:
            yield self
        finally:
            con.close()

    # ------------------------------------------------------------------ writing
    def ingest(self, dataset: str, tables: CanonicalTables) -> dict[str, int]:
        """Write one dataset's tables in a single transaction; returns rows written per table.

        Re-ingesting the same data changes nothing; rows whose keys already exist are replaced
        (an overlapping range upserts). Referential checks run against what is already stored,
        so a later file may add observations for detectors imported earlier.
        """
        check_dataset_name(dataset)
        frames = {t: tables.normalised(t) for t in LOADED_TABLES}
        known_sites = set(self._column(dataset, "sites", "site_id"))
        known_detectors = set(self._column(dataset, "detectors", "detector_id"))
        check_tables(frames, known_sites, known_detectors)
        info = tables.info
        self._check_readings(dataset, frames, info)
        counts: dict[str, int] = {}
        with self.transaction() as con:
            con.execute("DELETE FROM datasets WHERE dataset = ?", [dataset])
            con.execute(
                "INSERT INTO datasets VALUES (?, ?, ?, ?, ?, ?, ?)",
                [dataset, info.synthetic, info.source, info.timezone, info.interval_s, info.measure, info.description],
            )
            for table, df in frames.items():
                counts[table] = _upsert(con, table, dataset, df)
        return counts

    def _check_readings(self, dataset: str, frames: dict[str, pd.DataFrame], info) -> None:
        """Plausibility of the incoming readings, also against those already stored (`check_readings`)."""
        obs = frames["observations"]
        if obs.empty:
            return
        measure_of: dict = {}
        stored = None
        if self.path.exists():
            with self.connect() as con:
                measure_of = dict(con.execute("SELECT detector_id, measure FROM detectors WHERE dataset = ?",
                                              [dataset]).fetchall())
                stored = con.execute("SELECT min(ts), max(ts) FROM observations WHERE dataset = ?",
                                     [dataset]).fetchone()
        det = frames["detectors"]
        measure_of.update(zip(det["detector_id"], det["measure"].fillna(info.measure), strict=True))
        check_readings(obs, measure_of, int(info.interval_s), stored, info.source or "<observations>", dataset)

    def write_frame(self, table: str, df: pd.DataFrame, dataset: str | None = None) -> int:
        """Upsert rows into a product table (`forecasts`, `model_runs`) in one transaction."""
        with self.transaction() as con:
            return _upsert(con, table, dataset, df)

    def drop_dataset(self, dataset: str) -> None:
        """Remove every row of a dataset (all tables), atomically."""
        with self.transaction() as con:
            for table in COLUMNS:
                if "dataset" in COLUMNS[table]:
                    con.execute(f"DELETE FROM {table} WHERE dataset = ?", [dataset])

    # ------------------------------------------------------------------ reading
    def query(self, sql: str, params: Sequence | None = None) -> pd.DataFrame:
        with self.connect() as con:
            return con.execute(sql, params or []).df()

    def dataset_names(self) -> list[str]:
        return list(self.query("SELECT dataset FROM datasets ORDER BY dataset")["dataset"])

    def dataset_info(self, dataset: str) -> dict:
        df = self.query("SELECT * FROM datasets WHERE dataset = ?", [dataset])
        if df.empty:
            raise KeyError(f"no dataset named {dataset!r} in {self.path}")
        return df.iloc[0].to_dict()

    def datasets(self) -> list[dict]:
        """One summary per dataset: name, sites, detectors, observations, start, end, interval_s, synthetic."""
        df = self.query(
            """
            SELECT d.dataset AS name,
                   (SELECT count(*) FROM sites s WHERE s.dataset = d.dataset) AS sites,
                   (SELECT count(*) FROM detectors x WHERE x.dataset = d.dataset) AS detectors,
                   (SELECT count(*) FROM observations o WHERE o.dataset = d.dataset) AS observations,
                   (SELECT min(ts) FROM observations o WHERE o.dataset = d.dataset) AS start,
                   (SELECT max(ts) FROM observations o WHERE o.dataset = d.dataset) AS "end",
                   d.interval_s, d.synthetic, d.timezone, d.source
            FROM datasets d ORDER BY d.dataset
            """
        )
        out = []
        for row in df.to_dict("records"):
            for k in ("start", "end"):
                row[k] = None if pd.isna(row[k]) else pd.Timestamp(row[k]).isoformat()
            for k in ("sites", "detectors", "observations", "interval_s"):
                row[k] = int(row[k])
            row["synthetic"] = bool(row["synthetic"])
            out.append(row)
        return out

    def sites(self, dataset: str) -> pd.DataFrame:
        return self.query("SELECT * EXCLUDE (dataset) FROM sites WHERE dataset = ? ORDER BY site_id", [dataset])

    def detectors(self, dataset: str) -> pd.DataFrame:
        return self.query(
            "SELECT * EXCLUDE (dataset) FROM detectors WHERE dataset = ? ORDER BY site_id, detector_id", [dataset]
        )

    def sites_gdf(self, dataset: str):
        """Sites as a GeoDataFrame (EPSG:4326): segment lines where the source has them, else points."""
        import geopandas as gpd
        from shapely import wkt

        df = self.sites(dataset)
        geom = [
            wkt.loads(w) if isinstance(w, str) and w else gpd.points_from_xy([lo], [la])[0]
            for w, la, lo in zip(df["geometry_wkt"], df["lat"], df["lon"], strict=True)
        ]
        return gpd.GeoDataFrame(df.drop(columns=["geometry_wkt"]), geometry=geom, crs="EPSG:4326")

    def detectors_gdf(self, dataset: str):
        """Detectors as a GeoDataFrame of points (their own position, else their site's)."""
        import geopandas as gpd

        df = self.query(
            """SELECT d.* EXCLUDE (dataset, lat, lon), coalesce(d.lat, s.lat) AS lat, coalesce(d.lon, s.lon) AS lon
               FROM detectors d LEFT JOIN sites s ON s.dataset = d.dataset AND s.site_id = d.site_id
               WHERE d.dataset = ? ORDER BY d.site_id, d.detector_id""",
            [dataset],
        )
        return gpd.GeoDataFrame(df, geometry=gpd.points_from_xy(df["lon"], df["lat"]), crs="EPSG:4326")

    def observations(
        self,
        dataset: str,
        detector_ids: Iterable[str] | None = None,
        start: str | pd.Timestamp | None = None,
        end: str | pd.Timestamp | None = None,
    ) -> pd.DataFrame:
        """Long observations (detector_id, ts, value) for detectors in [start, end), sorted."""
        sql = "SELECT detector_id, ts, value FROM observations WHERE dataset = ?"
        params: list = [dataset]
        if detector_ids is not None:
            ids = list(detector_ids)
            if not ids:
                return pd.DataFrame({"detector_id": [], "ts": pd.Series(dtype="datetime64[ns]"), "value": []})
            sql += " AND detector_id IN (SELECT unnest(?))"
            params.append(ids)
        if start is not None:
            sql += " AND ts >= ?"
            params.append(pd.Timestamp(start).to_pydatetime())
        if end is not None:
            sql += " AND ts < ?"
            params.append(pd.Timestamp(end).to_pydatetime())
        return self.query(sql + " ORDER BY detector_id, ts", params)

    def events(self, dataset: str) -> pd.DataFrame:
        return self.query("SELECT * EXCLUDE (dataset) FROM events WHERE dataset = ? ORDER BY start_ts", [dataset])

    def weather(self, dataset: str) -> pd.DataFrame:
        return self.query("SELECT * EXCLUDE (dataset) FROM weather WHERE dataset = ? ORDER BY ts", [dataset])

    def adjacency(self, dataset: str) -> pd.DataFrame:
        return self.query("SELECT * EXCLUDE (dataset) FROM adjacency WHERE dataset = ?", [dataset])

    def _column(self, dataset: str, table: str, column: str) -> list:
        if not Path(self.path).exists():
            return []
        return list(self.query(f"SELECT {column} FROM {table} WHERE dataset = ?", [dataset])[column])


#: Seconds to keep retrying when another process holds the file's lock; override with TRAFFICCORE_DB_LOCK_WAIT_S.
LOCK_WAIT_S = 10.0


def _connect_retrying(path: str, read_only: bool) -> duckdb.DuckDBPyConnection:
    """`duckdb.connect`, retried with backoff while another process holds the file's lock.

    DuckDB lets one process at a time open a file for writing; the API server, a watcher and the
    dashboard each open short-lived connections, so a conflict usually clears within milliseconds.
    After the wait runs out the lock error is raised as it came, naming the process holding it.
    """
    import time

    wait = float(os.environ.get("TRAFFICCORE_DB_LOCK_WAIT_S", LOCK_WAIT_S))
    deadline = time.monotonic() + wait
    delay = 0.01
    while True:
        try:
            return open_duckdb(path, read_only)
        except duckdb.IOException as e:
            left = deadline - time.monotonic()
            if "lock" not in str(e).lower():
                raise _not_a_store(path, e) from None
            if left <= 0:
                raise
            time.sleep(min(delay, left))  # the last try comes when the wait is up, not a backoff step early
            delay = min(delay * 2, 0.5)


#: Never load or download DuckDB extensions: handed a SQLite (or Parquet, CSV...) file, DuckDB would
#: otherwise try to fetch a scanner from the internet to open it. A store is a plain DuckDB file.
_CONFIG = {"autoload_known_extensions": False, "autoinstall_known_extensions": False}


def open_duckdb(path: str | os.PathLike, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """A raw connection with the store's configuration: DuckDB refuses a second connection to an open
    file with a different one, so every connection in the process must be made here."""
    return duckdb.connect(str(path), read_only=read_only, config=dict(_CONFIG))


def _not_a_store(path: str, err: Exception) -> DataError:
    """One clear line for a `--db` that cannot be opened as a store (not DuckDB, truncated, a folder...)."""
    p = Path(path)
    text = str(err)
    if p.is_dir():
        why = "is a folder, expected a DuckDB store file"
    elif p.exists() and p.stat().st_size == 0:
        why = "is an empty file, not a DuckDB store (delete it to start a new store)"
    elif "sqlite" in text.lower():
        why = "is a SQLite database, not a DuckDB store"
    elif "not a valid DuckDB database" in text:
        why = "is not a DuckDB store"
    elif "read enough bytes" in text or "corrupt" in text.lower():
        why = "is truncated or damaged (restore it from a backup)"
    elif "permission" in text.lower() or "read-only" in text.lower():
        why = "cannot be written (read-only file or folder)"
    else:
        why = f"cannot be opened as a DuckDB store ({text.splitlines()[0] if text else type(err).__name__})"
    return DataError(str(path), why)


def _ddl() -> list[str]:
    """Tables without PRIMARY KEY constraints (see module docstring); keys live in schema.KEYS."""
    out = []
    for table, cols in COLUMNS.items():
        body = ", ".join(f"{c} {t}" for c, t in cols.items())
        out.append(f"CREATE TABLE IF NOT EXISTS {table} ({body})")
    return out


def _add_missing_columns(con: duckdb.DuckDBPyConnection) -> None:
    """Columns added to the schema later are added to an older store's tables (nullable: old rows stay valid)."""
    have = set(con.execute("SELECT table_name, column_name FROM information_schema.columns").fetchall())
    for table, cols in COLUMNS.items():
        for c, t in cols.items():
            if (table, c) not in have:
                con.execute(f"ALTER TABLE {table} ADD COLUMN {c} {t}")


def _upsert(con: duckdb.DuckDBPyConnection, table: str, dataset: str | None, df: pd.DataFrame) -> int:
    """Replace rows with the same key, then insert; runs inside the caller's transaction."""
    if df.empty:
        return 0
    df = df.copy()
    if "dataset" in COLUMNS[table] and dataset is not None:
        df.insert(0, "dataset", dataset)
    for c in COLUMNS[table]:  # columns added to the schema later are optional for older writers
        if c not in df.columns and c not in KEYS[table]:
            df[c] = None
    df = df[list(COLUMNS[table])]
    con.register("_incoming", df)
    try:
        keys = KEYS[table]
        cond = " AND ".join(f"t.{k} = i.{k}" for k in keys)
        con.execute(f"DELETE FROM {table} t WHERE EXISTS (SELECT 1 FROM _incoming i WHERE {cond})")
        cols = ", ".join(COLUMNS[table])
        con.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM _incoming")
    finally:
        with suppress(duckdb.Error):  # an aborted transaction refuses this too; the first error is the one to report
            con.unregister("_incoming")
    return len(df)
