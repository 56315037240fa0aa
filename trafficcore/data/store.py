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
    """A handle on one DuckDB file. Cheap to create; opens a connection per call.

    `observations_parquet` (else ``TRAFFICCORE_OBSERVATIONS_PARQUET``): a hive-partitioned Parquet folder the
    observations of the datasets it holds are read from (`trafficcore.data.parquet`); observations are then
    read-only through this handle."""

    def __init__(self, path: str | os.PathLike | None = None, read_only: bool = False,
                 observations_parquet: str | os.PathLike | None = None):
        self.path = config.db_path(path)
        self.read_only = read_only
        self.observations_parquet = config.observations_parquet(observations_parquet)
        if not read_only:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise DataError(str(self.path), f"cannot create the store's folder: {e.strerror}") from None
            with self.connect(parquet=False) as con:
                for stmt in _ddl():
                    con.execute(stmt)
                _add_missing_columns(con)

    @contextmanager
    def connect(self, parquet: bool = True):
        """A connection; a file that is no usable store ends in one `DataError` naming it (exit 2 in the CLI).
        With an observations Parquet folder, `observations` is the view over it (`parquet=False`: the table)."""
        read_only = self.read_only and self.path.exists()
        con = _connect_retrying(str(self.path), read_only)
        try:
            if parquet and self.observations_parquet is not None:
                from trafficcore.data.parquet import attach_view

                attach_view(con, self.observations_parquet)
            yield con
        except duckdb.IOException as e:  # a truncated file can open and fail on the first read
            if "lock" in str(e).lower():
                raise
            raise _not_a_store(str(self.path), e) from None
        except (duckdb.CatalogException, duckdb.BinderException) as e:
            text = str(e).lower()
            if self.observations_parquet is None or not any(w in text for w in _WRITE_TO_VIEW):
                raise
            raise DataError(str(self.observations_parquet), _READ_ONLY_OBSERVATIONS) from None
        finally:
            con.close()

    def parquet_datasets(self) -> list[str]:
        """Datasets whose observations this handle reads from the Parquet folder (none without one)."""
        if self.observations_parquet is None:
            return []
        from trafficcore.data.parquet import parquet_datasets

        return parquet_datasets(self.observations_parquet)

    def export_parquet(self, dataset: str, folder: str | os.PathLike, row_group_rows: int | None = None) -> dict:
        """Copy one dataset's observations from the DuckDB table to a Parquet folder (`trafficcore.data.parquet`);
        reads the table itself, whatever this handle's Parquet setting."""
        from trafficcore.data.parquet import ROW_GROUP_ROWS, export_observations

        with self.connect(parquet=False) as con:
            if not con.execute("SELECT count(*) FROM datasets WHERE dataset = ?", [dataset]).fetchone()[0]:
                raise DataError(dataset, f"no such dataset in {self.path}")
            return export_observations(con, dataset, folder, row_group_rows or ROW_GROUP_ROWS)

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
    def ingest(self, dataset: str, tables: CanonicalTables,
               observation_chunks: Iterable[pd.DataFrame] | None = None) -> dict[str, int]:
        """Write one dataset's tables in a single transaction; returns rows written per table.

        Re-ingesting the same data changes nothing; rows whose keys already exist are replaced
        (an overlapping range upserts). Referential checks run against what is already stored,
        so a later file may add observations for detectors imported earlier.

        `observation_chunks`: the observations as a sequence of frames instead of one (a region of
        thousands of detectors: 22 million readings as one frame cost several GB). Each chunk gets the
        same checks and is written in the same transaction, after the other tables; a bad chunk rolls
        everything back. `tables.observations` must then be empty.
        """
        check_dataset_name(dataset)
        if self.observations_parquet is not None:
            raise DataError(str(self.observations_parquet), _READ_ONLY_OBSERVATIONS)
        frames = {t: tables.normalised(t) for t in LOADED_TABLES}
        if observation_chunks is not None and not frames["observations"].empty:
            raise ValueError("give the observations either in `tables` or as `observation_chunks`, not both")
        known_sites = set(self._column(dataset, "sites", "site_id"))
        known_detectors = set(self._column(dataset, "detectors", "detector_id"))
        check_tables(frames, known_sites, known_detectors)
        info = tables.info
        stored = self._stored_range(dataset)
        measure_of = self._measures(dataset, frames["detectors"], info)
        _check_readings(frames["observations"], measure_of, info, stored, dataset)
        counts: dict[str, int] = {}
        with self.transaction() as con:
            con.execute("DELETE FROM datasets WHERE dataset = ?", [dataset])
            con.execute(
                "INSERT INTO datasets VALUES (?, ?, ?, ?, ?, ?, ?)",
                [dataset, info.synthetic, info.source, info.timezone, info.interval_s, info.measure, info.description],
            )
            for table, df in frames.items():
                counts[table] = _upsert(con, table, dataset, df)
            if observation_chunks is not None:
                counts["observations"] = _write_chunks(con, dataset, observation_chunks, frames, info, stored,
                                                       known_detectors, measure_of)
        return counts

    def _stored_range(self, dataset: str) -> tuple | None:
        """(first, newest) reading already stored for the dataset (None without a store file)."""
        if not self.path.exists():
            return None
        with self.connect() as con:
            return con.execute("SELECT min(ts), max(ts) FROM observations WHERE dataset = ?", [dataset]).fetchone()

    def _measures(self, dataset: str, detectors: pd.DataFrame, info) -> dict:
        """detector_id -> measure, of the stored detectors and the incoming ones (these win)."""
        measure_of: dict = {}
        if self.path.exists():
            with self.connect() as con:
                measure_of = dict(con.execute("SELECT detector_id, measure FROM detectors WHERE dataset = ?",
                                              [dataset]).fetchall())
        measure_of.update(zip(detectors["detector_id"], detectors["measure"].fillna(info.measure), strict=True))
        return measure_of

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


