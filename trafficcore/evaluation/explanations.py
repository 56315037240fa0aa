"""Does the model give credit to the words that matter? A sanity check of explanations on the demo city.

Issue 4's bar: where a planted event changes the flow, the event's words carry the largest positive
attribution among text tokens (for an event that lowers flow, the largest negative one) in >= 80% of such
forecasts, held-out phrasings included. The check passes for a forecast when the event's sentence holds
the largest token attribution in the direction of the change.

Which forecasts, three ways (`--select`):

- `planted` (default): the generator's truth says what each event did (`DemoTruth.expected` minus
  `DemoTruth.without_events`: same weather and noise, no events). For every test-period event and every
  detector at its site, the case is the *first* forecast that can see the event in its text (planned
  events are announced, incidents only once reported) whose target interval the event changes by >= 20%.
  That is the forecast where only the words can tell the model what is coming; later ones already see
  the change in their recent readings, and a good model then uses the words to correct the numbers,
  which may point either way.
- `observed`: the forecast issued 15 minutes after the event started, kept when the observed count at
  the target is >= 20% off the detector's typical value. At a typical 30 vehicles Poisson noise alone is
  20% off in about a quarter of intervals, so this also picks intervals where chance, not the event, moved
  the flow, and its direction is measured against the typical day, not against what the numbers predict.
- `expected`: as `observed`, but on the generator's noise-free expected counts.

Run: `python -m trafficcore.evaluation.explanations --db DB --model DIR [--select planted|observed|expected]`.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from trafficcore.data import demo
from trafficcore.data.panel import Panel, load_panel
from trafficcore.data.store import Store
from trafficcore.explain import explain, phrases


def event_cases(panel: Panel, horizon_min: int = 30, change: float = 0.2, expected: np.ndarray | None = None
                ) -> pd.DataFrame:
    """Test-period (event, detector, issue time) triples where the event changed the observed flow.

    `expected` ((T, D), the generator's Poisson mean, `demo.generate_with_truth`) replaces the observed count
    in that test: at a typical 30 vehicles Poisson noise alone is 20% off in about a quarter of intervals, so
    observed counts also select intervals where only chance, not the event, moved the flow.
    """
    ev = _test_events(panel)
    rows = []
    from trafficcore.explain import profile_before

    for e in ev.itertuples(index=False):
        dets = panel.detectors.index[panel.detectors["site_id"] == e.site_id]
        start = pd.Timestamp(e.start_ts)
        issue = start.floor(panel.interval) + pd.Timedelta(minutes=15)
        if issue < panel.times[0] or issue >= panel.times[-1]:
            continue
        r = panel.index_of(issue)
        target = r + int(pd.Timedelta(minutes=horizon_min) / panel.interval) - 1
        if target >= len(panel.times):
            continue
        prof = profile_before(panel, r)
        for d in dets:
            obs = panel.values[target, d] if expected is None else float(expected[target, d])
            typ = float(prof(int(d), np.array([target]))[0])
            if np.isfinite(obs) and typ > 0 and abs(obs - typ) / typ >= change:
                rows.append({"event_id": e.event_id, "kind": e.kind, "text": e.text, "held_out": bool(e.held_out),
                             "detector_id": panel.detectors["detector_id"].iloc[d], "issued_at": issue,
                             "horizon_min": horizon_min, "direction": 1 if obs > typ else -1})
    return pd.DataFrame(rows)


def planted_cases(panel: Panel, expected: np.ndarray, without_events: np.ndarray, horizon_min: int = 30,
                  change: float = 0.2) -> pd.DataFrame:
    """Per test-period event and detector at its site: the first forecast whose text shows the event and
    whose target interval the event changes by >= `change` (relative to the no-event expected count).

    `expected` and `without_events` are (T, D) in the panel's row and column order (`DemoTruth`).
    Visibility follows `trafficcore.data.windows.context_fields`: a planned event once its start is within
    the largest horizon + 1 hour of the issue time, an incident from its start on; either until an hour after
    it ends.
    """
    from trafficcore.data.windows import UNPLANNED_WORDS, WindowSpec

    spec = WindowSpec()
    step = int(pd.Timedelta(minutes=horizon_min) / panel.interval)
    lead = pd.Timedelta(minutes=max(spec.horizons_min)) + pd.Timedelta(hours=1)
    times = pd.DatetimeIndex(panel.times)
    effect = expected - without_events
    rel = np.abs(effect) / np.maximum(without_events, 1e-6)
    rows = []
    for e in _test_events(panel).itertuples(index=False):
        start = pd.Timestamp(e.start_ts)
        end = pd.Timestamp(e.end_ts) if pd.notna(e.end_ts) else start + pd.Timedelta(hours=2)
        unplanned = any(w in str(e.kind).lower() for w in UNPLANNED_WORDS)
        first = times.searchsorted(start if unplanned else start - lead)
        last = times.searchsorted(end + pd.Timedelta(hours=1), side="right") - 1
        for d in panel.detectors.index[panel.detectors["site_id"] == e.site_id]:
            for r in range(max(first, spec.history_steps), min(last, len(times) - step) + 1):
                target = r + step - 1
                if rel[target, d] >= change:
                    rows.append({"event_id": e.event_id, "kind": e.kind, "text": e.text, "held_out": bool(e.held_out),
                                 "detector_id": panel.detectors["detector_id"].iloc[d], "issued_at": times[r],
                                 "horizon_min": horizon_min, "direction": 1 if effect[target, d] > 0 else -1,
                                 "minutes_to_start": int((start - times[r]) / pd.Timedelta(minutes=1)),
                                 "change": float(effect[target, d] / max(without_events[target, d], 1e-6))})
                    break
    return pd.DataFrame(rows)


def _test_events(panel: Panel) -> pd.DataFrame:
    """Events starting in the demo city's test period (holidays excluded), with their held-out flag."""
    ev = panel.events[~panel.events["kind"].fillna("").str.contains("holiday")].copy()
    ev = ev[pd.to_datetime(ev["start_ts"]) >= pd.Timestamp(demo.SPLIT["test"][0])]
    ev["held_out"] = demo.held_out_mask(ev).to_numpy()
    return ev


def check(model, panel: Panel, cases: pd.DataFrame) -> pd.DataFrame:
    """Per case: does the event sentence carry the top token attribution in the direction of the change?"""
    out = []
    for c in cases.itertuples(index=False):
        e = explain(model, panel, c.detector_id, c.issued_at, int(c.horizon_min), n_permutations=6)
        ph = phrases(e)
        if not ph:
            out.append(False)
            continue
        best = max(ph, key=lambda p: c.direction * p[1])
        words = " ".join(str(c.text).split()).strip(" .")  # phrases join the words with single spaces
        out.append(words in best[0] and c.direction * best[1] > 0)
    return cases.assign(top_is_event=out)


def main() -> None:  # pragma: no cover - a benchmark command, run by hand
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", required=True)
    ap.add_argument("--dataset", default="demo")
    ap.add_argument("--model", required=True)
    ap.add_argument("--limit", type=int, default=400)
    ap.add_argument("--select", choices=("planted", "observed", "expected"), default="planted",
                    help="which forecasts to check (see above); planted and expected regenerate the default demo "
                         "city (seed 0, 8 weeks), which the store must hold")
    ap.add_argument("--horizons", default="30", help="comma-separated forecast horizons in minutes (default 30)")
    ap.add_argument("--cases", help="write every case and its outcome to this CSV")
    a = ap.parse_args()
    from trafficcore.models import load_model

    panel = load_panel(Store(a.db, read_only=True), a.dataset)
    model = load_model(a.model)
    horizons = [int(h) for h in a.horizons.split(",")]
    if a.select == "observed":
        cases = pd.concat([event_cases(panel, h) for h in horizons], ignore_index=True)
    else:
        _, truth = demo.generate_with_truth(seed=0, weeks=8)
        cols = pd.Index(truth.detector_ids).get_indexer(panel.detectors["detector_id"])
        if (cols < 0).any() or not truth.times.equals(pd.DatetimeIndex(panel.times)):
            raise SystemExit(f"--select {a.select}: the store's demo city is not the default one (seed 0, 8 weeks)")
        if a.select == "expected":
            cases = pd.concat([event_cases(panel, h, expected=truth.expected[:, cols]) for h in horizons],
                              ignore_index=True)  # truth in the panel's column order
        else:
            cases = pd.concat([planted_cases(panel, truth.expected[:, cols], truth.without_events[:, cols], h)
                               for h in horizons], ignore_index=True)
    cases = cases.head(a.limit)
    t0 = time.perf_counter()
    res = check(model, panel, cases)
    dt = time.perf_counter() - t0
    if a.cases:
        res.to_csv(a.cases, index=False)
    print(f"{len(res)} forecasts near events that changed the flow ({a.select}); "
          f"{dt / max(len(res), 1):.2f} s per explanation")
    print(res.groupby(["horizon_min", "held_out"])["top_is_event"].agg(["mean", "size"]).to_string())
    print(res.groupby("held_out")["top_is_event"].agg(["mean", "size"]).to_string())
    print(f"overall: {res['top_is_event'].mean():.1%} ({int(res['top_is_event'].sum())} of {len(res)})")


if __name__ == "__main__":  # pragma: no cover
    main()
