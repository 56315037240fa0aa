"""The dashboard's first view, issued ahead: the shipped model's forecasts at the default "as of" time.

Why: the first page must show the shipped language model's forecasts within seconds of
`streamlit run`, but loading that model (torch, transformers, the encoder) takes several seconds
on a small CPU, and doing it while the browser loads the page slows both. `trafficcore demo`
already has the data in hand, so it issues the forecasts the dashboard opens on and stores them
in the `forecasts` table. The dashboard shows them at once and loads the model in the background
for everything else (other times, explanations, day profiles).

The stored forecasts are used only while they are what the model would say now: their run id is
a digest of the dataset's contents (`data_stamp`) and of the model folder's files, so a re-import
or a replaced model makes them unreachable rather than wrong.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pandas as pd

from trafficcore.data.panel import Panel, load_panel
from trafficcore.data.schema import FORECAST_COLUMNS
from trafficcore.data.store import Store
from trafficcore.ui import clock
from trafficcore.ui.datasets import data_stamp

RUN_PREFIX = "first-view-"
_DIGESTS: dict[tuple, str] = {}


#: Files above this size enter the digest by name, size and mtime rather than by content (a training
#: folder may hold large optimiser states; the shipped model is a few MB and is read in full).
HASH_CONTENT_BYTES = 64 * 2**20


def model_digest(model_dir: str | os.PathLike) -> str:
    """SHA-256 over a saved model folder's files (memoised per file size and mtime; READMEs excluded)."""
    folder = Path(model_dir)
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith((".", "README")))
    key = (str(folder.resolve()), tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files))
    if key not in _DIGESTS:
        h = hashlib.sha256()
        for p, (name, size, mtime) in zip(files, key[1], strict=True):
            h.update(name.encode())
            h.update(p.read_bytes() if size <= HASH_CONTENT_BYTES else f"{size}:{mtime}".encode())
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


def run_id(dataset: str, stamp: str, model_dir: str | os.PathLike) -> str:
    """The content key of a first view: dataset name, dataset contents and model files."""
    digest = hashlib.sha256(f"{dataset}|{stamp}|{model_digest(model_dir)}".encode()).hexdigest()[:20]
    return RUN_PREFIX + digest


def issue(store: Store, dataset: str, model_dir: str | os.PathLike, panel: Panel | None = None) -> dict:
    """Issue the model's forecasts at the dashboard's default issue time and store them (one transaction).

    Uses the same functions as the dashboard (`clock.default_issue_time`, `models.forecast`), so
    the stored frame is exactly what the dashboard would compute. Returns what was written.
    """
    from trafficcore.live import serving
    from trafficcore.ui import models as uim

    panel = panel if panel is not None else load_panel(store, dataset)
    stamp = data_stamp(store, dataset)
    at = clock.default_issue_time(panel)
    model = serving.load_saved(model_dir)
    spec = model.spec
    fc = uim.forecast(model, panel, at, neighbour_idx=panel.neighbour_matrix(int(spec.n_neighbours),
                                                                             str(spec.neighbour_method)))
    rid = run_id(dataset, stamp, model_dir)
    out = fc[FORECAST_COLUMNS].copy()
    out.insert(0, "dataset", dataset)
    out.insert(0, "run_id", rid)
    with store.connect() as con:  # a re-import leaves older first views unreachable: drop them
        con.execute("DELETE FROM forecasts WHERE dataset = ? AND run_id LIKE ? AND run_id <> ?",
                    [dataset, RUN_PREFIX + "%", rid])
    store.write_frame("forecasts", out)
    return {"run_id": rid, "issued_at": at, "rows": len(out)}


def prepare(store: Store, dataset: str, model_dir: str | os.PathLike) -> dict | None:
    """`issue` when the shipped model serves this dataset (`trafficcore.live.serving`), else None."""
    from trafficcore.live.serving import candidates

    best = candidates(store, dataset, model_dir)[0]
    return issue(store, dataset, best.path) if best.source == "shipped" else None


def stored_times(store: Store, dataset: str, stamp: str, model_dir: str | os.PathLike) -> list[pd.Timestamp]:
    """Issue times for which this model's forecasts on this version of the dataset are stored."""
    if not (Path(model_dir) / "config.json").exists():
        return []
    df = store.query("SELECT DISTINCT issued_at FROM forecasts WHERE run_id = ? AND dataset = ?",
                     [run_id(dataset, stamp, model_dir), dataset])
    return sorted(pd.Timestamp(t) for t in df["issued_at"])


def stored_forecast(store: Store, dataset: str, stamp: str, model_dir: str | os.PathLike,
                    issued_at) -> pd.DataFrame | None:
    """The stored Forecast frame at one issue time (None when there is none for this model and data)."""
    if not (Path(model_dir) / "config.json").exists():
        return None
    df = store.query(
        "SELECT detector_id, issued_at, target_ts, horizon_min, p10, p50, p90 FROM forecasts "
        "WHERE run_id = ? AND dataset = ? AND issued_at = ? ORDER BY detector_id, horizon_min",
        [run_id(dataset, stamp, model_dir), dataset, pd.Timestamp(issued_at).to_pydatetime()],
    )
    if df.empty:
        return None
    df["horizon_min"] = df["horizon_min"].astype(int)
    return df[FORECAST_COLUMNS]
