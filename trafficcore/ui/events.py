"""Events shaped for the pages: which are in effect at the "as of" time, their icons, map layers, and the
events a model read for one forecast. Pure functions, no Streamlit.

"In effect" is the model's own rule (`trafficcore.data.event_match.in_effect`): what the map shows beside
the forecast is what the forecast could have read, so an incident appears once it has started (never before,
even when the "as of" time is in the past and the store knows it) and a planned closure from shortly before
it starts. Texts come from feeds and users: pages pass them through `trafficcore.ui.safe` before Markdown;
the map's tooltip is plain text (deck.gl's text tooltip sets no HTML).
"""

from __future__ import annotations

import base64

import numpy as np
import pandas as pd

from trafficcore.data.event_match import in_effect, unplanned
from trafficcore.data.panel import Panel

#: kind word -> (Material icon for Markdown, RGB of the map marker), first match wins. Material icons, not emoji:
#: Streamlit ships their font, while emoji need one the machine may lack (headless Chromium draws boxes).
KINDS: list[tuple[tuple[str, ...], str, tuple[int, int, int]]] = [
    (("crash", "collision", "accident"), ":material/car_crash:", (200, 30, 30)),
    (("breakdown",), ":material/car_repair:", (200, 90, 30)),
    (("fault", "signal"), ":material/traffic:", (200, 90, 30)),
    (("incident", "hazard"), ":material/warning:", (215, 120, 0)),
    (("road works", "roadworks", "lane closure", "closure", "works", "construction", "detour"),
     ":material/construction:", (230, 150, 0)),
    (("weather",), ":material/rainy:", (40, 110, 190)),
    (("concert", "music"), ":material/music_note:", (120, 60, 170)),
    (("football", "match", "sport", "marathon", "race"), ":material/stadium:", (120, 60, 170)),
    (("festival", "parade", "special event", "event"), ":material/festival:", (120, 60, 170)),
]
DEFAULT = (":material/location_on:", (90, 90, 90))


def icon(kind: object) -> str:
    """The Markdown icon of an event kind (":material/car_crash:")."""
    return _style(kind)[0]


def _style(kind: object) -> tuple[str, tuple[int, int, int]]:
    k = "" if kind is None or (not isinstance(kind, str) and pd.isna(kind)) else str(kind).lower()
    for words, name, rgb in KINDS:
        if any(w in k for w in words):
            return name, rgb
    return DEFAULT


def _marker_url(rgb: tuple[int, int, int], planned: bool) -> str:
    """An SVG marker as a data URL (works offline): a warning triangle for incidents, a diamond otherwise."""
    fill = "#{:02x}{:02x}{:02x}".format(*rgb)
    shape = ('<polygon points="16,2 30,28 2,28"' if not planned else '<polygon points="16,1 31,16 16,31 1,16"')
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="32" height="32">{shape} fill="{fill}" '
           f'stroke="white" stroke-width="2.5"/><circle cx="16" cy="{19 if not planned else 16}" r="3.2" '
           'fill="white"/></svg>')
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()


def when(start, end, at) -> str:
    """"started 40 min ago, until 18:00", "starts in 2 h", "ended 20 min ago" (relative to `at`)."""
    at, start = pd.Timestamp(at), pd.Timestamp(start)
    mins = int((start - at) / pd.Timedelta(minutes=1))
    if mins > 0:
        out = f"starts in {_span(mins)}"
    else:
        out = "started now" if mins == 0 else f"started {_span(-mins)} ago"
    if end is not None and not pd.isna(end):
        end = pd.Timestamp(end)
        if end < at:
            return out + f", ended {_span(int((at - end) / pd.Timedelta(minutes=1)))} ago"
        same_day = end.normalize() == at.normalize()
        out += f", until {end:%H:%M}" if same_day else f", until {end:%a} {end.day} {end:%b} {end:%H:%M}"
    return out


def _span(minutes: int) -> str:
    if minutes < 120:
        return f"{minutes} min"
    if minutes < 48 * 60:
        return f"{round(minutes / 60)} h"
    return f"{round(minutes / 1440)} days"


