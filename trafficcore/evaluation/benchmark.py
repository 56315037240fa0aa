"""The benchmark runner: every model, one protocol, one dataset, one JSON report and a table.

`run_benchmark(store, dataset, protocol, models)` fits each named model on the protocol's
training rows (tuning only on its validation rows), forecasts the test rows, and scores P50 and
the P10-P90 band per horizon. Models come from `trafficcore.models.registry.create(name)`, so any
registered class (the language model included) runs through the same code as the baselines.

The report (also written as OUT.json by `trafficcore benchmark --json`):

    {"dataset", "protocol", "run_date" (ISO 8601, UTC), "split": {...how rows were chosen...},
     "results":   [{"model", "horizon_min", "mae", "rmse", "wape", "coverage_p10_p90", "pinball", "n"}, ...],
     "ablations": [{...same fields..., "variant"}, ...],
     "timing":    {"load_s", "total_s", "models": {name: {"fit_s", "predict_s", "test_samples",
                                                          "samples_per_s", "peak_rss_mb"}}}}

Several seeds (`trafficcore benchmark --seeds 0,1,2`: mean ± sd and paired bootstrap intervals against gbt)
are run by `trafficcore.evaluation.seeds`, which calls `run_benchmark` once per seed.

`inference_speed(store, dataset, model_dirs)` (`trafficcore benchmark --speed DIR,...`) times saved models
forecasting every detector x horizon x quantile at one issue time: cold and warm wall time, CPU time,
samples/s and peak memory.

Under ``tgcn`` each result also carries the T-GCN table's "accuracy", "r2" and
"explained_variance", pooled over the 1..k predicted steps of its horizon.

Extension points, all optional, declared as protocols in `trafficcore.models.base`:

- ``HasAblations.ablation_variants() -> dict[str, Forecaster]``: called on the *unfitted* main model when
  ablations are requested; each returned model is fitted and scored exactly like the main one
  (same split, same test samples) and reported under "ablations" with its key as "variant". A
  variant that shares trained parts with another may make its `fit` cheap; the runner does not
  care. Example: `GradientBoosting.ablation_variants()` drops one feature group per variant.
- ``SupportsColdStart.configure_cold_start(held_out_detector_ids: list[str])``: called before `fit` under the
  cold-start protocol. Held-out detectors' readings are NaN in the panel the model sees in any
  case; the hook lets a model switch to features that do not need a detector's own history.
- a stack (`trafficcore.models.stack`) listed with its members blends the members this run fitted (it is
  scored after them), so "stack" costs only its weights and band on top of gbt and lm;
- a constructor that accepts ``spec`` (a WindowSpec): the runner passes the protocol's spec (and
  the union of horizons across models under ``standard``) so that all models are scored on the
  same issue times and horizons; a constructor accepting ``seed`` (by name or through ``**kwargs``) gets the
  benchmark's seed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import inspect
import math
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from trafficcore.data.panel import Panel, load_panel
from trafficcore.data.store import Store
from trafficcore.data.windows import Samples, WindowSpec, build_samples
from trafficcore.errors import TrafficCoreError
from trafficcore.evaluation import datasets as eval_datasets
from trafficcore.evaluation import metrics
from trafficcore.evaluation.protocols import PROTOCOLS, ProtocolError, cold_start_split, standard_split, tgcn_setup
from trafficcore.models import registry
from trafficcore.models.base import HasAblations, SupportsColdStart
from trafficcore.models.baselines import neighbour_index
from trafficcore.models.stack import StackForecaster

BASELINES = ("persistence", "seasonal_naive", "historical_average", "gbt")
PREDICT_CHUNK = 50_000


class BenchmarkError(TrafficCoreError):
    """A benchmark request that cannot run as asked (unknown dataset, model or protocol)."""


# ------------------------------------------------------------------------------ helpers
def _accepts_spec(cls) -> bool:
    params = inspect.signature(cls).parameters
    return "spec" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def _takes_seed(params) -> bool:
    """A constructor takes a seed when it names one or passes **kwargs on."""
    return "seed" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def _create(name: str, spec: WindowSpec | None, seed: int, kwargs: dict):
    """A fresh model by registry name, handing it `spec`/`seed` where its constructor takes them."""
    try:
        cls = registry.model_class(name)
    except KeyError as e:
        raise BenchmarkError(str(e.args[0])) from None
    except ImportError as e:
        raise BenchmarkError(f"model {name!r} is not available: {e}") from None
    params = inspect.signature(cls).parameters
    kw = dict(kwargs)
    if spec is not None and _accepts_spec(cls):
        kw.setdefault("spec", spec)
    if _takes_seed(params):
        kw.setdefault("seed", seed)
    model = registry.create(name, **kw)
    if spec is not None and kw.get("spec") is None and model.spec != spec:
        raise BenchmarkError(f"model {name!r} does not accept a window spec, and its own ({model.spec}) differs "
                             f"from the protocol's ({spec})")
    return model


def _targets(panel: Panel, issue_idx: np.ndarray, det_idx: np.ndarray, spec: WindowSpec) -> np.ndarray:
    """Truth from `panel` for the samples' targets (NaN past the end or where missing)."""
    rows = issue_idx[:, None] + spec.horizon_steps(panel.interval)[None, :] - 1
    ok = rows < len(panel.times)
    out = np.full(rows.shape, np.nan, dtype=np.float64)
    dd = np.broadcast_to(det_idx[:, None], rows.shape)
    out[ok] = panel.values[rows[ok], dd[ok]]
    return out


