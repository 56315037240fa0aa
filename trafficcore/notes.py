"""Notes the model understands: a scenario note restated in the words of the training texts.

The language model learnt when and where an event happens only from the suffix the context serialiser
writes after each event's text, relative to the forecast's issue time and to the detector ("Harbour Arena
hosts ... (starts in 45 min, ends in 3 h, 0.4 km away)."; `trafficcore.text.event_when`). A note typed by a
user says "concert at the stadium at 7 pm": clock times mean nothing to a model that is never told the
clock in that sentence, and "the stadium" is not a distance. Before the model reads a note, this module

- finds dates, times and durations with `dateparser` (a maintained parser: clock times, weekdays, dates,
  "tomorrow", "in 45 min", "10 minutes ago", "for 2 hours"), takes each as the start or the end by the
  word before it ("until", "to", "-" mark an end), and removes them from the text;
- finds places by name in the dataset's own gazetteer (`Gazetteer.from_panel`: site names, road names and
  named landmarks of past events), takes the most specific one, and measures its distance to the detector;
- writes what it found as the training texts do: "Concert at the stadium (starts in 11 h, 1.2 km away).",
  with "on this road" where the model's texts say it and the note names the detector's road;
- says whether the model is given the note at all (`NoteLanguage.unread`): under the same rule as an event, a
  note beyond the model's event window (too far ahead, too far away, long over) is not, and why.

`normalise_note(panel, detector_id, issued_at, text, language)` is the one entry point that explanations, the
API and the dashboard use (`language` from the model: `trafficcore.models.base.note_language`);
`NormalisedNote.recognised` says what was understood, for the page to show. Nothing is invented: a note
without a time or a place gets no suffix for it. The same parse also restates event texts for a model trained
to read them so (`LMConfig.event_times="relative"`), so that training texts and notes are the same words.

Why these rules:
- A bare clock time ("19:30") is the occurrence nearest the issue time (a crash "reported 23:50" read at
  00:30 happened yesterday; "show starts 19:30" read at 08:45 is tonight). A weekday is today or the next
  one ("until Friday" on a Friday means today). A date without a year is the one nearest the issue time.
- An end given only as a day ("until Friday") runs to the end of that day.
- dateparser is slow to import (about 0.15 s, and its first parse loads language data); it is imported on
  first use, and parses are memoised per gazetteer, so a page that re-runs pays once.
"""

from __future__ import annotations

import re
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from trafficcore.data.panel import Panel, haversine_km
from trafficcore.text import event_when, span_phrase

#: words before a time that make it an end ("closed until Friday", "20:00 - 05:00", "gates 12:00, closes 20:00")
END_WORDS = frozenset({"until", "till", "til", "to", "through", "thru", "-", "–", "—", "ends", "end", "ending",
                       "closes", "close", "finishes", "finish", "and"})
#: words before a length of time that make it a duration ("for 2 hours")
DURATION_WORDS = frozenset({"for", "lasting", "over", "during"})
#: words of a length of time (a bare "2 hours" is a duration, "in 2 hours" and "2 hours ago" are points)
UNIT_WORDS = frozenset({"min", "mins", "minute", "minutes", "h", "hr", "hrs", "hour", "hours", "day", "days",
                        "week", "weeks"})
#: connecting words removed with the time they introduce ("at 7 pm", "from Mon 6 Oct", "between 09:30 and ...")
CONNECTORS = END_WORDS | DURATION_WORDS | {"at", "on", "from", "between", "since", "by", "around", "about", "approx",
                                          "approximately", "starting", "starts", "start", "reported", "in", "is",
                                          "are", "expected", "due", "scheduled", "of"}
#: number words dateparser would read as a day or month ("two lanes blocked" is not February)
NUMBER_WORDS = frozenset({"one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
                          "twelve", "first", "second", "third", "fourth", "fifth", "single", "both", "all"})
#: road-name abbreviations users also write in full
ABBREVIATIONS = {"Rd": "Road", "St": "Street", "Ave": "Avenue", "Dr": "Drive", "Ln": "Lane", "Hwy": "Highway",
                 "Blvd": "Boulevard", "Pl": "Place", "Sq": "Square", "Cres": "Crescent", "Pde": "Parade"}
