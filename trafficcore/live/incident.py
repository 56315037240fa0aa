"""Incident response: what an incident is expected to do around its site over the next two hours.

An incident is one row of the canonical `events` table: picked from the dataset (the demo city plants
crashes, lane closures, roadworks, concerts and matches there) or typed by an operator (a site, a kind,
a text, a start and an expected duration). `incident_effect` forecasts every detector of the incident's
site and its neighbours twice with the same model, from the same readings:

- **with** the incident: the events table as the model would read it with the incident in it;
- **without** it: the same table with that one row removed (a typed incident is simply not added).

Nothing else differs, so the difference is what the model attributes to the incident. The model
reads events only through the context of `trafficcore.data.windows` (events within
`spec.event_radius_km` of a detector or at its site; an unplanned incident only once it has started),
so the two forecasts differ only at detectors whose context mentions the incident, and only where the
model reads text at all. A model that reads no text gives identical forecasts, and the result says
so in plain words rather than showing a zero effect as if it were measured (`reads_event_text`).

Neighbours are the sites within a radius of the incident (by default the model's own event radius,
so every detector that can read the incident is shown) and the sites adjacent to the incident's site
in the dataset's `adjacency` table.

Two hours: a model whose horizons stop short of `span_min` (the shipped demo model forecasts 15-60
minutes) is issued again at its longest horizon, reading its own P50 for the intervals in between
(`rollout`); with and without the incident alike, so the incident's effect carries into the second
issue through the readings too. The second issue's band is conditional on that P50 path, so it leaves
out the first issue's uncertainty; the result's notes say so.

The signal part (`trafficcore.live.incident_signals`) turns both forecasts into demand at the affected
signals and asks the robust optimiser of the signal lab for the timing that answers the new demand.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from trafficcore.data.panel import Panel, haversine_km
from trafficcore.data.windows import UNPLANNED_WORDS, context_fields
from trafficcore.errors import DataError
from trafficcore.live.incident_signals import SignalChange, signal_changes

#: How far ahead the view looks (minutes).
SPAN_MIN = 120
#: Kinds offered for a typed incident (free text is accepted too; the model reads the kind and the text).
KINDS = ("crash", "breakdown", "lane closure", "road works", "road closure", "concert", "football match",
         "festival", "parade")
#: Limits of a typed incident: longer text is cut by the model's token limit anyway; a week covers roadworks.
MAX_TEXT_CHARS = 400
MAX_KIND_CHARS = 40
MAX_DURATION_MIN = 7 * 24 * 60
#: The id a typed incident gets in the events table (a suffix is added if the dataset uses it already).
TYPED_ID = "typed"
#: Source of a typed incident's row.
TYPED_SOURCE = "operator"
#: Planned events are analysed from this long before they start (arrivals come before the start time).
PLANNED_LEAD_MIN = 60

FORECAST_COLUMNS = ["site_id", "detector_id", "approach", "measure", "issued_at", "target_ts", "horizon_min",
                    "lead_min", "p10_with", "p50_with", "p90_with", "p10_without", "p50_without", "p90_without",
                    "observed", "reads_event"]
SITE_COLUMNS = ["site_id", "name", "km", "role", "detectors", "reads_event", "with", "without", "change",
                "change_pct"]


TEXT_COLUMNS = ("site_id", "detector_id", "approach", "measure", "name", "role")
TIME_COLUMNS = ("issued_at", "target_ts")


def tidy(df: pd.DataFrame) -> pd.DataFrame:
    """One dtype per column whatever pandas or the store chose: text as object, times as datetime64[ns] (so a
    report read back from JSON or CSV equals the one computed)."""
    out = df.copy()
    for c in out.columns:
        if c in TEXT_COLUMNS:
            out[c] = out[c].astype(object).where(out[c].notna(), None)
        elif c in TIME_COLUMNS:
            out[c] = pd.to_datetime(out[c]).astype("datetime64[ns]")
    return out


def is_unplanned(kind: str) -> bool:
    """The context rule: crashes and the like are known only once they start (`windows.UNPLANNED_WORDS`)."""
    k = str(kind or "").lower()
    return any(w in k for w in UNPLANNED_WORDS)


@dataclass(frozen=True)
class Incident:
    """One event: where, what, when. `typed` incidents are not (yet) in the dataset's events table."""

    event_id: str
    kind: str
    text: str
    start: pd.Timestamp
    end: pd.Timestamp
    site_id: str | None
    lat: float | None
    lon: float | None
    source: str = TYPED_SOURCE
    typed: bool = True

    @property
    def unplanned(self) -> bool:
        return is_unplanned(self.kind)

    @property
    def duration_min(self) -> int:
        return int(round((self.end - self.start) / pd.Timedelta(minutes=1)))

    def row(self) -> dict:
        """The incident as a row of the canonical events table (without `dataset`)."""
        return {"event_id": self.event_id, "start_ts": self.start, "end_ts": self.end, "lat": self.lat,
                "lon": self.lon, "site_id": self.site_id, "kind": self.kind, "text": self.text,
                "source": self.source}

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["start"], d["end"] = iso(self.start), iso(self.end)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Incident:
        return cls(**{**d, "start": pd.Timestamp(d["start"]), "end": pd.Timestamp(d["end"])})