def _predict(model, panel: Panel, samples: Samples) -> np.ndarray:
    """(N, S, 3) quantiles, predicted in chunks so memory stays bounded on big test sets."""
    parts = []
    for lo in range(0, len(samples), PREDICT_CHUNK):
        sub = samples.subset(np.arange(lo, min(lo + PREDICT_CHUNK, len(samples))))
        parts.append(np.asarray(model.predict_samples(panel, sub), dtype=np.float64))
    q = np.concatenate(parts) if parts else np.zeros((0, len(samples.spec.horizons_min), 3))
    expect = (len(samples), len(samples.spec.horizons_min), 3)
    if q.shape != expect:
        raise ValueError(f"{getattr(model, 'name', model)} returned quantiles of shape {q.shape}, expected {expect}")
    return np.sort(q, axis=-1)


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def _clean(x):
    """JSON-safe: NaN/inf -> None, numpy scalars -> Python."""
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, float | np.floating):
        return None if not math.isfinite(float(x)) else float(x)
    return x


# ------------------------------------------------------------------------------ scoring
def score_standard(name: str, spec: WindowSpec, y: np.ndarray, q: np.ndarray) -> list[dict]:
    """One row per horizon the model offers."""
    return [{"model": name, "horizon_min": int(h), **metrics.quantile_metrics(y[:, j], q[:, j])}
            for j, h in enumerate(spec.horizons_min)]


def score_tgcn(name: str, setup, issue_idx: np.ndarray, y: np.ndarray, q: np.ndarray) -> list[dict]:
    """Per reported horizon, errors pooled over its 1..k predicted steps on T-GCN's test windows."""
    out = []
    for h, k in setup.pre_lens.items():
        sel = np.isin(issue_idx, setup.test_rows(k))
        yy, qq = y[sel, :k], q[sel, :k]
        row = {"model": name, "horizon_min": int(h), "pre_len": int(k),
               **metrics.quantile_metrics(yy, qq), **metrics.tgcn_metrics(yy, qq[..., 1])}
        out.append(row)
    return out


# ------------------------------------------------------------------------------ the runner
@dataclasses.dataclass
class SampleErrors:
    """One model's test errors per sample: issue row, detector column, |P50 - truth| per horizon (NaN: no truth)."""

    issue_idx: np.ndarray
    detector_idx: np.ndarray
    abs_err: np.ndarray  # (N, S)
    horizons_min: tuple[int, ...]