#: a place kind's rank: the most specific place a note names is the one it is about
PLACE_RANK = {"site": 0, "landmark": 1, "road": 2}
#: landmarks: a capitalised name in >= 2 event texts whose events all lie within this many km of each other
LANDMARK_SPREAD_KM = 0.3
_PARSE_CACHE = 2048


# ============================================================================================ results
@dataclass(frozen=True)
class Recognised:
    """One thing the normaliser understood: `kind` start | end | duration | place; `words` as typed;
    `meaning` what the model reads instead ("starts in 11 h", "1.2 km away (Lindenhaven Stadium)")."""

    kind: str
    words: str
    meaning: str


@dataclass(frozen=True)
class NormalisedNote:
    """A note as the model reads it (`text`), and what was understood in it."""

    original: str
    text: str
    recognised: tuple[Recognised, ...] = ()
    minutes_from_now: int | None = None  # start relative to the issue time, where the note gives one
    minutes_to_end: int | None = None
    km: float | None = None  # distance from the detector to the place the note names
    place: str | None = None
    unread: str | None = None  # why the model is not given this note (outside the events it reads), else None

    @property
    def changed(self) -> bool:
        return self.text != self.original


@dataclass(frozen=True)
class NoteLanguage:
    """How one model reads a note: the words its training texts used and the events they showed it.

    `on_road`: its texts say "on this road" (`LMConfig.event_road`). `lead_min` and `radius_km`: it was shown
    planned events from `lead_min` before their start and within `radius_km` of the detector (`FastContext`: the
    largest horizon + 1 h, the window spec's event radius). A note is read under the same rule as an event: one
    about something further ahead, further away or long over is not given to the model, and the page says why,
    instead of feeding it words it never learnt to weigh.
    """

    on_road: bool = False
    lead_min: int = 120
    radius_km: float = 1.0

    @classmethod
    def for_spec(cls, spec, on_road: bool = False) -> NoteLanguage:
        return cls(on_road=on_road, lead_min=int(max(spec.horizons_min)) + 60, radius_km=float(spec.event_radius_km))

    def unread(self, start: int | None, end: int | None, km: float | None) -> str | None:
        """Why a note that starts `start` minutes from now, ends at `end` and lies `km` away is not read, or None."""
        if start is not None and start > self.lead_min:
            return (f"it starts in {span_phrase(start)}, and the model reads events that start within the next "
                    f"{span_phrase(self.lead_min)}")
        if end is not None and end < -60:
            return f"it ended {span_phrase(-end)} ago, and the model reads events until an hour after they end"
        if km is not None and km > self.radius_km:
            return f"it is {km:.1f} km away, and the model reads events within {self.radius_km:g} km"
        return None


@dataclass(frozen=True)
class Place:
    """A named place of the dataset: a site (one point), a landmark (one point) or a road (its detectors)."""

    name: str
    kind: str
    lat: tuple[float, ...]
    lon: tuple[float, ...]

    def km_from(self, lat: float, lon: float) -> float:
        """Distance from a point to the place (to the nearest of a road's points)."""
        return float(np.min(haversine_km(lat, lon, np.array(self.lat), np.array(self.lon))))


@dataclass(frozen=True)
class TimeMention:
    """A date, time or duration found in the note: its span in the text and what it means."""

    words: str
    start: int
    stop: int
    role: str  # start | end | duration
    at: pd.Timestamp | None = None  # the moment (start, end)
    length: pd.Timedelta | None = None  # the length (duration)
    clock: bool = True  # False for a date without a time of day ("until Friday")


