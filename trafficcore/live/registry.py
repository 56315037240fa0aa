"""The model registry: versions of a dataset's models in the store's `model_runs`, one promoted at a time.

Why in the store and not in a folder of files: the store is already the one place the dashboard, the API
and the commands agree on, and DuckDB gives the one thing a registry must guarantee: promoting a version
and demoting the previous one happen in one transaction, so a reader never sees two promoted models or
none halfway through a promotion.

A version is a `model_runs` row whose `path` is a saved model folder (config.json + safetensors). Rows that
`trafficcore forecast` writes (run ids starting with ``fc-``) record forecasts, not versions, and are left
out of listings. Columns the registry adds: `status` (candidate, rejected, promoted, retired, registered),
`parent_run_id` (the version a fine-tuned model started from), `train_end` (newest reading it learnt from)
and `promoted_at` (when it last became the promoted version).

Rollback re-promotes the version promoted most recently before the current one, and stamps it with a new
`promoted_at`; so a second rollback re-promotes the version just rolled back from: every rollback can be
undone by another.

Which version serves a dataset is decided in `trafficcore.live.serving`, from what `lookup` reads here.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path

import pandas as pd

from trafficcore.data.store import Store
from trafficcore.errors import TrafficCoreError
from trafficcore.models.files import to_jsonable

#: Run ids of forecast records (trafficcore.training.cli), which are not model versions.
FORECAST_PREFIX = "fc-"
STATUSES = ("registered", "candidate", "rejected", "promoted", "retired")


class RegistryError(TrafficCoreError):
    """A registry request that cannot be done as asked (unknown run, nothing to roll back to...)."""


def _now(con, dataset: str | None = None) -> pd.Timestamp:
    """Wall-clock now, strictly after every `promoted_at` of the dataset, so promotion order is never a tie."""
    now = pd.Timestamp.now().floor("us")
    if dataset is not None:
        last = con.execute("SELECT max(promoted_at) FROM model_runs WHERE dataset = ?", [dataset]).fetchone()[0]
        if last is not None and pd.Timestamp(last) >= now:
            now = pd.Timestamp(last) + pd.Timedelta(microseconds=1)
    return now


# ------------------------------------------------------------------------------ writing
def register(store: Store, dataset: str, model_name: str, path: str | Path | None, metrics: dict, config: dict,
             promote: bool = False, parent: str | None = None, *, train_end=None, status: str | None = None,
             run_id: str | None = None) -> str:
    """Record a model version and return its run id; with `promote`, it is promoted in the same transaction.

    `train_end` defaults to the `train_end` recorded in `config`, else in the saved model's config.json, if any.
    """
    if status is not None and status not in STATUSES:
        raise RegistryError(f"status must be one of {', '.join(STATUSES)}, not {status!r}")
    if path is not None and not (Path(path) / "config.json").exists():
        raise RegistryError(f"{path} is not a saved model folder (config.json is missing)")
    now = pd.Timestamp.now().floor("us")  # microseconds: versions registered in the same second still list in order
    run_id = run_id or f"{model_name}-{dataset}-{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    if train_end is None:
        train_end = (config or {}).get("train_end")
    if train_end is None and path is not None:  # the saved model's own metadata (LMForecaster records it)
        try:
            train_end = json.loads((Path(path) / "config.json").read_text()).get("train_end")
        except (OSError, ValueError):
            train_end = None
    row = {
        "run_id": run_id, "dataset": dataset, "model": model_name, "created_at": now,
        "path": None if path is None else str(Path(path).resolve()),
        "metrics_json": json.dumps(to_jsonable(metrics or {})), "config_json": json.dumps(to_jsonable(config or {})),
        "promoted": False, "parent_run_id": parent, "status": status or "registered",
        "train_end": None if train_end is None else pd.Timestamp(train_end).to_pydatetime(), "promoted_at": None,
    }
    with store.transaction() as con:
        if con.execute("SELECT 1 FROM model_runs WHERE run_id = ?", [run_id]).fetchone():
            raise RegistryError(f"run {run_id!r} is already registered")
        cols = list(row)
        con.execute(f"INSERT INTO model_runs ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                    [row[c] for c in cols])
        if promote:
            _promote(con, run_id)
    forget_lookups()
    return run_id


def promote(store: Store, run_id: str) -> dict:
    """Make `run_id` its dataset's only promoted version (one transaction); returns the promoted row."""
    with store.transaction() as con:
        _promote(con, run_id)
    forget_lookups()
    return get(store, run_id)


