"""`trafficcore train` and `trafficcore forecast` (registered by trafficcore.cli; also runnable as
`python -m trafficcore.training.cli train ...`, which is what `torchrun` launches).

Presets are the language model's training recipes (`trafficcore.models.lm.recipes.RECIPES`, each with a
one-line purpose): `quick`, `full` (the CPU recipe), `gpu` (end to end on a GPU, bf16) and `demo` (the shipped
demo model); `--preset FILE.json` reads a recipe in the form `Recipe.to_dict` writes. Their lengths are steps
or epochs; a phase that overran its clock guard is reported.

Multi-process training and forecasting (same commands, one process per GPU, or gloo on CPU):
`torchrun --nproc-per-node 2 -m trafficcore.training.cli train --dataset demo --preset quick --out DIR` and
`torchrun --nproc-per-node 2 -m trafficcore.training.cli forecast --dataset demo --model DIR`.
The detectors are split into shards (`trafficcore.data.shard`); each rank reads only its shards' detectors
(and their neighbours) from the store, trains on their samples or forecasts them; DDP averages gradients;
rank 0 gathers and writes the model, the forecasts and the store rows. `--shards S` fixes the shards so
that a run gives the same model on any number of ranks dividing S (docs/SCALE.md, "Beyond one machine").

User errors (unknown dataset, bad timestamp, missing model folder...) print one line and exit 2.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from trafficcore import config
from trafficcore.errors import TrafficCoreError

if TYPE_CHECKING:  # numpy, pandas and the model files load inside the commands (issue 15: `--help` stays fast)
    import pandas as pd


class UsageError(TrafficCoreError):
    """A command asked for something that cannot be done as asked."""


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=2)


def _store(db: Path | None, read_only: bool, observations_parquet: Path | None = None):
    from trafficcore.data.store import Store

    path = config.db_path(db)
    if not path.exists():
        raise UsageError(f"no store at {path}; import a dataset first (trafficcore import ... or trafficcore demo)")
    return Store(path, read_only=read_only, observations_parquet=observations_parquet)


def _panel(store, dataset: str, spec=None, shards: int | None = None):
    """The dataset's panel; under `torchrun` with a model's `spec`, this rank's shard panel (its detectors and
    their neighbours only; `trafficcore.data.shard`)."""
    from trafficcore.data.panel import load_panel
    from trafficcore.data.shard import load_shard, owned_shards
    from trafficcore.training import ddp

    names = store.dataset_names()
    if dataset not in names:
        raise UsageError(f"no dataset named {dataset!r} in {store.path}; known: {', '.join(names) or 'none'}")
    info = store.dataset_info(dataset)
    det = store.detectors(dataset)
    measure = info["measure"] if det["measure"].nunique() > 1 else None
    world = ddp.env_world_size()
    if spec is not None and world > 1:
        n_shards = int(shards or world)
        try:
            mine = owned_shards(int(os.environ["RANK"]), world, n_shards)
            panel = load_shard(store, dataset, mine, n_shards, neighbours=[(spec.n_neighbours, spec.neighbour_method)],
                               measure=measure)
        except ValueError as e:
            raise UsageError(f"detector shards (--shards, default one per rank): {e}") from None
    else:
        panel = load_panel(store, dataset, measure=measure)
    if len(panel.times) == 0:
        raise UsageError(f"dataset {dataset!r} has no observations")
    return panel


def _record_run(db: Path | None, run_id: str, dataset: str, model: str, path: Path | None, metrics: dict,
                cfg: dict) -> None:
    import pandas as pd

    from trafficcore.models.files import to_jsonable

    row = pd.DataFrame([{
        "run_id": run_id, "dataset": dataset, "model": model, "created_at": pd.Timestamp.now().floor("s"),
        "path": None if path is None else str(Path(path).resolve()), "metrics_json": json.dumps(to_jsonable(metrics)),
        "config_json": json.dumps(to_jsonable(cfg)), "promoted": False,
    }])
    _store(db, read_only=False).write_frame("model_runs", row)


# ------------------------------------------------------------------------------ train
def train(
    dataset: Annotated[str, typer.Option("--dataset", help="dataset name in the store")],
    out: Annotated[Path, typer.Option("--out", help="folder for the trained model (config.json + safetensors)")],
    model: Annotated[str, typer.Option("--model", help="lm, or a baseline name from the registry")] = "lm",
    preset: Annotated[str, typer.Option("--preset", help="training recipe: quick | full (CPU) | gpu | demo | "
                                                         "demo-notes, or a recipe JSON file")] = "quick",
    device: Annotated[str, typer.Option("--device", help="auto | cpu | cuda")] = "auto",
    db: Annotated[Path | None, typer.Option("--db", help="DuckDB store (default: $TRAFFICCORE_DB or data/)")] = None,
    backbone: Annotated[Path | None, typer.Option("--backbone", help="local Hugging Face model folder")] = None,
    resume: Annotated[Path | None, typer.Option("--resume", help="training-state folder of an earlier run")] = None,
    seed: Annotated[int, typer.Option("--seed", help="random seed")] = 0,
    max_steps: Annotated[int | None, typer.Option("--max-steps", help="steps of the recipe's last phase")] = None,
    max_minutes: Annotated[float | None, typer.Option("--max-minutes", help="clock guard of every phase")] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="show a progress bar")] = True,
    keep_state: Annotated[bool, typer.Option("--keep-state/--no-keep-state",
                                             help="keep OUT/training_state for --resume")] = True,
    shards: Annotated[int | None, typer.Option("--shards", min=1, help="lm: detector shards of the sampler "
                                               "(default: one per torchrun rank); the same S gives the same "
                                               "model on any number of ranks dividing it")] = None,
    observations_parquet: Annotated[Path | None, typer.Option(
        "--observations-parquet", help="read observations from this Parquet folder "
                                       "(default: $TRAFFICCORE_OBSERVATIONS_PARQUET, else the store)")] = None,
) -> None:
    """Train a model on the standard split (validation for early stopping), save it, record the run."""
    try:
        _train(dataset, out, model, preset, device, db, backbone, resume, seed, max_steps, max_minutes, progress,
               keep_state, shards, observations_parquet)
    except TrafficCoreError as e:
        _fail(str(e))


def _train(dataset, out, model, preset, device, db, backbone, resume, seed, max_steps, max_minutes, progress,
           keep_state=True, shards=None, observations_parquet=None):
    import pandas as pd

    from trafficcore.evaluation.protocols import standard_split
    from trafficcore.models import registry
    from trafficcore.models.files import read_config
    from trafficcore.training import ddp
    from trafficcore.training.checkpoint import has_training_state

    t0 = time.perf_counter()
    if model not in registry.MODEL_CLASSES:
        raise UsageError(f"unknown model {model!r}; choose from {', '.join(sorted(registry.MODEL_CLASSES))}")
    recipe = _recipe(preset)
    if device not in ("auto", "cpu", "cuda"):
        raise UsageError(f"--device must be auto, cpu or cuda, not {device!r}")
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UsageError("--device cuda: torch sees no CUDA device here (use auto or cpu)")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder")
    if backbone is not None and not (Path(backbone) / "config.json").exists():
        raise UsageError(f"--backbone {backbone} is not a Hugging Face model folder (no config.json)")
    if resume is not None and not any(has_training_state(p) for p in Path(resume).glob("*")):
        raise UsageError(f"--resume {resume} holds no training state (a phase folder with training_state.json); "
                         f"use the {out / 'training_state'} folder of an earlier run")
    if shards is not None and model != "lm":
        raise UsageError(f"--shards applies to the lm, not to {model!r}")
    if model == "lm":
        from trafficcore.models.lm import LMForecaster

        changes: dict[str, dict] = {p.name: {} for p in recipe.phases}
        if max_steps is not None:
            changes[recipe.phases[-1].name].update(steps=int(max_steps), epochs=None)
        if max_minutes is not None:
            for c in changes.values():
                c["guard_minutes"] = float(max_minutes)
        kw = {} if backbone is None else {"backbone": str(Path(backbone).resolve())}
        m = LMForecaster(recipe=recipe.with_changes(phases=changes), seed=seed, device=device, progress=progress,
                         **kw)
        n_shards = shards or ddp.env_world_size()
        bad = [p.name for p in m.recipe.phases if p.batch_size % n_shards]
        if bad:
            raise UsageError(f"{n_shards} detector shards (--shards, default one per rank) must divide the batch "
                             f"size of phase(s) {', '.join(bad)} of preset {preset!r}")
    else:
        m = registry.create(model)
    store = _store(db, read_only=True, observations_parquet=observations_parquet)
    panel = _panel(store, dataset, m.spec if model == "lm" else None, shards)
    split = standard_split(panel, m.spec)
    rank0 = ddp.env_world_size() <= 1 or int(os.environ.get("RANK", "0")) == 0
    if rank0:
        typer.echo(f"training {model} ({preset}) on {dataset}: {split.info['train'][0]}..{split.info['train'][1]} "
                   f"train, {split.info['val'][0]}..{split.info['val'][1]} validation; test days untouched")
    if model == "lm":
        state_dir = out / "training_state"
        try:
            m.fit(panel, split.train, split.val, state_dir=state_dir, resume=resume, shards=shards)
        except ValueError as e:
            if "shard" not in str(e):
                raise
            raise UsageError(f"--shards: {e}") from None
        if not keep_state and rank0:
            shutil.rmtree(state_dir, ignore_errors=True)
    else:
        m.fit(panel, split.train, split.val)
    if not rank0:  # every rank ends once rank 0 has written the model (a next command may read it)
        _finish_ranks(ddp.current())
        return
    m.save(out)
    metrics = getattr(m, "metrics", {}) or {}
    if not metrics.get("val") and len(split.val):  # baselines record no scores of their own; live monitoring
        metrics = {**metrics, "val": _val_metrics(m, panel, split.val)}  # compares served MAE with this one
    cfg = read_config(out)
    run_id = f"train-{dataset}-{pd.Timestamp.now():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    _record_run(db, run_id, dataset, model, out, metrics, cfg)
    wall = time.perf_counter() - t0
    typer.echo(f"saved {model} to {out} ({_size_mb(out):.1f} MB) in {wall / 60:.1f} min; run {run_id}")
    for h, v in (metrics.get("val") or {}).items():
        typer.echo(f"  validation {h:>4} min: MAE {v['mae']:.2f}, P10-P90 coverage {v['coverage_p10_p90']:.1%}")
    if metrics.get("clock_cut"):
        typer.echo(f"WARNING: the clock guard cut phase(s) {', '.join(metrics['clock_cut'])}: this model depends on "
                   "the machine's speed; rerun on a faster machine or with a longer --max-minutes", err=True)
    _finish_ranks(ddp.current())


def _finish_ranks(ctx) -> None:
    """Wait for every rank, then leave the process group (no-op in a single process)."""
    from trafficcore.training import ddp

    ddp.barrier(ctx)
    ddp.shutdown(ctx)


def _recipe(preset: str):
    """A named recipe, or one read from a JSON file (the form `Recipe.to_dict` writes, e.g.
    docs/examples/recipe_numeric.json)."""
    from trafficcore.models.lm import RECIPES
    from trafficcore.models.lm.config import LMConfig
    from trafficcore.models.lm.recipes import Recipe

    if preset in RECIPES:
        return RECIPES[preset]
    path = Path(preset)
    if path.suffix.lower() != ".json":
        raise UsageError(f"unknown preset {preset!r}; choose from {', '.join(sorted(RECIPES))} or give a recipe "
                         "JSON file")
    try:
        recipe = Recipe.from_dict(json.loads(path.read_text(encoding="utf-8")))
        LMConfig(**recipe.model)
    except OSError as e:
        raise UsageError(f"--preset {path}: cannot read it ({e.strerror})") from None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise UsageError(f"--preset {path}: not a recipe ({type(e).__name__}: {e})") from None
    return recipe


def _val_metrics(model, panel, rows) -> dict:
    """Per-horizon validation MAE and coverage, in the shape the language model and the stack record."""
    from trafficcore.data.windows import build_samples
    from trafficcore.training.engine import horizon_metrics

    samples = build_samples(panel, rows, None, model.spec)
    return horizon_metrics(model.predict_samples(panel, samples), samples.targets, model.spec.horizons_min)


def _size_mb(folder: Path) -> float:
    return sum(f.stat().st_size for f in Path(folder).glob("*") if f.is_file()) / 2**20


# ------------------------------------------------------------------------------ forecast
def default_model_dir(store, dataset: str) -> Path:
    """The saved model that serves the dataset (`trafficcore.live.serving`: promoted, else best on validation,
    else the shipped model where it applies); a forecast with no saved model to serve is a user error."""
    from trafficcore.live.serving import candidates

    try:
        saved = [c for c in candidates(store, dataset) if c.kind == "saved"]
    except KeyError:
        saved = []
    if not saved:
        raise UsageError(f"no trained model for dataset {dataset!r}; train one with "
                         f"`trafficcore train --dataset {dataset} --out DIR` or pass --model DIR")
    return Path(saved[0].path)


def parse_issue_time(panel, at: str) -> pd.Timestamp:
    """`latest` (just after the newest reading) or a timestamp on the data's grid with enough history."""
    import pandas as pd

    newest = panel.times[-1] + panel.interval
    if at.strip().lower() in ("latest", "now"):
        return newest
    try:
        ts = pd.Timestamp(at)
    except (ValueError, TypeError):
        raise UsageError(f"--at {at!r} is not a timestamp (e.g. 2006-10-31T08:00 or 'latest')") from None
    if ts.tzinfo is not None:
        raise UsageError(f"--at {at!r}: give local wall-clock time without a zone ({panel.info.get('timezone')})")
    if (ts - panel.times[0]) % panel.interval != pd.Timedelta(0):
        raise UsageError(f"--at {ts} is not on the data's {panel.interval} grid (e.g. {panel.times[-1]})")
    if ts > newest:
        raise UsageError(f"--at {ts} is after the newest reading; the latest possible issue time is {newest}")
    return ts


