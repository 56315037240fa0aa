"""The `trafficcore` command. Every sub-command accepts `--db PATH` (else TRAFFICCORE_DB, else
data/trafficcore.duckdb). User errors print one line and exit with code 2; nothing is written.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click
import typer
import typer.core

from trafficcore import config
from trafficcore.errors import TrafficCoreError


class _Commands(typer.core.TyperGroup):
    """The root command group: one place that turns user errors into one line and exit code 2.

    Why here rather than in each command: a bad `--dataset` name or a `--db` that is not a store can
    reach any command, including those whose code lives with its layer (training, signal, live).
    Every `--dataset` option of every sub-command is checked against the data layer's one naming
    rule (`validate.check_dataset_name`) before the command runs.
    """

    def invoke(self, ctx: click.Context):
        _check_dataset_options(self)
        try:
            return super().invoke(ctx)
        except TrafficCoreError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(code=2) from None


def _check_dataset_options(group: click.Group) -> None:
    """Give each `--dataset` option (in sub-groups too) the dataset-name check, once."""
    for cmd in group.commands.values():
        if isinstance(cmd, click.Group):
            _check_dataset_options(cmd)
        for param in cmd.params:
            if param.name == "dataset" and not getattr(param, "_name_checked", False):
                param.callback = _name_checked(param.callback)
                param._name_checked = True  # type: ignore[attr-defined]


def _name_checked(callback):
    def check(ctx: click.Context, param: click.Parameter, value):
        from trafficcore.data.validate import check_dataset_name

        if value is not None:
            check_dataset_name(value)
        return callback(ctx, param, value) if callback is not None else value

    return check


app = typer.Typer(
    cls=_Commands,
    help="Traffic forecasts, explanations and signal timing for a city's intersections.",
    no_args_is_help=True,
)

DbOpt = typer.Option(None, "--db", help="DuckDB store (default: $TRAFFICCORE_DB or data/trafficcore.duckdb)")


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=2)


def _ingest(db: Path | None, dataset: str, tables, observation_chunks=None) -> None:
    from trafficcore.data.store import Store

    store = Store(db)
    t0 = time.perf_counter()
    counts = store.ingest(dataset, tables, observation_chunks)
    dt = time.perf_counter() - t0
    summary = ", ".join(f"{k} {v:,}" for k, v in counts.items() if v)
    typer.echo(f"imported dataset '{dataset}' into {store.path}: {summary} ({dt:.1f} s to write)")


@app.command("import")
def import_(
    fmt: str = typer.Argument(..., help="scats | citypulse | matrix | long"),
    paths: list[Path] = typer.Argument(..., help="input file(s) or folder"),
    dataset: str = typer.Option(..., "--dataset", help="name of the dataset in the store"),
    sites_listing: Path | None = typer.Option(None, help="scats: VicRoads site listing (.xls or .csv)"),
    events: Path | None = typer.Option(None, help="citypulse: event listings CSV"),
    locations: Path | None = typer.Option(None, help="matrix: locations CSV (id, lat, lon)"),
    adjacency: Path | None = typer.Option(None, help="matrix: adjacency CSV (from,to,cost or N x N weights)"),
    start: str | None = typer.Option(None, help="matrix: timestamp of the first row when the file has none"),
    interval: str | None = typer.Option(None, help="matrix/long: interval, e.g. 300 or 5min"),
    measure: str = typer.Option("volume", help="matrix: volume | speed"),
    zero_is_missing: bool = typer.Option(False, help="matrix: treat 0 as a missing reading (METR-LA speeds)"),
    sites: Path | None = typer.Option(None, help="long: sites CSV"),
    detectors: Path | None = typer.Option(None, help="long: detectors CSV"),
    timezone: str = typer.Option("UTC", help="matrix/long: IANA time zone of the local timestamps"),
    db: Path | None = DbOpt,
) -> None:
    """Import real detector data into the store (one transaction: all or nothing)."""
    try:
        if fmt == "scats":
            from trafficcore.data.loaders import scats

            _one(paths, fmt)
            tables = scats.load(paths[0], sites_listing=sites_listing)
        elif fmt == "citypulse":
            from trafficcore.data.loaders import citypulse

            _one(paths, fmt)
            tables = citypulse.load(paths[0], events=events)
        elif fmt == "matrix":
            from trafficcore.data.loaders import matrix

            _one(paths, fmt)
            tables = matrix.load(
                paths[0],
                locations=locations,
                adjacency=adjacency,
                start=start,
                interval=interval,
                measure=measure,
                timezone=timezone,
                zero_is_missing=zero_is_missing,
            )
        elif fmt == "long":
            from trafficcore.data.loaders import long

            _one(paths, fmt)
            if sites is None or detectors is None:
                _fail("long: --sites and --detectors are required")
            tables = long.load(paths[0], sites=sites, detectors=detectors, timezone=timezone, interval=interval)
        else:
            _fail(f"unknown format {fmt!r}; choose scats, citypulse, matrix or long")
        _ingest(db, dataset, tables)
    except TrafficCoreError as e:
        _fail(str(e))


def _one(paths: list[Path], fmt: str) -> None:
    if len(paths) != 1:
        _fail(f"{fmt}: give exactly one path, got {len(paths)}")


@app.command()
def demo(
    seed: int = typer.Option(0, help="random seed (the data are deterministic for a seed)"),
    dataset: str | None = typer.Option(None, "--dataset", help="dataset name (default: demo; region with --sites)"),
    weeks: int | None = typer.Option(None, help="weeks of 15-minute counts (default: 8; 4 with --sites)"),
    sites: int | None = typer.Option(None, "--sites", help="instead of the 40-site demo city, a synthetic region of "
                                                           "this many signalised sites (trafficcore.data.region)"),
    db: Path | None = DbOpt,
) -> None:
    """Generate the synthetic demo city (or, with --sites N, a region of N sites) and import it."""
    if sites is not None:
        _region(seed, dataset or "region", weeks, sites, db)
        return
    from trafficcore.data import demo as demo_city

    dataset = dataset or "demo"
    t0 = time.perf_counter()
    try:
        tables = demo_city.generate(seed=seed, weeks=8 if weeks is None else weeks)
    except ValueError as e:
        _fail(str(e))
    typer.echo(f"generated the demo city (synthetic) in {time.perf_counter() - t0:.1f} s")
    _ingest(db, dataset, tables)
    _first_view(db, dataset)


def _region(seed: int, dataset: str, weeks: int | None, sites: int, db: Path | None) -> None:
    """`demo --sites N`: generate the region and write its observations in chunks (one transaction)."""
    import numpy as np

    from trafficcore.data import region

    t0 = time.perf_counter()
    try:
        weeks = region.DEFAULT_WEEKS if weeks is None else weeks
        tables, counts, truth = region.simulate(sites, seed=seed, weeks=weeks)
    except ValueError as e:
        _fail(str(e))
    typer.echo(f"generated the region '{region.REGION}' (synthetic): {len(tables.sites):,} sites, "
               f"{len(tables.detectors):,} detectors, {int(np.isfinite(counts).sum()):,} readings "
               f"in {time.perf_counter() - t0:.1f} s")
    _ingest(db, dataset, tables, region.observation_chunks(counts, truth.times, truth.detector_ids))
    _first_view(db, dataset)


def _first_view(db: Path | None, dataset: str) -> None:
    """Store the shipped model's forecasts the dashboard opens on (trafficcore.ui.first_view says why)."""
    from trafficcore.data.store import Store
    from trafficcore.ui import first_view

    t0 = time.perf_counter()
    try:
        res = first_view.prepare(Store(db), dataset, config.DEMO_MODEL_DIR)
    except Exception as e:  # noqa: BLE001 - optional: the dashboard then loads the model on its first start
        typer.echo(f"note: the dashboard's first forecasts were not issued ahead ({type(e).__name__}: {e})", err=True)
        return
    if res:
        typer.echo(f"issued the shipped model's forecasts for the dashboard's first view "
                   f"({res['issued_at']:%a %d %b %Y %H:%M}, {res['rows']:,} rows) in {time.perf_counter() - t0:.1f} s")


