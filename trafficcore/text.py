"""Context -> text: what the language model reads about one detector at one moment.

Kept short on purpose (the encoder's cost grows with the square of the sequence length):
site and approach first, then the day, then events and weather, the parts that change.
"""

from __future__ import annotations

import pandas as pd


def _clock(ts: pd.Timestamp) -> str:
    return f"{ts.day_name()} {ts:%H:%M}"


def _when(minutes: int) -> str:
    if minutes > 0:
        return f"starts in {minutes} min"
    if minutes == 0:
        return "starts now"
    return f"started {-minutes} min ago"


def context_text(fields: dict, include_events: bool = True, note: str | None = None) -> str:
    """Serialise `windows.context_fields` (and an optional user scenario note) as one text."""
    parts = []
    site = fields.get("site_name") or ""
    desc = fields.get("site_description") or ""
    parts.append(f"{site}. {desc}".strip(" .") + ".")
    appr = fields.get("approach")
    road = fields.get("road")
    if appr or road:
        parts.append(f"Approach {appr or ''} on {road or 'the road'}.".replace("  ", " "))
    ts = pd.Timestamp(fields["issued_at"])
    day = "public holiday" if fields.get("holiday") else ("weekend" if ts.day_of_week >= 5 else "weekday")
    parts.append(f"{_clock(ts)}, {day}.")
    if include_events:
        for e in fields.get("events", []):
            parts.append(f"{e['text']} ({_when(int(e['minutes_from_now']))}).")
    w = fields.get("weather") or {}
    if w.get("precip_mm") is not None and float(w["precip_mm"]) > 0.2:
        parts.append(f"Rain {float(w['precip_mm']):.1f} mm.")
    if note:
        parts.append(note.strip())
    return " ".join(p for p in parts if p and p != ".")
