"""Continual fine-tuning: bring the current language model up to date with the readings that came after it.

`trafficcore update --dataset NAME` does, in order:

1. takes the current LM (the promoted version, or `--model DIR`) and reads from its checkpoint how far
   its data went (`train_end` in config.json: the newest reading its fit or model selection looked at);
2. splits what came after into fine-tuning days, a validation slice (the last of those days, for early
   stopping) and the held-out newest day(s), which only the final comparison sees;
3. fine-tunes a copy from the current weights through the model's public `update` (one update phase run
   by the same training engine as `trafficcore train`, `trafficcore.training.engine`) on samples from the
   new days mixed with replayed samples from older days (`--replay-ratio`, against catastrophic
   forgetting); early stopping scores the starting weights too, so on validation the copy never ends
   worse than it began;
4. scores current and candidate on the held-out day(s) (MAE per horizon) and on the newest old day(s),
   which replay does not draw from (forgetting);
5. registers both and promotes the candidate only if its held-out MAE (pooled over horizons) is lower.

What is trained. The detector profiles stay those of the original fit (the weights were learnt in their
units). When the saved transformer head is exactly zero (the original fit's text phase did not beat the
numeric skip path) only the skip path is fine-tuned, at thousands of samples per second; otherwise every
trainable tensor is (adapters, projections, head, skip path). The P10/P90 band is re-calibrated on the
validation slice of new data (`trafficcore.models.lm.recipes.update_phase`).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from trafficcore.data.panel import Panel
from trafficcore.data.store import Store
from trafficcore.errors import TrafficCoreError
from trafficcore.live import registry
from trafficcore.live.monitor import LIVE_PREFIX
from trafficcore.models.files import read_config


class UpdateError(TrafficCoreError):
    """An update that cannot run as asked (no current model, no new data, ...)."""


@dataclass
class Windows:
    """Issue rows of each period (indices into panel.times) and the periods themselves, for the report."""

    train: np.ndarray
    val: np.ndarray
    holdout: np.ndarray
    older: np.ndarray
    replay_pool: np.ndarray
    periods: dict = field(default_factory=dict)


@dataclass
class UpdateResult:
    current_run_id: str | None
    candidate_run_id: str
    candidate_path: str
    promoted: bool
    status: str  # promoted | candidate (better, but --no-promote) | rejected (not better)
    evaluation: dict  # {"holdout": {"current": {...}, "candidate": {...}}, "older": {...}}
    periods: dict
    finetune: dict
    timings: dict
    reason: str = ""  # the verdict in words (`verdict`)


# ------------------------------------------------------------------------------ data windows
def rows_between(panel: Panel, start, end, spec) -> np.ndarray:
    """Issue rows whose every target lies in [start, end) and that have full history before them."""
    hmax = int(spec.horizon_steps(panel.interval).max())
    times = panel.times
    rows = np.arange(len(times))
    last_target = times + (hmax - 1) * panel.interval
    ok = (times >= pd.Timestamp(start)) & (last_target < pd.Timestamp(end)) & (rows >= spec.history_steps)
    return rows[np.asarray(ok)]


def split_windows(panel: Panel, spec, train_end, holdout_days: int = 1) -> Windows:
    """New-data windows after `train_end` (fine-tune, validation, held-out newest days) and old-data windows
    (forgetting check: the newest `holdout_days` old days; replay: everything older)."""
    if holdout_days < 1:
        raise UpdateError("--holdout-days must be at least 1")
    step = panel.interval
    train_end = pd.Timestamp(train_end)
    first_new = train_end + step
    data_end = panel.times[-1] + step
    hold_start = panel.times[-1].normalize() - pd.Timedelta(days=holdout_days - 1)
    if first_new >= data_end:
        raise UpdateError(f"no new readings: the model has seen data up to {train_end} and the newest reading is "
                          f"{panel.times[-1]}")
    if hold_start <= first_new:
        raise UpdateError(f"too little new data: readings after {train_end} end at {panel.times[-1]}, which leaves "
                          f"nothing before the {holdout_days} held-out day(s) from {hold_start.date()} to fine-tune on")
    new_days = pd.date_range(first_new.normalize(), hold_start - pd.Timedelta(days=1), freq="D")
    if len(new_days) >= 2:  # the last whole new day validates; a partial first day still trains
        val_start = new_days[-1]
    else:  # one (partial) day: its last fifth validates
        val_start = first_new + (hold_start - first_new) * 0.8
        val_start = first_new + math.floor((val_start - first_new) / step) * step
    older_start = max(panel.times[0], train_end.normalize() - pd.Timedelta(days=holdout_days - 1))
    if older_start > train_end:
        older_start = panel.times[0]
    w = Windows(
        train=rows_between(panel, first_new, val_start, spec),
        val=rows_between(panel, val_start, hold_start, spec),
        holdout=rows_between(panel, hold_start, data_end, spec),
        older=rows_between(panel, older_start, first_new, spec),
        replay_pool=rows_between(panel, panel.times[0], older_start, spec),
    )
    w.periods = {
        "seen_until": str(train_end), "fine_tune": [str(first_new), str(val_start - step)],
        "validation": [str(val_start), str(hold_start - step)], "holdout": [str(hold_start), str(panel.times[-1])],
        "older": [str(older_start), str(train_end)], "replay": [str(panel.times[0]), str(older_start - step)],
    }
    for name in ("train", "val", "holdout"):
        if getattr(w, name).size == 0:
            raise UpdateError(f"the {name} window {w.periods[_PERIOD[name]]} has no usable issue times "
                              f"(each needs {spec.history_steps} intervals of history and all horizons inside it)")
    return w


_PERIOD = {"train": "fine_tune", "val": "validation", "holdout": "holdout"}


def replay_rows(w: Windows, ratio: float, seed: int) -> np.ndarray:
    """Old issue rows drawn at random so that they make up `ratio` of the fine-tuning rows."""
    if not 0 <= ratio < 1:
        raise UpdateError(f"--replay-ratio must be in [0, 1), not {ratio}")
    n = int(round(len(w.train) * ratio / (1 - ratio)))
    n = min(n, len(w.replay_pool))
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).choice(w.replay_pool, n, replace=False))


# ------------------------------------------------------------------------------ evaluation
#: Samples scored per window when --max-eval-samples is not given: every sample of a city's day, a seeded share of
#: a region's (8,000 detectors make 770,000 samples a day; scoring them all takes gigabytes for no better verdict).
EVAL_CAP = 200_000


def evaluate(model, panel: Panel, rows: np.ndarray, max_samples: int | None = None, seed: int = 0) -> dict:
    """MAE per horizon, pooled MAE and P10-P90 coverage over every detector at the given issue rows (at most
    `max_samples`, default `EVAL_CAP`, drawn at random with `seed`)."""
    from trafficcore.training.engine import capped_samples

    cap = EVAL_CAP if max_samples is None else max_samples
    if len(rows) * panel.values.shape[1] > 4 * cap:
        s = capped_samples(model, panel, rows, cap, seed)
    else:
        s = model.samples(panel, rows)
        if len(s) > cap:
            s = s.subset(np.sort(np.random.default_rng(seed).choice(len(s), cap, replace=False)))
    q = model.predict_samples(panel, s)
    y = s.targets
    ok = np.isfinite(y)
    err = np.abs(q[..., 1] - y)
    out = {"mae": float(err[ok].mean()), "n_samples": len(s),
           "coverage_p10_p90": float(((y >= q[..., 0]) & (y <= q[..., 2]))[ok].mean()), "horizons": {}}
    for j, h in enumerate(model.spec.horizons_min):
        k = ok[:, j]
        out["horizons"][str(h)] = float(err[k, j].mean()) if k.any() else None
    return out


# ------------------------------------------------------------------------------ live evidence
#: How far back the served window reaches (the live monitor's longest window).
SERVED_DAYS = 7


def served_window(store: Store, dataset: str, run_id: str | None, panel: Panel, spec,
                  days: int = SERVED_DAYS) -> tuple[np.ndarray, pd.DataFrame]:
    """The issue rows at which `run_id` served live forecasts (`live:<run_id>`) in the last `days` days, with every
    target inside the data, and those forecasts with their readings (detector_id, issued_at, horizon_min, p10, p50,
    p90, value).

    Why: the held-out day says how a candidate would have done; the served window also says how the current model
    *did*, forecast by forecast as users saw them (issued from whatever had arrived by then), and lets the
    candidate be scored on exactly those issue times.
    """
    empty = (np.zeros(0, dtype=np.int64), pd.DataFrame())
    if run_id is None or not len(panel.times):
        return empty
    since = panel.times[-1] - pd.Timedelta(days=days)
    pairs = store.query(
        """SELECT f.detector_id, f.issued_at, f.horizon_min, f.p10, f.p50, f.p90, o.value FROM forecasts f
           JOIN observations o ON o.dataset = f.dataset AND o.detector_id = f.detector_id AND o.ts = f.target_ts
           WHERE f.dataset = ? AND f.run_id = ? AND f.issued_at > ?""",
        [dataset, f"{LIVE_PREFIX}{run_id}", since.to_pydatetime()])
    if pairs.empty:
        return empty
    hmax = int(spec.horizon_steps(panel.interval).max())
    issued = pd.DatetimeIndex(pairs["issued_at"].unique()).sort_values()
    rows = ((issued - panel.times[0]) // panel.interval).to_numpy(dtype=np.int64)
    ok = (rows >= spec.history_steps) & (rows + hmax - 1 < len(panel.times)) & (panel.times[np.clip(
        rows, 0, len(panel.times) - 1)] == issued)
    rows = rows[ok]
    return rows, pairs[pairs["issued_at"].isin(issued[ok])].reset_index(drop=True)


def served_metrics(pairs: pd.DataFrame, horizons) -> dict:
    """What `evaluate` reports, for forecasts as they were served: MAE per horizon, pooled MAE, coverage, and the
    number of (detector, issue time) samples."""
    from trafficcore.evaluation.metrics import error_terms, from_sums

    terms = pd.DataFrame(error_terms(pairs["value"], pairs["p10"], pairs["p50"], pairs["p90"])).assign(
        horizon_min=pairs["horizon_min"].astype(int).to_numpy())
    per_h = terms.groupby("horizon_min").sum()
    total = terms.drop(columns="horizon_min").sum()
    pooled = from_sums(total["n"], total["abs_err"], total["abs_obs"], total["inside"])
    rates = from_sums(per_h["n"], per_h["abs_err"], per_h["abs_obs"], per_h["inside"])
    by_h = dict(zip(per_h.index.astype(int), rates["mae"], strict=True))
    samples = len(pairs[["detector_id", "issued_at"]].drop_duplicates())
    return {"mae": float(pooled["mae"]), "n_samples": samples,
            "coverage_p10_p90": float(pooled["coverage_p10_p90"]),
            "horizons": {str(h): (float(by_h[int(h)]) if int(h) in by_h else None) for h in horizons}}


def verdict(evaluation: dict) -> tuple[bool, str]:
    """Whether the candidate is better: a lower pooled MAE on the held-out day(s) and, where the current model
    served live forecasts, no higher a MAE than it on the served window's issue times. The reason, in words."""
    h = evaluation["holdout"]
    if not h["candidate"]["mae"] < h["current"]["mae"]:
        return False, "its held-out MAE is not lower than the current model's"
    served = evaluation.get("served")
    if served and served["candidate"]["mae"] > served["current"]["mae"]:
        return False, "it is better on the held-out day but worse than the current model on the served window"
    return True, ("better on the held-out day" + (" and on the served window" if served else
                                                  " (no live forecasts served by the current model to compare on)"))


