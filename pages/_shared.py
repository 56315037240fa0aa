"""What every page shares: cached store, panel, model and forecasts, the page context, and safe failure.

Caching (the 1-second interaction bar rests on it): the store handle, the panel (a dataset in
memory) and the fitted or loaded model are `st.cache_resource` (one copy, shared by sessions,
never mutated); forecast frames and quality tables are `st.cache_data` keyed by dataset contents
(`data_stamp`), model and issue time, so a re-import invalidates them and nothing else does.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from trafficcore import config
from trafficcore.data.panel import Panel, load_panel
from trafficcore.data.store import Store
from trafficcore.live import fallback, serving
from trafficcore.ui import SYNTHETIC_LABEL, data_stamp, first_view
from trafficcore.ui import forecasts as uif
from trafficcore.ui import models as uim
from trafficcore.ui.safe import md

log = logging.getLogger("trafficcore.app")
timing = logging.getLogger("trafficcore.app.timing")

FRIENDLY = (
    "Something went wrong while drawing this part of the page. The problem has been logged; "
    "try another setting, or reload the page."
)


@st.cache_resource(show_spinner=False)
def get_store(path: str) -> Store:
    return Store(path)


def store_version(path: str) -> tuple:
    """Size and mtime of the store file and of its write-ahead log: they change whenever anything is written."""
    out = []
    for p in (Path(path), Path(f"{path}.wal")):
        try:
            stat = p.stat()
            out.append((stat.st_size, stat.st_mtime_ns))
        except OSError:
            out.append(None)
    return tuple(out)


@st.cache_data(show_spinner=False, max_entries=16)
def get_names(path: str, version: tuple) -> list[str]:
    """The store's dataset names (cached per store version: one connection less on every run)."""
    return get_store(path).dataset_names()


@st.cache_data(show_spinner=False, max_entries=64)
def get_info(path: str, dataset: str, version: tuple) -> dict:
    return get_store(path).dataset_info(dataset)


def get_choices(path: str, dataset: str, info: dict, version: tuple) -> list[uim.ModelChoice]:
    """The model picker's entries (cached per store version and shipped model config)."""
    cfg = Path(config.DEMO_MODEL_DIR) / "config.json"
    shipped = (str(cfg), cfg.stat().st_mtime_ns) if cfg.exists() else None
    return _choices(path, dataset, version, shipped, _info=info)


@st.cache_data(show_spinner=False, max_entries=64)
def _choices(path: str, dataset: str, version: tuple, shipped, _info: dict) -> list[uim.ModelChoice]:
    return uim.choices(get_store(path), dataset, _info, Path(config.DEMO_MODEL_DIR))


@st.cache_data(show_spinner=False, ttl=30)
def get_stamp(path: str, dataset: str, version: tuple | None = None) -> str:
    """Fingerprint of a dataset (cached briefly: it is a count over the observations; `version`, the store
    file's, makes a write seen at once, such as an incident ingested while the dashboard is open)."""
    return data_stamp(get_store(path), dataset)


@st.cache_resource(show_spinner="Loading the dataset into memory...", max_entries=3)
def get_panel(path: str, dataset: str, stamp: str) -> Panel:
    return load_panel(get_store(path), dataset)


@st.cache_resource(show_spinner="Preparing the forecasting model...", max_entries=6)
def get_model(path: str, dataset: str, stamp: str, choice: uim.ModelChoice) -> tuple[object, dict | None]:
    """The model behind a sidebar choice: loaded from its folder, or a baseline fitted once."""
    if in_background(choice):
        loader = start_loading(path, dataset, stamp, choice)
        loader.done.wait()
        if loader.error is not None:
            raise loader.error
        return loader.model, loader.note
    return fallback.fit_baseline(choice.name, get_panel(path, dataset, stamp))


#: Choices that take seconds to minutes to prepare: saved models (torch, the encoder) and gradient
#: boosting fitted on the spot. They are prepared in a background thread; meanwhile the historical
#: average answers, the sidebar says so, and the page refreshes itself when the model is ready.
BACKGROUND_FITS = ("fit:gbt",)


def in_background(choice: uim.ModelChoice) -> bool:
    return choice.kind == "saved" or choice.key in BACKGROUND_FITS


class ModelLoader:
    """Prepares one model in a background thread (see BACKGROUND_FITS)."""

    def __init__(self, key: str, make):
        self.key = key
        self.model = None
        self.note: dict | None = None
        self.error: BaseException | None = None
        self.seconds: float | None = None
        self.done = threading.Event()
        threading.Thread(target=self._run, args=(make,), name=f"prepare-model:{key}", daemon=True).start()

    def _run(self, make) -> None:
        t0 = time.perf_counter()
        try:
            self.model, self.note = make()
        except Exception as exc:  # noqa: BLE001 - reported in the sidebar and the log
            log.exception("preparing the model %s failed", self.key)
            self.error = exc
        finally:
            self.seconds = time.perf_counter() - t0
            timing.info("model %s ready in %.2f s", self.key, self.seconds)
            self.done.set()

    @property
    def ready(self) -> bool:
        return self.done.is_set()


