"""Does the model give credit to the words that matter? A sanity check of explanations on the demo city.

For every planted event (concert, match, marathon, incident...) in the test period that really
changed the flow (observed at least 20% off the typical value), take a detector at the event's
site, issue a forecast an hour before the event is over, and explain it. The check passes for a
forecast when the event's sentence holds the largest positive token attribution (or, for an
event that lowers flow, the largest negative one). Reported separately for held-out phrasings.

Run: `python -m trafficcore.evaluation.explanations --db DB --model DIR`.
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
    test_start = pd.Timestamp(demo.SPLIT["test"][0]) if isinstance(demo.SPLIT, dict) else None
    ev = panel.events[~panel.events["kind"].fillna("").str.contains("holiday")].copy()
    if test_start is not None:
        ev = ev[pd.to_datetime(ev["start_ts"]) >= test_start]
    ev["held_out"] = demo.held_out_mask(ev).to_numpy()
    rows = []
    from trafficcore.explain import _profile_before

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
        prof = _profile_before(panel, r)
        for d in dets:
            obs = panel.values[target, d] if expected is None else float(expected[target, d])
            typ = float(prof(int(d), np.array([target]))[0])
            if np.isfinite(obs) and typ > 0 and abs(obs - typ) / typ >= change:
                rows.append({"event_id": e.event_id, "kind": e.kind, "text": e.text, "held_out": bool(e.held_out),
                             "detector_id": panel.detectors["detector_id"].iloc[d], "issued_at": issue,
                             "direction": 1 if obs > typ else -1})
    return pd.DataFrame(rows)


def check(model, panel: Panel, cases: pd.DataFrame, horizon_min: int = 30) -> pd.DataFrame:
    """Per case: does the event sentence carry the top token attribution in the direction of the change?"""
    out = []
    for c in cases.itertuples(index=False):
        e = explain(model, panel, c.detector_id, c.issued_at, horizon_min, n_permutations=6)
        ph = phrases(e)
        if not ph:
            out.append(False)
            continue
        best = max(ph, key=lambda p: c.direction * p[1])
        words = " ".join(str(c.text).split()).strip(" .")  # phrases join the words with single spaces
        out.append(words in best[0] and c.direction * best[1] > 0)
    return cases.assign(top_is_event=out)


def main() -> None:  # pragma: no cover - a benchmark command, run by hand
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--db", required=True)
    ap.add_argument("--dataset", default="demo")
    ap.add_argument("--model", required=True)
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--expected", action="store_true",
                    help="select cases on the generator's expected counts (regenerates the default demo city, seed 0, "
                         "8 weeks; the store must hold that city) instead of the observed, noisy counts")
    a = ap.parse_args()
    from trafficcore.models import load_model

    panel = load_panel(Store(a.db, read_only=True), a.dataset)
    model = load_model(a.model)
    expected = None
    if a.expected:
        _, truth = demo.generate_with_truth(seed=0, weeks=8)
        cols = pd.Index(truth.detector_ids).get_indexer(panel.detectors["detector_id"])
        if (cols < 0).any() or not truth.times.equals(pd.DatetimeIndex(panel.times)):
            raise SystemExit("--expected: the store's demo city is not the default one (seed 0, 8 weeks)")
        expected = truth.expected[:, cols]  # the panel's column order
    cases = event_cases(panel, expected=expected).head(a.limit)
    t0 = time.perf_counter()
    res = check(model, panel, cases)
    dt = time.perf_counter() - t0
    print(f"{len(res)} forecasts near events that changed the flow; {dt / max(len(res), 1):.2f} s per explanation")
    print(res.groupby("held_out")["top_is_event"].agg(["mean", "size"]).to_string())
    print(f"overall: {res['top_is_event'].mean():.1%}")


if __name__ == "__main__":  # pragma: no cover
    main()
