"""The model report: the newest benchmark JSON (`trafficcore benchmark --json OUT.json`) as tables.

Where reports are looked for, newest first: ``$TRAFFICCORE_REPORTS`` (folders separated by the
path separator) when set, else ``reports/`` and the committed results in ``docs/results/``; then
``data/`` and the shipped model's folder. A JSON file counts as a
benchmark report when it has a ``results`` list whose entries carry ``model``, ``horizon_min``
and ``mae``; anything else found there is ignored, and a report that claims to be one but is
malformed raises a DataError naming the file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from trafficcore import config
from trafficcore.errors import DataError

METRICS = ("mae", "rmse", "wape", "coverage_p10_p90")
#: Every metric a report may carry (tgcn adds the T-GCN table's), its label, and whether higher is better.
METRIC_INFO = {
    "mae": ("MAE", False), "rmse": ("RMSE", False), "wape": ("WAPE", False),
    "coverage_p10_p90": ("P10-P90 coverage", True), "pinball": ("Pinball loss", False),
    "accuracy": ("Accuracy (T-GCN)", True), "r2": ("R² (T-GCN)", True),
    "explained_variance": ("Explained variance", True),
}


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
    """Benchmark report files, newest first (by modification time)."""
    found = []
    for d in dirs if dirs is not None else report_dirs():
        for p in d.rglob("*.json"):
            try:
                if p.stat().st_size > max_bytes:
                    continue
                data = json.loads(p.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                continue
            if _looks_like_report(data):
                found.append(p)
    return sorted(set(found), key=lambda p: p.stat().st_mtime, reverse=True)


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
    keep = ("model_class", "name", "backbone", "backbone_sha256", "metrics", "dataset", "trained_at", "preset",
            "fine_tune", "spec")
    return {k: cfg[k] for k in keep if k in cfg}


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