# ------------------------------------------------------------------------------ the command's work
def model_dir_for(store: Store, dataset: str, run_id: str) -> Path:
    """Where a registered candidate is saved: `<db folder>/models/<dataset>/<run_id>/`."""
    return Path(store.path).resolve().parent / "models" / dataset / run_id


def current_lm(store: Store, dataset: str, model_dir: str | Path | None) -> tuple[Path, dict | None]:
    """The model to update: `--model DIR`, else the promoted version (an LM), else a clear error."""
    if model_dir is not None:
        p = Path(model_dir)
        if not (p / "config.json").exists():
            raise UpdateError(f"--model {p} is not a saved model folder (config.json is missing)")
        known = registry.runs(store, dataset)
        hit = known[known["path"] == str(p.resolve())]
        return p, (registry.get(store, hit["run_id"].iloc[0]) if len(hit) else None)
    cur = registry.promoted(store, dataset)
    if cur is None:
        raise UpdateError(f"dataset {dataset!r} has no promoted model; promote one "
                          f"(`trafficcore models promote RUN_ID`, see `trafficcore models list --dataset {dataset}`) "
                          "or pass --model DIR")
    return Path(cur["path"]), cur


def run_update(store: Store, dataset: str, model_dir: str | Path | None = None, steps: int = 300,
               replay_ratio: float = 0.5, holdout_days: int = 1, out: str | Path | None = None,
               promote: bool = True, lr: float = 5e-4, since: str | None = None, seed: int = 0,
               max_eval_samples: int | None = None, progress: bool = True, echo=print) -> UpdateResult:
    """The whole update (see the module docstring); `echo` receives progress lines."""
    from tqdm.auto import tqdm

    from trafficcore.data.panel import load_panel
    from trafficcore.models.lm import LMForecaster

    timings: dict[str, float] = {}
    t = time.perf_counter()
    path, cur_row = current_lm(store, dataset, model_dir)
    cfg = read_config(path)
    if cfg.get("model_class") != "lm":
        raise UpdateError(f"{path} holds a {cfg.get('model_class')!r} model, not a language model: `update` "
                          "fine-tunes language models (pass --model DIR, or promote one)")
    train_end = since or cfg.get("train_end") or (cur_row or {}).get("train_end")
    if train_end is None:
        raise UpdateError(f"{path} does not record the end of its training data (saved before train_end was kept); "
                          "pass --since TIMESTAMP (the newest reading it was trained or validated on)")
    panel = load_panel(store, dataset)
    current = LMForecaster.load(path)
    candidate = LMForecaster.load(path)  # an independent copy, fine-tuned from the same weights
    timings["load_s"] = time.perf_counter() - t
    w = split_windows(panel, current.spec, train_end, holdout_days)
    rep = replay_rows(w, replay_ratio, seed)
    echo(f"current model {path} ({cur_row['run_id'] if cur_row else 'not registered'}), data seen until {train_end}")
    echo(f"fine-tune {w.periods['fine_tune'][0]} .. {w.periods['fine_tune'][1]} ({len(w.train)} issue times) "
         f"+ {len(rep)} replayed from {w.periods['replay'][0]} .. {w.periods['replay'][1]}; "
         f"validation {w.periods['validation'][0]} .. {w.periods['validation'][1]}; "
         f"held out {w.periods['holdout'][0]} .. {w.periods['holdout'][1]}")
    t = time.perf_counter()
    candidate.seed, candidate.progress = seed, progress
    ft = candidate.update(panel, np.concatenate([w.train, rep]), w.val, steps=steps, lr=lr)
    ft["replay_ratio"], ft["replayed_issue_times"], ft["new_issue_times"] = replay_ratio, len(rep), len(w.train)
    timings["finetune_s"] = time.perf_counter() - t
    t = time.perf_counter()
    evaluation: dict = {"holdout": {}, "older": {}}
    jobs = [(win, name, m) for win in ("holdout", "older") for name, m in (("current", current),
                                                                          ("candidate", candidate))]
    for win, name, m in tqdm(jobs, desc="evaluate", disable=not progress, dynamic_ncols=True):
        evaluation[win][name] = evaluate(m, panel, getattr(w, win), max_eval_samples, seed)
    rows, pairs = served_window(store, dataset, (cur_row or {}).get("run_id"), panel, current.spec)
    if len(rows):
        evaluation["served"] = {"as_served": served_metrics(pairs, current.spec.horizons_min),
                                **{name: evaluate(m, panel, rows, max_eval_samples, seed) for name, m in
                                   (("current", current), ("candidate", candidate))}}
        w.periods["served"] = [str(panel.times[rows[0]]), str(panel.times[rows[-1]])]
        w.periods["served_issue_times"] = len(rows)
        w.periods["served_in_holdout"] = int((panel.times[rows] >= pd.Timestamp(w.periods["holdout"][0])).sum())
    timings["evaluate_s"] = time.perf_counter() - t
    better, why = verdict(evaluation)
    do_promote = promote and better
    now_promoted = registry.promoted(store, dataset)
    if do_promote and cur_row is not None and cur_row["promoted"] and (now_promoted or {}).get("run_id") != cur_row[
            "run_id"]:  # someone promoted another version meanwhile: theirs stands, ours waits for a person
        echo(f"the promoted version changed during the update (now {(now_promoted or {}).get('run_id')}); "
             "the candidate is registered but not promoted")
        do_promote = False
    # register: the current model if it is not yet, then the candidate (promoted in the same transaction)
    cur_id = cur_row["run_id"] if cur_row else registry.register(
        store, dataset, "lm", path, cfg.get("metrics", {}), cfg, status="registered")
    stamp = pd.Timestamp.now()
    run_id = f"update-{dataset}-{stamp:%Y%m%dT%H%M%S}-{np.random.default_rng().integers(16**6):06x}"
    dest = Path(out) if out is not None else model_dir_for(store, dataset, run_id)
    candidate.save(dest)
    ccfg = read_config(dest)
    metrics = {"evaluation": evaluation, "periods": w.periods, "update": ft,
               "holdout_mae": evaluation["holdout"]["candidate"]["mae"],
               "holdout_mae_parent": evaluation["holdout"]["current"]["mae"], "better_than_parent": better,
               "verdict": why}
    if "served" in evaluation:
        metrics.update(served_mae=evaluation["served"]["candidate"]["mae"],
                       served_mae_parent=evaluation["served"]["as_served"]["mae"])
    registry.register(store, dataset, "lm", dest, metrics, ccfg, promote=do_promote, parent=cur_id,
                      train_end=candidate.train_end, status=None if do_promote else ("candidate" if better
                                                                                      else "rejected"),
                      run_id=run_id)
    timings["total_s"] = sum(timings.values())
    status = "promoted" if do_promote else ("candidate" if better else "rejected")
    return UpdateResult(cur_id, run_id, str(dest), do_promote, status, evaluation, w.periods, ft,
                        {k: round(v, 1) for k, v in timings.items()}, why)