@app.command()
def datasets(
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
    db: Path | None = DbOpt,
) -> None:
    """List the datasets in the store."""
    from trafficcore.data.store import Store

    path = config.db_path(db)
    rows = Store(path, read_only=True).datasets() if path.exists() else []
    keys = ["name", "sites", "detectors", "observations", "start", "end", "interval_s", "synthetic"]
    rows = [{k: r[k] for k in keys} for r in rows]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo(f"no datasets in {path}")
    for r in rows:
        tag = " (synthetic)" if r["synthetic"] else ""
        typer.echo(
            f"{r['name']}{tag}: {r['sites']} sites, {r['detectors']} detectors, {r['observations']:,} observations, "
            f"{r['start']} .. {r['end']}, every {r['interval_s']} s"
        )


export_app = typer.Typer(help="Copy a dataset out of the store into files any engine reads.", no_args_is_help=True)
app.add_typer(export_app, name="export")


@export_app.command("parquet")
def export_parquet(
    dataset: str = typer.Option(..., "--dataset"),
    out: Path = typer.Option(..., "--out", help="Parquet folder (one dataset=<name> partition per dataset)"),
    row_group_rows: int | None = typer.Option(None, "--row-group-rows", min=1000,
                                              help="rows per Parquet row group (default 122,880)"),
    db: Path | None = DbOpt,
) -> None:
    """Write a dataset's observations to OUT/dataset=<name>/month=<YYYY-MM>/part-0.parquet (sorted by detector and
    time; an earlier export of the dataset is replaced). Read them back with --observations-parquet OUT or
    TRAFFICCORE_OBSERVATIONS_PARQUET=OUT (docs/SCALE.md, "Beyond one machine")."""
    from trafficcore.data.store import Store

    path = config.db_path(db)
    if not path.exists():
        _fail(f"no store at {path}")
    t0 = time.perf_counter()
    res = Store(path, read_only=True).export_parquet(dataset, out, row_group_rows)
    typer.echo(f"exported {res['rows']:,} observations of '{dataset}' to {res['folder']}: {res['files']} files, "
               f"{res['bytes'] / 2**20:.1f} MB in {time.perf_counter() - t0:.1f} s")


