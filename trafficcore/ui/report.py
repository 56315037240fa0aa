"""The model report: the newest benchmark JSON (`trafficcore benchmark --json OUT.json`) as tables.

"Newest" is read from the report itself (its ``run_date``, ISO 8601 UTC), because file times say nothing
in a fresh clone (every file gets the checkout's time); reports without a run date rank oldest, then by
file time, then by name. Reports are named in words (dataset, protocol, run date), never by file path.
Fractions (coverage, WAPE) are shown in percent everywhere, and durations in s / min / h.

Where reports are looked for: ``$TRAFFICCORE_REPORTS`` (folders separated by the
path separator) when set, else ``reports/`` and the committed results in ``docs/results/``; then
``data/`` and the shipped model's folder. A JSON file counts as a
benchmark report when it has a ``results`` list whose entries carry ``model``, ``horizon_min``
and ``mae``; anything else found there is ignored, and a report that claims to be one but is
malformed raises a DataError naming the file.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from trafficcore import config
from trafficcore.errors import DataError

METRICS = ("mae", "rmse", "wape", "coverage_p10_p90")
#: Every metric a report may carry (tgcn adds the T-GCN table's), its label, and whether higher is better.
METRIC_INFO = {
    "mae": ("MAE", False), "rmse": ("RMSE", False), "wape": ("WAPE (%)", False),
    "coverage_p10_p90": ("P10-P90 coverage (%)", True), "pinball": ("Pinball loss", False),
    "accuracy": ("Accuracy (T-GCN)", True), "r2": ("R² (T-GCN)", True),
    "explained_variance": ("Explained variance", True),
}


#: Metrics stored as fractions and shown in percent.
PERCENT = ("wape", "coverage_p10_p90")
COVERAGE_GOAL_PCT = 80.0
#: Plain words for the stored column names.
COLUMNS = {"horizon_min": "horizon (min)", "best_baseline": "best baseline", "baseline_mae": "best baseline's MAE",
           "gain_pct": "gain over best baseline (%)", "coverage_pct": "P10-P90 coverage (%)",
           "off_goal_pts": "off the 80% goal (points)", "n_seeds": "seeds", "n": "samples",
           **{m: info[0] for m, info in METRIC_INFO.items()}}


def scale(metric: str) -> float:
    """What a stored metric is multiplied by for display (100 for fractions shown in percent)."""
    return 100.0 if metric in PERCENT else 1.0


def for_display(df: pd.DataFrame) -> pd.DataFrame:
    """`df` with fractions in percent and plain column names."""
    out = df.copy()
    for m in PERCENT:
        if m in out.columns:
            out[m] = out[m] * 100.0
    return out.rename(columns=COLUMNS)


def duration(seconds) -> str:
    """1710.75 -> '28.5 min'; 88.2 -> '88 s'; 4.93 -> '4.9 s'; 7300 -> '2.0 h'."""
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not math.isfinite(seconds):
        return "-"
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def run_date(data: dict) -> dt.datetime | None:
    """The report's run date (timezone-aware, UTC when it names none), or None when it has none or it is unreadable."""
    raw = data.get("run_date") if isinstance(data, dict) else None
    try:
        when = dt.datetime.fromisoformat(str(raw)) if raw else None
    except ValueError:
        return None
    return None if when is None else when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def describe(data: dict) -> str:
    """A report named in words: 'scats · standard protocol · 3 seeds · run 4 Dec 2026, 18:20 UTC'."""
    parts = [str(data.get("dataset") or "unknown dataset"), f"{data.get('protocol') or 'unknown'} protocol"]
    seeds = data.get("seeds")
    if isinstance(seeds, list) and seeds:
        parts.append(f"{len(seeds)} seed{'s' if len(seeds) != 1 else ''}")
    when = run_date(data)
    when = when.astimezone(dt.UTC) if when else None
    parts.append(f"run {when.day} {when:%b %Y, %H:%M} UTC" if when else "run date not recorded")
    return " · ".join(parts)


