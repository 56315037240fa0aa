"""Live accuracy: the served forecasts scored against the readings that arrive after them.

A forecast served live (`forecasts` rows of run `live:<model>`) can be scored once its target
interval has a reading. Both halves arrive in pieces (a batch of readings, a refresh of forecasts,
late readings, a re-issued forecast), so scoring is incremental and idempotent: whatever touched
detectors D over target times [t0, t1] recomputes the accuracy buckets of D over the hours
covering [t0, t1] from what is stored, and replaces them. Repeating it changes nothing; a late or
corrected reading, or a forecast issued after its target was already observed, simply recomputes
its hour.

A bucket (table `forecast_accuracy`, one schema: `trafficcore.data.schema`) holds, per live run,
detector, horizon and hour of target time, the additive error sums of
`trafficcore.evaluation.metrics.error_terms` (count, sum |y - P50|, sum |y|, readings inside
P10-P90). Any window, site, horizon or hour-of-day breakdown is then a sum over rows, turned into
MAE, WAPE and coverage by `metrics.from_sums`: the same definitions the benchmark uses, and a page
view reads a few thousand rows instead of re-joining forecasts with readings.

Callers: `trafficcore.live.ingest.ingest_observations` (after each committed batch, so the API, the
folder watcher and replay all score) and `refresh_forecasts` (a forecast whose target is already
observed). `rescore` rebuilds a dataset's buckets from scratch (a store from before this table).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from trafficcore.data.schema import COLUMNS
from trafficcore.data.store import Store
from trafficcore.evaluation.metrics import ERROR_SUMS, error_terms, from_sums

log = logging.getLogger(__name__)

TABLE = "forecast_accuracy"
LIVE_PREFIX = "live:"
#: The rolling windows the Live page, the Model report and `trafficcore monitor` show, in hours.
WINDOWS = {"24h": 24, "7d": 168}
#: What `accuracy(by=...)` may group by: bucket columns, and the hour of day of the target.
GROUPS = ("run_id", "horizon_min", "site_id", "detector_id", "hour_of_day", "hour_ts")
BUCKET_KEY = ["run_id", "detector_id", "site_id", "horizon_min", "hour_ts"]
METRIC_COLUMNS = ["n", "mae", "wape", "coverage_p10_p90"]


def _floor_hour(ts) -> pd.Timestamp:
    return pd.Timestamp(ts).floor("h")


def _df(store: Store, con, sql: str, params: list) -> pd.DataFrame:
    """A query on `con` when given (a page reading several views at once opens one connection), else the store's."""
    return store.query(sql, params) if con is None else con.execute(sql, params).df()


# ------------------------------------------------------------------------------------------ scoring
def score(store: Store, dataset: str, detector_ids=None, first_ts=None, last_ts=None, con=None) -> int:
    """Recompute the accuracy buckets of `detector_ids` (all when None) over the hours covering target times
    [first_ts, last_ts] (all when None); returns the number of scored (forecast, reading) pairs in them.

    One transaction: the buckets' rows are deleted and the recomputed ones inserted together.
    """
    if con is None:
        from trafficcore.live.ingest import write_lock

        with write_lock(store), store.connect() as own:
            return score(store, dataset, detector_ids, first_ts, last_ts, own)
    where, params = ["f.dataset = $1", "f.run_id LIKE 'live:%'"], [dataset]
    bucket_where, bucket_params = ["dataset = ?"], [dataset]
    if first_ts is not None:
        lo = _floor_hour(first_ts).to_pydatetime()
        where.append(f"f.target_ts >= ${len(params) + 1}")
        params.append(lo)
        bucket_where.append("hour_ts >= ?")
        bucket_params.append(lo)
    if last_ts is not None:
        hi = (_floor_hour(last_ts) + pd.Timedelta(hours=1)).to_pydatetime()
        where.append(f"f.target_ts < ${len(params) + 1}")
        params.append(hi)
        bucket_where.append("hour_ts < ?")
        bucket_params.append(hi)
    dets = None if detector_ids is None else pd.DataFrame({"detector_id": list(dict.fromkeys(map(str,
                                                                                              detector_ids)))})
    if dets is not None:
        if dets.empty:
            return 0
        con.register("_scored_dets", dets)
        where.append("f.detector_id IN (SELECT detector_id FROM _scored_dets)")
        bucket_where.append("detector_id IN (SELECT detector_id FROM _scored_dets)")
    try:
        pairs = con.execute(
            f"""SELECT f.run_id, f.detector_id, d.site_id, f.horizon_min, f.target_ts, f.p10, f.p50, f.p90,
                       o.value
                FROM forecasts f
                JOIN observations o ON o.dataset = f.dataset AND o.detector_id = f.detector_id AND o.ts = f.target_ts
                LEFT JOIN detectors d ON d.dataset = f.dataset AND d.detector_id = f.detector_id
                WHERE {' AND '.join(where)}""",
            params,
        ).df()
        buckets = _buckets(pairs)
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute(f"DELETE FROM {TABLE} WHERE {' AND '.join(bucket_where)}", bucket_params)
            if len(buckets):
                buckets.insert(0, "dataset", dataset)
                buckets["scored_at"] = datetime.now(UTC).replace(tzinfo=None)
                con.register("_buckets", buckets[list(COLUMNS[TABLE])])
                con.execute(f"INSERT INTO {TABLE} SELECT * FROM _buckets")
                con.unregister("_buckets")
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    finally:
        if dets is not None:
            con.unregister("_scored_dets")
    return int(buckets["n"].sum()) if len(buckets) else 0


