"""`trafficcore benchmark`: the runner behind one command (registered by trafficcore.cli).

Kept apart from the runner so that importing the evaluation package never imports typer, and so
the lead can register it with `app.command("benchmark")(benchmark)`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from trafficcore import config
from trafficcore.errors import TrafficCoreError

DEFAULT_MODELS = "persistence,seasonal_naive,historical_average,gbt"


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=2)


def benchmark(
    dataset: str = typer.Option(..., "--dataset", help="dataset name in the store"),
    protocol: str = typer.Option("standard", "--protocol", help="standard | tgcn | cold-start"),
    models: str = typer.Option(DEFAULT_MODELS, "--models", help="comma-separated model names (see the registry)"),
    json_out: Path | None = typer.Option(None, "--json", help="write the report as JSON to this file"),
    db: Path | None = typer.Option(None, "--db", help="DuckDB store (default: $TRAFFICCORE_DB, else data/)"),
    seed: int = typer.Option(0, "--seed", help="seed for models and the cold-start site draw"),
    seeds: str | None = typer.Option(None, "--seeds", help="instead of --seed: run once per seed (e.g. 0,1,2) and "
                                     "report mean ± sd and paired bootstrap intervals against gbt"),
    block_hours: float = typer.Option(4.0, "--block-hours", help="--seeds: bootstrap block length in hours"),
    replicates: int = typer.Option(2000, "--replicates", help="--seeds: bootstrap replicates"),
    ablations: bool = typer.Option(False, "--ablations/--no-ablations", help="also score models' ablation variants"),
    variants: str | None = typer.Option(None, "--variants", help="only these ablation variants (comma-separated, "
                                        "e.g. numeric_only,fgm,full); implies --ablations"),
    save_models: Path | None = typer.Option(None, "--save-models", help="save each fitted model under this folder "
                                            "(--seeds: under FOLDER/seed<k>/)"),
    load_models: Path | None = typer.Option(None, "--load-models", help="score models saved by --save-models "
                                            "instead of fitting them (a stack then blends them)"),
    preset: str | None = typer.Option(None, "--preset", help="training preset of the lm model: quick | full"),
    speed: str | None = typer.Option(None, "--speed", help="instead: time saved model folders (comma-separated) "
                                     "forecasting every detector, horizon and quantile at one issue time"),
    at: str | None = typer.Option(None, "--at", help="--speed: first issue time (default: near the end of the data)"),
    repeats: int = typer.Option(5, "--repeats", help="--speed: warm calls to time, at successive issue times"),
    threads: int | None = typer.Option(None, "--threads", help="--speed: torch CPU threads (default: torch's)"),
) -> None:
    """Fit and score models under an evaluation protocol; print a markdown table.

    With --speed, time saved models instead (cold and warm forecast of all detectors; samples/s, peak memory)."""
    from tqdm import tqdm

    from trafficcore.data.store import Store
    from trafficcore.evaluation.benchmark import markdown_table, run_benchmark

    path = config.db_path(db)
    if not path.exists():
        _fail(f"no store at {path}; import a dataset first (trafficcore import ... or trafficcore demo)")
    if speed is not None:
        _speed(path, dataset, speed, at, repeats, threads, json_out)
        return
    names = [m.strip() for m in models.split(",") if m.strip()]
    if not names:
        _fail("--models is empty")
    model_kwargs = {}
    if preset:
        from trafficcore.models.lm import RECIPES

        if "lm" not in names:
            _fail("--preset sets the lm model's training preset, but lm is not in --models")
        if preset not in RECIPES:
            _fail(f"unknown preset {preset!r}; choose from {', '.join(sorted(RECIPES))}")
        model_kwargs = {"lm": {"recipe": preset}}
    bar = tqdm(total=1 + 2 * len(names), unit="step", dynamic_ncols=True, leave=False)
    started = time.perf_counter()

    def on_step(message: str) -> None:
        if bar.n + 1 > bar.total:
            bar.total = bar.n + 2  # ablation variants add stages the bar could not know about
        bar.set_description(message)
        bar.update(1)

    if seeds is not None:
        _seeds(path, dataset, protocol, names, seeds, model_kwargs, block_hours, replicates, json_out, started,
               bar, on_step, save_models, load_models)
        return
    try:
        report = run_benchmark(Store(path, read_only=True), dataset, protocol, names, seed=seed, ablations=ablations,
                               variants=[v.strip() for v in variants.split(",") if v.strip()] if variants else None,
                               save_dir=save_models, load_dir=load_models, on_step=on_step,
                               model_kwargs=model_kwargs)
    except TrafficCoreError as e:
        bar.close()
        _fail(str(e))
    bar.close()
    _show(report, markdown_table(report), f"{len(names)} model(s) in {time.perf_counter() - started:.1f} s", json_out)


def _show(report: dict, table: str, summary: str, json_out: Path | None) -> None:
    """Print the table and its one-line summary; write the report as JSON where asked."""
    typer.echo(table)
    typer.echo(f"\n{summary}")
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(report, indent=2))
        typer.echo(f"wrote {json_out}")


def _seeds(path: Path, dataset: str, protocol: str, names: list[str], seeds: str, model_kwargs: dict,
           block_hours: float, replicates: int, json_out: Path | None, started: float, bar, on_step,
           save_dir: Path | None = None, load_dir: Path | None = None) -> None:
    from trafficcore.data.store import Store
    from trafficcore.evaluation.seeds import parse_seeds, run_seeds, seeds_table

    try:
        seed_list = parse_seeds(seeds)
        bar.total = 1 + 2 * len(names) * len(seed_list)
        report = run_seeds(Store(path, read_only=True), dataset, protocol, names, seed_list,
                           model_kwargs=model_kwargs, block_hours=block_hours, replicates=replicates,
                           on_step=on_step, save_dir=save_dir, load_dir=load_dir)
    except TrafficCoreError as e:
        bar.close()
        _fail(str(e))
    bar.close()
    _show(report, seeds_table(report),
          f"{len(names)} model(s) x {len(seed_list)} seed(s) in {time.perf_counter() - started:.1f} s", json_out)


def _speed(path: Path, dataset: str, speed: str, at: str | None, repeats: int, threads: int | None,
           json_out: Path | None) -> None:
    from trafficcore.data.store import Store
    from trafficcore.evaluation.benchmark import inference_speed, speed_table

    dirs = [d.strip() for d in speed.split(",") if d.strip()]
    if not dirs:
        _fail("--speed names no model folder")
    try:
        report = inference_speed(Store(path, read_only=True), dataset, dirs, issued_at=at, repeats=repeats,
                                 threads=threads)
    except (TrafficCoreError, ValueError) as e:
        _fail(str(e))
    typer.echo(speed_table(report))
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(report, indent=2))
        typer.echo(f"wrote {json_out}")
