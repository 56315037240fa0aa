"""Live accuracy as the dashboard shows it: the Live page's monitoring section and the Model report's "served
forecasts" table, as plain frames and numbers (no Streamlit here; pages draw them).

Everything is read from the accuracy buckets `trafficcore.live.monitor` keeps up to date as readings
arrive, over one connection, so a page refresh costs a handful of small queries, never a re-scoring.
Fractions stay fractions here; `PERCENT_COLUMNS` says which the pages show in percent.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from trafficcore import config
from trafficcore.data.store import Store
from trafficcore.live import monitor

#: Display names of the metric columns (fractions shown in percent by the pages).
NAMES = {"horizon_min": "horizon (min)", "mae": "MAE", "wape": "WAPE (%)", "coverage_p10_p90": "P10-P90 coverage (%)",
         "n": "forecasts scored", "site_id": "site", "hour_of_day": "hour of day", "version": "model version"}
PERCENT_COLUMNS = ("wape", "coverage_p10_p90")


@dataclass
class AccuracyView:
    """What the Live page's "served forecast accuracy" section shows for one dataset."""

    dataset: str
    serving_run: str | None
    model: str | None  # the serving model in words
    val_mae: float | None  # what it recorded on validation (None: nothing recorded)
    window_end: pd.Timestamp | None
    headline: dict = field(default_factory=dict)  # {"24h": {mae, wape, coverage_p10_p90, n}, "7d": {...}}
    by_horizon: pd.DataFrame = field(default_factory=pd.DataFrame)  # horizon x (window metrics)
    by_version: pd.DataFrame = field(default_factory=pd.DataFrame)  # every live run, last 7 days
    worst_sites: pd.DataFrame = field(default_factory=pd.DataFrame)  # serving run, last 24 h
    by_hour: pd.DataFrame = field(default_factory=pd.DataFrame)  # serving run, last 7 days, hour of day
    trend: pd.DataFrame = field(default_factory=pd.DataFrame)  # hour_ts, mae, coverage: trailing 24 h, 7 days
    # (NaN where the trailing window holds fewer scored hours than the decay alert needs)
    rollback: dict | None = None  # registry.rollback_target: {"from", "to"}

    @property
    def empty(self) -> bool:
        return not self.headline.get("7d", {}).get("n")


def version_of(run_id: str | None) -> str:
    """`live:<run>` -> `<run>` (what the registry and users call the model version)."""
    return "" if run_id is None else str(run_id).removeprefix(monitor.LIVE_PREFIX)


def accuracy_view(store: Store, dataset: str, top_sites: int = 5) -> AccuracyView:
    """The monitoring section's contents for `dataset` (see AccuracyView)."""
    from trafficcore.live import registry

    with store.connect() as con:
        last = monitor.window_end(store, dataset, con=con)
        run = monitor.serving_run(store, dataset, con)
        view = AccuracyView(dataset, run, None, None, last)
        if last is None or run is None:
            return view
        horizon_parts = []
        for label, hours in monitor.WINDOWS.items():
            pooled = monitor.accuracy(store, dataset, hours, [], last, run_id=run, con=con)
            view.headline[label] = ({k: pooled[k].iloc[0] for k in monitor.METRIC_COLUMNS} if len(pooled) else
                                    {"n": 0})
            h = monitor.accuracy(store, dataset, hours, ["horizon_min"], last, run_id=run, con=con)
            horizon_parts.append(h.set_index("horizon_min")[monitor.METRIC_COLUMNS].add_suffix(f" {label}"))
        both = pd.concat(horizon_parts, axis=1)
        order = [f"{m} {w}" for m in ("mae", "coverage_p10_p90", "wape", "n") for w in monitor.WINDOWS]
        view.by_horizon = both[[c for c in order if c in both.columns]].reset_index()
        versions = monitor.accuracy(store, dataset, monitor.WINDOWS["7d"], ["run_id"], last, con=con)
        view.by_version = versions.assign(version=versions["run_id"].map(version_of))[
            ["version", *monitor.METRIC_COLUMNS]]
        sites = monitor.accuracy(store, dataset, monitor.WINDOWS["24h"], ["site_id"], last, run_id=run, con=con)
        view.worst_sites = sites.sort_values("mae", ascending=False, kind="stable").head(top_sites)[
            ["site_id", *monitor.METRIC_COLUMNS]].reset_index(drop=True)
        hours = monitor.accuracy(store, dataset, monitor.WINDOWS["7d"], ["hour_of_day"], last, run_id=run, con=con)
        view.by_hour = hours[["hour_of_day", *monitor.METRIC_COLUMNS]]
        trend = monitor.rolling(store, dataset, run, 24, monitor.WINDOWS["7d"], last, con=con)
        thin = trend["hours_scored"] < int(config.MONITOR_THRESHOLDS["min_hours"])  # as the decay alert: not judged
        view.trend = trend.assign(mae=trend["mae"].mask(thin), coverage_p10_p90=trend["coverage_p10_p90"].mask(thin))
    ref = monitor.reference(store, dataset, run)
    view.model, view.val_mae = ref["display_name"] or version_of(run), ref["val_mae"]
    view.rollback = registry.rollback_target(store, dataset)
    return view


def for_display(df: pd.DataFrame) -> pd.DataFrame:
    """Fractions in percent and plain column names (also for window-suffixed columns such as "mae 24h")."""
    out = df.copy()
    renames = {}
    for c in out.columns:
        base, _, window = str(c).partition(" ")
        if base in PERCENT_COLUMNS:
            out[c] = out[c] * 100.0
        if base in NAMES:
            renames[c] = NAMES[base].replace(" (%)", f", {window} (%)") if window and "(%)" in NAMES[base] else (
                f"{NAMES[base]}, {window}" if window else NAMES[base])
    return out.rename(columns=renames)


def served_vs_benchmark(store: Store, dataset: str, results: pd.DataFrame | None = None,
                        hours: int = monitor.WINDOWS["7d"]) -> pd.DataFrame:
    """Per horizon: the served forecasts' MAE, WAPE and coverage over the last `hours` (every live run of the
    dataset pooled, and per run when several served), beside the benchmark's MAE for each model in `results`
    (a report's results frame: model, horizon_min, mae). Empty when nothing was scored."""
    served = monitor.accuracy(store, dataset, hours, ["run_id", "horizon_min"])
    if served.empty:
        return pd.DataFrame()
    served = served.assign(source="served: " + served["run_id"].map(version_of))
    table = served.pivot_table(index="horizon_min", columns="source", values="mae")
    extra = monitor.accuracy(store, dataset, hours, ["horizon_min"]).set_index("horizon_min")
    table["served WAPE (%)"] = extra["wape"] * 100.0
    table["served P10-P90 coverage (%)"] = extra["coverage_p10_p90"] * 100.0
    table["forecasts scored"] = extra["n"]
    if results is not None and not results.empty and {"model", "horizon_min", "mae"} <= set(results.columns):
        bench = results.pivot_table(index="horizon_min", columns="model", values="mae", aggfunc="mean")
        bench.columns = [f"benchmark: {c}" for c in bench.columns]
        table = table.join(bench, how="left")
    table.columns.name = None
    return table.reset_index().rename(columns={"horizon_min": "horizon (min)"})