@dataclass(frozen=True)
class ParsedNote:
    """A note parsed once against an issue time: absolute times and the place, ready to be restated relative to
    any detector and (for what-if checks) with its times shifted or its place moved (`render`)."""

    original: str
    body: str  # the note without its time words
    issued_at: pd.Timestamp
    start: pd.Timestamp | None
    end: pd.Timestamp | None
    place: Place | None
    place_words: str | None
    times: tuple[TimeMention, ...] = field(default_factory=tuple)
    roads: tuple[str, ...] = ()  # roads the note names on their own (not inside a site's name)

    def render(self, lat: float | None, lon: float | None, shift: pd.Timedelta | None = None,
               km: float | None = None, road: str | None = None,
               language: NoteLanguage | None = None) -> NormalisedNote:
        """The note as the model reads it for a detector at (lat, lon) on `road`, in `language` (default: the
        plain training words, no "on this road", the default event window). `shift` moves every time it states
        (a what-if: the same event 10 h later), `km` puts its place that far away instead."""
        language = language or NoteLanguage()
        shift = shift or pd.Timedelta(0)
        minute = pd.Timedelta(minutes=1)
        start = None if self.start is None else int((self.start + shift - self.issued_at) / minute)
        end = None if self.end is None else int((self.end + shift - self.issued_at) / minute)
        if km is None and self.place is not None and lat is not None and np.isfinite(lat):
            km = self.place.km_from(lat, lon)
        rec = []
        for t in self.times:
            if t.role == "duration":
                rec.append(Recognised("duration", t.words, span_phrase(int(t.length / minute))))
        if start is not None:
            rec.append(Recognised("start", self._words("start"), event_when(start)))
        if end is not None:
            rec.append(Recognised("end", self._words("end"),
                                  f"ends in {span_phrase(end)}" if end > 0 else f"ended {span_phrase(-end)} ago"))
        if km is not None:
            where = f" ({self.place.name})" if self.place is not None and self.place_words != self.place.name else ""
            rec.append(Recognised("place", self.place_words or "", f"{km:.1f} km away{where}"))
        on_road = language.on_road and road is not None and road in self.roads
        if on_road:
            rec.append(Recognised("road", road, "on this road"))
        suffix = event_when(start, end, km, on_road)
        if end is not None and end <= 0:  # over already: say so (the training texts drop such events)
            suffix = ", ".join(p for p in (suffix, f"ended {span_phrase(-end)} ago") if p)
        body = self.body.rstrip(" .!?;:,")
        text = f"{body} ({suffix})." if suffix else (self.original.strip() if not self.times else body + ".")
        return NormalisedNote(original=self.original, text=text, recognised=tuple(rec), minutes_from_now=start,
                              minutes_to_end=end, km=None if km is None else float(km),
                              place=None if self.place is None else self.place.name,
                              unread=language.unread(start, end, km))

    def _words(self, role: str) -> str:
        return " ... ".join(t.words for t in self.times if t.role == role)


# ============================================================================================ gazetteer
class Gazetteer:
    """The places a note can name, from the dataset itself; parses are memoised here (one per panel)."""

    def __init__(self, places: list[Place]):
        self.places = places
        names: dict[str, Place] = {}
        ambiguous: set[str] = set()
        for p in sorted(places, key=lambda p: PLACE_RANK[p.kind]):
            for alias in _aliases(p):
                key = alias.lower()
                if key in names and names[key] is not p and alias != p.name:
                    ambiguous.add(key)  # "the park" when two landmarks end in Park: neither
                names.setdefault(key, p)
        for key in ambiguous:
            if names[key].name.lower() != key:
                del names[key]
        self._by_name = names
        self._parsed: OrderedDict[tuple[str, str], ParsedNote] = OrderedDict()

    @classmethod
    def from_panel(cls, panel: Panel) -> Gazetteer:
        """Sites by name, roads by name (at their detectors), and landmarks named in past event texts."""
        places: list[Place] = []
        s = panel.sites.dropna(subset=["lat", "lon"])
        for r in s.itertuples(index=False):
            if isinstance(r.name, str) and r.name.strip():
                places.append(Place(r.name.strip(), "site", (float(r.lat),), (float(r.lon),)))
        d = panel.detectors.dropna(subset=["lat", "lon"])
        for road, g in d[d["road"].notna()].groupby("road"):
            if str(road).strip():
                places.append(Place(str(road).strip(), "road", tuple(g["lat"].astype(float)),
                                    tuple(g["lon"].astype(float))))
        known = [p.name.lower() for p in places]
        places += [p for p in _landmarks(panel.events)  # "Accident Harbour Rd" is a road, not a landmark
                   if not any(k in p.name.lower() or p.name.lower() in k for k in known)]
        return cls(places)

    def find(self, text: str) -> list[tuple[int, int, Place]]:
        """Non-overlapping place names in `text`, longest first ("the Park Rd / 6th Ave junction" names the
        site, not "the park"), as (start, stop, place) in text order."""
        low = text.lower()
        hits = []
        for name, place in self._by_name.items():
            i = low.find(name)
            while i >= 0:
                j = i + len(name)
                if (i == 0 or not low[i - 1].isalnum()) and (j == len(low) or not low[j].isalnum()):
                    hits.append((i, j, place))
                i = low.find(name, i + 1)
        taken: list[tuple[int, int, Place]] = []
        for a, b, place in sorted(hits, key=lambda h: (h[0] - h[1], h[0])):
            if all(b <= x or a >= y for x, y, _ in taken):
                taken.append((a, b, place))
        return sorted(taken, key=lambda h: h[0])

    def parse(self, text: str, issued_at) -> ParsedNote:
        """`text` parsed against the issue time `issued_at` (memoised)."""
        issued_at = pd.Timestamp(issued_at)
        key = (text, issued_at.isoformat())
        hit = self._parsed.get(key)
        if hit is None:
            hit = _parse(text, issued_at, self)
            self._parsed[key] = hit
            while len(self._parsed) > _PARSE_CACHE:
                self._parsed.popitem(last=False)
        else:
            self._parsed.move_to_end(key)
        return hit


