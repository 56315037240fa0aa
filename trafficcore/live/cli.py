"""`trafficcore replay` and `trafficcore ingest`: the live feed's commands.

They live apart from the machinery they drive (`trafficcore.live.replay`, `trafficcore.live.watch`)
because the root command imports every command's module to list it, even for `--help`; the feed
machinery needs pandas and DuckDB, so it is imported when a command runs, not when it is declared
(issue 15).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from trafficcore.errors import DataError, TrafficCoreError

if TYPE_CHECKING:
    from trafficcore.live.replay import ReplayStep


def replay_cmd(
    dataset: str = typer.Option(..., "--dataset", help="source dataset whose history is replayed"),
    start: str = typer.Option(..., "--from", help="first interval to feed (local time)"),
    end: str | None = typer.Option(None, "--to", help="stop before this time (default: the newest reading)"),
    speed: float = typer.Option(60.0, "--speed", help="how many times faster than real time; 0: as fast as possible"),
    into: str | None = typer.Option(None, "--into", help="live dataset to build and feed (default: SRC-live)"),
    forecasts: bool = typer.Option(True, "--forecasts/--no-forecasts", help="re-issue forecasts after each interval"),
    alerts: bool = typer.Option(True, "--alerts/--no-alerts", help="re-compute alerts after each interval"),
    db: Path | None = typer.Option(None, "--db", help="DuckDB store (default: $TRAFFICCORE_DB or data/...)"),
) -> None:
    """Feed a dataset's history into a live copy as if it were arriving now (demos, tests)."""
    from tqdm import tqdm

    from trafficcore import config
    from trafficcore.data.store import Store
    from trafficcore.live.replay import replay

    store = Store(config.db_path(db))
    bar = None

    def progress(step: ReplayStep, i: int, n: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=n, unit="interval", desc=f"replay {dataset}")
        bar.set_postfix_str(f"{step.ts:%Y-%m-%d %H:%M} +{step.written} readings, {step.alerts} alerts")
        bar.update(1)

    try:
        res = replay(store, dataset, start, end, speed=speed, into=into, forecasts=forecasts, alerts=alerts,
                     on_step=progress)
    except (TrafficCoreError, ValueError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(code=2) from None
    finally:
        if bar is not None:
            bar.close()
    copied = ", ".join(f"{k} {v:,}" for k, v in res.copied.items() if v)
    fed = sum(s.written for s in res.steps)
    typer.echo(f"'{res.into}' built from '{res.source}' ({copied}); fed {len(res.steps)} intervals, "
               f"{fed:,} readings" + ("; stopped early" if res.stopped else ""))
    if res.steps:
        last = res.steps[-1]
        typer.echo(f"last interval {last.ts:%Y-%m-%d %H:%M}: {last.forecasts} forecasts issued, {last.alerts} alerts")


def ingest_cmd(
    files: list[Path] = typer.Argument(None, help="long-format observation CSV file(s), taken in name order"),
    dataset: str = typer.Option(..., "--dataset", help="dataset the readings belong to (imported beforehand)"),
    watch_dir: Path | None = typer.Option(None, "--watch", help="folder to watch for new observation files"),
    once: bool = typer.Option(False, "--once", help="with --watch: take the files there now, then exit"),
    poll: float = typer.Option(1.0, "--poll", help="with --watch: seconds between looks at the folder"),
    forecasts: bool = typer.Option(True, "--forecasts/--no-forecasts", help="re-issue forecasts after each file"),
    log_format: str | None = typer.Option(None, "--log-format", help="json or text: structured log lines on stderr "
                                          "(one per batch, refusal and forecast refresh); default "
                                          "$TRAFFICCORE_LOG_FORMAT, else none"),
    db: Path | None = typer.Option(None, "--db", help="DuckDB store (default: $TRAFFICCORE_DB or data/...)"),
) -> None:
    """Take live readings in from long-format CSV files (detector_id, timestamp, value): idempotent, in order.

    Each file is one transaction. Given FILEs, a bad file stops the command (exit code 2) and the files
    after it are not read. With --watch DIR, good files move to DIR/done/ and bad ones to DIR/rejected/
    with NAME.error.txt; Ctrl-C stops between files.
    """
    from trafficcore import config
    from trafficcore.data.store import Store
    from trafficcore.live.watch import ingest_file, watch

    def fail(message: str) -> None:
        typer.echo(f"error: {message}", err=True)
        raise typer.Exit(code=2)

    if bool(files) == (watch_dir is not None):
        fail("give either FILE... or --watch DIR")
    if poll <= 0:
        fail("--poll must be positive")
    log_format = log_format or os.environ.get("TRAFFICCORE_LOG_FORMAT") or None
    if log_format and log_format != "off":
        from trafficcore import logs

        try:
            logs.setup(log_format)
        except ValueError as e:
            fail(str(e))
    store = Store(config.db_path(db))
    try:
        store.dataset_info(dataset)
    except KeyError as e:
        fail(str(e).strip("'\""))
    if watch_dir is not None:
        typer.echo(f"watching {watch_dir} for dataset '{dataset}' ({'once' if once else 'Ctrl-C to stop'})")
        try:
            outs = watch(store, dataset, watch_dir, once=once, poll=poll, refresh=forecasts, echo=typer.echo)
        except KeyboardInterrupt:
            typer.echo("stopped")
            return
        except DataError as e:
            fail(str(e))
        counts = {s: sum(o.status == s for o in outs) for s in ("ingested", "duplicate", "rejected")}
        typer.echo(", ".join(f"{n} {s}" for s, n in counts.items()))
        return
    ordered = sorted(files, key=lambda p: (p.name, p.stat().st_mtime_ns if p.exists() else 0))
    for p in ordered:
        out = ingest_file(store, dataset, p, refresh=forecasts)
        if out.status == "rejected":
            rest = len(ordered) - ordered.index(p) - 1
            fail(out.message + (f" ({rest} later file(s) not read)" if rest else ""))
        typer.echo(f"{out.status}: {out.message}")
