"""`trafficcore update` (continual fine-tuning) and `trafficcore models list|promote|rollback` (the registry).

Registered by `trafficcore.cli`. User errors print one line and exit with code 2; a failed command leaves the
registry as it was (every registry change is one transaction).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from trafficcore import config
from trafficcore.errors import TrafficCoreError

DbOpt = Annotated[Path | None, typer.Option("--db", help="DuckDB store (default: $TRAFFICCORE_DB or data/)")]


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=2)


def _store(db: Path | None, dataset: str | None = None):
    from trafficcore.data.store import Store

    path = config.db_path(db)
    if not path.exists():
        _fail(f"no store at {path}; import a dataset first (trafficcore import ... or trafficcore demo)")
    store = Store(path)
    if dataset is not None and dataset not in store.dataset_names():
        _fail(f"no dataset named {dataset!r} in {path}; known: {', '.join(store.dataset_names()) or 'none'}")
    return store


# ------------------------------------------------------------------------------ update
def update(
    dataset: Annotated[str, typer.Option("--dataset", help="dataset name in the store")],
    model: Annotated[Path | None, typer.Option("--model", help="model folder to update (default: promoted)")] = None,
    steps: Annotated[int, typer.Option("--steps", help="fine-tuning optimiser steps (0: no training)")] = 300,
    replay_ratio: Annotated[float, typer.Option("--replay-ratio", help="share of replayed old samples")] = 0.5,
    holdout_days: Annotated[int, typer.Option("--holdout-days", help="newest days held out for evaluation")] = 1,
    out: Annotated[Path | None, typer.Option("--out", help="candidate folder (default: <db dir>/models/...)")] = None,
    no_promote: Annotated[bool, typer.Option("--no-promote", help="register the candidate, never promote")] = False,
    lr: Annotated[float, typer.Option("--lr", help="fine-tuning learning rate")] = 5e-4,
    since: Annotated[str | None, typer.Option("--since", help="end of the model's data, if it does not record it")]
    = None,
    seed: Annotated[int, typer.Option("--seed", help="random seed")] = 0,
    max_eval_samples: Annotated[int | None, typer.Option(
        "--max-eval-samples", help="score a seeded subset per window (default: at most 200,000)")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the result here")] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="show progress bars")] = True,
    db: DbOpt = None,
) -> None:
    """Fine-tune the current language model on readings since its training, with replay of older samples;
    promote it only if it beats the current model on the newest held-out day(s)."""
    from trafficcore.live.update import as_dict, report_lines, run_update

    store = _store(db, dataset)
    try:
        result = run_update(store, dataset, model, steps=steps, replay_ratio=replay_ratio, holdout_days=holdout_days,
                            out=out, promote=not no_promote, lr=lr, since=since, seed=seed,
                            max_eval_samples=max_eval_samples, progress=progress, echo=typer.echo)
    except (TrafficCoreError, ValueError) as e:
        _fail(str(e))
    for line in report_lines(result):
        typer.echo(line)
    if json_out is not None:
        json_out.write_text(json.dumps(as_dict(result), indent=2))
        typer.echo(f"wrote {json_out}")


# ------------------------------------------------------------------------------ models
models_app = typer.Typer(help="The model registry: list versions, promote one, roll back.", no_args_is_help=True)


def _headline(metrics: dict) -> str:
    """One number to compare versions by: held-out MAE of an update (and, where its parent served live forecasts,
    both on that served window), else mean validation MAE of a fit."""
    if metrics.get("holdout_mae") is not None:
        served = (f"; served window {metrics['served_mae']:.3f} vs parent as served {metrics['served_mae_parent']:.3f}"
                  if metrics.get("served_mae") is not None else "")
        return f"held-out MAE {metrics['holdout_mae']:.3f}{served}"
    val = metrics.get("val") or {}
    maes = [v["mae"] for v in val.values() if isinstance(v, dict) and "mae" in v]
    return f"val MAE {sum(maes) / len(maes):.3f}" if maes else ""


@models_app.command("list")
def list_(
    dataset: Annotated[str, typer.Option("--dataset", help="dataset name in the store")],
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    db: DbOpt = None,
) -> None:
    """Model versions of a dataset, newest first; * marks the promoted one."""
    from trafficcore.live import monitor, registry

    store = _store(db, dataset)
    df = registry.runs(store, dataset)
    served = {str(r.run_id).removeprefix(monitor.LIVE_PREFIX): {"mae": float(r.mae), "n": int(r.n)} for r in
              monitor.accuracy(store, dataset, monitor.WINDOWS["7d"], ["run_id"]).itertuples(index=False)}
    if as_json:
        cols = ["run_id", "model", "created_at", "status", "promoted", "promoted_at", "parent_run_id", "train_end",
                "path", "metrics"]
        rows = [{k: (str(v) if k in ("created_at", "promoted_at", "train_end") and v is not None and v == v else v)
                 for k, v in r.items()} | {"served_7d": served.get(r["run_id"])} for r in df[cols].to_dict("records")]
        from trafficcore.models.files import to_jsonable

        typer.echo(json.dumps(to_jsonable(rows), indent=2, default=str))
        return
    if df.empty:
        typer.echo(f"no model versions for {dataset!r}; train one (trafficcore train) or run trafficcore update")
        return
    for r in df.itertuples(index=False):
        mark = "*" if r.promoted else " "
        parent = f" from {r.parent_run_id}" if isinstance(r.parent_run_id, str) else ""
        seen = f", data to {r.train_end}" if r.train_end is not None and r.train_end == r.train_end else ""
        when = f"{r.created_at:%Y-%m-%d %H:%M:%S}" if r.created_at == r.created_at else ""
        live = served.get(r.run_id)
        live_txt = f"  served MAE {live['mae']:.3f} over {live['n']:,} forecasts (7 days)" if live else ""
        typer.echo(f"{mark} {r.run_id}  {r.model}  {r.status or ''}  {when}{seen}{parent}  "
                   f"{_headline(r.metrics)}{live_txt}")


@models_app.command("promote")
def promote_(
    run_id: Annotated[str, typer.Argument(help="run id (see trafficcore models list)")],
    db: DbOpt = None,
) -> None:
    """Make RUN_ID its dataset's promoted model (the previous one is kept, for rollback)."""
    from trafficcore.live import registry

    try:
        row = registry.promote(_store(db), run_id)
    except TrafficCoreError as e:
        _fail(str(e))
    typer.echo(f"promoted {row['run_id']} for dataset {row['dataset']!r} ({row['path']})")


@models_app.command("rollback")
def rollback_(
    dataset: Annotated[str, typer.Option("--dataset", help="dataset name in the store")],
    db: DbOpt = None,
) -> None:
    """Re-promote the previously promoted model; run it again to undo."""
    from trafficcore.live import registry

    try:
        r = registry.rollback(_store(db, dataset), dataset)
    except TrafficCoreError as e:
        _fail(str(e))
    typer.echo(f"rolled back {dataset!r}: {r['from']} -> {r['to']} (promoted again; `trafficcore models rollback "
               f"--dataset {dataset}` undoes this)")
