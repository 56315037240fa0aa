"""`trafficcore events`: incidents, work zones and events fed into a live dataset.

Declared apart from `trafficcore.live.events` for the reason `trafficcore.live.cli` gives: the root command
imports every command's module to list it, and the event machinery needs pandas and DuckDB, so it is
imported when a command runs.
"""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="Incidents, work zones and events as live data (WZDx, Open511, CAD logs, own CSV/JSON).",
                  no_args_is_help=True)
FORMAT_HELP = "auto (by name and content), own, wzdx, open511 or cad"


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=2)


@app.command("ingest")
def ingest(
    files: list[Path] = typer.Argument(None, help="feed file(s): .csv (own or CAD), .json/.geojson (own, WZDx, "
                                                  "Open511); taken in name order"),
    dataset: str = typer.Option(..., "--dataset", help="dataset the events belong to (imported beforehand)"),
    watch_dir: Path | None = typer.Option(None, "--watch", help="folder to watch for new feed files"),
    once: bool = typer.Option(False, "--once", help="with --watch: take the files there now, then exit"),
    poll: float = typer.Option(1.0, "--poll", help="with --watch: seconds between looks at the folder"),
    fmt: str = typer.Option("auto", "--format", help=FORMAT_HELP),
    forecasts: bool = typer.Option(True, "--forecasts/--no-forecasts",
                                   help="re-issue the forecasts of the detectors each file changes now"),
    db: Path | None = typer.Option(None, "--db", help="DuckDB store (default: $TRAFFICCORE_DB or data/...)"),
) -> None:
    """Take incidents, work zones and events in: all or nothing per file, idempotent, updates and cancellations
    by id, and the affected detectors re-forecast at once.

    Given FILEs, a bad file stops the command (exit code 2) and the files after it are not read. With --watch
    DIR, good files move to DIR/done/ and bad ones to DIR/rejected/ with NAME.error.txt; Ctrl-C stops between
    files. Formats: docs/FORMATS.md, "Event feeds".
    """
    from trafficcore import config
    from trafficcore.data.loaders.event_feeds import FORMATS
    from trafficcore.data.store import Store
    from trafficcore.live.cli import take_files
    from trafficcore.live.events import SUFFIXES, ingest_event_file

    if bool(files) == (watch_dir is not None):
        _fail("give either FILE... or --watch DIR")
    if poll <= 0:
        _fail("--poll must be positive")
    if fmt not in ("auto", *FORMATS):
        _fail(f"--format must be auto or one of {list(FORMATS)}, got {fmt!r}")
    store = Store(config.db_path(db))
    try:
        store.dataset_info(dataset)
    except KeyError as e:
        _fail(str(e).strip("'\""))

    def take(store, dataset, path, refresh):
        return ingest_event_file(store, dataset, path, refresh=refresh, fmt=fmt)

    take_files(store, dataset, files, watch_dir, once=once, poll=poll, forecasts=forecasts, fail=_fail, take=take,
               suffixes=SUFFIXES, what="events of ")


@app.command("list")
def list_events(
    dataset: str = typer.Option(..., "--dataset"),
    at: str | None = typer.Option(None, "--at", help="local time (default: the newest reading's interval end)"),
    horizon: int = typer.Option(60, "--horizon", help="minutes ahead a planned event counts from"),
    db: Path | None = typer.Option(None, "--db", help="DuckDB store (default: $TRAFFICCORE_DB or data/...)"),
) -> None:
    """The events in effect: those a forecast issued at --at reads somewhere (started incidents, planned events
    starting within the horizon plus an hour, none that ended over an hour before)."""
    import pandas as pd

    from trafficcore import config
    from trafficcore.data.store import Store
    from trafficcore.live.events import active_events

    when = None
    if at is not None:
        try:
            when = pd.Timestamp(at)
        except (ValueError, TypeError):
            _fail(f"--at {at!r} is not a date/time")
    ev = active_events(Store(config.db_path(db), read_only=True), dataset, at=when, horizon_min=horizon)
    if ev.empty:
        typer.echo("no events in effect")
    for r in ev.itertuples():
        end = "open end" if pd.isna(r.end_ts) else f"until {pd.Timestamp(r.end_ts):%Y-%m-%d %H:%M}"
        sites = ", ".join(r.sites[:6]) + (" ..." if len(r.sites) > 6 else "")
        typer.echo(f"{r.event_id} [{r.kind}] {pd.Timestamp(r.start_ts):%Y-%m-%d %H:%M}, {end}: {r.text} "
                   f"(sites {sites or 'none'})")