def forecast(
    dataset: Annotated[str, typer.Option("--dataset", help="dataset name in the store")],
    at: Annotated[str, typer.Option("--at", help="issue time (local wall clock) or 'latest'")] = "latest",
    model: Annotated[Path | None, typer.Option("--model", help="saved model folder (default: newest run)")] = None,
    db: Annotated[Path | None, typer.Option("--db", help="DuckDB store (default: $TRAFFICCORE_DB or data/)")] = None,
    observations_parquet: Annotated[Path | None, typer.Option(
        "--observations-parquet", help="read observations from this Parquet folder "
                                       "(default: $TRAFFICCORE_OBSERVATIONS_PARQUET, else the store)")] = None,
) -> None:
    """Forecast every detector at one issue time, write the forecasts table, print a summary. Under `torchrun`
    each rank forecasts its shard of the detectors and rank 0 writes them all."""
    try:
        _forecast(dataset, at, model, db, observations_parquet)
    except TrafficCoreError as e:
        _fail(str(e))


def _forecast(dataset: str, at: str, model: Path | None, db: Path | None,
              observations_parquet: Path | None = None) -> pd.DataFrame:
    import numpy as np
    import pandas as pd
    import torch

    from trafficcore.data.shard import owned_columns
    from trafficcore.data.windows import build_samples
    from trafficcore.models.base import forecast_frame
    from trafficcore.models.baselines import neighbour_index
    from trafficcore.models.files import read_config
    from trafficcore.models.registry import load_model
    from trafficcore.training import ddp
    from trafficcore.training.loop import cpu_threads

    sharded = ddp.env_world_size() > 1
    store = _store(db, read_only=True, observations_parquet=observations_parquet)
    if not sharded:
        panel = _panel(store, dataset)
        ts = parse_issue_time(panel, at)
    model_dir = Path(model) if model is not None else default_model_dir(store, dataset)
    if not (model_dir / "config.json").exists():
        raise UsageError(f"--model {model_dir} is not a saved model folder (config.json is missing)")
    t0 = time.perf_counter()
    try:
        m = load_model(model_dir)
    except (ValueError, KeyError, FileNotFoundError) as e:
        raise UsageError(f"cannot load the model in {model_dir}: {e}") from None
    load_s = time.perf_counter() - t0
    ctx = ddp.SINGLE
    if sharded:  # one shard per rank: its detectors and their neighbours, read for the model's neighbour lists
        ctx = ddp.init_from_env(torch.device("cpu"))
        panel = _panel(store, dataset, m.spec)
        ts = parse_issue_time(panel, at)
    row = int(round((ts - panel.times[0]) / panel.interval))
    if row < m.spec.history_steps:
        raise UsageError(f"--at {ts}: the model needs {m.spec.history_steps} intervals of history before it; "
                         f"the data start at {panel.times[0]}")
    torch.set_num_threads(cpu_threads(torch.device("cpu"), ctx.world_size))
    t1 = time.perf_counter()
    dets = owned_columns(panel) if panel.shard is not None else None
    samples = build_samples(panel, np.array([row]), dets, spec=m.spec, neighbour_idx=neighbour_index(panel, m.spec))
    df = forecast_frame(panel, samples, m.predict_samples(panel, samples))
    predict_s = time.perf_counter() - t1
    if sharded:  # ranks hold consecutive runs of the detectors: in rank order, the frame of one process
        got = ddp.all_gather_object((df, predict_s), ctx)
        if not ctx.is_main:
            _finish_ranks(ctx)
            return df
        df = pd.concat([g[0] for g in got], ignore_index=True)
        predict_s = max(g[1] for g in got)
    name = getattr(m, "name", model_dir.name)
    run_id = f"fc-{dataset}-{ts:%Y%m%dT%H%M}-{uuid.uuid4().hex[:8]}"
    out = df.copy()
    out.insert(0, "dataset", dataset)
    out.insert(0, "run_id", run_id)
    writer = _store(db, read_only=False, observations_parquet=observations_parquet)
    writer.write_frame("forecasts", out)
    cfg = read_config(model_dir)
    _record_run(db, run_id, dataset, name, model_dir, {"issued_at": str(ts), "model_metrics": cfg.get("metrics", {}),
                                                         "predict_s": predict_s, "ranks": ctx.world_size},
                {"model_dir": str(model_dir)})
    _print_summary(df, name, model_dir, run_id, ts, load_s, predict_s, panel.synthetic)
    _finish_ranks(ctx)
    return out


