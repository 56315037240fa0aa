"""Context -> text: what the language model reads about one detector at one moment.

Kept short on purpose (the encoder's cost grows with the square of the sequence length), and
ordered so that truncation to the model's `max_text_tokens` drops the least useful words:
events first (the part that changes, and the only part the numbers cannot foresee), soonest
first, then a user's scenario note, then site and approach, the day, and the weather.

Why this order: measured on the demo city with the old order (site, day, events) and 48 tokens,
97.5% of training texts that mention an event were truncated, almost always cutting the
"(starts in N min)" that says when the event matters; see `data/demo_model/README.md`.
"""

from __future__ import annotations

import pandas as pd


def _clock(ts: pd.Timestamp) -> str:
    return f"{ts.day_name()} {ts:%H:%M}"


def starts_phrase(minutes: int) -> str:
    """When something starts, relative to the issue time: "starts in 45 min", "started 2 h ago".

    Up to 3 h either way in minutes (the window in which the training texts show an upcoming event),
    beyond that in hours and, past 2 days, in days (long-running roadworks; a note about tonight's concert),
    not "starts in 660 min". A user's note is restated in the same words (`trafficcore.notes`).
    """
    if minutes == 0:
        return "starts now"
    if minutes > 0:
        return f"starts in {span_phrase(minutes)}"
    return f"started {span_phrase(-minutes)} ago"


def span_phrase(minutes: int) -> str:
    """A length of time in the training texts' words: "45 min", "4 h", "3 days"."""
    return f"{minutes} min" if minutes <= 180 else (f"{round(minutes / 60)} h" if minutes < 48 * 60
                                                    else f"{round(minutes / 1440)} days")


def event_when(minutes_from_now: int | None, minutes_to_end: int | None = None, km: float | None = None,
               on_road: bool = False) -> str:
    """"starts in 45 min", plus where known "ends in 4 h", "0.6 km away" and "on this road": how the training
    texts place an event in time and space (`FastContext.fields(details=True)`); a scenario note is restated the
    same way. An end already past is left out, as the training texts do."""
    out = [] if minutes_from_now is None else [starts_phrase(int(minutes_from_now))]
    if minutes_to_end is not None and int(minutes_to_end) > 0:
        out.append(f"ends in {span_phrase(int(minutes_to_end))}")
    if km is not None:
        out.append(f"{float(km):.1f} km away")
    if on_road:
        out.append("on this road")
    return ", ".join(out)


def _event_when(e: dict) -> str:
    return event_when(int(e["minutes_from_now"]), e.get("minutes_to_end"), e.get("km"), bool(e.get("on_road")))


def _event_order(e: dict) -> tuple[int, int]:
    """Upcoming and recently started events first (soonest first), long-running ones last."""
    m = int(e["minutes_from_now"])
    return (0 if m >= -180 else 1, abs(m))


def context_text(fields: dict, include_events: bool = True, note: str | None = None) -> str:
    """Serialise `windows.context_fields` (and an optional user scenario note) as one text."""
    return " ".join(context_parts(fields, include_events, note))


def context_parts(fields: dict, include_events: bool = True, note: str | None = None,
                  include_static: bool = True) -> list[str]:
    """The phrases of `context_text`, in order (an event's phrase may hold several sentences; explanations
    sum word attributions per phrase). `include_static=False` keeps only the event phrases and the note."""
    parts = []
    if include_events:
        for e in sorted(fields.get("events", []), key=_event_order):
            parts.append(f"{str(e['text']).strip().rstrip('.')} ({_event_when(e)}).")
    if note and note.strip():
        n = note.strip()
        parts.append(n if n.endswith((".", "!", "?")) else n + ".")
    if not include_static:
        return parts
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
    w = fields.get("weather") or {}
    if w.get("precip_mm") is not None and float(w["precip_mm"]) > 0.2:
        parts.append(f"Rain {float(w['precip_mm']):.1f} mm.")
    return [p for p in parts if p and p != "."]