def load_dataset(store: Store, dataset: str, measure: str | None = None) -> tuple[Panel, dict, str | None]:
    """The dataset's panel, its info and the measure chosen (the dataset's own when it mixes measures)."""
    try:
        info = store.dataset_info(dataset)
    except KeyError as e:
        raise BenchmarkError(f"{e.args[0]}; known datasets: {store.dataset_names()}") from None
    det = store.detectors(dataset)
    if measure is None and det["measure"].nunique() > 1:
        measure = info["measure"]
    panel = load_panel(store, dataset, measure=measure)
    if len(panel.times) == 0 or panel.values.shape[1] == 0:
        raise BenchmarkError(f"dataset {dataset!r} has no observations{f' of measure {measure}' if measure else ''}")
    return panel, info, measure


def _build_models(protocol: str, names: list[str], panel: Panel, seed: int, model_kwargs: dict) -> dict:
    """Models by name. The protocol fixes the window spec under tgcn; under standard/cold-start
    each model keeps its own history length, and all are asked for the union of the horizons any
    of them offers (a model whose constructor takes no spec is scored on its own horizons)."""
    if protocol == "tgcn":
        spec = tgcn_setup(panel).spec
        return {m: _create(m, spec, seed, model_kwargs.get(m, {})) for m in names}
    defaults = {m: _create(m, None, seed, model_kwargs.get(m, {})) for m in names}
    horizons = tuple(sorted({int(h) for d in defaults.values() for h in d.spec.horizons_min}))
    built = {}
    for m, d in defaults.items():
        want = dataclasses.replace(d.spec, horizons_min=horizons)
        keep = d.spec == want or not _accepts_spec(registry.model_class(m))
        built[m] = d if keep else _create(m, want, seed, model_kwargs.get(m, {}))
    return built


@dataclasses.dataclass
class _Plan:
    """What a protocol hands the runner: the panel models see, the rows, and who is scored."""

    panel: Panel
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    info: dict
    test_detectors: np.ndarray | None = None  # None: all
    tgcn: object | None = None  # the TGCNSetup under tgcn


def _plan(protocol: str, panel: Panel, built: dict, seed: int, cold_start_fraction: float) -> _Plan:
    if protocol == "tgcn":
        setup = tgcn_setup(panel)
        return _Plan(setup.panel, setup.train, setup.val, setup.test, setup.info, tgcn=setup)
    horizons = tuple(sorted({int(h) for m in built.values() for h in m.spec.horizons_min}))
    spec = WindowSpec(history_steps=max(m.spec.history_steps for m in built.values()), horizons_min=horizons)
    if protocol == "standard":
        split = standard_split(panel, spec)
        return _Plan(panel, split.train, split.val, split.test, split.info)
    cs = cold_start_split(panel, spec, fraction=cold_start_fraction, seed=seed)
    return _Plan(cs.panel, cs.split.train, cs.split.val, cs.split.test, cs.split.info, cs.held_out_idx)


