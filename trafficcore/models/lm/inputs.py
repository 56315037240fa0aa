"""What the language-model forecaster reads: numeric tokens, context texts, and the per-detector scalers.

Each part is kept apart from the network so that it can be tested against the reference code:

- The detectors' scales and typical days come from `trafficcore.data.profile.DetectorProfile`, fit on
  training rows only (the same class gradient boosting uses). Everything the network sees is divided by
  the detector's scale (mean reading), so one set of weights serves a 20-vehicle side street and a
  600-vehicle arterial. Detectors without training data (cold start) get the cross-site shape times the
  median scale.
- `numeric_inputs` turns `Samples` into the arrays of the numeric tokens, and the *anchor*: the
  profile at each target multiplied by a shrunk ratio of recent readings to their profile. The
  network predicts a residual over that anchor, so it starts from a good forecast and spends its steps
  on corrections (docs/MODEL_REPORT.md has the anchor's own error on SCATS).
- `FastContext` produces exactly the dict of `trafficcore.data.windows.context_fields`, but
  precomputes what does not depend on the sample (event visibility inputs, detector-event
  proximity, weather times, holidays): the reference filters every event and weather row per call,
  which is too slow for a text per training sample. `tests/test_lm.py` checks both agree field by field.
- `Prepared`: numeric inputs plus tokenised texts for a set of samples, what the network is fed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from trafficcore.data.event_match import near_matrix
from trafficcore.data.panel import Panel
from trafficcore.data.profile import DetectorProfile, daytype_slot, slots_per_day, without_own_reading
from trafficcore.data.windows import UNPLANNED_WORDS, WEEK, Samples, WindowSpec, holiday_dates

#: Readings divided by the scale are clipped to this range (faults such as stuck counters).
CLIP = 10.0


@dataclass
class NumericInputs:
    """Arrays for N samples. Token features are already scaled and NaN-free (with mask channels)."""

    own: np.ndarray  # (N, P, 3 * patch) own-history patches: reading, profile, missing flag
    nbr: np.ndarray  # (N, K, 3 * H + 1) neighbours: readings, profile, missing flags, present flag
    week: np.ndarray  # (N, 2 * (H + hmax)) the detector a week earlier, around the issue time
    target: np.ndarray  # (N, 4 * S) profile, anchor, last week at target, its missing flag
    calendar: np.ndarray  # (N, C)
    anchor: np.ndarray  # (N, S) in data units
    scale: np.ndarray  # (N,) in data units
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # optional tokens, (N, F) each

    def __len__(self) -> int:
        return len(self.anchor)

    def take(self, idx) -> NumericInputs:
        return NumericInputs(self.own[idx], self.nbr[idx], self.week[idx], self.target[idx], self.calendar[idx],
                             self.anchor[idx], self.scale[idx], {k: v[idx] for k, v in self.extra.items()})

    def concat(self, other: NumericInputs) -> NumericInputs:
        """These samples followed by `other`'s (same token layout)."""
        def cat(a: np.ndarray, b: np.ndarray) -> np.ndarray:
            return np.concatenate([a, b])

        return NumericInputs(cat(self.own, other.own), cat(self.nbr, other.nbr), cat(self.week, other.week),
                             cat(self.target, other.target), cat(self.calendar, other.calendar),
                             cat(self.anchor, other.anchor), cat(self.scale, other.scale),
                             {k: cat(v, other.extra[k]) for k, v in self.extra.items()})

    def token(self, kind: str) -> np.ndarray:
        return self.extra[kind] if kind in self.extra else getattr(self, kind)

    def token_dims(self) -> dict[str, tuple[int, int]]:
        """kind -> (number of tokens, features per token)."""
        dims = {
            "own": self.own.shape[1:],
            "nbr": self.nbr.shape[1:],
            "week": (1, self.week.shape[1]),
            "target": (1, self.target.shape[1]),
            "calendar": (1, self.calendar.shape[1]),
        }
        dims.update({k: (1, v.shape[1]) for k, v in self.extra.items()})
        return dims