def metrics_in(results: pd.DataFrame) -> list[str]:
    """The metrics this report actually has values for, in a fixed order."""
    return [m for m in METRIC_INFO if m in results.columns and results[m].notna().any()]
BASELINES = ("persistence", "seasonal_naive", "historical_average", "gbt")


def report_dirs() -> list[Path]:
    """Where benchmark reports are looked for: `$TRAFFICCORE_REPORTS` (os.pathsep-separated) when set,
    else the project's `reports/` and the committed results in `docs/results/`; plus the data folder."""
    env = os.environ.get("TRAFFICCORE_REPORTS", "")
    dirs = [Path(p) for p in env.split(os.pathsep) if p]
    if not dirs:
        dirs = [config.PROJECT_ROOT / "reports", config.PROJECT_ROOT / "docs" / "results"]
    dirs += [config.DATA_DIR, config.DEMO_MODEL_DIR]
    return [d for d in dirs if d.is_dir()]


def _looks_like_report(data) -> bool:
    res = data.get("results") if isinstance(data, dict) else None
    return isinstance(res, list) and bool(res) and all(
        isinstance(r, dict) and {"model", "horizon_min", "mae"} <= set(r) for r in res
    )


def find_reports(dirs: list[Path] | None = None, max_bytes: int = 20 * 2**20) -> list[Path]:
    """Benchmark report files, newest first: by the run date they store; those without one after all dated ones,
    by file time, then by name."""
    return list(report_names(dirs, max_bytes))