def run_benchmark(
    store: Store,
    dataset: str,
    protocol: str,
    models: list[str],
    *,
    seed: int = 0,
    ablations: bool = False,
    variants: list[str] | None = None,
    measure: str | None = None,
    model_kwargs: dict[str, dict] | None = None,
    cold_start_fraction: float = 0.2,
    save_dir: Path | None = None,
    load_dir: Path | None = None,
    on_step: Callable[[str], None] | None = None,
    loaded: tuple[Panel, dict, str | None] | None = None,
    errors: dict | None = None,
) -> dict:
    """Fit, forecast and score `models` on `dataset` under `protocol`; returns the report dict.

    `measure` picks one measure when a dataset mixes volume and speed detectors (default: the
    dataset's own `measure`). `save_dir`, when given, receives each fitted model in a subfolder; `load_dir`
    holds models saved so earlier: a model found there (`load_dir/<name>/config.json`) is loaded and scored
    instead of fitted (re-scoring saved models on another period, or blending them in a stack).
    `on_step(message)` is called as each stage starts (the CLI drives a progress bar with it).
    `loaded`: what `load_dataset` returned, so that several runs (seeds) read the store once.
    `errors`: a dict that receives, per model, each test sample's issue row, detector column and absolute
    error per horizon (`SampleErrors`), for paired comparisons across models (standard and cold-start).
    """
    t_start = time.perf_counter()
    run_date = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    step = on_step or (lambda message: None)
    if protocol not in PROTOCOLS:
        raise BenchmarkError(f"unknown protocol {protocol!r}; choose from {', '.join(PROTOCOLS)}")
    models = [m.strip() for m in models if m.strip()]
    if not models:
        raise BenchmarkError("no models given")
    unknown = [m for m in models if m not in registry.MODEL_CLASSES]
    if unknown:
        raise BenchmarkError(f"unknown model(s) {unknown}; choose from {sorted(registry.MODEL_CLASSES)}")
    if len(set(models)) != len(models):
        raise BenchmarkError(f"a model is listed twice: {models}")
    model_kwargs = model_kwargs or {}
    np.random.seed(seed)

    step(f"loading {dataset}")
    if loaded is None:
        loaded = load_dataset(store, dataset, measure)
    panel, info, measure = loaded
    panel, prepared = eval_datasets.prepare(panel, protocol)
    load_s = time.perf_counter() - t_start

    built = _build_models(protocol, models, panel, seed, model_kwargs)
    plan = _plan(protocol, panel, built, seed, cold_start_fraction)
    setup, fit_panel, test_dets = plan.tgcn, plan.panel, plan.test_detectors
    train, val, test, split_info = plan.train, plan.val, plan.test, plan.info

    held_out_ids = [] if test_dets is None else list(panel.detectors["detector_id"].to_numpy()[test_dets])

    def evaluate(label: str, model, fit: bool = True) -> tuple[list[dict], dict]:
        if protocol == "cold-start" and isinstance(model, SupportsColdStart):
            model.configure_cold_start(held_out_ids)
        step(f"{label}: fit" if fit else f"{label}: loaded")
        t0 = time.perf_counter()
        if fit:
            model.fit(fit_panel, train, val)
        fit_s = time.perf_counter() - t0 if fit else None
        step(f"{label}: predict")
        if getattr(model, "uses_neighbours", True):
            nb = neighbour_index(fit_panel, model.spec)
        else:  # the model never reads them
            nb = np.full((fit_panel.values.shape[1], model.spec.n_neighbours), -1, dtype=np.int64)
        samples = build_samples(fit_panel, test, test_dets, model.spec, neighbour_idx=nb)
        t0 = time.perf_counter()
        q = _predict(model, fit_panel, samples)
        predict_s = time.perf_counter() - t0
        y = _targets(panel, samples.issue_idx, samples.detector_idx, model.spec)
        if setup is not None:
            q = q * setup.max_value
            rows = score_tgcn(label, setup, samples.issue_idx, y, q)
        else:
            rows = score_standard(label, model.spec, y, q)
            if errors is not None:
                errors[label] = SampleErrors(samples.issue_idx.copy(), samples.detector_idx.copy(),
                                             np.abs(q[..., 1] - y), tuple(int(h) for h in model.spec.horizons_min))
        timing = {"fit_s": fit_s, "predict_s": predict_s, "test_samples": len(samples),
                  "samples_per_s": len(samples) / predict_s if predict_s > 0 else None,
                  "peak_rss_mb": _peak_rss_mb()}
        return rows, timing

    results, ablation_rows, timing = [], [], {}
    fitted: dict[str, object] = {}
    offered = {n: m.ablation_variants() if (ablations or variants) and isinstance(m, HasAblations) else {}
               for n, m in built.items()}
    if variants:  # each variant is a whole fit: a run may ask for some of them only
        known = sorted({v for vs in offered.values() for v in vs})
        unknown = sorted(set(variants) - set(known))
        if unknown:
            raise BenchmarkError(f"no model here has the ablation variant(s) {unknown}; available: {known}")
        offered = {n: {v: m for v, m in vs.items() if v in variants} for n, vs in offered.items()}
    for name, model in sorted(built.items(), key=lambda kv: isinstance(kv[1], StackForecaster)):  # stacks last
        model_variants = offered[name]
        saved = None if load_dir is None else Path(load_dir) / name
        if saved is not None and (saved / "config.json").exists():
            model = registry.load_model(saved)
            rows, timing[name] = evaluate(name, model, fit=False)
            timing[name]["loaded_from"] = str(saved)
        else:
            if isinstance(model, StackForecaster):  # blends the members this run fitted, not copies of its own
                model.members.update({n: fitted[n] for n in model.member_names if n in fitted})
            rows, timing[name] = evaluate(name, model)
        fitted[name] = model
        results += rows
        if save_dir is not None:
            model.save(Path(save_dir) / name)
        for vname, variant in model_variants.items():
            vrows, timing[f"{name}/{vname}"] = evaluate(f"{name}/{vname}", variant)
            ablation_rows += [{**r, "model": name, "variant": vname} for r in vrows]

    report = {
        "dataset": dataset,
        "protocol": protocol,
        "run_date": run_date,
        "split": {**split_info, "measure": measure or info.get("measure"), "synthetic": bool(info.get("synthetic")),
                  "detectors": int(panel.values.shape[1]), "interval_s": int(panel.interval.total_seconds()),
                  **({"evaluation": prepared} if prepared else {})},
        "results": results,
        "ablations": ablation_rows,
        "timing": {"load_s": load_s, "total_s": time.perf_counter() - t_start, "models": timing},
    }
    if protocol == "cold-start":
        report["split"]["reference"] = ("historical_average: held-out detectors have no profile of their own, so "
                                        "it forecasts the cross-site historical-average profile")
    return _clean(report)