def _aliases(p: Place) -> list[str]:
    out = [p.name]
    if p.kind == "site" and " / " in p.name:
        a, b = p.name.split(" / ", 1)
        out += [f"{b} / {a}", f"{a} and {b}", f"{b} and {a}", f"{a} & {b}"]
    words = p.name.split()
    if words and words[-1] in ABBREVIATIONS and p.kind == "road":
        out.append(" ".join(words[:-1] + [ABBREVIATIONS[words[-1]]]))
    if p.kind == "landmark" and len(words) >= 2:
        out.append(f"the {words[-1]}")  # "the stadium" for Lindenhaven Stadium (dropped when ambiguous)
    return out


_CAPITALISED = re.compile(r"(?:[A-Z][\w'’]*(?:\s+(?=[A-Z]))?){2,}")


def _landmarks(events: pd.DataFrame) -> list[Place]:
    """Named places that event texts mention again and again at one spot ("Harbour Arena", "Linden Park").

    A run of two or more capitalised words counts when it appears in at least two events' texts and all of
    them lie within `LANDMARK_SPREAD_KM` of each other: an artist who played two venues is not a place. A
    landmark's alias "the <last word>" ("the stadium") is kept only when one landmark has it.
    """
    if events is None or events.empty or "lat" not in events:
        return []
    ev = events.dropna(subset=["lat", "lon", "text"])
    seen: dict[str, list[int]] = {}
    for i, text in enumerate(ev["text"].astype(str)):
        for m in _CAPITALISED.finditer(text):
            name = " ".join(m.group(0).split())
            if len(name.split()) >= 2:
                seen.setdefault(name, [])
                if not seen[name] or seen[name][-1] != i:
                    seen[name].append(i)
    lat, lon = ev["lat"].astype(float).to_numpy(), ev["lon"].astype(float).to_numpy()
    out = []
    for name, idx in seen.items():
        if len(idx) < 2:
            continue
        la, lo = lat[idx], lon[idx]
        spread = haversine_km(la[:, None], lo[:, None], la[None, :], lo[None, :]).max()
        if spread <= LANDMARK_SPREAD_KM:
            out.append(Place(name, "landmark", (float(la.mean()),), (float(lo.mean()),)))
    return out


# ============================================================================================ parsing
_PARSER = None


def _parser():
    """dateparser's parser, imported and built on first use (the package is slow to import)."""
    global _PARSER
    if _PARSER is None:
        from dateparser.date import DateDataParser
        from dateparser.search import search_dates

        _PARSER = (search_dates, DateDataParser)
    return _PARSER


def _settings(base: pd.Timestamp, **more) -> dict:
    return {"RELATIVE_BASE": base.to_pydatetime(), "PREFER_DATES_FROM": "current_period",
            "RETURN_AS_TIMEZONE_AWARE": False, **more}


def _parse_one(words: str, base: pd.Timestamp) -> tuple[pd.Timestamp, str] | None:
    """(time, period) of one expression: period "time" when it gives a clock time, "day" for a date only."""
    _, DateDataParser = _parser()
    d = DateDataParser(languages=["en"], settings=_settings(base, RETURN_TIME_AS_PERIOD=True)).get_date_data(words)
    if d is None or d.date_obj is None:
        return None
    return pd.Timestamp(d.date_obj).tz_localize(None), d.period