def report_names(dirs: list[Path] | None = None, max_bytes: int = 20 * 2**20) -> dict[Path, str]:
    """Benchmark report files (newest first, as `find_reports`) and their names in words (`describe`);
    a name two reports share gets ' (2)', ' (3)', ... on the older ones."""
    found: dict[Path, dict] = {}
    for d in dirs if dirs is not None else report_dirs():
        for p in d.rglob("*.json"):
            try:
                if p.stat().st_size > max_bytes:
                    continue
                data = json.loads(p.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                continue
            if _looks_like_report(data):
                found[p] = data
    oldest = dt.datetime.min.replace(tzinfo=dt.UTC)
    order = sorted(found, key=lambda p: p.name)
    order.sort(key=lambda p: (run_date(found[p]) or oldest, p.stat().st_mtime), reverse=True)
    names: dict[Path, str] = {}
    seen: dict[str, int] = {}
    for p in order:
        name = describe(found[p])
        seen[name] = seen.get(name, 0) + 1
        names[p] = name if seen[name] == 1 else f"{name} ({seen[name]})"
    return names


def load_report(path: str | Path) -> dict:
    """A benchmark report, checked enough to draw: results present, metrics numeric."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(str(p), f"not a readable JSON report: {e}") from None
    if not _looks_like_report(data):
        raise DataError(str(p), "not a benchmark report: 'results' needs entries with model, horizon_min and mae",
                        column="results")
    for i, r in enumerate(data["results"]):
        for k in ("horizon_min",) + METRICS:
            v = r.get(k)
            if v is not None and not isinstance(v, (int, float)):
                raise DataError(str(p), f"expected a number, got {v!r}", column=f"results[{i}].{k}")
    return data


def results_frame(report: dict, key: str = "results") -> pd.DataFrame:
    """Rows of `results` (or `ablations`) as a frame with the metric columns present."""
    df = pd.DataFrame(report.get(key) or [])
    if df.empty:
        return df
    df["horizon_min"] = df["horizon_min"].astype(int)
    for m in METRICS:
        if m not in df.columns:
            df[m] = np.nan
    return df


def metric_table(results: pd.DataFrame, metric: str = "mae") -> pd.DataFrame:
    """model x horizon table of one metric (models ordered best first at the shortest horizon)."""
    t = results.pivot_table(index="model", columns="horizon_min", values=metric, aggfunc="mean")
    if t.empty:
        return t
    ascending = not METRIC_INFO.get(metric, ("", False))[1]
    t = t.sort_values(t.columns[0], ascending=ascending)
    t.columns = [f"{c} min" for c in t.columns]
    return t


def versus_best_baseline(results: pd.DataFrame, metric: str = "mae") -> pd.DataFrame:
    """Per horizon and non-baseline model: its metric, the best baseline's, and the gain in %."""
    base = results[results["model"].isin(BASELINES)]
    others = results[~results["model"].isin(BASELINES)]
    if base.empty or others.empty:
        return pd.DataFrame(columns=["model", "horizon_min", metric, "best_baseline", "baseline_" + metric, "gain_pct"])
    best = base.loc[base.groupby("horizon_min")[metric].idxmin(), ["horizon_min", "model", metric]]
    best = best.rename(columns={"model": "best_baseline", metric: "baseline_" + metric})
    out = others[["model", "horizon_min", metric]].merge(best, on="horizon_min", how="left")
    out["gain_pct"] = 100.0 * (out["baseline_" + metric] - out[metric]) / out["baseline_" + metric]
    return out.sort_values(["model", "horizon_min"]).reset_index(drop=True)


def coverage_table(results: pd.DataFrame) -> pd.DataFrame:
    """P10-P90 coverage in % per model and horizon, with its distance from the 80 % goal."""
    df = results[["model", "horizon_min", "coverage_p10_p90"]].dropna().copy()
    df["coverage_pct"] = 100.0 * df["coverage_p10_p90"]
    df["off_goal_pts"] = df["coverage_pct"] - 80.0
    return df.drop(columns="coverage_p10_p90")


#: Plain words for the timing keys a report stores.
TIMING_WORDS = {"load_s": "loading the data", "total_s": "whole run", "fit_s": "fit", "predict_s": "forecast test set",
                "test_samples": "test samples", "samples_per_s": "samples per second", "peak_rss_mb": "peak memory",
                "wall_s_per_seed": "seed", "models": ""}


def timing_rows(report: dict) -> pd.DataFrame:
    """The report's `timing` in words: ('gbt · fit', '1.5 min'), durations rounded, counts and memory readable.
    A report made with --seeds adds each seed's model timings ('seed 1 · gbt · fit')."""
    rows = []
    flat = flat_timing(report)
    for run in report.get("per_seed") or []:
        per = flat_timing({"timing": {"models": run.get("timing") or {}}})
        flat = pd.concat([flat, per.assign(what="seed " + str(run.get("seed")) + "." + per["what"])], ignore_index=True)
    for what, value in flat.itertuples(index=False):
        keys = what.split(".")
        leaf = keys[-1]
        words = [TIMING_WORDS.get(k, k) for k in keys[:-1]]
        if keys[0] == "wall_s_per_seed":
            words, leaf_word, kind = [f"seed {leaf}"], "", "s"
        else:
            leaf_word = TIMING_WORDS.get(leaf, leaf)
            kind = "mb" if leaf.endswith("_mb") else "rate" if leaf.endswith("per_s") else (
                "s" if leaf.endswith("_s") else "")
        label = " · ".join(w for w in [*words, leaf_word] if w)
        if kind == "s":
            text = duration(value)
        elif kind == "mb" and isinstance(value, (int, float)):
            text = f"{value:,.0f} MB"
        elif isinstance(value, float):
            text = f"{value:,.0f}"
        elif isinstance(value, int) and not isinstance(value, bool):
            text = f"{value:,}"
        else:
            text = str(value)
        rows.append((label, text))
    return pd.DataFrame(rows, columns=["what", "time or amount"])


def seed_summary(report: dict) -> pd.DataFrame:
    """Mean ± sd over seeds per model and horizon (reports made with --seeds); empty for one-seed reports."""
    if not report.get("seeds"):
        return pd.DataFrame()
    det = set(report.get("deterministic") or [])
    rows = []
    for r in report.get("results") or []:
        row = {"model": r["model"], "horizon (min)": int(r["horizon_min"])}
        for m in ("mae", "rmse", "coverage_p10_p90"):
            v, sd = r.get(m), r.get(f"{m}_sd")
            k, digits = scale(m), 1 if m in PERCENT else 3
            row[METRIC_INFO[m][0]] = "-" if v is None else f"{k * v:.{digits}f} ± {k * (sd or 0.0):.{digits}f}"
        n = r.get("n_seeds")
        row["seeds"] = f"{n}, deterministic" if r["model"] in det else str(n)
        rows.append(row)
    return pd.DataFrame(rows)


def interval_table(report: dict) -> pd.DataFrame:
    """The paired bootstrap intervals (model's MAE minus the reference's) in words; empty when the report has none."""
    cis = report.get("intervals") or []
    if not cis:
        return pd.DataFrame()
    ref = cis[0].get("reference", "gbt")
    return pd.DataFrame([{"model": c["model"], "horizon (min)": int(c["horizon_min"]),
                          f"MAE minus {ref}'s": round(c["mean"], 3),
                          "95% interval": f"{c['lo']:+.3f} to {c['hi']:+.3f}",
                          f"replicates where it beats {ref} (%)": round(100 * c["share_below_zero"], 1)}
                         for c in cis])


def flat_timing(report: dict) -> pd.DataFrame:
    """The report's `timing` object as (what, value) rows, nested keys joined with '.'."""
    rows: list[tuple[str, object]] = []

    def walk(prefix: str, v) -> None:
        if isinstance(v, dict):
            for k, x in v.items():
                walk(f"{prefix}.{k}" if prefix else str(k), x)
        else:
            rows.append((prefix, v if isinstance(v, (int, float, str, bool)) or v is None else json.dumps(v)))

    walk("", report.get("timing") or {})
    return pd.DataFrame(rows, columns=["what", "value"])


def training_runs(store, dataset: str | None = None) -> pd.DataFrame:
    """Training runs recorded in the store (`model_runs`), newest first, with their metrics flattened."""
    sql = "SELECT run_id, dataset, model, created_at, path, promoted, metrics_json FROM model_runs"
    df = store.query(sql + (" WHERE dataset = ?" if dataset else "") + " ORDER BY created_at DESC",
                     [dataset] if dataset else [])
    if df.empty:
        return df.drop(columns="metrics_json")
    metrics = []
    for raw in df["metrics_json"]:
        try:
            m = json.loads(raw) if isinstance(raw, str) and raw else {}
        except json.JSONDecodeError:
            m = {}
        metrics.append({k: v for k, v in m.items() if isinstance(v, (int, float))} if isinstance(m, dict) else {})
    return pd.concat([df.drop(columns="metrics_json").reset_index(drop=True), pd.DataFrame(metrics)], axis=1)


def shipped_model_card(model_dir: Path | None = None) -> dict | None:
    """What the shipped model's config.json says about itself (name, backbone, metrics), if present."""
    p = Path(model_dir or config.DEMO_MODEL_DIR) / "config.json"
    if not p.exists():
        return None
    try:
        cfg = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    keep = ("model_class", "name", "backbone", "metrics", "dataset", "recipe", "model", "spec")
    card = {k: cfg[k] for k in keep if k in cfg}
    if isinstance(card.get("recipe"), dict):  # the training recipe it ran, by name; the phases stay in config.json
        card["recipe"] = card["recipe"].get("name")
    return card


def model_card_metrics(card: dict | None) -> pd.DataFrame:
    """Validation metrics per horizon that a saved model recorded when it was trained (`metrics.val`).

    One row per horizon with the metrics it has (MAE, RMSE, WAPE, P10-P90 coverage, n); empty when
    the card has none. These are the training run's own validation days, not a benchmark against
    baselines, and the page says so.
    """
    val = ((card or {}).get("metrics") or {}).get("val")
    rows = []
    for h, m in (val.items() if isinstance(val, dict) else []):
        if not isinstance(m, dict) or not str(h).isdigit():
            continue
        row = {"horizon_min": int(h)}
        row.update({k: float(m[k]) for k in (*METRIC_INFO, "n") if isinstance(m.get(k), (int, float))})
        rows.append(row)
    if not rows:
        return pd.DataFrame()
    return pd.DataFrame(rows).sort_values("horizon_min").reset_index(drop=True)