# ------------------------------------------------------------------------------ inference speed
def inference_speed(store: Store, dataset: str, model_dirs: list[str | Path], *, issued_at=None, repeats: int = 5,
                    threads: int | None = None) -> dict:
    """Time forecasting every detector x every horizon x 3 quantiles at one issue time, per saved model.

    Each call goes through `trafficcore.models.base.predict` (what `trafficcore forecast` runs: windows,
    inputs, context texts, tokenisation, network, Forecast frame). The first call is reported apart ("cold":
    it builds caches and, for the LM, its int8 inference network); the `repeats` warm calls then forecast
    successive issue times, so that the context texts change as in live use and no tokenisation cache can
    flatter the number. Peak memory is the process's peak resident set (loading included). Besides wall
    time, the CPU seconds the process used per warm call are recorded: on a shared, oversubscribed machine
    wall time mostly measures the other jobs, while CPU time (with one thread) is what the call costs.
    """
    import torch

    from trafficcore.models import base as model_base

    if repeats < 1:
        raise BenchmarkError("repeats must be at least 1")
    if threads is not None:
        torch.set_num_threads(int(threads))
    try:
        panel = load_panel(store, dataset)
    except KeyError as e:
        raise BenchmarkError(f"{e.args[0]}; known datasets: {store.dataset_names()}") from None
    if len(panel.times) <= repeats + 1:
        raise BenchmarkError(f"dataset {dataset!r} is too short to time {repeats} issue times")
    first = panel.index_of(issued_at) if issued_at is not None else len(panel.times) - repeats - 1
    if not 0 < first <= len(panel.times) - repeats - 1:
        raise BenchmarkError(f"issue time {issued_at} leaves no room for {repeats} warm calls inside {dataset!r}")
    rows = []
    for d in model_dirs:
        t0 = time.perf_counter()
        try:
            model = registry.load_model(d)
        except (FileNotFoundError, KeyError, ValueError) as e:
            raise BenchmarkError(f"cannot load a model from {d}: {e}") from None
        load_s = time.perf_counter() - t0
        if threads is not None:
            torch.set_num_threads(int(threads))  # loading may have changed it
        times, cpu, n = [], [], 0
        for k in range(repeats + 1):
            t0, c0 = time.perf_counter(), time.process_time()
            frame = model_base.predict(model, panel, panel.times[first + k])
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
            n = len(frame)
        warm = float(np.median(times[1:]))
        n_det = int(frame["detector_id"].nunique())
        rows.append({"model": str(d), "model_class": getattr(model, "model_class", type(model).__name__),
                     "detectors": n_det, "horizons": len(model.spec.horizons_min), "quantiles": 3,
                     "forecast_values": 3 * n, "load_s": load_s, "cold_s": times[0], "warm_s": warm,
                     "warm_max_s": float(max(times[1:])),
                     "warm_cpu_s": float(np.median(cpu[1:])), "samples_per_s": n_det / warm,
                     "peak_rss_mb": _peak_rss_mb(), "threads": torch.get_num_threads()})
    return _clean({"dataset": dataset, "issued_at": str(panel.times[first]), "repeats": repeats, "speed": rows})