def _resolve(words: str, base: pd.Timestamp) -> tuple[pd.Timestamp, bool] | None:
    """The moment an expression means, read at `base`, and whether it names a clock time.

    dateparser reads "Friday" as the latest Friday and "19:30" as today's; which occurrence a note means is
    decided here by how the result moves when the base moves: not at all (a calendar date: the year nearest
    the base unless typed), with the day (a clock time, "tonight", "in 45 min"), or with the week (a weekday).
    """
    got = _parse_one(words, base)
    if got is None:
        return None
    at, period = got
    clock = period == "time"  # "tonight", "Sunday evening": a day, made precise by a clock time that follows
    day = pd.Timedelta(days=1)
    later_week = _parse_one(words, base + 7 * day)
    if later_week is not None and later_week[0] == at:  # a calendar date
        if str(at.year) not in words:
            at = min((at + pd.DateOffset(years=k) for k in (-1, 0, 1)), key=lambda t: abs(t - base))
        return at, clock
    later_day = _parse_one(words, base + day)
    if later_day is not None and later_day[0] - at == day:  # relative to today
        if at.normalize() == base.normalize() and clock and not _relative_words(words):
            at = min((at + k * day for k in (-1, 0, 1)), key=lambda t: abs(t - base))
        return at, clock
    while at.normalize() < base.normalize():  # a weekday: today or the next one
        at += 7 * day
    return at, clock


def _relative_words(words: str) -> bool:
    w = set(re.findall(r"[a-z]+", words.lower()))
    return bool(w & {"in", "ago", "within", "now", "today", "tonight", "tomorrow", "yesterday"})


def _is_amount(words: str) -> bool:
    """A bare length of time ("2 hours", "24 hours a day"), not a point ("in 2 hours", "10 min ago")."""
    w = set(re.findall(r"[a-z]+", words.lower()))
    return bool(w & UNIT_WORDS) and any(c.isdigit() for c in words) and not _relative_words(words)


#: a clock time: "19:30", "7.30 pm", "7 pm", "7pm" (what makes a run of digits a time rather than a count)
_CLOCK = re.compile(r"\d[:.]\d\d|\d\s*(?:am|pm|a\.m\.|p\.m\.)(?!\w)|\b(?:noon|midday|midnight)\b", re.IGNORECASE)


def _is_time(words: str) -> bool:
    """Whether an expression dateparser found is a time and not a count or a name ("'08 at", "10", "2nd")."""
    if _CLOCK.search(words) or _relative_words(words) or _is_amount(words):
        return True
    tokens = [t for t in re.findall(r"[A-Za-z]{3,}", words) if t.lower() not in CONNECTORS | NUMBER_WORDS]
    return any(_date_word(t.lower()) for t in tokens)


_DATE_WORDS: dict[str, bool] = {}


def _date_word(token: str) -> bool:
    """A word that is a date on its own (a weekday, a month, "tonight"): asked of dateparser once per word."""
    if token not in _DATE_WORDS:
        _DATE_WORDS[token] = _parse_one(token, pd.Timestamp("2000-01-01")) is not None
    return _DATE_WORDS[token]


def _word_before(text: str, i: int) -> str:
    """The word (or dash) that decides a time's role, skipping spaces, brackets and hedges ("ends around 23:00")."""
    head = text[:i]
    for _ in range(3):
        head = head.rstrip(" (\t")
        if head.endswith(("-", "–", "—")):
            return "-"
        m = re.search(r"([\w'’]+)\W*$", head)
        if not m:
            return ""
        word = m.group(1).lower()
        if word not in HEDGES:
            return word
        head = head[:m.start()]
    return ""


#: words between a role word and its time that do not change the role ("ends around 23:00", "until about 6")
HEDGES = frozenset({"around", "about", "approx", "approximately", "roughly", "at", "by", "on", "circa", "ca"})


def _search(masked: str, base: pd.Timestamp) -> list[tuple[int, int, str]]:
    """Spans of date/time expressions in `masked`.

    dateparser's search finds them; each is split at commas and brackets ("07:42, two" is a time and a word;
    "Friday) from 20:00" a day and a time), pieces that are counts or names are dropped, and a piece is
    extended word by word while it still parses ("Wed 3" + "Sep": the search sometimes stops short).
    """
    search_dates, _ = _parser()
    found = search_dates(masked, languages=["en"], settings=_settings(base)) or []
    out, cursor = [], 0
    for words, _ in found:
        i = masked.find(words, cursor)
        if i < 0:
            continue
        cursor = i + len(words)
        pos = i
        for piece in re.split(r"([,;()])", words):
            if piece not in (",", ";", "(", ")") and piece.strip():
                lead = len(piece) - len(piece.lstrip())
                out.append([pos + lead, pos + len(piece.rstrip())])
            pos += len(piece)
    spans = []
    for a, b in out:
        if spans and b <= spans[-1][1]:
            continue  # swallowed by the previous piece's extension
        b = _extend(masked, a, b, base)
        words = masked[a:b]
        if _is_time(words):
            spans.append((a, b, words))
    return spans