def iso(ts) -> str | None:
    """A timestamp as ISO text without zone (the dataset's local clock), None for a missing one."""
    return None if ts is None or pd.isna(ts) else pd.Timestamp(ts).strftime("%Y-%m-%dT%H:%M:%S")


def _num(x) -> float | None:
    return None if x is None or pd.isna(x) else float(x)


def from_event(panel: Panel, event_id: str) -> Incident:
    """An event of the dataset as an incident (KeyError naming the id when it is not there)."""
    ev = panel.events
    hit = ev[ev["event_id"].astype(str) == str(event_id)]
    if hit.empty:
        raise KeyError(f"dataset {panel.dataset!r} has no event {event_id!r}")
    e = hit.iloc[0]
    start = pd.Timestamp(e["start_ts"])
    end = pd.Timestamp(e["end_ts"]) if pd.notna(e["end_ts"]) else start + pd.Timedelta(hours=2)
    site = None if pd.isna(e["site_id"]) else str(e["site_id"])
    return Incident(str(e["event_id"]), str(e["kind"]), str(e["text"]), start, end, site, _num(e["lat"]),
                    _num(e["lon"]), str(e["source"]) if pd.notna(e["source"]) else "", typed=False)


def typed_incident(panel: Panel, site_id: str, kind: str, text: str, start, duration_min: float) -> Incident:
    """An operator's incident at a site. Bad input raises a DataError naming the field; nothing is stored."""
    src = "<incident>"
    sites = panel.sites.set_index("site_id")
    if site_id not in sites.index:
        raise DataError(src, f"dataset {panel.dataset!r} has no site {str(site_id)[:40]!r}", column="site")
    kind = " ".join(str(kind or "").split())
    if not kind:
        raise DataError(src, "say what happened (crash, lane closure, concert, ...)", column="kind")
    if len(kind) > MAX_KIND_CHARS:
        raise DataError(src, f"the kind is longer than {MAX_KIND_CHARS} characters", column="kind")
    text = " ".join(str(text or "").split())
    if not text:
        raise DataError(src, "describe the incident in a sentence (the model reads it)", column="text")
    if len(text) > MAX_TEXT_CHARS:
        raise DataError(src, f"the text is longer than {MAX_TEXT_CHARS} characters", column="text")
    try:
        t0 = pd.Timestamp(start)
    except (TypeError, ValueError):
        raise DataError(src, f"start {str(start)[:40]!r} is not a date and time", column="start") from None
    if pd.isna(t0) or t0.tzinfo is not None:
        raise DataError(src, "start must be a local date and time (the dataset's own clock)", column="start")
    try:
        minutes = float(duration_min)
    except (TypeError, ValueError):
        raise DataError(src, f"duration {str(duration_min)[:20]!r} is not a number of minutes",
                        column="duration") from None
    if not math.isfinite(minutes) or not 0 < minutes <= MAX_DURATION_MIN:
        raise DataError(src, f"duration must be between 1 minute and {MAX_DURATION_MIN // 1440} days, got "
                             f"{minutes:g} min", column="duration")
    ids = set(panel.events["event_id"].astype(str)) if not panel.events.empty else set()
    eid, n = TYPED_ID, 1
    while eid in ids:
        n += 1
        eid = f"{TYPED_ID}-{n}"
    s = sites.loc[site_id]
    return Incident(eid, kind, text, t0, t0 + pd.Timedelta(minutes=minutes), str(site_id), _num(s["lat"]),
                    _num(s["lon"]), TYPED_SOURCE, typed=True)


