"""Does a scenario note move the forecast the way the event it describes did? Semantic checks on the demo city.

The demo city's generator knows what each planted event did (`DemoTruth.expected - DemoTruth.without_events`).
For every test-period event and detector at its site, the case is the first forecast whose text could show the
event and whose target the event changes by >= 20% (`explanations.planted_cases`). The event is then removed
from the context, so the note is the only source, and its own text is typed as a scenario note, read through
`trafficcore.notes` as the dashboard reads a note:

- **right time**: the note as written, its times relative to the issue time (an incident's text names no time,
  so the check types when it was reported: ", from 17:35"). Bar: the forecast moves in the planted direction
  in >= 80% of cases.
- **10 h later**: the same note with every time it states 10 h later, outside the forecast horizon. Bar: the
  forecast moves by <= 2% (or <= 1 vehicle) in >= 90% of cases.
- **5 km away**: the same note with its place 5 km from the detector. Same bar.

Each move is the P50 at the case's horizon with the note minus without it (same numbers, same context). Two
readings are measured: **as served**, the note read under the same rule as an event (`NoteLanguage.unread`: a
note about something beyond the model's event window, further ahead than the largest horizon + 1 h or further away
than the event radius, is not given to the model, so it cannot move the forecast), which is what the dashboard,
the CLI and the API do; and **the model itself**, every note given to it, which says whether the model learnt to
weigh times and distances on its own.

Run: `python -m trafficcore.evaluation.note_checks --db DB --model data/demo_model [--horizons 15,30,45,60]`.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
import pandas as pd

from trafficcore.data import demo
from trafficcore.data.panel import Panel, load_panel
from trafficcore.data.store import Store
from trafficcore.data.windows import UNPLANNED_WORDS, build_samples
from trafficcore.evaluation.explanations import planted_cases
from trafficcore.models.base import note_language
from trafficcore.notes import gazetteer

#: the bars of issue 14
RIGHT_BAR, STILL_BAR = 0.80, 0.90
#: "does not move": at most this share of the forecast, or this many vehicles, whichever is larger
STILL_REL, STILL_ABS = 0.02, 1.0
LATER = pd.Timedelta(hours=10)
FAR_KM = 5.0


def demo_cases(panel: Panel, horizons=(15, 30, 45, 60)) -> pd.DataFrame:
    """The planted cases of the default demo city (seed 0, 8 weeks), which `panel` must be."""
    _, truth = demo.generate_with_truth(seed=0, weeks=8)
    cols = pd.Index(truth.detector_ids).get_indexer(panel.detectors["detector_id"])
    if (cols < 0).any() or not truth.times.equals(pd.DatetimeIndex(panel.times)):
        raise ValueError("the store's demo city is not the default one (seed 0, 8 weeks): regenerate it with "
                         "`trafficcore demo`")
    return pd.concat([planted_cases(panel, truth.expected[:, cols], truth.without_events[:, cols], int(h))
                      for h in horizons], ignore_index=True)


def without_event(panel: Panel, event_id: str) -> Panel:
    """The panel with one event removed from its context (the numbers stay: they are what happened)."""
    return dataclasses.replace(panel, events=panel.events[panel.events["event_id"] != event_id].reset_index(drop=True))


def typed_note(event: pd.Series, issued_at: pd.Timestamp, parsed_start) -> tuple[str, bool]:
    """The event's own text as a user would type it; where it names no start, with when it was reported."""
    text = str(event["text"])
    if parsed_start is not None:
        return text, False
    start = pd.Timestamp(event["start_ts"])
    when = f"{start:%H:%M}" if start.normalize() == issued_at.normalize() else f"{start:%a %d %b %H:%M}"
    return f"{text}, from {when}", True