_LOADERS: dict[str, ModelLoader] = {}
_LOADERS_LOCK = threading.Lock()


def loader_key(path: str, dataset: str, stamp: str, choice: uim.ModelChoice) -> str:
    """A saved model is the same for every dataset; a fitted one belongs to one dataset version."""
    return str(choice.path) if choice.kind == "saved" else f"{path}|{dataset}|{stamp}|{choice.key}"


def loader_for(key: str) -> ModelLoader | None:
    """The background loader for a key, if preparing has been started (by any session)."""
    return _LOADERS.get(key)


def start_loading(path: str, dataset: str, stamp: str, choice: uim.ModelChoice) -> ModelLoader:
    """Start preparing a model in the background (once per process); returns its loader.

    app.py calls this `LOAD_DELAY_S` after a session's first page (its `_refresh_when_loaded` fragment), so
    that importing torch or fitting trees does not compete with the browser drawing that page for the CPU.
    """
    key = loader_key(path, dataset, stamp, choice)
    with _LOADERS_LOCK:
        if key not in _LOADERS:
            if choice.kind == "saved":
                def make():
                    return serving.load_saved(choice.path), None
            else:
                def make():
                    return fallback.fit_baseline(choice.name, get_panel(path, dataset, stamp))
            _LOADERS[key] = ModelLoader(key, make)
        return _LOADERS[key]


def neighbours_for(path: str, dataset: str, stamp: str, model) -> object:
    """The panel's neighbour matrix for the model's window spec (the panel caches it); none (-1) for a model that
    reads no neighbours (the historical average answering a region's first page: 0.6 s saved at 8,000 detectors)."""
    spec = model.spec
    panel = get_panel(path, dataset, stamp)
    if getattr(model, "uses_neighbours", True) is False:
        return np.full((panel.values.shape[1], int(spec.n_neighbours)), -1, dtype=np.int64)
    return panel.neighbour_matrix(int(spec.n_neighbours), str(spec.neighbour_method))


@st.cache_data(show_spinner=False, ttl=60)
def stored_times(path: str, dataset: str, stamp: str, model_dir: str) -> tuple[str, ...]:
    """Issue times at which a saved model's forecasts on this dataset version are in the store."""
    return tuple(str(t) for t in first_view.stored_times(get_store(path), dataset, stamp, model_dir))


def has_stored(path: str, dataset: str, stamp: str, choice: uim.ModelChoice, issued_at) -> bool:
    """True when the forecasts of `choice` at `issued_at` can be read from the store (see first_view)."""
    return choice.kind == "saved" and str(pd.Timestamp(issued_at)) in stored_times(path, dataset, stamp,
                                                                                     str(choice.path))


@st.cache_data(show_spinner="Forecasting every detector...", max_entries=48)
def get_forecast(path: str, dataset: str, stamp: str, _choice: uim.ModelChoice, choice_key: str, issued_at: str):
    """Forecast frame for all detectors at one issue time, with typical and observed values joined.

    Read from the store when the same model issued them on the same data ahead of time
    (`trafficcore demo` does for the first view), else computed by the model.
    """
    panel = get_panel(path, dataset, stamp)
    if has_stored(path, dataset, stamp, _choice, issued_at):
        stored = first_view.stored_forecast(get_store(path), dataset, stamp, str(_choice.path), issued_at)
        if stored is not None:
            return uif.with_context(stored, panel)
    model, _ = get_model(path, dataset, stamp, _choice)
    fc = uim.forecast(model, panel, pd.Timestamp(issued_at), neighbour_idx=neighbours_for(path, dataset, stamp, model))
    return uif.with_context(fc, panel)


@st.cache_resource(show_spinner=False)
def _memo_store() -> dict:
    return {"lock": threading.Lock(), "tables": {}}


def memo_get(name: str, key: tuple):
    """A result computed before by a page with its own progress bar (`memo_put`), or None.

    st.cache_data cannot drive a progress bar from inside a cached function; pages that show
    steps compute outside it and keep the result here (shared by sessions, like cache_data).
    """
    store = _memo_store()
    with store["lock"]:
        return store["tables"].get(name, {}).get(key)


def memo_put(name: str, key: tuple, value, max_entries: int = 16) -> None:
    store = _memo_store()
    with store["lock"]:
        table = store["tables"].setdefault(name, {})
        table.pop(key, None)
        table[key] = value
        while len(table) > max_entries:
            table.pop(next(iter(table)))