def default_issue_time(panel: Panel, incident: Incident) -> pd.Timestamp:
    """When to look from: an unplanned incident from the first issue time at or after its start (the model
    reads it only once it has started); a planned one `PLANNED_LEAD_MIN` before its start (arrivals come first)."""
    t = pd.Timestamp(incident.start)
    step = panel.interval
    first = panel.times[0]
    on_grid = first + math.ceil((t - first) / step) * step
    return on_grid if incident.unplanned else on_grid - pd.Timedelta(minutes=PLANNED_LEAD_MIN)


def issue_bounds(panel: Panel, history_steps: int) -> tuple[pd.Timestamp, pd.Timestamp]:
    """First and last issue time a model can forecast from (enough history; at most one interval past the data)."""
    return panel.time_at([history_steps])[0], panel.times[-1] + panel.interval


def incident_list(panel: Panel, history_steps: int = 16) -> pd.DataFrame:
    """The dataset's events an operator can analyse (not public holidays; issue time within the data), soonest first.

    Columns: event_id, kind, start_ts, end_ts, site_id, site, text, issue_at.
    """
    cols = ["event_id", "kind", "start_ts", "end_ts", "site_id", "site", "text", "issue_at"]
    ev = panel.events
    if ev.empty:
        return pd.DataFrame(columns=cols)
    ev = ev[~ev["kind"].fillna("").str.contains("holiday", case=False)]
    lo, hi = issue_bounds(panel, history_steps)
    names = panel.sites.set_index("site_id")["name"]
    rows = []
    for eid in ev["event_id"].astype(str):
        inc = from_event(panel, eid)
        at = default_issue_time(panel, inc)
        if lo <= at <= hi:
            rows.append({"event_id": eid, "kind": inc.kind, "start_ts": inc.start, "end_ts": inc.end,
                         "site_id": inc.site_id, "site": names.get(inc.site_id, inc.site_id or ""), "text": inc.text,
                         "issue_at": at})
    return pd.DataFrame(rows, columns=cols).sort_values(["start_ts", "event_id"]).reset_index(drop=True)


def nearest_to(incidents: pd.DataFrame, ts) -> int:
    """Row of the incident whose issue time is nearest `ts` (ongoing or next first); 0 for an empty list."""
    if incidents.empty:
        return 0
    gap = (pd.to_datetime(incidents["issue_at"]) - pd.Timestamp(ts)).abs()
    return int(np.argmin(gap.to_numpy()))


def reads_event_text(model) -> bool:
    """Whether the model's forecasts can change with an event's words: a text-reading model, or a blend (the
    stack) with a text-reading member that carries weight at some horizon."""
    from trafficcore.models.base import reads_text

    if reads_text(model):
        return True
    members = getattr(model, "members", None)
    if not isinstance(members, dict):
        return False
    names = list(getattr(model, "member_names", members))
    weights = getattr(model, "weights", None)
    for j, n in enumerate(names):
        if n in members and reads_text(members[n]) and (weights is None or float(np.max(weights[:, j])) > 0):
            return True
    return False


def saved_reads_text(path) -> bool:
    """Whether a saved model folder reads event text, from its config.json alone (no model is loaded): a language
    model with its text path on, or a stack whose language-model member has it on. Used to offer such a model
    where the one in use reads none."""
    import json
    from pathlib import Path

    def cfg(folder: Path) -> dict:
        try:
            return json.loads((folder / "config.json").read_text())
        except (OSError, ValueError):
            return {}

    folder = Path(path)
    c = cfg(folder)
    if c.get("model_class") == "stack":
        return any(saved_reads_text(m) for m in sorted((folder / "members").glob("*")) if m.is_dir())
    arch = c.get("model") if isinstance(c.get("model"), dict) else {}
    # a text path that training left off is recorded in the saved display name (`LMForecaster.display_name`)
    off = "numeric path only" in str(c.get("display_name", ""))
    return (c.get("model_class") == "lm" and bool(arch.get("use_text", True)) and bool(arch.get("transformer", True))
            and not off)


