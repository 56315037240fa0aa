"""``trafficcore signal analyse|optimise|simulate``: the timing lab on the command line.

Every command takes ``--plan PLAN.json --demand DEMAND.csv`` and writes ``--json OUT.json``. The
work is done by `run_analyse`, `run_optimise` and `run_simulate`, which take a loaded plan and a
demand frame, so another front end (the dashboard, or a ``--dataset/--site/--at`` option that
builds demand with `trafficcore.signal.demand_from_forecast`) reuses them unchanged.

OUT.json is an object; its ``rows`` hold one record per approach and interval with ``approach``,
``interval_start``, ``v``, ``c``, ``x``, ``delay_s``, ``los``, ``queue_mean_veh``, ``queue_p95_veh``
(``simulate`` adds ``sim_delay_s``, ``sim_max_queue_veh``, ``sim_stops``, ``sim_vehicles``). Bad
input ends with exit code 2 and a one-line message naming the file, row and column.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from trafficcore.errors import TrafficCoreError

if TYPE_CHECKING:  # the lab's modules (pandas, scipy, SUMO) load inside the runners: issue 15, fast `--help`
    import pandas as pd

    from trafficcore.signal.plan import Plan

app = typer.Typer(
    help="Signal timing lab: HCM/Webster analysis, optimisation and SUMO checks of a timing plan.",
    no_args_is_help=True,
    add_completion=False,
)


# ---------------------------------------------------------------------- reusable runners
def run_analyse(plan: Plan, demand: pd.DataFrame, quantile: str = "p50", initial_queue: bool = False) -> dict:
    """The `analyse` result as a JSON-ready dict."""
    from trafficcore.signal.analysis import analyse, frame_records

    a = analyse(plan, demand, quantile=quantile, initial_queue=initial_queue)
    return {
        "command": "analyse",
        "plan": plan.to_dict(),
        "quantile": quantile,
        "rows": a.rows(),
        "lane_groups": frame_records(a.lane_groups),
        "intervals": frame_records(a.intervals),
        "summary": a.summary,
    }


def run_optimise(
    plan: Plan,
    demand: pd.DataFrame,
    robust: bool = False,
    tod: int = 0,
    min_plan_min: float = 60.0,
    initial_queue: bool = False,
    cycle_step: float = 5.0,
) -> dict:
    """Webster, the delay-minimising search (robust on request) and, with `tod` > 0, time-of-day plans."""
    from trafficcore.signal.analysis import frame_records
    from trafficcore.signal.optimise import optimise, time_of_day, webster

    quantiles = ("p10", "p50", "p90") if robust else ("p50",)
    w = webster(plan, demand)
    res = optimise(plan, demand, quantiles=quantiles, initial_queue=initial_queue, cycle_step=cycle_step)
    out = run_analyse(res.plan, demand, initial_queue=initial_queue)
    out.update({
        "command": "optimise",
        "current_plan": plan.to_dict(),
        "objective": {
            "what": "expected total control delay over the demand horizon (veh-h)",
            "quantiles": list(quantiles),
            "weights": list(res.weights),
            "weights_rule": "Swanson 0.3/0.4/0.3" if robust else "P50 only",
        },
        "webster": {
            "cycle_unrounded": w.cycle_unrounded,
            "cycle": w.plan.cycle,
            "greens": w.plan.greens,
            "Y": w.y_total,
            "L": w.lost_time,
            "design_interval": str(w.design_interval),
            "critical_groups": w.critical_groups,
        },
    })
    out["summary"].update({
        "current_delay_veh_h": res.current_delay_veh_h,
        "optimised_delay_veh_h": res.delay_veh_h,
        "saving_pct": res.saving_pct,
        "optimised_cycle": res.plan.cycle,
        "optimised_greens": res.plan.greens,
    })
    if tod:
        step = float(demand["interval_min"].iloc[0])
        t = time_of_day(plan, demand, tod, quantiles=quantiles, min_intervals=max(1, round(min_plan_min / step)),
                        initial_queue=initial_queue, cycle_step=cycle_step)
        out["time_of_day"] = {
            "plans": frame_records(t.segments),
            "delay_veh_h": t.delay_veh_h,
            "current_delay_veh_h": t.current_delay_veh_h,
            "saving_pct": t.saving_pct,
        }
    out["_optimised_plan"] = res.plan
    return out


def run_simulate(
    plan: Plan, demand: pd.DataFrame, quantile: str = "p50", seed: int = 42, timeout_s: float = 120.0,
    step_length: float = 0.5, initial_queue: bool = False,
) -> dict:
    """Analysis and SUMO side by side: the analyse rows plus sim_* columns."""
    from trafficcore.signal.analysis import analyse, frame_records
    from trafficcore.signal.sumo import compare, simulate

    a = analyse(plan, demand, quantile=quantile, initial_queue=initial_queue)
    sim = simulate(plan, demand, quantile=quantile, seed=seed, timeout_s=timeout_s, step_length=step_length)
    rows = compare(a.approaches, sim)
    out = run_analyse(plan, demand, quantile=quantile, initial_queue=initial_queue)
    out.update({"command": "simulate", "rows": frame_records(rows), "simulation": sim.summary})
    out["summary"]["sim_delay_s"] = sim.summary["delay_s"]
    return out


# ---------------------------------------------------------------------- output
def _write_json(result: dict, path: Path | None) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    clean = {k: v for k, v in result.items() if not k.startswith("_")}
    path.write_text(json.dumps(clean, indent=2, default=str) + "\n", encoding="utf-8")
    typer.echo(f"wrote {path}")


def _print(result: dict) -> None:
    import pandas as pd

    s = result["summary"]
    typer.echo(f"plan {s['plan']!r}: cycle {s['cycle']:g} s, {s['intervals']} intervals of {s['interval_min']:g} min, "
               f"demand {s['quantile']}")
    typer.echo(f"{'interval':<20}{'v veh/h':>9}{'Y':>7}{'Xc':>7}{'C0 s':>7}{'delay s':>9}{'LOS':>5}  critical")
    for r in result["intervals"]:
        typer.echo(f"{r['interval_start']:<20}{r['v']:>9.0f}{r['Y']:>7.3f}{r['xc']:>7.3f}{r['webster_cycle']:>7.1f}"
                   f"{(r['delay_s'] or 0):>9.1f}{r['los']:>5}  {r['critical_groups']}")
    df = pd.DataFrame(result["rows"])
    cols = ["delay_s", "sim_delay_s"] if "sim_delay_s" in df.columns else ["delay_s"]
    df["vd"] = df["v"] * df["delay_s"].fillna(float("inf"))
    agg = df.groupby("approach", sort=False).agg(v=("v", "mean"), x=("x", "max"), vd=("vd", "sum"),
                                                 vs=("v", "sum"), q95=("queue_p95_veh", "max"))
    if "sim_delay_s" in cols:
        agg["sim"] = df.groupby("approach", sort=False)["sim_delay_s"].mean()
        agg["simq"] = df.groupby("approach", sort=False)["sim_max_queue_veh"].max()
    head = f"{'approach':<10}{'mean v':>8}{'max x':>8}{'delay s':>9}{'max Q95':>9}"
    typer.echo(head + (f"{'sim delay':>11}{'sim maxQ':>10}" if "sim" in agg else ""))
    for name, r in agg.iterrows():
        d = r["vd"] / r["vs"] if r["vs"] > 0 else 0.0
        line = f"{name:<10}{r['v']:>8.0f}{r['x']:>8.2f}{d:>9.1f}{r['q95']:>9.1f}"
        if "sim" in agg:
            line += f"{r['sim']:>11.1f}{r['simq']:>10.1f}"
        typer.echo(line)
    typer.echo(f"intersection: {s['delay_s']:.1f} s/veh (LOS {s['los']}), {s['delay_veh_h']:.1f} veh-h of delay")
    if "current_delay_veh_h" in s:
        what = "expected delay over " + "/".join(result["objective"]["quantiles"])
        typer.echo(f"optimised: cycle {s['optimised_cycle']:g} s, greens {s['optimised_greens']}; {what} "
                   f"{s['optimised_delay_veh_h']:.2f} veh-h vs {s['current_delay_veh_h']:.2f} current "
                   f"({s['saving_pct']:.1f}% less)")
    if "time_of_day" in result:
        for p in result["time_of_day"]["plans"]:
            typer.echo(f"  plan {p['plan_no']}: {p['start']} - {p['end']}  cycle {p['cycle']:g} s greens {p['greens']}"
                       f"  {p['delay_veh_h']:.2f} veh-h vs {p['current_delay_veh_h']:.2f} current")
    if "sim_delay_s" in s:
        typer.echo(f"SUMO: {s['sim_delay_s']:.1f} s/veh over {result['simulation']['vehicles']} vehicles "
                   f"({result['simulation']['wall_s']:.1f} s wall)")


def _fail(e: Exception) -> None:
    typer.echo(f"error: {e}", err=True)
    raise typer.Exit(2)


_PLAN = typer.Option(..., "--plan", help="Timing plan JSON (schema in docs/SIGNAL.md).")
_DEMAND = typer.Option(None, "--demand", help="Demand CSV: approach, interval_start, p10, p50, p90 [, unit].")
_DATASET = typer.Option(None, "--dataset", help="Instead of --demand: forecast demand for --site at --at.")
_SITE = typer.Option(None, "--site", help="With --dataset: the intersection (site_id).")
_AT = typer.Option(None, "--at", help="With --dataset: issue time of the forecast (local time).")
_MODEL = typer.Option(None, "--model", help="With --dataset: saved model folder (default: the best available).")
_DB = typer.Option(None, "--db", help="DuckDB store (default: $TRAFFICCORE_DB or data/trafficcore.duckdb)")
_JSON = typer.Option(None, "--json", help="Write the full result here as JSON.")
_UNIT = typer.Option("veh", "--unit", help="Unit of demand values when the CSV has no unit column: veh (per "
                                          "interval) or veh/h.")
_INTERVAL = typer.Option(15, "--interval-min", help="Interval length of the demand rows in minutes.")
_PHF = typer.Option(None, "--phf", help="Peak-hour factor (divide flow rates by it; use with hourly demand).")
_IQ = typer.Option(False, "--initial-queue/--no-initial-queue",
                   help="Carry unmet demand into the next interval (HCM initial-queue delay d3).")
_Q = typer.Option("p50", "--quantile", help="Demand quantile to analyse: p10, p50 or p90.")


def _load(plan: Path, demand: Path | None, interval_min: int, unit: str, phf: float | None, source: tuple = ()):
    from trafficcore.signal.demand import read_demand_csv
    from trafficcore.signal.plan import load_plan

    dataset, site, at, model, db = source or (None,) * 5
    if (demand is None) == (dataset is None):
        raise TrafficCoreError("give either --demand DEMAND.csv or --dataset NAME --site ID --at TIME")
    if demand is not None:
        return load_plan(plan), read_demand_csv(demand, interval_min=interval_min, unit=unit, phf=phf)
    if not site or not at:
        raise TrafficCoreError("--dataset needs --site ID and --at TIME")
    return load_plan(plan), forecast_demand(dataset, site, at, model, db, interval_min=interval_min, phf=phf)


def forecast_demand(dataset: str, site: str, at: str, model_dir: Path | None, db: Path | None,
                    interval_min: int = 15, phf: float | None = None) -> pd.DataFrame:
    """Approach demand for a site from a forecast issued at `at`, by `model_dir` or else the model that
    serves the dataset everywhere (`trafficcore.live.serving`)."""
    import pandas as pd

    from trafficcore import config
    from trafficcore.data.panel import load_panel
    from trafficcore.data.store import Store
    from trafficcore.live.serving import load_saved, serving_model
    from trafficcore.signal.demand import demand_from_forecast
    from trafficcore.signal.site import assign_legs
    from trafficcore.ui.models import forecast

    store = Store(config.db_path(db), read_only=True)
    try:
        panel = load_panel(store, dataset, measure="volume")
    except KeyError as e:
        raise TrafficCoreError(str(e)) from None
    dets = panel.detectors[panel.detectors["site_id"].astype(str) == str(site)]
    if dets.empty:
        raise TrafficCoreError(f"no volume detectors at site {site!r} in dataset {dataset!r}")
    legs = assign_legs(list(dets["approach"].dropna().unique()))
    mapping = {d: legs[a] for d, a in zip(dets["detector_id"], dets["approach"], strict=True) if a in legs}
    model = load_saved(model_dir) if model_dir is not None else serving_model(store, dataset).model
    try:
        fc = forecast(model, panel, [pd.Timestamp(at)], list(mapping))
    except ValueError as e:
        raise TrafficCoreError(str(e)) from None
    return demand_from_forecast(fc, mapping, interval_min=interval_min, phf=phf)


@app.command("analyse")
def analyse_cmd(plan: Path = _PLAN, demand: Path = _DEMAND, json_out: Path = _JSON, quantile: str = _Q,
                unit: str = _UNIT, interval_min: int = _INTERVAL, phf: float = _PHF, initial_queue: bool = _IQ,
                dataset: str = _DATASET, site: str = _SITE, at: str = _AT, model: Path = _MODEL, db: Path = _DB):
    """Capacity, v/c, HCM control delay, LOS and queues per approach and interval."""
    try:
        p, d = _load(plan, demand, interval_min, unit, phf, (dataset, site, at, model, db))
        result = run_analyse(p, d, quantile=quantile, initial_queue=initial_queue)
    except TrafficCoreError as e:
        _fail(e)
    _print(result)
    _write_json(result, json_out)


@app.command("optimise")
def optimise_cmd(
    plan: Path = _PLAN, demand: Path = _DEMAND, json_out: Path = _JSON, unit: str = _UNIT,
    interval_min: int = _INTERVAL, phf: float = _PHF, initial_queue: bool = _IQ,
    dataset: str = _DATASET, site: str = _SITE, at: str = _AT, model: Path = _MODEL, db: Path = _DB,
    robust: bool = typer.Option(False, "--robust", help="Minimise expected delay over P10/P50/P90 (Swanson "
                                                       "weights 0.3/0.4/0.3)."),
    tod: int = typer.Option(0, "--tod", help="Also split the profile into this many time-of-day plans."),
    min_plan_min: float = typer.Option(60.0, "--min-plan-min", help="Shortest time-of-day plan period (minutes)."),
    cycle_step: float = typer.Option(5.0, "--cycle-step", help="Coarse cycle grid step before the 1 s refinement."),
    out_plan: Path = typer.Option(None, "--out-plan", help="Write the optimised plan JSON here."),
    timing_sheet: Path = typer.Option(None, "--timing-sheet", help="Write the optimised plan's CSV timing sheet."),
):
    """Webster cycle and splits, a delay-minimising search (optionally robust) and time-of-day plans."""
    try:
        p, d = _load(plan, demand, interval_min, unit, phf, (dataset, site, at, model, db))
        if tod < 0:
            raise TrafficCoreError(f"--tod must be 0 or more, got {tod}")
        result = run_optimise(p, d, robust=robust, tod=tod, min_plan_min=min_plan_min, initial_queue=initial_queue,
                              cycle_step=cycle_step)
    except TrafficCoreError as e:
        _fail(e)
    _print(result)
    if out_plan or timing_sheet:  # the exporter brings the SUMO writers; only load it to write
        from trafficcore.signal.export import write_plan_json, write_timing_sheet
    if out_plan:
        typer.echo(f"wrote {write_plan_json(result['_optimised_plan'], out_plan)}")
    if timing_sheet:
        typer.echo(f"wrote {write_timing_sheet(result['_optimised_plan'], timing_sheet)}")
    _write_json(result, json_out)


@app.command("simulate")
def simulate_cmd(
    plan: Path = _PLAN, demand: Path = _DEMAND, json_out: Path = _JSON, quantile: str = _Q, unit: str = _UNIT,
    interval_min: int = _INTERVAL, phf: float = _PHF, initial_queue: bool = _IQ,
    dataset: str = _DATASET, site: str = _SITE, at: str = _AT, model: Path = _MODEL, db: Path = _DB,
    seed: int = typer.Option(42, "--seed", help="SUMO random seed."),
    timeout: float = typer.Option(120.0, "--timeout", help="Seconds before SUMO is stopped."),
    step_length: float = typer.Option(0.5, "--step-length", help="SUMO time step (s)."),
):
    """Run the plan in SUMO (headless) and report simulated delay and queues beside the analytic ones."""
    try:
        p, d = _load(plan, demand, interval_min, unit, phf, (dataset, site, at, model, db))
        result = run_simulate(p, d, quantile=quantile, seed=seed, timeout_s=timeout, step_length=step_length,
                              initial_queue=initial_queue)
    except TrafficCoreError as e:
        _fail(e)
    _print(result)
    _write_json(result, json_out)


if __name__ == "__main__":  # pragma: no cover
    app()