def _extend(text: str, a: int, b: int, base: pd.Timestamp) -> int:
    """Extend the span [a, b) by the date words that follow it while the longer expression still parses."""
    if _parse_one(text[a:b], base) is None:
        return b
    for _ in range(3):
        m = re.match(r"\s+(\d{1,2}[:.]\d\d|[\w']+)", text[b:])
        if not m or m.group(1).lower() in CONNECTORS or not (_is_time(m.group(1)) or m.group(1).isdigit()):
            break
        stop = b + m.end(1)
        if _parse_one(text[a:stop], base) is None:
            break
        b = stop
    return b


def _parse(text: str, issued_at: pd.Timestamp, gaz: Gazetteer) -> ParsedNote:
    places = gaz.find(text)
    masked = list(text)
    for a, b, _ in places:
        masked[a:b] = "_" * (b - a)  # place names ("3rd Ave") are not dates
    masked = "".join(masked)
    # a dash between two times is a range: "09:00-15:30" is searched as "09:00;15:30" (same length: two times)
    masked = re.sub(r"(?<=\d)\s?[-–—]\s?(?=\d)", lambda m: ";" * len(m.group(0)), masked)
    mentions: list[TimeMention] = []
    for a, b, words in _search(masked, issued_at):
        before = _word_before(text, a)
        if _is_amount(words):
            if before in DURATION_WORDS:
                got = _parse_one(words, issued_at)
                if got is not None:
                    mentions.append(TimeMention(words, a, b, "duration", length=abs(got[0] - issued_at)))
            continue
        got = _resolve(words, issued_at)
        if got is None:
            continue
        at, clock = got
        first = words.split()[0].lower()
        role = "end" if (before in END_WORDS or first in END_WORDS) else "start"
        mentions.append(TimeMention(words, a, b, role, at=at, clock=clock))
    mentions = _merge_day_and_clock(text, mentions)
    start, end, used = _span_of(mentions)
    duration = next((m.length for m in mentions if m.role == "duration"), None)
    if duration is not None:
        used |= {i for i, m in enumerate(mentions) if m.role == "duration"}
        if end is None:
            end = (start if start is not None else issued_at) + duration
    if start is not None and end is not None and end <= start:
        end += pd.Timedelta(days=1)  # "20:00 - 05:00": overnight
    # drop the times that were used or that repeat one ("tonight (Friday) from 20:00"); keep a daily schedule
    # ("09:00-15:30" of roadworks dated by day) in the words
    moments = {start, end} - {None}
    gone = [m for i, m in enumerate(mentions) if i in used or (m.at is not None and m.at in moments)]
    best = min(places, key=lambda p: (PLACE_RANK[p[2].kind], p[0]), default=None)
    return ParsedNote(original=text, body=_remove(text, gone), issued_at=issued_at, start=start, end=end,
                      place=None if best is None else best[2],
                      place_words=None if best is None else text[best[0]:best[1]], times=tuple(gone),
                      roads=tuple(dict.fromkeys(p.name for _, _, p in places if p.kind == "road")))


def _span_of(mentions: list[TimeMention]) -> tuple[pd.Timestamp | None, pd.Timestamp | None, set[int]]:
    """Start and end of what the note describes, and which mentions gave them.

    When a note dates something by days and also gives clock times that are not those days' times ("from
    Mon 6 Oct to Fri 10 Oct, 09:00-15:30"), the days are its span and the clock times a daily schedule.
    """
    points = [(i, m) for i, m in enumerate(mentions) if m.role != "duration" and m.at is not None]
    days = [(i, m) for i, m in points if not m.clock]
    if len({m.at.normalize() for _, m in days}) > 1:
        points = days
    start = end = None
    precise = False
    used: set[int] = set()
    for i, m in points:
        role = m.role
        if role == "start" and start is not None and not precise and m.clock and m.at.normalize() == start.normalize():
            start, precise = m.at, True  # "tonight (Sunday) from 19:30", "Sunday evening, 20:30-22:45"
            used.add(i)
            continue
        if role == "start" and start is not None and end is None and m.at > start:
            role = "end"  # "19:00 22:00", "between 09:30 and 13:30"
        if role == "start" and start is None:
            start, precise = m.at, m.clock
            used.add(i)
        elif role == "end" and end is None:
            end = m.at
            if not m.clock and not _relative_words(m.words):
                end = end.normalize() + pd.Timedelta(days=1) - pd.Timedelta(minutes=1)  # "until Friday": all of it
            used.add(i)
    return start, end, used