# ---------------------------------------------------------------------------------------------- the view
@dataclass
class IncidentEffect:
    """`incident_effect`'s answer: the incident, both forecasts, the sites around it, the signal changes, notes."""

    dataset: str
    incident: Incident
    issued_at: pd.Timestamp
    model: str
    reads_text: bool
    span_min: int
    radius_km: float
    sites: pd.DataFrame  # SITE_COLUMNS
    forecast: pd.DataFrame  # FORECAST_COLUMNS: one row per detector and target interval
    signals: list[SignalChange] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: dict = field(default_factory=dict)  # forecast / signals / total wall time

    @property
    def changed(self) -> bool:
        """Whether the incident changes any forecast at all."""
        f = self.forecast
        return bool(len(f)) and bool((f["p50_with"] - f["p50_without"]).abs().max() > 1e-9)

    def site_series(self, site_id: str) -> pd.DataFrame:
        """One site per target interval, as the chart draws it (`site_rows`: volumes summed, else speeds averaged)."""
        f, how = site_rows(self.forecast[self.forecast["site_id"] == site_id])
        cols = [c for c in FORECAST_COLUMNS if c.startswith(("p10", "p50", "p90"))] + ["observed"]
        agg = f.groupby(["target_ts", "lead_min"], as_index=False)[cols].agg(how)
        return agg.sort_values("target_ts").reset_index(drop=True)