@dataclass
class Context:
    """The shared sidebar state every page reads (set by app.py on each run)."""

    db: str
    store: Store
    dataset: str
    info: dict
    stamp: str
    panel: Panel
    choice: uim.ModelChoice | None
    model: object | None
    model_note: str
    issued_at: pd.Timestamp
    site: str | None
    horizon: int
    #: the forecasts at `issued_at` are read from the store while the model itself is still loading
    stored: bool = False

    @property
    def synthetic(self) -> bool:
        return bool(self.info.get("synthetic"))

    def forecast(self) -> pd.DataFrame:
        """All detectors' forecasts at the sidebar's issue time (cached)."""
        if self.choice is None or (self.model is None and not self.stored):
            raise RuntimeError("no model is available")
        return get_forecast(self.db, self.dataset, self.stamp, self.choice, self.choice.key, str(self.issued_at))

    def issue_at(self, ts) -> pd.DataFrame:
        """Forecasts at another issue time (cached the same way)."""
        return get_forecast(self.db, self.dataset, self.stamp, self.choice, self.choice.key, str(pd.Timestamp(ts)))


def context() -> Context | None:
    return st.session_state.get("_ctx")


def require_context() -> Context:
    """The page context, or a clear message and stop when no dataset is loaded."""
    ctx = context()
    if ctx is None:
        st.info("No dataset is loaded yet. Generate the demo city with `trafficcore demo`, or import data on the "
                "**Import & quality** page.", icon=":material/info:")
        st.stop()
    return ctx


def require_model(ctx: Context) -> None:
    """Stop with a clear message when nothing can answer forecasts (stored forecasts count)."""
    if ctx.model is None and not ctx.stored:
        st.warning("No forecasting model is available for this dataset, so this page cannot show forecasts. "
                   + md(ctx.model_note), icon=":material/warning:")
        st.stop()


def loaded_model(ctx: Context) -> object:
    """The model itself, for pages that run it (explanations, a day of forecasts): waits while it loads."""
    if ctx.model is not None:
        return ctx.model
    model, _ = get_model(ctx.db, ctx.dataset, ctx.stamp, ctx.choice)
    return model


def chosen(ctx: Context) -> uim.ModelChoice:
    """The model picked in the sidebar; `ctx.choice` is the one answering, the historical average while a slow
    pick is being prepared (a page that needs the pick itself waits for it: `get_model`)."""
    options = get_choices(ctx.db, ctx.dataset, ctx.info, store_version(ctx.db))
    return next((c for c in options if c.key == kept("model")), ctx.choice)


def synthetic_banner(ctx: Context) -> None:
    """The synthetic-data label, on every page that shows data of a synthetic dataset."""
    if ctx.synthetic:
        st.caption(f":material/science: **{SYNTHETIC_LABEL}**")


def header(title: str, ctx: Context | None, subtitle: str | None = None) -> None:
    """Page title (Markdown: escape user text in it with `md`), subtitle and the synthetic-data label."""
    st.title(title)
    if subtitle:
        st.caption(subtitle)
    if ctx is not None:
        synthetic_banner(ctx)


def report_failure(where: str, exc: BaseException) -> None:
    """Log the full traceback; show the user one friendly line (never a raw traceback)."""
    log.error("%s failed: %s\n%s", where, exc, "".join(traceback.format_exception(exc)))
    st.error(FRIENDLY, icon=":material/error:")


def guarded(where: str):
    """Context manager: an exception inside becomes a friendly message, and the page goes on."""
    return _Guard(where)


class _Guard:
    def __init__(self, where: str):
        self.where = where

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc is None or not isinstance(exc, Exception):
            return False  # Streamlit's stop/rerun signals are BaseExceptions: let them through
        report_failure(self.where, exc)
        return True


def max_upload_mb() -> int:
    return max(1, int(config.max_file_bytes() // 2**20))


#: The app's pages by URL path ("map", "site", ...), filled by app.py: page links use these objects.
PAGES: dict = {}
KEPT = "_kept"


def kept_store() -> dict:
    return st.session_state.setdefault(KEPT, {})


def kept(key: str, default=None):
    """The stored value behind a widget (survives page switches, unlike the widget's own state)."""
    return st.session_state.setdefault(KEPT, {}).get(key, default)


def keep(key: str, value) -> None:
    """Store a widget's value; the widget shows it from the next run on (callbacks and pages use this)."""
    st.session_state.setdefault(KEPT, {})[key] = value


def persistent(key: str, default, then=None) -> dict:
    """Widget kwargs that make its value survive page switches.

    Streamlit drops a widget's state when the user switches pages; the value is therefore also
    kept under `_kept` and written back into the widget's key before it is drawn on every run.
    Pass the result as keyword arguments: `st.slider("h", 15, 120, **persistent("h", 60))`;
    `then` is called after a change has been stored.
    """
    store = st.session_state.setdefault(KEPT, {})
    if key not in store:
        store[key] = st.session_state.get(key, default)
    st.session_state[key] = store[key]
    return {"key": key, "on_change": _copy_back, "args": (key, then)}


def _copy_back(key: str, then=None) -> None:
    st.session_state.setdefault(KEPT, {})[key] = st.session_state[key]
    if then is not None:
        then()


def select_site(site_id: str) -> None:
    """Make `site_id` the selected site (the sidebar picker shows it on the next run)."""
    keep("site", site_id)