def _buckets(pairs: pd.DataFrame) -> pd.DataFrame:
    """Scored pairs summed per (run, detector, site, horizon, target hour)."""
    if pairs.empty:
        return pd.DataFrame(columns=[*BUCKET_KEY, *ERROR_SUMS])
    terms = error_terms(pairs["value"], pairs["p10"], pairs["p50"], pairs["p90"])
    frame = pairs[["run_id", "detector_id", "site_id", "horizon_min"]].assign(
        site_id=pairs["site_id"].astype(object).where(pairs["site_id"].notna(), ""),
        hour_ts=pd.DatetimeIndex(pairs["target_ts"]).floor("h"), **terms)
    out = frame.groupby(BUCKET_KEY, sort=False, observed=True)[list(ERROR_SUMS)].sum().reset_index()
    out["site_id"] = out["site_id"].replace("", None)
    return out


def score_quietly(store: Store, dataset: str, detector_ids=None, first_ts=None, last_ts=None,
                  con=None) -> int | None:
    """`score`, with a failure logged instead of raised: the readings or forecasts that triggered it are
    already committed, and a later batch or `rescore` recomputes the same buckets. `con`: the caller's
    connection (it then holds the store's write lock)."""
    try:
        return score(store, dataset, detector_ids, first_ts, last_ts, con=con)
    except Exception:  # noqa: BLE001 - scoring must never fail the ingest or refresh that called it
        log.exception("scoring served forecasts of %s failed", dataset)
        return None


def rescore(store: Store, dataset: str) -> int:
    """Rebuild every accuracy bucket of the dataset from its stored live forecasts and readings."""
    return score(store, dataset)


# ------------------------------------------------------------------------------------------ reading
def window_end(store: Store, dataset: str, end=None, con=None) -> pd.Timestamp | None:
    """The newest hour a window reaches: the hour of `end` (default: of the newest reading); None without readings."""
    if end is None:
        end = _df(store, con, "SELECT max(ts) AS t FROM observations WHERE dataset = ?", [dataset])["t"].iloc[0]
        if end is None or pd.isna(end):
            return None
    return _floor_hour(end)


def accuracy(store: Store, dataset: str, hours: int = 24, by=("run_id", "horizon_min"), end=None,
             run_id: str | None = None, con=None) -> pd.DataFrame:
    """MAE, WAPE and P10-P90 coverage of the served forecasts whose targets lie in the last `hours` hours up to
    `end` (default: the newest reading), grouped `by` any of GROUPS; columns `by` + n, mae, wape,
    coverage_p10_p90 (+ abs_err, abs_obs, inside, the sums). `run_id` limits it to one live run."""
    by = list(by)
    wrong = [g for g in by if g not in GROUPS]
    if wrong:
        raise ValueError(f"cannot group accuracy by {wrong}; choose from {list(GROUPS)}")
    last = window_end(store, dataset, end, con)
    cols = [*by, *METRIC_COLUMNS, "abs_err", "abs_obs", "inside"]
    if last is None:
        return pd.DataFrame(columns=cols)
    first = last - pd.Timedelta(hours=int(hours) - 1)
    select = ", ".join("hour(hour_ts) AS hour_of_day" if g == "hour_of_day" else g for g in by)
    where, params = "dataset = ? AND hour_ts BETWEEN ? AND ?", [dataset, first.to_pydatetime(), last.to_pydatetime()]
    if run_id is not None:
        where += " AND run_id = ?"
        params.append(run_id)
    sums = ", ".join(f"sum({c}) AS {c}" for c in ERROR_SUMS)
    group = f" GROUP BY {', '.join(by)} ORDER BY {', '.join(by)}" if by else ""
    df = _df(store, con, f"SELECT {select + ', ' if by else ''}{sums} FROM {TABLE} WHERE {where}{group}", params)
    df = df[df["n"].fillna(0) > 0].reset_index(drop=True)
    return with_rates(df)[cols]