def _promote(con, run_id: str) -> None:
    found = con.execute("SELECT dataset, path FROM model_runs WHERE run_id = ?", [run_id]).fetchone()
    if found is None or run_id.startswith(FORECAST_PREFIX):
        raise RegistryError(f"no model version with run id {run_id!r} (see `trafficcore models list`)")
    dataset, path = found
    if not path or not (Path(path) / "config.json").exists():
        raise RegistryError(f"run {run_id!r} has no saved model folder ({path or 'no path recorded'}); "
                            "it cannot answer forecasts")
    at = _now(con, dataset)
    con.execute("UPDATE model_runs SET promoted = false, status = 'retired' "
                "WHERE dataset = ? AND promoted AND run_id <> ?", [dataset, run_id])
    con.execute("UPDATE model_runs SET promoted = true, status = 'promoted', promoted_at = ? WHERE run_id = ?",
                [at.to_pydatetime(), run_id])


def rollback(store: Store, dataset: str) -> dict:
    """Re-promote the version promoted before the current one; returns {"from", "to", "promoted"}.

    The re-promotion is stamped like any promotion, so rolling back again returns to the version rolled
    back from (an undo).
    """
    with store.transaction() as con:
        cur = con.execute("SELECT run_id FROM model_runs WHERE dataset = ? AND promoted", [dataset]).fetchone()
        if cur is None:
            raise RegistryError(f"dataset {dataset!r} has no promoted model to roll back from")
        prev = con.execute(
            "SELECT run_id FROM model_runs WHERE dataset = ? AND run_id <> ? AND promoted_at IS NOT NULL "
            "ORDER BY promoted_at DESC LIMIT 1", [dataset, cur[0]]).fetchone()
        if prev is None:
            raise RegistryError(f"dataset {dataset!r}: {cur[0]} is the only version ever promoted; "
                                "nothing to roll back to")
        _promote(con, prev[0])
    forget_lookups()
    return {"from": cur[0], "to": prev[0], "promoted": get(store, prev[0])}


def rollback_target(store: Store, dataset: str) -> dict | None:
    """What `rollback` would do now, without doing it: {"from": current run id, "to": previous run id}, or None
    when there is no promoted version or nothing to roll back to (the Live page shows this before its button)."""
    with store.connect() as con:
        cur = con.execute("SELECT run_id FROM model_runs WHERE dataset = ? AND promoted", [dataset]).fetchone()
        if cur is None:
            return None
        prev = con.execute(
            "SELECT run_id FROM model_runs WHERE dataset = ? AND run_id <> ? AND promoted_at IS NOT NULL "
            "ORDER BY promoted_at DESC LIMIT 1", [dataset, cur[0]]).fetchone()
    return None if prev is None else {"from": cur[0], "to": prev[0]}


def set_status(store: Store, run_id: str, status: str) -> None:
    """Record the verdict on a version that is not promoted (e.g. `rejected` after losing an evaluation)."""
    if status not in STATUSES or status == "promoted":
        raise RegistryError(f"status must be one of registered, candidate, rejected, retired, not {status!r} "
                            "(use promote() to promote)")
    with store.connect() as con:
        con.execute("UPDATE model_runs SET status = ? WHERE run_id = ? AND NOT coalesce(promoted, false)",
                    [status, run_id])
    forget_lookups()  # a rejected version stops serving at once


# ------------------------------------------------------------------------------ reading
_LIST_COLUMNS = ["run_id", "model", "created_at", "status", "promoted", "promoted_at", "parent_run_id", "train_end",
                 "path", "metrics", "config"]


def _rows(store: Store, where: str, params: list) -> pd.DataFrame:
    df = store.query(f"SELECT * FROM model_runs WHERE {where} AND run_id NOT LIKE '{FORECAST_PREFIX}%'", params)
    for c in ("parent_run_id", "status", "train_end", "promoted_at"):  # a read-only handle on an older store
        if c not in df.columns:
            df[c] = None
    df["promoted"] = df["promoted"].fillna(False).astype(bool)
    df["metrics"] = [json.loads(x) if isinstance(x, str) and x else {} for x in df["metrics_json"]]
    df["config"] = [json.loads(x) if isinstance(x, str) and x else {} for x in df["config_json"]]
    # runs recorded by `trafficcore train` keep the data's end only in the saved config
    df["train_end"] = [te if te is not None and not pd.isna(te) else pd.Timestamp(c["train_end"])
                       if c.get("train_end") else None for te, c in zip(df["train_end"], df["config"], strict=True)]
    return df


