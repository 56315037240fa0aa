"""Which model serves a dataset: one rule for the API, the dashboard, the signal lab and the CLI.

Why one home: the choice used to be made in four places that disagreed (the API skipped versions
the dashboard served), so two screens could show forecasts from different models for the same
city. Every caller now asks `serving_model(store, dataset)` (or, without loading anything,
`candidates`), and shows the name it returns.

The rule, for a dataset:

1. the version promoted in the model registry (``trafficcore models promote``): an operator's
   decision beats any score;
2. else, among the saved models that may serve it (the shipped demo model on the data it was
   trained on, and registered versions other than rejected or pending update candidates), those
   with a recorded validation MAE (`val_mae`) serve best first; the lowest wins;
3. else the shipped demo model where it applies, then registered versions, newest first;
4. else a historical average fitted on the spot (a second or so) on the training and validation
   days of the standard protocol, refitted once a new day of readings arrives.

A candidate that cannot be loaded is skipped, and the reason says so. Validation scores are
compared as recorded: each model scored itself on its own validation days of this dataset, which
is what a user can compare without rerunning anything; the benchmark is the like-for-like check.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from trafficcore import config
from trafficcore.data.store import Store
from trafficcore.live import registry
from trafficcore.live.fallback import shipped_applies
from trafficcore.models.registry import display_name, model_display_name

#: The baseline fitted when no saved model serves: cheap enough to fit inside a request.
BASELINE = "historical_average"


@dataclass(frozen=True)
class Candidate:
    """A model that may serve a dataset, before loading: `kind` "saved" (folder `path`) or "fit" (`name`)."""

    key: str  # stable text for caches and URLs: run:<id>, shipped, fit:<name>
    kind: str
    source: str  # promoted | shipped | registered | baseline
    name: str  # registry name (model_class)
    display_name: str  # what users read, e.g. "Gradient boosting + language model"
    path: str | None = None
    run_id: str | None = None
    created_at: pd.Timestamp | None = None
    val_mae: float | None = None
    metrics: dict = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class Serving:
    """The model that serves, and what to tell users about it."""

    model: object
    candidate: Candidate
    reason: str
    fit: dict | None = None  # baselines: first and last day learnt from

    @property
    def display_name(self) -> str:
        return self.candidate.display_name

    def info(self) -> dict:
        """JSON-ready description (the API's `model_info`)."""
        c = self.candidate
        out = {"source": c.source, "model": c.name, "display_name": c.display_name, "run_id": c.run_id,
               "path": c.path, "metrics": c.metrics, "val_mae": c.val_mae, "reason": self.reason}
        if self.fit is not None:
            out["fit"] = {k: str(v) for k, v in self.fit.items()}
        return out


def val_mae(metrics: dict) -> float | None:
    """Mean validation MAE over horizons from a model's recorded metrics (`{"val": {h: {"mae": ..}}}`)."""
    per_h = metrics.get("val") if isinstance(metrics, dict) else None
    if not isinstance(per_h, dict):
        return None
    maes = [v.get("mae") for v in per_h.values() if isinstance(v, dict)]
    maes = [float(m) for m in maes if isinstance(m, (int, float)) and np.isfinite(m)]
    return float(np.mean(maes)) if maes else None


def _saved_config(path: str | Path) -> dict:
    try:
        return json.loads((Path(path) / "config.json").read_text())
    except (OSError, ValueError):
        return {}


def _saved_name(cfg: dict, fallback: str) -> tuple[str, str]:
    """(registry name, display name) of a saved model from its config.json."""
    name = str(cfg.get("model_class") or fallback)
    return name, str(cfg.get("display_name") or display_name(name))


def baseline_candidate(name: str = BASELINE) -> Candidate:
    return Candidate(f"fit:{name}", "fit", "baseline", name, f"{display_name(name)} (fitted now)")


#: (store, dataset, shipped folder) -> (the registry lookup it was built from, shipped config stamp, candidates):
#: reading every version's config.json costs ~0.1 ms each, so it is redone only when the lookup or the
#: shipped model changes.
_CANDIDATES: dict[tuple, tuple[object, object, list[Candidate]]] = {}


def _stamp(path: Path):
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


def candidates(store: Store, dataset: str, shipped_dir: str | Path | None = None) -> list[Candidate]:
    """Saved models that may serve the dataset, in serving order (see module docstring), then the baseline.

    Reads the registry and the folders' config.json files only; loads no model. KeyError for an unknown dataset.
    """
    info, versions, _ = registry.lookup(store, dataset)
    shipped = Path(shipped_dir if shipped_dir is not None else config.DEMO_MODEL_DIR)
    key = (str(Path(store.path).resolve()), dataset, str(shipped))
    stamp = _stamp(shipped / "config.json")
    hit = _CANDIDATES.get(key)
    if hit is not None and hit[0] is versions and hit[1] == stamp:
        return list(hit[2])
    found = _candidates(info, versions, shipped)
    _CANDIDATES[key] = (versions, stamp, found)
    return list(found)


def _candidates(info: dict, versions: pd.DataFrame, shipped: Path) -> list[Candidate]:
    promoted: list[Candidate] = []
    others: list[Candidate] = []
    if shipped_applies(info, shipped):
        cfg = _saved_config(shipped)
        name, shown = _saved_name(cfg, "lm")
        others.append(Candidate("shipped", "saved", "shipped", name, shown, str(shipped.resolve()),
                                val_mae=val_mae(cfg.get("metrics", {})), metrics=cfg.get("metrics", {})))
    for r in versions.itertuples(index=False):
        if not (Path(r.path) / "config.json").exists() and not r.promoted:
            continue  # a deleted folder: nothing to offer (a promoted one is tried, and the reason says why)
        cfg = _saved_config(r.path)
        name, shown = _saved_name(cfg, str(r.model))
        metrics = r.metrics or cfg.get("metrics", {})
        score = val_mae(r.metrics) if val_mae(r.metrics) is not None else val_mae(cfg.get("metrics", {}))
        c = Candidate(f"run:{r.run_id}", "saved", "promoted" if r.promoted else "registered", name, shown,
                      str(r.path), r.run_id, pd.Timestamp(r.created_at) if pd.notna(r.created_at) else None,
                      score, metrics)
        (promoted if r.promoted else others).append(c)
    scored = sorted((c for c in others if c.val_mae is not None), key=lambda c: c.val_mae)
    return promoted + scored + [c for c in others if c.val_mae is None] + [baseline_candidate()]


# ------------------------------------------------------------------------------ loading, cached
_CACHE: dict[tuple, object] = {}
_LOCK = threading.Lock()
_CACHE_MAX = 8


def _cached(key: tuple, make):
    with _LOCK:
        if key in _CACHE:
            return _CACHE[key]
        value = make()
        if len(_CACHE) >= _CACHE_MAX:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = value
        return value


def load_saved(path: str | Path):
    """A saved model, loaded once per folder and file version (path + mtimes): a re-saved folder reloads."""
    from trafficcore.models.registry import load_model

    p = Path(path).resolve()
    stamp = tuple((str(f), f.stat().st_mtime_ns) for f in sorted(p.rglob("*")) if f.is_file())
    return _cached(("saved", str(p), stamp), lambda: load_model(p))


def _fit_baseline(store: Store, dataset: str, newest) -> tuple[object, dict]:
    """The baseline on the stored data, refitted when a new day of readings arrives."""
    from trafficcore.data.panel import load_panel
    from trafficcore.live.fallback import fit_baseline

    if newest is None or pd.isna(newest):
        raise registry.RegistryError(f"dataset {dataset!r} has no observations to fit a baseline on")
    day = pd.Timestamp(newest).normalize()
    return _cached(("baseline", str(Path(store.path).resolve()), dataset, day),
                   lambda: fit_baseline(BASELINE, load_panel(store, dataset)))


def _why(c: Candidate, dataset: str, promoted_at) -> str:
    if c.source == "promoted":
        return f"promoted version of {dataset!r} since {promoted_at}"
    score = f", validation MAE {c.val_mae:.3f}" if c.val_mae is not None else ""
    if c.source == "shipped":
        return f"the shipped demo model applies to this dataset{score}"
    return f"registered version {c.run_id}{score}"


def serving_model(store: Store, dataset: str, shipped_dir: str | Path | None = None) -> Serving:
    """The model that serves `dataset` (see module docstring), loaded; warm calls cost well under a millisecond.

    KeyError for an unknown dataset; RegistryError when nothing can serve (no saved model, no readings).
    """
    _, versions, newest = registry.lookup(store, dataset)
    notes: list[str] = []
    if not versions["promoted"].any():
        notes.append(f"no promoted version for {dataset!r}")
    promoted_at = next(iter(versions.loc[versions["promoted"], "promoted_at"]), None)
    for c in candidates(store, dataset, shipped_dir):
        if c.kind == "fit":
            model, note = _fit_baseline(store, dataset, newest)
            learnt = f"fitted on readings from {note['first']:%Y-%m-%d} to {note['last']:%Y-%m-%d}"
            return Serving(model, c, "; ".join(notes + [f"{c.display_name.split(' (')[0].lower()} {learnt}"]),
                           fit=note)
        try:
            model = load_saved(c.path)
        except (OSError, ValueError, KeyError, TypeError) as e:
            what = {"promoted": f"promoted version {c.run_id}", "shipped": "the shipped demo model"}.get(
                c.source, f"registered version {c.run_id}")
            notes.append(f"{what} could not be loaded ({e})")
            continue
        shown = model_display_name(model)
        return Serving(model, dataclasses.replace(c, display_name=shown), "; ".join(
            notes + [_why(c, dataset, promoted_at)]))
    raise registry.RegistryError(f"no model can serve {dataset!r}")  # pragma: no cover - the baseline is last


def clear_cache() -> None:
    """Forget loaded models and registry lookups (tests; a server never needs it: keys carry file mtimes)."""
    with _LOCK:
        _CACHE.clear()
    _CANDIDATES.clear()
    registry.forget_lookups()