#: DuckDB's words for a write into a view (what `observations` is with a Parquet folder).
_WRITE_TO_VIEW = ("is not an table", "is not a table", "base table")
_READ_ONLY_OBSERVATIONS = (
    "observations are read from this Parquet folder (--observations-parquet / TRAFFICCORE_OBSERVATIONS_PARQUET), "
    "so they cannot be written here: import or ingest into the DuckDB store without that setting, then "
    "`trafficcore export parquet`"
)


def _write_chunks(con: duckdb.DuckDBPyConnection, dataset: str, chunks: Iterable[pd.DataFrame], frames: dict,
                  info, stored: tuple | None, known_detectors: set, measure_of: dict) -> int:
    """Check and write observation chunks inside the caller's transaction; returns rows written.

    Chunks hold disjoint sets of detectors (checked), so keys unique within each chunk are unique across
    them. A dataset with no stored readings takes plain inserts; otherwise the chunks are staged and
    replace the stored rows with their keys in one delete, so the cost stays linear in the readings
    rather than one scan of the growing table per chunk.
    """
    detectors = known_detectors | set(frames["detectors"]["detector_id"])
    empty = {t: df.iloc[:0] for t, df in frames.items()}
    fresh = stored is None or stored[0] is None or pd.isna(stored[0])
    target = "observations" if fresh else "_staged_observations"
    if not fresh:
        con.execute(f"CREATE TEMP TABLE {target} AS SELECT * FROM observations LIMIT 0")
    seen_span, seen_ids, n = stored, set(), 0
    for chunk in chunks:
        obs = CanonicalTables(info, observations=chunk).normalised("observations")
        check_tables({**empty, "observations": obs}, set(), detectors)
        _check_readings(obs, measure_of, info, seen_span, dataset)
        ids = set(obs["detector_id"].unique())
        again = ids & seen_ids
        if again:
            raise DataError("<observations>", f"detector {sorted(again)[0]!r} appears in more than one chunk")
        seen_ids |= ids
        n += _insert(con, target, dataset, obs)
        seen_span = _widened(seen_span, obs["ts"])  # later chunks are checked against this one too
    if not fresh:
        keys = " AND ".join(f"t.{k} = i.{k}" for k in KEYS["observations"])
        cols = ", ".join(COLUMNS["observations"])
        con.execute(f"DELETE FROM observations t WHERE EXISTS (SELECT 1 FROM {target} i WHERE {keys})")
        con.execute(f"INSERT INTO observations ({cols}) SELECT {cols} FROM {target}")
        con.execute(f"DROP TABLE {target}")
    return n


def _insert(con: duckdb.DuckDBPyConnection, table: str, dataset: str, df: pd.DataFrame) -> int:
    """Append a frame of a `COLUMNS` table's columns (without `dataset`) to `table`."""
    df = df.copy()
    df.insert(0, "dataset", dataset)
    con.register("_incoming", df)
    try:
        cols = ", ".join(df.columns)
        con.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM _incoming")
    finally:
        with suppress(duckdb.Error):
            con.unregister("_incoming")
    return len(df)


def _widened(span: tuple | None, ts: pd.Series) -> tuple | None:
    """The (first, newest) span of `span` and the times `ts` together."""
    if ts.empty:
        return span
    lo, hi = ts.min(), ts.max()
    if span is not None and span[0] is not None and not pd.isna(span[0]):
        lo, hi = min(lo, pd.Timestamp(span[0])), max(hi, pd.Timestamp(span[1]))
    return lo, hi


def _check_readings(obs: pd.DataFrame, measure_of: dict, info, stored: tuple | None, dataset: str) -> None:
    """Plausibility of incoming readings, also against those already stored (`validate.check_readings`)."""
    if not obs.empty:
        check_readings(obs, measure_of, int(info.interval_s), stored, info.source or "<observations>", dataset)


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