def in_effect_at(panel: Panel, at, horizon_min: int) -> pd.DataFrame:
    """The panel's events a forecast issued at `at` reads somewhere, incidents first, then by start:
    event_id, icon, kind, text, when, start_ts, end_ts, lat, lon, site_id, road, status, geometry_wkt."""
    ev = panel.events
    cols = ["event_id", "icon", "kind", "text", "when", "start_ts", "end_ts", "lat", "lon", "site_id", "road",
            "status", "geometry_wkt"]
    if ev.empty:
        return pd.DataFrame(columns=cols)
    ev = ev[in_effect(ev, at, horizon_min)].copy()
    if ev.empty:
        return pd.DataFrame(columns=cols)
    for c in ("road", "status", "geometry_wkt"):
        if c not in ev.columns:
            ev[c] = None
    ev["icon"] = [icon(k) for k in ev["kind"]]
    ev["when"] = [when(s, e, at) for s, e in zip(ev["start_ts"], ev["end_ts"], strict=True)]
    ev["_first"] = ~unplanned(ev["kind"])
    return ev.sort_values(["_first", "start_ts"]).reset_index(drop=True)[cols]


def map_markers(events: pd.DataFrame) -> pd.DataFrame:
    """One marker per event for a pydeck IconLayer: lon, lat, icon (url, size), tip (plain text)."""
    if events.empty:
        return pd.DataFrame(columns=["lon", "lat", "icon", "tip", "event_id"])
    rows = []
    for r in events.itertuples():
        _, rgb = _style(r.kind)
        planned = not bool(unplanned(pd.Series([r.kind]))[0])
        rows.append({"event_id": str(r.event_id), "lon": float(r.lon), "lat": float(r.lat),
                     "icon": {"url": _marker_url(rgb, planned), "width": 32, "height": 32, "anchorY": 16},
                     "tip": f"{r.kind}: {_short(r.text)}\n{r.when}"})
    return pd.DataFrame(rows).dropna(subset=["lon", "lat"])


def map_paths(events: pd.DataFrame) -> pd.DataFrame:
    """The lines of events that have one (a work zone's extent), for a pydeck PathLayer: path, color, tip."""
    out = []
    for r in events.itertuples():
        wkt = getattr(r, "geometry_wkt", None)
        if not isinstance(wkt, str) or not wkt.strip():
            continue
        import shapely

        _, rgb = _style(r.kind)
        for part in shapely.get_parts(shapely.from_wkt(wkt)):
            coords = shapely.get_coordinates(part)
            if len(coords) > 1:
                out.append({"path": coords.round(6).tolist(), "color": [*rgb, 200],
                            "tip": f"{r.kind}: {_short(r.text)}\n{r.when}"})
    return pd.DataFrame(out, columns=["path", "color", "tip"])


def _short(text: object, n: int = 140) -> str:
    s = " ".join(str(text or "").split())
    return s if len(s) <= n else s[: n - 1] + "…"


def events_read(model, panel: Panel, detector_ids: list[str], issued_at) -> pd.DataFrame | None:
    """The events `model` read for its forecast of each detector at `issued_at`: detector_id, icon, kind, the
    event's text, the phrase as the model read it (`model.text_parts`), when. None when the model reads no text."""
    from trafficcore.data.windows import build_samples, context_fields
    from trafficcore.models.base import reads_text

    if model is None or not reads_text(model):
        return None
    row = panel.index_of(issued_at)
    dets = np.array([panel.column(d) for d in detector_ids], dtype=np.int64)
    samples = build_samples(panel, np.array([row]), dets, model.spec)
    parts = model.text_parts(panel, samples)
    out = []
    for d, phrases in zip(detector_ids, parts, strict=True):
        fields = context_fields(panel, panel.column(d), row, model.spec)
        for e in fields["events"]:
            text = str(e["text"]).strip().rstrip(".")
            phrase = next((p for p in phrases if p.startswith(text)), text)
            start = pd.Timestamp(issued_at) + pd.Timedelta(minutes=int(e["minutes_from_now"]))
            out.append({"detector_id": d, "icon": icon(e["kind"]), "kind": e["kind"], "text": e["text"],
                        "read": phrase, "when": when(start, None, issued_at)})
    return pd.DataFrame(out, columns=["detector_id", "icon", "kind", "text", "read", "when"])

