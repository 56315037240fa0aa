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
    from trafficcore.live.watch import ingest_file

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
    take_files(store, dataset, files, watch_dir, once=once, poll=poll, forecasts=forecasts, fail=fail,
               take=lambda st, ds, path, refresh: ingest_file(st, ds, path, refresh=refresh))


def take_files(store, dataset: str, files: list[Path] | None, watch_dir: Path | None, *, once: bool, poll: float,
               forecasts: bool, fail, take, suffixes: tuple[str, ...] | None = None, what: str = "") -> None:
    """The body shared by `ingest` and `events ingest`: FILEs in name order, a bad one stopping the command
    (later files not read), or a watched folder (`live.watch.watch`) until Ctrl-C; `take(store, dataset, path,
    refresh)` ingests one file."""
    from trafficcore.live.watch import watch

    if watch_dir is not None:
        typer.echo(f"watching {watch_dir} for {what}dataset '{dataset}' ({'once' if once else 'Ctrl-C to stop'})")
        extra = {} if suffixes is None else {"suffixes": suffixes}
        try:
            outs = watch(store, dataset, watch_dir, once=once, poll=poll, refresh=forecasts, echo=typer.echo,
                         take=take, **extra)
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
        out = take(store, dataset, p, forecasts)
        if out.status == "rejected":
            rest = len(ordered) - ordered.index(p) - 1
            fail(out.message + (f" ({rest} later file(s) not read)" if rest else ""))
        typer.echo(f"{out.status}: {out.message}")


def incident_cmd(
    dataset: str = typer.Option(..., "--dataset", help="dataset the incident happens in"),
    event: str | None = typer.Option(None, "--event", help="an event of the dataset by id (see --list)"),
    site: str | None = typer.Option(None, "--site", help="typed incident: the site it happens at"),
    kind: str | None = typer.Option(None, "--kind", help="typed incident: crash, lane closure, concert, ..."),
    text: str | None = typer.Option(None, "--text", help="typed incident: one sentence, as a report would say it"),
    start: str | None = typer.Option(None, "--start", help="typed incident: when it starts (local time)"),
    duration: float = typer.Option(60.0, "--duration", help="typed incident: expected duration in minutes"),
    at: str | None = typer.Option(None, "--at", help="issue time (default: the incident's start; planned events "
                                                     "an hour before; a typed one: its start)"),
    radius: float | None = typer.Option(None, "--radius", help="neighbour radius in km (default: the model's "
                                                                "event radius)"),
    max_signals: int = typer.Option(4, "--max-signals", help="signals to retime at most"),
    model: Path | None = typer.Option(None, "--model", help="saved model folder (default: the one serving the "
                                                            "dataset)"),
    list_: bool = typer.Option(False, "--list", help="list the dataset's events that can be analysed, and exit"),
    json_out: Path | None = typer.Option(None, "--json", help="write the whole report as JSON here"),
    csv_out: Path | None = typer.Option(None, "--csv", help="write the forecasts with and without as CSV here"),
    signals_out: Path | None = typer.Option(None, "--signals-csv", help="write the signal changes as CSV here"),
    db: Path | None = typer.Option(None, "--db", help="DuckDB store (default: $TRAFFICCORE_DB or data/...)"),
) -> None:
    """An incident's expected effect on its site and neighbours over the next 2 hours (forecast with and without
    it, P10-P90), and the signal timing the robust optimiser recommends against the new demand."""
    from trafficcore import config
    from trafficcore.data.panel import load_panel
    from trafficcore.data.store import Store
    from trafficcore.live import incident as inc
    from trafficcore.live import incident_report as rep
    from trafficcore.live.serving import load_saved, serving_model

    def fail(message: str) -> None:
        typer.echo(f"error: {message}", err=True)
        raise typer.Exit(code=2)

    typed = [site, kind, text, start]
    if not list_ and (event is None) == (not any(v is not None for v in typed)):
        fail("give either --event ID or a typed incident (--site, --kind, --text, --start)")
    path = config.db_path(db)
    if not path.exists():
        fail(f"no store at {path} (run `trafficcore demo` or import data first)")
    try:
        store = Store(path, read_only=True)
        panel = load_panel(store, dataset)
        if model is not None:
            m, name = load_saved(model), None
        else:
            serving = serving_model(store, dataset)
            m, name = serving.model, serving.display_name
        if list_:
            table = inc.incident_list(panel, m.spec.history_steps)
            for r in table.itertuples(index=False):
                typer.echo(f"{r.event_id}  {r.start_ts:%a %d %b %H:%M}  {r.kind:<15} {r.site_id or '-':<6} "
                           f"{str(r.text)[:70]}")
            typer.echo(f"{len(table)} events")
            return
        if event is not None:
            incident = inc.from_event(panel, event)
        else:
            missing = [f"--{n}" for n, v in zip(("site", "kind", "text", "start"), typed, strict=True) if v is None]
            if missing:
                fail("a typed incident needs " + ", ".join(missing))
            incident = inc.typed_incident(panel, site, kind, text, start, duration)
        when = inc.on_grid(panel, at, "--at") if at is not None else None
        result = inc.incident_effect(m, panel, incident, when, radius_km=radius, max_signals=max_signals,
                                     model_name=name)
    except KeyError as e:
        fail(str(e.args[0]) if e.args else str(e))
    except (TrafficCoreError, ValueError) as e:
        fail(str(e))
    for line in rep.summary_lines(result):
        typer.echo(line)
    for out, write in ((json_out, rep.to_json), (csv_out, rep.forecast_csv), (signals_out, rep.signals_csv)):
        if out is not None:
            out.write_text(write(result))
            typer.echo(f"wrote {out}")

