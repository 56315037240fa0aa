"""What the API keeps in memory between requests: models, panels and forecasts, per process.

Why a cache at all: loading the language model takes seconds, reading a dataset into a panel a
few hundred milliseconds, and even opening the DuckDB file tens of milliseconds, while a forecast
for every detector of a city at one issue time takes about a tenth of a second. So each process
loads a dataset's model once, keeps the panel until the data change, and keeps the forecast of
every detector per (dataset, model, issue time), indexed by detector as ready-to-send rows; a
request for one site then only picks rows from dicts, which is what keeps /forecast within its
latency bar under concurrent clients.

Staleness, off the request path: a background thread asks, every `check_every_s` seconds, for
the datasets in use, `trafficcore.live.ingest.live_panel` (a cheap stamp query; it reloads when
another process such as ``trafficcore ingest --watch`` changed the store) and swaps in a new panel
when the data changed; every `model_every_s` seconds it re-resolves the model, so a newly promoted
one is picked up (`serving_model` caches loaded models by folder and mtime). An ingest through this
process invalidates its dataset at once.

Concurrency: one lock per cache key, so twenty clients arriving at a cold cache cause one load,
not twenty. Model calls (forecast, explain) hold a per-dataset compute lock: on a small CPU running
them side by side gains nothing, and it keeps a model's state safe from concurrent use.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from trafficcore.data.panel import Panel
from trafficcore.data.store import Store

log = logging.getLogger("trafficcore.api")

#: (store, dataset) -> (forecaster, info dict): `trafficcore.live.serving.serving_model` by default.
ModelLoader = Callable[[Store, str], tuple[object, dict]]

class NotFound(LookupError):
    """An unknown dataset, detector or site: the API answers 404."""


def default_model_loader(store: Store, dataset: str) -> tuple[object, dict]:
    """The model that serves the dataset (`trafficcore.live.serving`), and its description for `model_info`."""
    from trafficcore.live.serving import serving_model

    served = serving_model(store, dataset)
    return served.model, served.info()


@dataclass
class PanelEntry:
    """A panel and what requests derive from it, computed once per panel."""

    panel: Panel
    sites: dict[str, list[str]]
    latest: pd.Timestamp | None
    loaded: float = field(default_factory=time.monotonic)


@dataclass
class ModelEntry:
    model: object
    info: dict
    key: str
    loaded: float = field(default_factory=time.monotonic)


@dataclass
class ForecastEntry:
    """Every detector's forecast at one issue time: the frame, and JSON-ready rows per detector."""

    frame: pd.DataFrame
    rows: dict[str, list[dict]]