def _scaled(x: np.ndarray, scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(x / scale clipped, NaN -> 0) and the missing flag."""
    miss = ~np.isfinite(x)
    with np.errstate(invalid="ignore", divide="ignore"):
        y = np.clip(np.where(miss, 0.0, x / scale), -CLIP, CLIP)
    return y.astype(np.float32), miss.astype(np.float32)


EXTRA_TOKENS = ("day", "long")


def numeric_inputs(panel: Panel, samples: Samples, profile: DetectorProfile, neighbour_idx: np.ndarray,
                   patch: int = 4, ratio_steps: int = 4, shrink: float = 0.25,
                   extra: tuple[str, ...] = (), leave_own_out: bool = False) -> NumericInputs:
    """Build every numeric token and the anchor for `samples` (inputs use rows before the issue time only).

    `extra` adds optional tokens: "day" (the detector one day earlier around the issue time) and
    "long" (the 24 hours before the history window, in means of `patch` readings, with profile).
    `leave_own_out` (training samples): every profile value leaves out the reading of the row it is looked
    up for, when that row is one the profile was fit on (`DetectorProfile.own_out_tables`).
    """
    unknown = set(extra) - set(EXTRA_TOKENS)
    if unknown:
        raise ValueError(f"unknown extra tokens {sorted(unknown)}; choose from {EXTRA_TOKENS}")
    spec = samples.spec
    d, t = samples.detector_idx, samples.issue_idx
    n, H = samples.history.shape
    if H % patch:
        raise ValueError(f"history_steps ({H}) must be a multiple of the patch length ({patch})")
    scale_all, prof_all = profile.for_panel(panel)
    hsteps = spec.horizon_steps(panel.interval)
    hmax = int(hsteps.max())
    sc = scale_all[d][:, None]

    loo = profile.own_out_tables(panel) if leave_own_out else None
    T = panel.values.shape[0]

    def prof_at(cols: np.ndarray, rows: np.ndarray) -> np.ndarray:
        dt, sl = daytype_slot(panel, np.clip(rows, 0, None))
        out = prof_all[cols, dt, sl]
        if loo is None:
            return out
        return without_own_reading(out, loo[1][cols, dt, sl], panel.values, rows, cols, loo[0]).astype(np.float32)

    hist_rows = t[:, None] + np.arange(-H, 0)[None, :]
    hprof = prof_at(d[:, None], hist_rows)
    tprof = prof_at(d[:, None], t[:, None] + hsteps[None, :] - 1)
    # the anchor: target profile x shrunk ratio of the newest readings to their profile
    recent = samples.history[:, -ratio_steps:].astype(np.float64)
    ok = np.isfinite(recent)
    num = np.where(ok, recent, 0.0).sum(1) + shrink * sc[:, 0] * ratio_steps
    den = np.where(ok, hprof[:, -ratio_steps:], 0.0).sum(1) + shrink * sc[:, 0] * ratio_steps
    ratio = np.clip(num / np.maximum(den, 1e-6), 0.2, 5.0)
    anchor = (tprof * ratio[:, None]).astype(np.float32)

    h, hm = _scaled(samples.history, sc)
    own = np.concatenate(
        [x.reshape(n, H // patch, patch) for x in (h, np.clip(hprof / sc, -CLIP, CLIP), hm)], axis=2
    ).astype(np.float32)

    nb = neighbour_idx[d]  # (N, K)
    present = nb >= 0
    nbc = np.clip(nb, 0, None)
    nsc = np.where(present, scale_all[nbc], 1.0)[:, :, None]
    nh, nm = _scaled(samples.neighbours, nsc)
    nprof = np.where(present[:, :, None], prof_at(nbc[:, :, None], hist_rows[:, None, :]) / nsc, 0.0)
    nbr = np.concatenate([nh, np.clip(nprof, -CLIP, CLIP), nm, present[:, :, None].astype(np.float32)], axis=2)

    def past(rows: np.ndarray) -> np.ndarray:
        """Readings of the sample's own detector at `rows` (NaN outside the data and at or after the issue time)."""
        v = np.where((rows >= 0) & (rows < T), panel.values[np.clip(rows, 0, T - 1), d[:, None]], np.nan)
        return np.where(rows < t[:, None], v, np.nan)

    week = int(WEEK / panel.interval)
    w, wm = _scaled(past(t[:, None] - week + np.arange(-H, hmax)[None, :]), sc)
    extras: dict[str, np.ndarray] = {}
    if "day" in extra:
        day = slots_per_day(panel)
        dv, dm = _scaled(past(t[:, None] - day + np.arange(-H, hmax)[None, :]), sc)
        extras["day"] = np.concatenate([dv, dm], axis=1)
    if "long" in extra:
        day = slots_per_day(panel)
        lo = (day - H) // patch * patch
        rows = t[:, None] + np.arange(-H - lo, -H)[None, :]
        lv = past(rows)
        lp = prof_at(d[:, None], rows)
        ok = np.isfinite(lv)
        n_p = lo // patch
        cnt = ok.reshape(n, n_p, patch).sum(2)
        mean = np.where(ok, lv, 0.0).reshape(n, n_p, patch).sum(2) / np.maximum(cnt, 1)
        pmean = np.where(ok, lp, 0.0).reshape(n, n_p, patch).sum(2) / np.maximum(cnt, 1)
        ratio_l = np.where(cnt > 0, (mean + shrink * sc) / (pmean + shrink * sc), 1.0)
        extras["long"] = np.concatenate([np.clip(np.where(cnt > 0, mean / sc, 0.0), -CLIP, CLIP),
                                         np.clip(ratio_l, 0.0, CLIP), (cnt == 0).astype(np.float32)],
                                        axis=1).astype(np.float32)
    lw, lwm = _scaled(samples.last_week, sc)
    target = np.concatenate([tprof / sc, anchor / sc, lw, lwm], axis=1)
    return NumericInputs(
        own=own,
        nbr=nbr.astype(np.float32),
        week=np.concatenate([w, wm], axis=1),
        target=np.clip(target, -CLIP, CLIP).astype(np.float32),
        calendar=samples.calendar.astype(np.float32),
        anchor=anchor,
        scale=sc[:, 0].astype(np.float32),
        extra=extras,
    )


class FastContext:
    """`windows.context_fields` for many samples, with the per-dataset work done once.

    Equal to the reference by construction (same rules, same order of events) and by test.
    """

    def __init__(self, panel: Panel, spec: WindowSpec = WindowSpec(), relative_times: bool = False,
                 roads: bool = False):
        """`relative_times` and `roads` restate event texts as a scenario note is restated (`LMConfig.event_times`,
        `event_road`, with `details`); left False, `fields` equals `windows.context_fields`."""
        self.panel = panel
        self.spec = spec
        self.det = panel.detectors.reset_index(drop=True)
        # per issue row: its time, the events visible then and the weather row (a forecast of every detector
        # shares one issue time: 8,000 samples ask the same question)
        self._at_row: dict[int, tuple] = {}
        self.holidays = holiday_dates(panel)
        self.horizon = pd.Timedelta(minutes=max(spec.horizons_min))
        ev = panel.events
        self.n_events = len(ev)
        if self.n_events:
            start = pd.to_datetime(ev["start_ts"])
            end = pd.to_datetime(ev["end_ts"]).fillna(start + pd.Timedelta(hours=2))
            kind = ev["kind"].fillna("")
            self.ev_start = start.to_numpy()
            self.ev_end = end.to_numpy()
            self.ev_unplanned = kind.str.lower().str.contains("|".join(UNPLANNED_WORDS)).to_numpy()
            self.ev_holiday = kind.str.contains("holiday").to_numpy()
            self.ev_kind = ev["kind"].to_numpy()
            self.ev_text = ev["text"].to_numpy()
            self.km = np.full((len(self.det), self.n_events), np.nan)  # detector-event distance, where known
            self.near = self._near(ev)  # (D, E)
            self.near_idx = [np.flatnonzero(row) for row in self.near]  # per detector, ascending
            self.on_road = None  # (D, E): the event names the detector's road (outside a site name)
            if relative_times or roads:  # event texts read as a user's note is read (trafficcore.notes)
                from trafficcore.notes import gazetteer

                gaz = gazetteer(panel)
                parsed = [gaz.parse(str(x), s) if isinstance(x, str) else None
                          for x, s in zip(self.ev_text, start, strict=True)]
                if relative_times:  # the event's own clock times and dates removed: time only as "starts in ..."
                    self.ev_text = np.array([p.body if p is not None else x
                                             for p, x in zip(parsed, self.ev_text, strict=True)], dtype=object)
                if roads:
                    named = [set(p.roads) if p is not None else set() for p in parsed]
                    road = self.det["road"].astype(object).to_numpy()
                    self.on_road = np.array([[r in n for n in named] for r in road], dtype=bool)
        w = panel.weather
        self.w_ts = pd.to_datetime(w["ts"]).to_numpy() if not w.empty else np.array([], dtype="datetime64[ns]")
        self.w_rows = [] if w.empty else [
            {k: v for k, v in row.items() if k != "ts" and pd.notna(v)} for row in w.to_dict("records")
        ]
        self.static = [
            {
                "site_name": r.get("site_name"),
                "site_description": r.get("site_description"),
                "approach": r.get("approach"),
                "road": r.get("road"),
                "detector_description": r.get("description"),
                "measure": r.get("measure"),
            }
            for r in self.det.to_dict("records")  # plain dicts: a row Series each costs ~0.5 ms per detector
        ]

    def _near(self, ev: pd.DataFrame) -> np.ndarray:
        """Detector-event proximity and distances by the shared rule (`trafficcore.data.event_match`)."""
        near, self.km = near_matrix(self.det, ev, self.spec.event_radius_km)
        return near

    def time_of(self, issue_row: int) -> pd.Timestamp:
        p = self.panel
        if 0 <= issue_row < len(p.times):
            return p.times[int(issue_row)]
        return p.times[0] + int(issue_row) * p.interval

    def fields(self, detector_idx: int, issue_row: int, details: bool = False) -> dict:
        """`windows.context_fields`; with `details`, each event also says how far it is (`km`) and, for planned
        events, when it ends (`minutes_to_end`): what the language model needs to place an event in space and time."""
        t, active, weather, holiday = self._row(int(issue_row))
        events = []
        if self.n_events:
            cand = self.near_idx[int(detector_idx)]  # only the events near this detector
            for j in cand[active[cand]]:
                mins = int((pd.Timestamp(self.ev_start[j]) - t) / pd.Timedelta(minutes=1))
                events.append({"kind": self.ev_kind[j], "text": self.ev_text[j], "minutes_from_now": mins})
                if details:
                    km = self.km[int(detector_idx), j]
                    if np.isfinite(km):
                        events[-1]["km"] = float(km)
                    if not self.ev_unplanned[j]:  # an incident's end is known only afterwards
                        events[-1]["minutes_to_end"] = int((pd.Timestamp(self.ev_end[j]) - t) / pd.Timedelta(minutes=1))
                    if self.on_road is not None and self.on_road[int(detector_idx), j]:
                        events[-1]["on_road"] = True
        return {
            **self.static[int(detector_idx)],
            "issued_at": t,
            "holiday": holiday,
            "events": events[:3],
            "weather": dict(weather),
        }

    def _row(self, issue_row: int) -> tuple:
        """(time, events visible and not over, weather row, holiday) at an issue row, computed once per row."""
        hit = self._at_row.get(issue_row)
        if hit is not None:
            return hit
        t = self.time_of(issue_row)
        active = None
        if self.n_events:
            t64 = np.datetime64(t.to_datetime64())
            hz = np.datetime64((t + self.horizon + pd.Timedelta(hours=1)).to_datetime64())
            visible = np.where(self.ev_unplanned, self.ev_start <= t64, self.ev_start <= hz)
            active = visible & (self.ev_end >= t64 - np.timedelta64(1, "h")) & ~self.ev_holiday
        weather = {}
        if len(self.w_ts):
            # the reference takes the last row (in table order) among those with ts <= t
            ok = np.flatnonzero(self.w_ts <= np.datetime64(t.to_datetime64()))
            if ok.size:
                weather = self.w_rows[int(ok[-1])]
        if len(self._at_row) >= 4096:  # bounded: a training epoch visits every row once
            self._at_row.clear()
        self._at_row[issue_row] = hit = (t, active, weather, t.date() in self.holidays)
        return hit

    def recent_event_mask(self, detector_idx: np.ndarray, issue_idx: np.ndarray, window_min: int = 180) -> np.ndarray:
        """Per sample: does its context text mention an event that is upcoming or started within `window_min`?

        These are the samples where the words say something the numbers cannot (an event that has not
        yet shown up in the readings); long-running roadworks are already in the recent readings. Same
        visibility and proximity rules as `fields`, vectorised over samples (phase-2 event-aware sampling).
        """
        detector_idx = np.asarray(detector_idx, dtype=np.int64)
        issue_idx = np.asarray(issue_idx, dtype=np.int64)
        out = np.zeros(len(issue_idx), dtype=bool)
        if not self.n_events or not len(issue_idx):
            return out
        p = self.panel
        t = np.datetime64(p.times[0].to_datetime64()) + issue_idx * np.timedelta64(p.interval)
        hz = np.timedelta64(self.horizon + pd.Timedelta(hours=1))
        # samples grouped by detector, so each event looks only at the samples of detectors near it (a region's
        # thousand incidents each touch a few detectors: checking every sample for every event grew as their product)
        order = np.argsort(detector_idx, kind="stable")
        starts = np.searchsorted(detector_idx[order], np.arange(len(self.det) + 1))
        for j in np.flatnonzero(~self.ev_holiday):
            dets = np.flatnonzero(self.near[:, j])
            if not dets.size:
                continue
            idx = np.concatenate([order[starts[d]:starts[d + 1]] for d in dets])
            if not idx.size:
                continue
            ts = t[idx]
            s, e = self.ev_start[j], self.ev_end[j]
            visible = (s <= ts) if self.ev_unplanned[j] else (s <= ts + hz)
            recent = s >= ts - np.timedelta64(int(window_min), "m")
            out[idx] |= visible & recent & (e >= ts - np.timedelta64(1, "h"))
        return out


@dataclass
class Prepared:
    """Numeric inputs + tokenised texts for a set of samples (one model, one panel)."""

    inputs: NumericInputs
    targets: np.ndarray  # (N, S) data units, NaN unknown
    text_ids: list[np.ndarray]  # unique token id sequences
    text_index: np.ndarray  # (N,) which sequence each sample reads

    def __len__(self) -> int:
        return len(self.text_index)

    def head(self, n: int) -> Prepared:
        """The first n samples (same token table)."""
        return Prepared(self.inputs.take(np.arange(min(n, len(self)))), self.targets[:n], self.text_ids,
                        self.text_index[:n])

    def concat(self, other: Prepared) -> Prepared:
        """These samples followed by `other`'s (one token table: `other`'s sequences follow these)."""
        return Prepared(self.inputs.concat(other.inputs), np.concatenate([self.targets, other.targets]),
                        self.text_ids + other.text_ids,
                        np.concatenate([self.text_index, other.text_index + len(self.text_ids)]))

    def text_lengths(self) -> np.ndarray:
        return np.array([len(x) for x in self.text_ids])[self.text_index]