def with_rates(df: pd.DataFrame) -> pd.DataFrame:
    """`df` (columns n, abs_err, abs_obs, inside) with mae, wape and coverage_p10_p90 added."""
    rates = from_sums(df["n"].to_numpy(float), df["abs_err"].to_numpy(float), df["abs_obs"].to_numpy(float),
                      df["inside"].to_numpy(float))
    out = df.assign(**rates)
    out["n"] = out["n"].astype(np.int64)
    out["inside"] = out["inside"].astype(np.int64)
    return out


def rolling(store: Store, dataset: str, run_id: str, window_hours: int = 24, span_hours: int = 24, end=None,
            horizons: list[int] | None = None, con=None) -> pd.DataFrame:
    """The run's accuracy over the trailing `window_hours`, evaluated at the end of each of the last `span_hours`
    hours up to `end`: columns hour_ts, hours_scored (hours of the window holding scored pairs), n, mae (mean over
    horizons of each horizon's MAE, as a model's recorded validation MAE is), coverage_p10_p90 (pooled)."""
    last = window_end(store, dataset, end, con)
    out_cols = ["hour_ts", "hours_scored", "n", "mae", "coverage_p10_p90"]
    if last is None:
        return pd.DataFrame(columns=out_cols)
    first = last - pd.Timedelta(hours=int(span_hours) + int(window_hours) - 2)
    df = _df(store, con,
             f"""SELECT hour_ts, horizon_min, sum(n) AS n, sum(abs_err) AS abs_err, sum(inside) AS inside FROM {TABLE}
                 WHERE dataset = ? AND run_id = ? AND hour_ts BETWEEN ? AND ? GROUP BY hour_ts, horizon_min""",
             [dataset, run_id, first.to_pydatetime(), last.to_pydatetime()])
    grid = pd.date_range(first, last, freq="h")
    hs = sorted(set(df["horizon_min"].astype(int))) if horizons is None else list(horizons)
    if df.empty or not hs:
        return pd.DataFrame({"hour_ts": grid[-int(span_hours):], "hours_scored": 0, "n": 0, "mae": np.nan,
                             "coverage_p10_p90": np.nan})[out_cols]

    hour = ((pd.DatetimeIndex(df["hour_ts"]) - first) // pd.Timedelta(hours=1)).to_numpy()
    col = pd.Index(hs).get_indexer(df["horizon_min"].astype(int))
    ok = (hour >= 0) & (hour < len(grid)) & (col >= 0)

    def table(name: str) -> np.ndarray:  # (hours, horizons) of the sums, zero where nothing was scored
        out = np.zeros((len(grid), len(hs)))
        np.add.at(out, (hour[ok], col[ok]), df[name].to_numpy(float)[ok])
        return out

    n, err, inside = table("n"), table("abs_err"), table("inside")
    w = int(window_hours)

    def trailing(a: np.ndarray) -> np.ndarray:
        c = np.cumsum(np.vstack([np.zeros((1, a.shape[1])), a]), axis=0)
        return c[w:] - c[:-w]

    n_w, err_w, in_w = trailing(n), trailing(err), trailing(inside)
    scored = trailing((n.sum(axis=1) > 0).astype(float)[:, None])[:, 0]
    per_h = from_sums(n_w, err_w, np.zeros_like(n_w), in_w)
    with np.errstate(invalid="ignore"):
        known = np.isfinite(per_h["mae"])
        mae = np.where(known.any(axis=1), np.nansum(np.where(known, per_h["mae"], 0), axis=1)
                       / np.maximum(known.sum(axis=1), 1), np.nan)
    pooled = from_sums(n_w.sum(axis=1), err_w.sum(axis=1), np.zeros(len(n_w)), in_w.sum(axis=1))
    return pd.DataFrame({"hour_ts": grid[w - 1:], "hours_scored": scored.astype(int), "n": n_w.sum(axis=1).astype(
        np.int64), "mae": mae, "coverage_p10_p90": pooled["coverage_p10_p90"]})[out_cols].reset_index(drop=True)


# ------------------------------------------------------------------------------------------ what it is compared with
def serving_run(store: Store, dataset: str, con=None) -> str | None:
    """The live run that issued the dataset's newest forecasts (`live:<model>`), or None."""
    row = _df(store, con, "SELECT arg_max(run_id, issued_at) AS r FROM forecasts WHERE dataset = ? "
                          "AND run_id LIKE 'live:%'", [dataset])
    r = row["r"].iloc[0] if len(row) else None
    return None if r is None or (not isinstance(r, str) and pd.isna(r)) else str(r)


def reference(store: Store, dataset: str, run_id: str | None) -> dict:
    """What a live run is held against: {"model", "display_name", "val_mae", "val": {h: mae}} of the model behind
    it, from the registry and saved configs (no model is loaded). `val_mae` is None when it recorded none."""
    from trafficcore.live import registry
    from trafficcore.live.serving import candidates

    out = {"run_id": run_id, "model": None, "display_name": None, "val_mae": None, "val": {}}
    if not run_id:
        return out
    name = run_id.removeprefix(LIVE_PREFIX)
    try:
        found = [c for c in candidates(store, dataset) if name in (c.run_id, c.name)]
    except KeyError:
        found = []
    metrics: dict = {}
    if found:
        c = found[0]
        out.update(model=c.name, display_name=c.display_name, val_mae=c.val_mae)
        metrics = c.metrics or {}
    else:  # a retired or rejected version: still in the registry
        try:
            row = registry.get(store, name)
        except registry.RegistryError:
            row = None
        if row is not None:
            from trafficcore.live.serving import val_mae

            metrics = row.get("metrics") or {}
            out.update(model=row.get("model"), display_name=row.get("model"), val_mae=val_mae(metrics))
    val = metrics.get("val") if isinstance(metrics, dict) else None
    if isinstance(val, dict):
        out["val"] = {str(h): float(v["mae"]) for h, v in val.items() if isinstance(v, dict)
                      and isinstance(v.get("mae"), (int, float)) and np.isfinite(v["mae"])}
    return out


# ------------------------------------------------------------------------------------------ one report
def _records(df: pd.DataFrame) -> list[dict]:
    from trafficcore.models.files import to_jsonable

    out = df.drop(columns=[c for c in ("abs_err", "abs_obs", "inside") if c in df.columns])
    recs = out.astype(object).where(out.notna(), None).to_dict("records")
    return to_jsonable([{k: (v.isoformat() if isinstance(v, pd.Timestamp) else v) for k, v in r.items()}
                        for r in recs])


def report(store: Store, dataset: str, end=None, top_sites: int = 10) -> dict:
    """Live accuracy of a dataset as plain data (what `trafficcore monitor --json` prints): per window (WINDOWS),
    by run, by run and horizon, the worst sites and by hour of day; the serving run and its reference MAE."""
    with store.connect() as con:
        last = window_end(store, dataset, end, con)
        run = serving_run(store, dataset, con)
        out: dict = {"dataset": dataset, "window_end_hour": None if last is None else last.isoformat(),
                     "serving_run": run, "reference": None, "windows": {}}
        for label, hours in WINDOWS.items():
            first = None if last is None else last - pd.Timedelta(hours=hours - 1)
            sites = accuracy(store, dataset, hours, ["site_id"], last, run_id=run, con=con)
            sites = sites.sort_values("mae", ascending=False, kind="stable").head(top_sites)
            out["windows"][label] = {
                "hours": hours, "first_hour": None if first is None else first.isoformat(),
                "by_run": _records(accuracy(store, dataset, hours, ["run_id"], last, con=con)),
                "by_horizon": _records(accuracy(store, dataset, hours, ["run_id", "horizon_min"], last, con=con)),
                "worst_sites": _records(sites),
                "by_hour_of_day": _records(accuracy(store, dataset, hours, ["hour_of_day"], last, run_id=run,
                                                    con=con)),
            }
    out["reference"] = reference(store, dataset, run)
    return out


def live_datasets(store: Store) -> list[str]:
    """Datasets with served forecasts scored (what `trafficcore monitor` without --dataset covers)."""
    return list(store.query(f"SELECT DISTINCT dataset FROM {TABLE} ORDER BY dataset")["dataset"])