def runs(store: Store, dataset: str) -> pd.DataFrame:
    """Every model version of the dataset, newest first (metrics and config parsed from JSON)."""
    df = _rows(store, "dataset = ?", [dataset])
    df = df.sort_values(["created_at", "run_id"], ascending=False, kind="stable")
    return df[["dataset", *_LIST_COLUMNS]].reset_index(drop=True)


def get(store: Store, run_id: str) -> dict:
    """One version as a dict; RegistryError when there is none."""
    df = _rows(store, "run_id = ?", [run_id])
    if df.empty:
        raise RegistryError(f"no model version with run id {run_id!r}")
    return _record(df.iloc[0])


def promoted(store: Store, dataset: str) -> dict | None:
    """The dataset's promoted version, or None."""
    df = _rows(store, "dataset = ? AND promoted", [dataset])
    return None if df.empty else _record(df.iloc[0])


def _record(row: pd.Series) -> dict:
    out = {c: row[c] for c in ["dataset", *_LIST_COLUMNS]}
    for c in ("created_at", "train_end", "promoted_at"):
        out[c] = None if out[c] is None or pd.isna(out[c]) else pd.Timestamp(out[c])
    for c in ("parent_run_id", "status", "path"):
        out[c] = None if out[c] is None or (not isinstance(out[c], str) and pd.isna(out[c])) else out[c]
    return out


# ------------------------------------------------------------------------------ what serving reads
#: Seconds a `lookup` is reused. Opening the DuckDB file costs 10-100 ms on a busy CPU, too much per API
#: request; a promotion made in this process is seen at once (it clears the memo), one made by another
#: process (the `trafficcore models` command) within this many seconds.
LOOKUP_TTL_S = 2.0
#: Versions that never serve on their own: update candidates awaiting or having lost their evaluation.
NOT_SERVING = ("rejected", "candidate")
_LOOKUPS: dict[tuple[str, str], tuple[float, dict, pd.DataFrame, object]] = {}
_LOOKUP_LOCK = threading.Lock()


def forget_lookups() -> None:
    """Drop memoised lookups (after a registry change, and in tests)."""
    with _LOOKUP_LOCK:
        _LOOKUPS.clear()


def lookup(store: Store, dataset: str) -> tuple[dict, pd.DataFrame, object]:
    """(dataset info, versions that may serve, newest reading) in one connection, memoised for LOOKUP_TTL_S.

    The versions are saved folders not rejected nor awaiting a verdict, promoted first, then newest first;
    columns run_id, model, path, promoted, promoted_at, created_at, metrics (parsed). KeyError for an unknown
    dataset. `trafficcore.live.serving` decides among them.
    """
    key = (str(Path(store.path).resolve()), dataset)
    now = time.monotonic()
    with _LOOKUP_LOCK:
        hit = _LOOKUPS.get(key)
    if hit is not None and now - hit[0] < LOOKUP_TTL_S:
        return hit[1], hit[2], hit[3]
    with store.connect() as con:
        ds = con.execute("SELECT * FROM datasets WHERE dataset = ?", [dataset]).df()
        if ds.empty:
            raise KeyError(f"no dataset named {dataset!r} in {store.path}")
        rows = con.execute(f"SELECT * FROM model_runs WHERE dataset = ? AND path IS NOT NULL "
                           f"AND run_id NOT LIKE '{FORECAST_PREFIX}%'", [dataset]).df()
        newest = con.execute("SELECT max(ts) FROM observations WHERE dataset = ?", [dataset]).fetchone()[0]
    for c in ("status", "promoted_at"):  # a read-only handle on an older store
        if c not in rows.columns:
            rows[c] = None
    rows["promoted"] = rows["promoted"].fillna(False).astype(bool)
    rows = rows[rows["promoted"] | ~rows["status"].isin(NOT_SERVING)]
    rows = rows.sort_values(["promoted", "created_at", "run_id"], ascending=False, kind="stable")
    rows["metrics"] = [json.loads(x) if isinstance(x, str) and x else {} for x in rows["metrics_json"]]
    versions = rows[["run_id", "model", "path", "promoted", "promoted_at", "created_at", "metrics"]]
    versions = versions.reset_index(drop=True)
    info_ds = ds.iloc[0].to_dict()
    with _LOOKUP_LOCK:
        _LOOKUPS[key] = (now, info_ds, versions, newest)
    return info_ds, versions, newest