@app.command()
def explain(
    dataset: str = typer.Option(..., "--dataset"),
    detector: str = typer.Option(..., "--detector", help="detector_id"),
    at: str = typer.Option(..., "--at", help="issue time (local)"),
    horizon: int = typer.Option(30, "--horizon", help="minutes ahead"),
    note: str | None = typer.Option(None, "--note", help="a scenario note added to the context text"),
    model: Path | None = typer.Option(None, "--model", help="saved model folder (default: the best available)"),
    json_out: Path | None = typer.Option(None, "--json", help="write the explanation here"),
    db: Path | None = DbOpt,
) -> None:
    """Why a forecast is what it is: SHAP attributions over context words and numeric features."""
    from trafficcore.data.panel import load_panel
    from trafficcore.data.store import Store
    from trafficcore.explain import explain as run_explain
    from trafficcore.live.serving import load_saved, serving_model

    try:
        store = Store(config.db_path(db), read_only=True)
        panel = load_panel(store, dataset)
        m = load_saved(model) if model is not None else serving_model(store, dataset).model
        e = run_explain(m, panel, detector, at, horizon, note=note)
    except (KeyError, ValueError, TrafficCoreError) as err:
        _fail(str(err).strip("'\""))
    typer.echo(e.summary)
    if json_out:
        keys = ["prediction", "base_value", "tokens", "features", "summary", "model", "detector_id", "issued_at",
                "horizon_min", "typical", "text", "note_read", "note_unread"]
        json_out.write_text(json.dumps({k: e.to_dict()[k] for k in keys}, indent=2))
        typer.echo(f"wrote {json_out}")


def _register_subcommands() -> None:
    """Commands whose code lives with its layer (training, evaluation, signal, live)."""
    from trafficcore.api.serve import serve
    from trafficcore.evaluation.cli import benchmark
    from trafficcore.live.cli import incident_cmd, ingest_cmd, replay_cmd
    from trafficcore.live.events_cli import app as events_app
    from trafficcore.live.models_cli import models_app, update
    from trafficcore.live.monitor_cli import monitor_cmd
    from trafficcore.signal.cli import app as signal_app
    from trafficcore.training.cli import forecast, train

    app.command("train")(train)
    app.command("forecast")(forecast)
    app.command("benchmark")(benchmark)
    app.command("serve")(serve)
    app.add_typer(signal_app, name="signal")
    app.command("update")(update)
    app.add_typer(models_app, name="models")
    app.command("ingest")(ingest_cmd)
    app.command("replay")(replay_cmd)
    app.command("incident")(incident_cmd)
    app.add_typer(events_app, name="events")
    app.command("monitor")(monitor_cmd)


_register_subcommands()


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except TrafficCoreError as e:  # pragma: no cover - commands catch their own
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