TRAINED = {"numeric": "the numeric path only (the transformer's head is zero)", "all": "all trainable tensors"}


def report_lines(r: UpdateResult) -> list[str]:
    """The before/after table (markdown) and the verdict, as the command prints them."""
    ev = r.evaluation
    hs = list(ev["holdout"]["current"]["horizons"])
    lines = ["", "| window | model | " + " | ".join(f"MAE {h} min" for h in hs) + " | MAE all | P10-P90 cov. | n |",
             "|---|---|" + "---:|" * (len(hs) + 3)]
    windows = [("holdout", f"held out {r.periods['holdout'][0][:10]}..{r.periods['holdout'][1][:10]}",
                ("current", "candidate")),
               ("older", f"older {r.periods['older'][0][:10]}..{r.periods['older'][1][:10]}", ("current", "candidate"))]
    if "served" in ev:
        windows.append(("served", f"served {r.periods['served'][0][:16]}..{r.periods['served'][1][:16]}",
                        ("as_served", "current", "candidate")))
    names = {"as_served": "current, as served", "current": "current", "candidate": "candidate"}
    for win, label, who in windows:
        for name in who:
            e = ev[win][name]
            cells = " | ".join("-" if e["horizons"].get(h) is None else f"{e['horizons'][h]:.3f}" for h in hs)
            lines.append(f"| {label} | {names[name]} | {cells} | {e['mae']:.3f} | {e['coverage_p10_p90']:.1%} "
                         f"| {e['n_samples']} |")
    d = ev["holdout"]["candidate"]["mae"] - ev["holdout"]["current"]["mae"]
    f = ev["older"]["candidate"]["mae"] - ev["older"]["current"]["mae"]
    said = {"promoted": f"promoted ({r.reason})", "candidate": f"{r.reason}; registered but not promoted "
            "(--no-promote or another version was promoted meanwhile)",
            "rejected": f"not promoted: {r.reason}"}[r.status]
    lines += ["", f"held-out MAE change {d:+.3f} (negative is better); older-window change {f:+.3f} (forgetting "
              f"if positive); fine-tuned {TRAINED[r.finetune['trains']]}: {r.finetune['steps']} steps, best at step "
              f"{r.finetune['best_step']} ({r.finetune['stopped']})"]
    if "served" in ev:
        s = ev["served"]
        lines.append(f"served window: {r.periods['served_issue_times']} issue times at which the current model "
                     f"served live forecasts; MAE as served {s['as_served']['mae']:.3f}, re-scored "
                     f"{s['current']['mae']:.3f}, candidate {s['candidate']['mae']:.3f} (fine-tuning saw these days "
                     f"except the {r.periods['served_in_holdout']} issue times in the held-out day)")
    else:
        lines.append("served window: the current model has no scored live forecasts in the last "
                     f"{SERVED_DAYS} days; judged on the held-out day only")
    lines += [f"candidate {r.candidate_run_id} saved to {r.candidate_path}: {said}",
              f"wall time: {', '.join(f'{k} {v}' for k, v in r.timings.items())}"]
    return lines


def as_dict(r: UpdateResult) -> dict:
    """The result as plain JSON-able data (for --json)."""
    from trafficcore.models.files import to_jsonable

    return to_jsonable(dataclasses.asdict(r))