def speed_table(report: dict) -> str:
    """The inference-speed report as GitHub markdown."""
    cols = ["model", "detectors x horizons x quantiles", "cold (s)", "warm median (s)", "warm max (s)",
            "warm CPU (s)", "samples/s (warm)", "peak RSS (MB)", "threads"]
    out = [f"**{report['dataset']}**, forecasts issued from {report['issued_at']} ({report['repeats']} warm calls)",
           "", "| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in report["speed"]:
        out.append(f"| {r['model']} | {r['detectors']} x {r['horizons']} x {r['quantiles']} | {r['cold_s']:.3f} | "
                   f"{r['warm_s']:.3f} | {r['warm_max_s']:.3f} | {r['warm_cpu_s']:.3f} | {r['samples_per_s']:.0f} | "
                   f"{r['peak_rss_mb']:.0f} | "
                   f"{r['threads']} |")
    return "\n".join(out)


# ------------------------------------------------------------------------------ the table
def markdown_table(report: dict) -> str:
    """The results (and ablations, if any) as GitHub markdown, one row per model and horizon."""
    tgcn = report.get("protocol") == "tgcn"
    cols = ["model", "horizon (min)", "MAE", "RMSE", "WAPE", "P10-P90 cover"]
    if tgcn:
        cols += ["accuracy", "R2", "expl. var"]

    def fmt(v, pct=False):
        if v is None:
            return "-"
        return f"{100 * v:.1f}%" if pct else f"{v:.3f}" if abs(v) < 10 else f"{v:.2f}"

    def line(r, label):
        cells = [label, str(r["horizon_min"]), fmt(r["mae"]), fmt(r["rmse"]), fmt(r["wape"], True),
                 fmt(r["coverage_p10_p90"], True)]
        if tgcn:
            cells += [fmt(r.get("accuracy")), fmt(r.get("r2")), fmt(r.get("explained_variance"))]
        return "| " + " | ".join(cells) + " |"

    head = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    out = [f"**{report['dataset']}**, protocol `{report['protocol']}`"] + [""] + head
    out += [line(r, r["model"]) for r in report["results"]]
    if report.get("ablations"):
        out += ["", "Ablations", ""] + head
        out += [line(r, f"{r['model']} / {r['variant']}") for r in report["ablations"]]
    return "\n".join(out)


__all__ = ["BASELINES", "BenchmarkError", "ProtocolError", "inference_speed", "markdown_table", "run_benchmark",
           "speed_table"]