def site_rows(f: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The rows that stand for a site, and how they add up: its volume detectors summed (vehicles through the
    junction); a site with speed detectors only, their mean (speeds do not add)."""
    vol = f[f["measure"].fillna("volume") == "volume"]
    return (vol, "sum") if len(vol) else (f, "mean")


# ---------------------------------------------------------------------------------------------- compute
def with_and_without(panel: Panel, incident: Incident) -> tuple[Panel, Panel]:
    """Two panels with the same readings: events with the incident in them, and without it."""
    ev = panel.events
    if ev.empty:
        ev = pd.DataFrame(columns=list(incident.row()))
    ids = ev["event_id"].astype(str)
    without = ev[ids != incident.event_id].reset_index(drop=True)
    if incident.typed or (ids == incident.event_id).sum() == 0:
        row = pd.DataFrame([incident.row()])
        row["start_ts"] = pd.to_datetime(row["start_ts"])
        row["end_ts"] = pd.to_datetime(row["end_ts"])
        with_ = pd.concat([without, row], ignore_index=True) if len(without) else row
    else:
        with_ = ev.reset_index(drop=True)
    return dataclasses.replace(panel, events=with_), dataclasses.replace(panel, events=without)


def nearby_sites(panel: Panel, incident: Incident, radius_km: float) -> pd.DataFrame:
    """Sites within `radius_km` of the incident (any of their detectors), its own site and its adjacent sites.

    Columns: site_id, name, km (from the incident, NaN without coordinates), role; incident site first, then by km.
    """
    det = panel.detectors
    lat, lon = incident.lat, incident.lon
    if (lat is None or lon is None) and incident.site_id is not None:
        s = panel.sites.set_index("site_id")
        if incident.site_id in s.index:
            lat, lon = _num(s.loc[incident.site_id, "lat"]), _num(s.loc[incident.site_id, "lon"])
    km_det = (haversine_km(lat, lon, det["lat"].astype(float), det["lon"].astype(float))
              if lat is not None and lon is not None else np.full(len(det), np.nan))
    km = pd.Series(np.asarray(km_det, float), index=det.index).groupby(det["site_id"].astype(str)).min()
    adj = panel.adjacency
    linked: set[str] = set()
    if incident.site_id is not None and not adj.empty:
        a = adj[(adj["src"].astype(str) == incident.site_id) | (adj["dst"].astype(str) == incident.site_id)]
        linked = (set(a["src"].astype(str)) | set(a["dst"].astype(str))) - {incident.site_id}
    names = panel.sites.set_index("site_id")["name"]
    rows = []
    for site, d in km.items():
        if site == incident.site_id:
            role = "incident site"
        elif np.isfinite(d) and d <= radius_km:
            role = f"within {radius_km:g} km"
        elif site in linked:
            role = "adjacent"
        else:
            continue
        rows.append({"site_id": site, "name": str(names.get(site, site)), "km": float(d), "role": role})
    out = pd.DataFrame(rows, columns=["site_id", "name", "km", "role"])
    if out.empty:
        return out
    first = (out["role"] == "incident site").astype(int)
    return out.assign(_f=-first).sort_values(["_f", "km", "site_id"]).drop(columns="_f").reset_index(drop=True)


def _continued(panel: Panel, fc: pd.DataFrame, issue_row: int, next_row: int) -> Panel:
    """The panel as the next issue reads it: readings before `issue_row`, then the forecast's P50 up to `next_row`.

    Readings at or after the first issue are dropped, even where the dataset has them (a replayed past):
    a forecast must not read what happened after it was issued.
    """
    d = panel.values.shape[1]
    values = np.full((next_row, d), np.nan, dtype=np.float32)
    keep = min(issue_row, panel.values.shape[0])
    values[:keep] = panel.values[:keep]
    rows = ((pd.to_datetime(fc["target_ts"]) - panel.times[0]) / panel.interval).to_numpy().astype(np.int64)
    cols = np.array([panel.column(x) for x in fc["detector_id"]], dtype=np.int64)
    ok = (rows >= issue_row) & (rows < next_row)
    values[rows[ok], cols[ok]] = fc["p50"].to_numpy(np.float32)[ok]
    times = pd.date_range(panel.times[0], periods=next_row, freq=panel.interval)
    return dataclasses.replace(panel, times=times, values=values)


def rollout(model, panel: Panel, issued_at, detector_ids: list[str], span_min: int = SPAN_MIN) -> pd.DataFrame:
    """Forecast frame for `detector_ids` covering `span_min` minutes after `issued_at`, plus `lead_min`.

    One issue when the model's horizons reach `span_min`; else issued again at each longest horizon, reading its
    own P50 for the intervals in between (see module docstring). Each issue forecasts only the detectors a later
    issue reads (the wanted ones and, before the last issue, their neighbours).
    """
    from trafficcore.models.base import predict

    spec = model.spec
    hmax = max(spec.horizons_min)
    n = max(1, math.ceil(span_min / hmax))
    steps = int(spec.horizon_steps(panel.interval).max())
    wanted = sorted({panel.column(d) for d in detector_ids})
    need = [wanted] * n
    if n > 1:
        nbr = panel.neighbour_matrix(spec.n_neighbours, spec.neighbour_method)
        cur = set(wanted)
        for k in range(n - 1, -1, -1):
            need[k] = sorted(cur)
            cur |= {int(j) for j in nbr[sorted(cur)].ravel() if j >= 0}
    ids = panel.detectors["detector_id"].to_numpy()
    t0 = pd.Timestamp(issued_at)
    row0 = panel.index_of(t0)
    parts, p = [], panel
    for k in range(n):
        t = t0 + k * pd.Timedelta(minutes=hmax)
        fc = predict(model, p, t, list(ids[need[k]]))
        lead = ((fc["target_ts"] + panel.interval - t0) / pd.Timedelta(minutes=1)).round().astype(int)
        parts.append(fc.assign(lead_min=lead)[lead <= span_min])
        if k < n - 1:
            p = _continued(p, fc, row0 + k * steps, row0 + (k + 1) * steps)
    out = pd.concat(parts, ignore_index=True)
    return out[out["detector_id"].isin(set(detector_ids))].reset_index(drop=True)


def _readers(panel: Panel, incident: Incident, cols: list[int], times: list[pd.Timestamp], spec) -> set[str]:
    """Detectors whose context (`windows.context_fields`, the model's reading rule) mentions the incident at any
    of the issue times."""
    out = set()
    ids = panel.detectors["detector_id"].to_numpy()
    rows = [int((t - panel.times[0]) / panel.interval) for t in times]
    for c in cols:
        for r in rows:
            events = context_fields(panel, c, r, spec)["events"]
            if any(e["text"] == incident.text and e["kind"] == incident.kind for e in events):
                out.add(str(ids[c]))
                break
    return out


def on_grid(panel: Panel, ts, field: str = "issued_at") -> pd.Timestamp:
    """A user's time on the data's grid, floored (forecasts are issued at interval starts); DataError if unreadable."""
    try:
        t = pd.Timestamp(ts)
    except (TypeError, ValueError):
        t = pd.NaT
    if pd.isna(t) or t.tzinfo is not None:
        raise DataError("<incident>", f"{str(ts)[:40]!r} is not a local date and time", column=field)
    first = panel.times[0]
    return first + ((t - first) // panel.interval) * panel.interval


def check_issue_time(panel: Panel, issued_at, history_steps: int) -> pd.Timestamp:
    """The issue time on the panel's grid and within what the model can forecast from (DataError otherwise)."""
    t = pd.Timestamp(issued_at)
    lo, hi = issue_bounds(panel, history_steps)
    try:
        panel.index_of(t)
    except ValueError:
        raise DataError("<incident>", f"issue time {t} is not on the {panel.interval} grid of the data",
                        column="issued_at") from None
    if not lo <= t <= hi:
        raise DataError("<incident>", f"issue time {t:%Y-%m-%d %H:%M} is outside what can be forecast "
                                      f"({lo:%Y-%m-%d %H:%M} to {hi:%Y-%m-%d %H:%M})", column="issued_at")
    return t


def incident_effect(model, panel: Panel, incident: Incident, issued_at=None, *, radius_km: float | None = None,
                    span_min: int = SPAN_MIN, plans: dict | None = None, max_signals: int = 4,
                    model_name: str | None = None) -> IncidentEffect:
    """The incident's expected effect around its site (with and without it) and the signal changes it calls for.

    `issued_at` defaults to `default_issue_time`; `radius_km` to the model's event radius; `plans` maps a site
    to the timing plan in force there (a Plan), else the site's default plan is assumed and said so.
    """
    from trafficcore.models.registry import model_display_name

    t_start = time.perf_counter()
    spec = model.spec
    if issued_at is None:  # the default, kept within what can be forecast (a notice says when it is too early)
        lo, hi = issue_bounds(panel, spec.history_steps)
        issued_at = min(max(default_issue_time(panel, incident), lo), hi)
    t = check_issue_time(panel, issued_at, spec.history_steps)
    radius = float(spec.event_radius_km if radius_km is None else radius_km)
    if not math.isfinite(radius) or not 0 < radius <= 50:
        raise DataError("<incident>", f"radius must be between 0 and 50 km, got {radius:g}", column="radius_km")
    p_with, p_without = with_and_without(panel, incident)
    sites = nearby_sites(panel, incident, radius)
    det = panel.detectors
    shown = det[det["site_id"].astype(str).isin(set(sites["site_id"]))]
    dets = list(shown["detector_id"].astype(str))
    notes: list[str] = []
    if not dets:
        raise DataError("<incident>", "no detector lies near the incident (no site, coordinates or adjacency)",
                        column="site")
    fc_with = rollout(model, p_with, t, dets, span_min)
    fc_without = rollout(model, p_without, t, dets, span_min)
    keys = ["detector_id", "issued_at", "target_ts", "horizon_min", "lead_min"]
    both = fc_with.merge(fc_without, on=keys, suffixes=("_with", "_without"), validate="one_to_one")
    issue_times = sorted(pd.to_datetime(both["issued_at"]).unique())
    readers = _readers(p_with, incident, [panel.column(d) for d in dets], [pd.Timestamp(x) for x in issue_times],
                       spec)
    meta = shown.set_index("detector_id")
    both["site_id"] = both["detector_id"].map(meta["site_id"]).astype(str)
    both["approach"] = both["detector_id"].map(meta["approach"])
    both["measure"] = both["detector_id"].map(meta["measure"])
    rows = ((both["target_ts"] - panel.times[0]) / panel.interval).astype(int).to_numpy()
    cols = np.array([panel.column(d) for d in both["detector_id"]])
    inside = rows < panel.values.shape[0]
    observed = np.full(len(both), np.nan)
    observed[inside] = panel.values[rows[inside], cols[inside]]
    both["observed"] = observed
    both["reads_event"] = both["detector_id"].isin(readers)
    order = {s: i for i, s in enumerate(sites["site_id"])}
    both = both.assign(_o=both["site_id"].map(order)).sort_values(["_o", "detector_id", "target_ts"])
    forecast = tidy(both[FORECAST_COLUMNS].reset_index(drop=True))

    sites = _site_totals(sites, forecast, readers, shown)
    reads = reads_event_text(model)
    name = model_name or model_display_name(model)
    notes += _notes(incident, t, reads, name, readers, forecast, spec, span_min, panel)
    result = IncidentEffect(panel.dataset, incident, t, name, reads, int(span_min), radius, sites, forecast,
                            notes=notes, seconds={"forecast": round(time.perf_counter() - t_start, 3)})
    return retime(panel, result, plans, max_signals)


def retime(panel: Panel, result: IncidentEffect, plans: dict | None = None, max_signals: int = 4) -> IncidentEffect:
    """`result` with its affected signals retimed (`trafficcore.live.incident_signals`), as a new object.

    Separate from the forecasts so that a page can draw them first and the signal plans after; meant for a
    result computed with `max_signals=0` (its signals are replaced).
    """
    t0 = time.perf_counter()
    signals, notes = signal_changes(panel, result, plans or {}, max_signals)
    seconds = {**result.seconds, "signals": round(time.perf_counter() - t0, 3)}
    seconds["total"] = round(seconds.get("forecast", 0.0) + seconds["signals"], 3)
    return dataclasses.replace(result, signals=signals, notes=list(result.notes) + notes,
                               seconds=seconds)


def _site_totals(sites: pd.DataFrame, forecast: pd.DataFrame, readers: set[str], shown: pd.DataFrame) -> pd.DataFrame:
    """Per site: detectors, whether any reads the incident, and the view's P50 with and without it (`site_rows`)."""
    tot = pd.DataFrame({site: site_rows(g)[0][["p50_with", "p50_without"]].agg(site_rows(g)[1])
                        for site, g in forecast.groupby("site_id")}).T
    n = shown.groupby(shown["site_id"].astype(str)).size()
    reading = {str(s) for s, d in zip(shown["site_id"], shown["detector_id"], strict=True) if d in readers}
    out = sites.copy()
    out["detectors"] = out["site_id"].map(n).fillna(0).astype(int)
    out["reads_event"] = out["site_id"].isin(reading)
    out["with"] = out["site_id"].map(tot["p50_with"]).astype(float)
    out["without"] = out["site_id"].map(tot["p50_without"]).astype(float)
    out["change"] = out["with"] - out["without"]
    out["change_pct"] = np.where(out["without"].abs() > 1e-9, 100 * out["change"] / out["without"].abs(), 0.0)
    return tidy(out[SITE_COLUMNS])


def _notes(incident: Incident, t: pd.Timestamp, reads: bool, name: str, readers: set[str], forecast: pd.DataFrame,
           spec, span_min: int, panel: Panel) -> list[str]:
    """Plain sentences about what the numbers can and cannot say."""
    notes = []
    if not reads:
        notes.append(f"The model in use ({name}) does not read event text, so its forecast is the same with and "
                     "without the incident: the effect below is not measured, it is absent. Choose a model that "
                     "reads text (a language model, or a stack with one) to see the incident's effect.")
    if incident.unplanned and incident.start > t:
        notes.append(f"An unplanned incident is read by the model only once it has started: at {t:%H:%M} it does "
                     f"not yet know of this one (it starts {incident.start:%a %d %b %H:%M}).")
    if reads and not readers:
        notes.append("No detector's context mentions the incident at this time (it ended more than an hour before, "
                     "starts too late to be announced, or lies too far from every detector), so the forecasts agree.")
    hmax = max(spec.horizons_min)
    if hmax < span_min:
        later = sorted(pd.to_datetime(forecast["issued_at"]).unique())[1:]
        when = ", ".join(f"{pd.Timestamp(x):%H:%M}" for x in later)
        notes.append(f"The model forecasts up to {hmax} min ahead: the rest of the {span_min} min comes from "
                     f"issuing it again at {when}, reading its own P50 for the intervals in between (with and "
                     "without the incident alike); that part's P10-P90 band leaves out the uncertainty of the "
                     "first issue.")
    if panel.synthetic:
        notes.append("Synthetic data: the demo city's incidents are planted by its generator.")
    return notes