class LiveCache:
    """Per-process models, panels and forecasts (see module docstring)."""

    def __init__(
        self,
        store: Store,
        model_loader: ModelLoader | None = None,
        check_every_s: float = 2.0,
        model_every_s: float = 60.0,
        max_forecasts: int = 64,
        hold_s: float = 2.0,
    ):
        self.store = store
        self.model_loader = model_loader or default_model_loader
        self.check_every_s = check_every_s
        self.model_every_s = model_every_s
        self.max_forecasts = max_forecasts
        self._locks: dict[tuple, threading.Lock] = {}
        self._guard = threading.Lock()
        self._panels: dict[str, PanelEntry] = {}
        self._models: dict[str, ModelEntry] = {}
        self._forecasts: OrderedDict[tuple, ForecastEntry] = OrderedDict()
        self._datasets: list[str] | None = None
        self.hold_s = hold_s
        self._keeper = None  # a DuckDB connection held open while requests come (see `touch`)
        self._last_touch = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pending: dict[str, set[str]] = {}
        self._pending_cv = threading.Condition()
        self._refresher: threading.Thread | None = None
        self._busy = False
        #: dataset -> forecast refreshes completed after ingests (for /health and tests)
        self.refreshed: dict[str, int] = {}
        #: called with (dataset, seconds) after each completed refresh (the app's service metrics)
        self.on_refresh: Callable[[str, float], None] | None = None

    # ------------------------------------------------------------------ datasets
    def _lock(self, key: tuple) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def datasets(self, fresh: bool = False) -> list[str]:
        """Dataset names in the store (kept fresh by the background thread)."""
        if fresh or self._datasets is None:
            self._datasets = self.store.dataset_names()
        return self._datasets

    def require_dataset(self, dataset: str) -> None:
        """404 for an unknown dataset; looks in the store again first (it may have been imported just now)."""
        if dataset not in self.datasets() and dataset not in self.datasets(fresh=True):
            raise NotFound(f"no dataset named {dataset!r}; available: {self.datasets()}")

    def invalidate(self, dataset: str) -> None:
        """Forget the panel and forecasts of a dataset (after an ingest); the model stays loaded."""
        with self._guard:
            self._panels.pop(dataset, None)
            for key in [k for k in self._forecasts if k[0] == dataset]:
                self._forecasts.pop(key, None)
                self._locks.pop(("forecast",) + key, None)

    # ------------------------------------------------------------------ holding the store open
    def touch(self) -> None:
        """Keep the DuckDB file open while requests keep coming, and let go after `hold_s` idle seconds.

        Why: the store opens a connection per call, and opening the file when no connection is open
        costs tens of milliseconds (catalog and WAL are read again); an ingest makes several calls. While
        one connection stays open, DuckDB reuses the open database and a new connection costs about a
        millisecond. Letting go when idle keeps the file free for other processes (the dashboard, the CLI),
        which DuckDB would otherwise lock out. `hold_s` = 0 never holds.
        """
        if self.hold_s <= 0:
            return
        self._last_touch = time.monotonic()
        if self._keeper is None:
            with self._guard:
                if self._keeper is None:
                    try:
                        from trafficcore.data.store import open_duckdb

                        # the same configuration as the store's own connections, or DuckDB refuses the second
                        self._keeper = open_duckdb(self.store.path, read_only=self.store.read_only)
                    except Exception:  # noqa: BLE001 - holding is an optimisation; without it requests still work
                        log.warning("could not hold the store open", exc_info=True)
        self._ensure_refresher()

    def _release_if_idle(self, force: bool = False) -> None:
        if self._keeper is not None and (force or time.monotonic() - self._last_touch >= self.hold_s):
            with self._guard:
                keeper, self._keeper = self._keeper, None
            if keeper is not None:
                keeper.close()

    # ------------------------------------------------------------------ panels and models
    def panel(self, dataset: str) -> PanelEntry:
        """The dataset's panel entry; loaded on first use, then refreshed by the background thread."""
        return self._get_or_load("panel", self._panels, dataset, self._load_panel)

    def _load_panel(self, dataset: str) -> PanelEntry:
        from trafficcore.live.ingest import issue_time, live_panel

        panel = live_panel(self.store, dataset)
        current = self._panels.get(dataset)
        if current is not None and current.panel is panel:
            return current
        det = panel.detectors
        sites: dict[str, list[str]] = {}
        for d, s in zip(det["detector_id"].astype(str), det["site_id"].astype(str), strict=True):
            sites.setdefault(s, []).append(d)
        latest = issue_time(panel) if len(panel.times) else None
        entry = PanelEntry(panel, sites, latest)
        self.invalidate(dataset)
        self._panels[dataset] = entry
        return entry

    def model(self, dataset: str) -> ModelEntry:
        """The model served for a dataset and its info (loaded once; re-resolved in the background)."""
        return self._get_or_load("model", self._models, dataset, self._load_model)

    def _get_or_load(self, kind: str, table: dict, dataset: str, load):
        """`table[dataset]`, loaded once under a per-(kind, dataset) lock; double-checked, so a hit takes no lock."""
        entry = table.get(dataset)
        if entry is not None:
            return entry
        self.touch()
        self.require_dataset(dataset)
        with self._lock((kind, dataset)):
            entry = table.get(dataset)
            if entry is None:
                entry = load(dataset)
        self._ensure_refresher()
        return entry

    def _load_model(self, dataset: str) -> ModelEntry:
        model, info = self.model_loader(self.store, dataset)
        info = dict(info or {})
        info.setdefault("name", getattr(model, "name", type(model).__name__))
        entry = ModelEntry(model, info, _model_key(model, info))
        self._models[dataset] = entry
        return entry

    def loaded_models(self) -> dict[str, str]:
        return {d: str(e.info.get("name")) for d, e in list(self._models.items())}

    # ------------------------------------------------------------------ background refresh
    def _ensure_refresher(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            with self._guard:
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(target=self._refresh_loop, name="trafficcore-api-refresh",
                                                    daemon=True)
                    self._thread.start()

    def _refresh_loop(self) -> None:
        tick = min(self.check_every_s, self.hold_s) if self.hold_s > 0 else self.check_every_s
        last = time.monotonic()
        while not self._stop.wait(tick):
            self._release_if_idle()
            if time.monotonic() - last < self.check_every_s:
                continue
            last = time.monotonic()
            try:
                self.refresh()
            except Exception:  # noqa: BLE001 - the refresher must survive a locked or busy store
                log.warning("background refresh failed; retrying in %.0f s", self.check_every_s, exc_info=True)
        self._release_if_idle(force=True)

    def refresh(self) -> None:
        """One round of the background check (also callable directly, e.g. by tests)."""
        self.datasets(fresh=True)
        for dataset in list(self._panels):
            with self._lock(("panel", dataset)):
                if dataset in self._panels:
                    self._load_panel(dataset)
        for dataset, entry in list(self._models.items()):
            if time.monotonic() - entry.loaded >= self.model_every_s:
                with self._lock(("model", dataset)):
                    new = self._load_model(dataset)
                if new.key != entry.key:
                    log.info("dataset %s now served by %s", dataset, new.info.get("name"))

    def close(self, timeout_s: float = 30.0) -> None:
        """Stop the background threads and wait for them (a thread killed inside DuckDB aborts the process)."""
        self._stop.set()
        with self._pending_cv:
            self._pending_cv.notify_all()
        for t in (self._thread, self._refresher):
            if t is not None and t.is_alive():
                t.join(timeout_s)
        self._release_if_idle(force=True)

    # ------------------------------------------------------------------ re-issuing forecasts after ingest
    def schedule_refresh(self, dataset: str, detector_ids: list[str]) -> None:
        """Re-issue and store forecasts for these detectors soon (`trafficcore.live.ingest.refresh_forecasts`).

        Requests coalesce: while one refresh runs, later batches add their detectors to the next one,
        so a fast stream of ingests costs one model call per round, not one per batch.
        """
        with self._pending_cv:
            self._pending.setdefault(dataset, set()).update(detector_ids)
            self._pending_cv.notify()
        if self._refresher is None or not self._refresher.is_alive():
            with self._guard:
                if self._refresher is None or not self._refresher.is_alive():
                    self._refresher = threading.Thread(target=self._refresh_forecasts_loop,
                                                       name="trafficcore-api-forecasts", daemon=True)
                    self._refresher.start()

    def _refresh_forecasts_loop(self) -> None:
        from trafficcore.live.ingest import refresh_forecasts

        while not self._stop.is_set():
            with self._pending_cv:
                while not self._pending and not self._stop.is_set():
                    self._pending_cv.wait(timeout=5.0)
                work, self._pending = self._pending, {}
                self._busy = bool(work)
            for dataset, dets in work.items():
                try:
                    t0 = time.perf_counter()
                    with self.compute_lock(dataset):
                        refresh_forecasts(self.store, dataset, sorted(dets))
                    self.refreshed[dataset] = self.refreshed.get(dataset, 0) + 1
                    if self.on_refresh is not None:
                        self.on_refresh(dataset, time.perf_counter() - t0)
                except Exception:  # noqa: BLE001 - a failed refresh must not stop the next one
                    log.warning("re-issuing forecasts for %s failed", dataset, exc_info=True)
            with self._pending_cv:
                self._busy = False

    def wait_refreshed(self, timeout_s: float = 30.0) -> bool:
        """Wait until no refresh is pending or running (tests, benchmarks); False on timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._pending_cv:
                if not self._pending and not self._busy:
                    return True
            time.sleep(0.05)
        return False

    # ------------------------------------------------------------------ forecasts
    def compute_lock(self, dataset: str) -> threading.Lock:
        """Held while a dataset's model runs (see module docstring)."""
        return self._lock(("compute", dataset))

    def ready(self, dataset: str) -> tuple[PanelEntry, ModelEntry] | None:
        """The panel and model entries when both are in memory (a request can then be answered without I/O)."""
        p, m = self._panels.get(dataset), self._models.get(dataset)
        return (p, m) if p is not None and m is not None else None

    def forecast(self, dataset: str, issued_at: pd.Timestamp, m: ModelEntry, p: PanelEntry,
                 compute: bool = True) -> ForecastEntry | None:
        """Every detector's forecast at one issue time (cached per dataset, model, issue time and panel);
        None when it is not cached and `compute` is False."""
        key = (dataset, m.key, pd.Timestamp(issued_at), id(p.panel))
        got = self._forecasts.get(key)
        if got is not None or not compute:
            return got
        with self._lock(("forecast",) + key):
            got = self._forecasts.get(key)
            if got is not None:
                return got
            with self.compute_lock(dataset):
                frame = _predict_all(m.model, p.panel, pd.Timestamp(issued_at))
            entry = ForecastEntry(frame, _rows_by_detector(frame))
            with self._guard:
                if self._panels.get(dataset) is p:  # not invalidated meanwhile
                    self._forecasts[key] = entry
                while len(self._forecasts) > self.max_forecasts:
                    old, _ = self._forecasts.popitem(last=False)
                    self._locks.pop(("forecast",) + old, None)
            return entry


def _model_key(model: object, info: dict) -> str:
    for k in ("run_id", "path"):
        if info.get(k):
            return f"{k}:{info[k]}"
    return f"{getattr(model, 'name', type(model).__name__)}@{id(model)}"


def _predict_all(model, panel: Panel, issued_at: pd.Timestamp) -> pd.DataFrame:
    """`models.base.predict` for every detector, with the panel's cached neighbour matrix."""
    from trafficcore.data.windows import build_samples
    from trafficcore.models.base import forecast_frame

    row = panel.index_of(issued_at)
    spec = model.spec
    nb = panel.neighbour_matrix(spec.n_neighbours, spec.neighbour_method)
    samples = build_samples(panel, np.array([row]), None, spec, neighbour_idx=nb)
    return forecast_frame(panel, samples, model.predict_samples(panel, samples))


def _finite(v: float) -> float | None:
    return v if np.isfinite(v) else None


def _rows_by_detector(frame: pd.DataFrame) -> dict[str, list[dict]]:
    """Forecast rows as JSON-ready dicts per detector (non-finite quantiles become null)."""
    out: dict[str, list[dict]] = {}
    cols = zip(frame["detector_id"].astype(str), frame["issued_at"], frame["target_ts"], frame["horizon_min"],
               frame["p10"].astype(float), frame["p50"].astype(float), frame["p90"].astype(float), strict=True)
    for d, i, t, h, a, b, c in cols:
        out.setdefault(d, []).append({
            "detector_id": d, "issued_at": pd.Timestamp(i).isoformat(), "target_ts": pd.Timestamp(t).isoformat(),
            "horizon_min": int(h), "p10": _finite(a), "p50": _finite(b), "p90": _finite(c),
        })
    return out


def check_issue_time(p: PanelEntry, model, at: str | None) -> pd.Timestamp:
    """Parse and check an issue time: on the grid, with the model's history before it, not past the data."""
    panel = p.panel
    if len(panel.times) == 0:
        raise ValueError(f"dataset {panel.dataset!r} has no readings yet")
    if at is None:
        ts = p.latest
    else:
        try:
            ts = pd.Timestamp(at)
        except (ValueError, TypeError, OverflowError):
            raise ValueError(f"at={at!r} is not a timestamp (e.g. {panel.times[-1]:%Y-%m-%dT%H:%M})") from None
        if ts is pd.NaT or pd.isna(ts):
            raise ValueError(f"at={at!r} is not a timestamp")
        if ts.tzinfo is not None:
            raise ValueError(f"at={at!r}: give local wall-clock time without a zone ({panel.info.get('timezone')})")
    newest = panel.times[-1] + panel.interval
    earliest = panel.times[0] + model.spec.history_steps * panel.interval
    if ts < earliest or ts > newest:
        raise ValueError(f"at={ts}: issue times for this model run from {earliest} to {newest} "
                         f"({model.spec.history_steps} intervals of history are needed before it)")
    if (ts - panel.times[0]) % panel.interval != pd.Timedelta(0):
        step = int(panel.interval.total_seconds() // 60)
        raise ValueError(f"at={ts} is not on the dataset's {step}-minute grid (e.g. {panel.times[-1]})")
    return ts