def _print_summary(df: pd.DataFrame, name: str, model_dir: Path, run_id: str, ts, load_s: float, predict_s: float,
                   synthetic: bool) -> None:
    import numpy as np

    tag = " (synthetic demo data)" if synthetic else ""
    n_det = df["detector_id"].nunique()
    typer.echo(f"forecast {run_id}: {n_det} detectors x {df['horizon_min'].nunique()} horizons issued at {ts}{tag}")
    typer.echo(f"  model {name} from {model_dir} (load {load_s:.1f} s, predict {predict_s * 1000:.0f} ms)")
    for h, g in df.groupby("horizon_min"):
        typer.echo(f"  +{h:>3} min: median P50 {g['p50'].median():.1f}, total {g['p50'].sum():,.0f}, "
                   f"mean band P10-P90 {np.mean(g['p90'] - g['p10']):.1f}")
    last = df[df["horizon_min"] == df["horizon_min"].max()].nlargest(5, "p50")
    busiest = ", ".join(f"{d} {v:.0f}" for d, v in zip(last["detector_id"], last["p50"], strict=True))
    typer.echo(f"  busiest at the longest horizon: {busiest}")


app = typer.Typer(help="Train models and issue forecasts (also the torchrun entry point).", no_args_is_help=True)
app.command("train")(train)
app.command("forecast")(forecast)

if __name__ == "__main__":
    app()