def _merge_day_and_clock(text: str, mentions: list[TimeMention]) -> list[TimeMention]:
    """A date followed by a clock time ("Friday, 19:00", "Sunday evening, 20:30") is one moment."""
    out: list[TimeMention] = []
    for m in mentions:
        prev = out[-1] if out else None
        gap = text[prev.stop:m.start] if prev else ""
        if (prev is not None and not prev.clock and m.clock and prev.at is not None and m.at is not None
                and prev.role != "duration" and gap.strip(" ,()") == "" and m.role == prev.role):
            at = prev.at.normalize() + (m.at - m.at.normalize())
            out[-1] = replace(prev, words=text[prev.start:m.stop], stop=m.stop, at=at, clock=True)
        else:
            out.append(m)
    return out


def _remove(text: str, mentions: list[TimeMention]) -> str:
    """The note without its time words and the connecting words that introduced them, tidied."""
    cut = sorted((m.start, m.stop) for m in mentions)
    spans = []
    for a, b in cut:
        while True:  # also remove "at", "from", "until", "-" ... just before the time
            m = re.search(r"([\w'’]+|[-–—])\s*$", text[:a])
            if not m or m.group(1).lower() not in CONNECTORS:
                break
            a = m.start()
        spans.append((a, b))
    out, i = [], 0
    for a, b in spans:
        if a >= i:
            out.append(text[i:a])
            i = b
        else:
            i = max(i, b)
    out.append(text[i:])
    s = _balanced("".join(out))
    s = re.sub(r"\(\s*[,;:]?\s*\)", "", s)  # "()" left where "(20:00)" was
    s = re.sub(r"\s+([,;:.!?)])", r"\1", s)
    s = re.sub(r"([,;:])(?:\s*[,;:])+", r"\1", s)
    s = re.sub(r"\s{2,}", " ", s).strip(" ,;:-–—")
    return s or text.strip()


def _balanced(s: str) -> str:
    """Drop brackets left without their partner when a time inside them was removed ("Arena (Friday) ...")."""
    keep, opened = [], []
    for ch in s:
        if ch == "(":
            opened.append(len(keep))
        elif ch == ")":
            if not opened:
                continue
            opened.pop()
        keep.append(ch)
    for j in reversed(opened):
        del keep[j]
    return "".join(keep)


# ============================================================================================ entry point
_GAZETTEERS: OrderedDict[tuple[int, int], tuple[weakref.ref, Gazetteer]] = OrderedDict()


def gazetteer(panel: Panel) -> Gazetteer:
    """The panel's gazetteer (kept while the panel lives; rebuilt when its events change)."""
    key = (id(panel), len(panel.events))
    hit = _GAZETTEERS.get(key)
    if hit is not None and hit[0]() is panel:
        return hit[1]
    gaz = Gazetteer.from_panel(panel)
    _GAZETTEERS[key] = (weakref.ref(panel), gaz)
    while len(_GAZETTEERS) > 16:
        _GAZETTEERS.popitem(last=False)
    return gaz


def normalise_note(panel: Panel, detector_id: str, issued_at, text: str,
                   language: NoteLanguage | None = None) -> NormalisedNote:
    """`text` as a model that speaks `language` reads it for `detector_id` at `issued_at` (module docstring)."""
    text = " ".join(str(text).split())
    if not text:
        return NormalisedNote(original="", text="")
    det = panel.detectors.iloc[panel.column(detector_id)]
    lat, lon = det.get("lat"), det.get("lon")
    lat = float(lat) if lat is not None and pd.notna(lat) else None
    lon = float(lon) if lon is not None and pd.notna(lon) else None
    road = det.get("road") if isinstance(det.get("road"), str) else None
    return gazetteer(panel).parse(text, issued_at).render(lat, lon, road=road, language=language)