def run_checks(model, panel: Panel, cases: pd.DataFrame) -> pd.DataFrame:
    """Per case: the P50 without the note and with its three variants, and whether each meets its bar."""
    out = []
    events = panel.events.set_index("event_id")
    hs = list(model.spec.horizons_min)
    language = note_language(model)
    for event_id, group in cases.groupby("event_id", sort=False):
        p = without_event(panel, event_id)
        gaz = gazetteer(p)
        nb = model.neighbours(p)
        ev = events.loc[event_id]
        for c in group.itertuples(index=False):
            at = pd.Timestamp(c.issued_at)
            d = p.column(c.detector_id)
            det = p.detectors.iloc[d]
            samples = build_samples(p, np.array([p.index_of(at)]), np.array([d]), model.spec, neighbour_idx=nb)
            note, added = typed_note(ev, at, gaz.parse(str(ev["text"]), at).start)
            parsed = gaz.parse(note, at)
            lat, lon, road = float(det["lat"]), float(det["lon"]), det["road"]
            kw = {"road": road, "language": language}
            variants = {"right": parsed.render(lat, lon, **kw), "later": parsed.render(lat, lon, shift=LATER, **kw),
                        "far": parsed.render(lat, lon, km=FAR_KM, **kw)}
            texts = [" ".join(model.text_parts(p, samples, note=None)[0])]
            texts += [" ".join(model.text_parts(p, samples, note=v.text)[0]) for v in variants.values()]
            q = np.asarray(model.predict_with_texts(p, samples.subset(np.zeros(len(texts), dtype=np.int64)), texts))
            p50 = q[:, hs.index(int(c.horizon_min)), 1].astype(float)
            plain = p50[0]
            model_moves = dict(zip(variants, p50[1:] - plain, strict=True))
            still = max(STILL_ABS, STILL_REL * abs(plain))
            row = {**c._asdict(), "unplanned": any(w in str(c.kind).lower() for w in UNPLANNED_WORDS),
                   "note": note, "time_added": added, "without": plain, "tolerance": still}
            for k, v in variants.items():
                served = 0.0 if v.unread else model_moves[k]  # an unread note is not in the text: nothing moves
                row.update({f"read_{k}": v.text, f"unread_{k}": v.unread or "", f"model_move_{k}": model_moves[k],
                            f"move_{k}": served})
            for prefix in ("", "model_"):
                row[f"{prefix}right_ok"] = bool(c.direction * row[f"{prefix}move_right"] > 0)
                row[f"{prefix}later_ok"] = bool(abs(row[f"{prefix}move_later"]) <= still)
                row[f"{prefix}far_ok"] = bool(abs(row[f"{prefix}move_far"]) <= still)
            out.append(row)
    return pd.DataFrame(out)


def table(res: pd.DataFrame) -> pd.DataFrame:
    """The measured table: per check and reading (as served, the model itself), cases, share meeting the bar,
    the bar, verdict."""
    rows = []
    for reading, prefix in (("as served", ""), ("the model itself", "model_")):
        for name, col, bar in (("right time: moves in the planted direction", "right_ok", RIGHT_BAR),
                               ("10 h later: moves <= 2% or <= 1 veh", "later_ok", STILL_BAR),
                               ("5 km away: moves <= 2% or <= 1 veh", "far_ok", STILL_BAR)):
            share = float(res[prefix + col].mean()) if len(res) else float("nan")
            rows.append({"reading": reading, "check": name, "cases": len(res), "share": round(share, 3),
                         "bar": bar, "verdict": "pass" if share >= bar else "FAIL"})
    return pd.DataFrame(rows)


def breakdown(res: pd.DataFrame) -> pd.DataFrame:
    """Shares per horizon and per planned/unplanned event, with the median absolute moves."""
    g = res.assign(event=np.where(res["unplanned"], "incident", "planned")).groupby(["horizon_min", "event"])
    med = {f"med_move_{k}": (f"model_move_{k}", lambda s: float(np.median(np.abs(s)))) for k in ("right", "later",
                                                                                               "far")}
    return g.agg(cases=("right_ok", "size"), right=("right_ok", "mean"), model_later=("model_later_ok", "mean"),
                 model_far=("model_far_ok", "mean"), **med).round(3)


def main() -> None:  # pragma: no cover - a benchmark command, run by hand
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", required=True)
    ap.add_argument("--dataset", default="demo")
    ap.add_argument("--model", required=True)
    ap.add_argument("--horizons", default="15,30,45,60", help="comma-separated forecast horizons in minutes")
    ap.add_argument("--cases", help="write every case, the notes as read and the moves to this CSV")
    a = ap.parse_args()
    from trafficcore.models import load_model

    panel = load_panel(Store(a.db, read_only=True), a.dataset)
    model = load_model(a.model)
    cases = demo_cases(panel, [int(h) for h in a.horizons.split(",")])
    t0 = time.perf_counter()
    res = run_checks(model, panel, cases)
    dt = time.perf_counter() - t0
    if a.cases:
        res.to_csv(a.cases, index=False)
    print(f"{len(res)} cases ({res['event_id'].nunique()} test-period events, horizons {a.horizons} min); "
          f"{dt:.1f} s")
    print(table(res).to_string(index=False))
    print()
    print(breakdown(res).to_string())


if __name__ == "__main__":  # pragma: no cover
    main()
