"""`trafficcore monitor`: how well the served forecasts are doing, per model version, horizon and site.

Apart from `trafficcore.live.monitor` for the same reason as `trafficcore.live.cli`: the root command
imports every command's module to list it, so the machinery is imported when the command runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer


def _fmt(v, pct: bool = False) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "-"
    return f"{100 * v:.1f}%" if pct else f"{v:.3f}"


def report_lines(rep: dict, alerts=None) -> list[str]:
    """The text `trafficcore monitor` prints for one dataset's `monitor.report` (and its monitoring alerts)."""
    ref = rep["reference"] or {}
    run = rep["serving_run"]
    lines = [f"{rep['dataset']}: served forecasts scored up to the hour {rep['window_end_hour'] or '-'}; serving "
             f"{(run or 'nothing yet').removeprefix('live:')}"
             + (f" ({ref['display_name']})" if ref.get("display_name") else "")
             + (f", validation MAE {ref['val_mae']:.3f}" if ref.get("val_mae") is not None else
                ", no validation MAE recorded (decay not checked)")]
    for label, w in rep["windows"].items():
        lines += ["", f"last {label} (target hours {w['first_hour'] or '-'} to {rep['window_end_hour'] or '-'})"]
        if not w["by_run"]:
            lines.append("  no served forecast scored in this window")
            continue
        lines += ["| model version | horizon | MAE | WAPE | P10-P90 coverage | scored |",
                  "|---|---:|---:|---:|---:|---:|"]
        pooled = {r["run_id"]: r for r in w["by_run"]}
        for r in w["by_horizon"] + [{**p, "horizon_min": "all"} for p in pooled.values()]:
            lines.append(f"| {r['run_id'].removeprefix('live:')} | {r['horizon_min']} | {_fmt(r['mae'])} | "
                         f"{_fmt(r['wape'], True)} | {_fmt(r['coverage_p10_p90'], True)} | {r['n']:,} |")
        if w["worst_sites"]:
            worst = ", ".join(f"{s['site_id']} {_fmt(s['mae'])}" for s in w["worst_sites"][:5])
            lines.append(f"least accurate sites (MAE, serving model): {worst}")
    if alerts is not None:
        lines.append("")
        if alerts.empty:
            lines.append("monitoring alerts: none (accuracy decay, band coverage, detector drift)")
        else:
            lines.append(f"monitoring alerts ({len(alerts)}):")
            lines += [f"  [{a.severity}] {a.kind}: {a.message}" for a in alerts.itertuples(index=False)]
    return lines


def monitor_cmd(
    dataset: str | None = typer.Option(None, "--dataset", help="dataset (default: every dataset with scored "
                                                                "forecasts)"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
    rescore: bool = typer.Option(False, "--rescore", help="rebuild the accuracy from the stored forecasts and "
                                                          "readings first (a store from before live scoring)"),
    alerts: bool = typer.Option(True, "--alerts/--no-alerts", help="list the current accuracy, coverage and drift "
                                                                   "alerts too"),
    db: Path | None = typer.Option(None, "--db", help="DuckDB store (default: $TRAFFICCORE_DB or data/...)"),
) -> None:
    """Live accuracy of the served forecasts: MAE, WAPE and P10-P90 coverage per model version and horizon over the
    last 24 hours and 7 days, the least accurate sites, and the monitoring alerts."""
    from trafficcore import config
    from trafficcore.data.store import Store
    from trafficcore.live import monitor
    from trafficcore.live.alerts import MONITOR_KINDS, current_alerts

    path = config.db_path(db)
    if not path.exists():
        typer.echo(f"error: no store at {path}", err=True)
        raise typer.Exit(2)
    store = Store(path)
    if dataset is not None and dataset not in store.dataset_names():
        typer.echo(f"error: no dataset named {dataset!r} in {path}", err=True)
        raise typer.Exit(2)
    if rescore:
        for name in [dataset] if dataset else store.dataset_names():
            n = monitor.rescore(store, name)
            if not as_json:
                typer.echo(f"rescored {name}: {n:,} served forecasts with a reading")
    names = [dataset] if dataset else monitor.live_datasets(store)
    if not names:
        typer.echo("no served forecast has been scored yet (readings arrive through `trafficcore ingest`, the API or "
                   "`trafficcore replay`; `--rescore` scores forecasts stored before live scoring)")
        return
    out = []
    for name in names:
        rep = monitor.report(store, name)
        found = current_alerts(store, name, kinds=MONITOR_KINDS) if alerts else None
        if as_json:
            if found is not None:
                rep["alerts"] = [{k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in r.items()}
                                 for r in found.astype(object).where(found.notna(), None).to_dict("records")]
            out.append(rep)
        else:
            typer.echo("\n".join(report_lines(rep, found)) + "\n")
    if as_json:
        typer.echo(json.dumps(out if dataset is None else out[0], indent=2, default=str))
