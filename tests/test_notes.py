"""Scenario notes restated as the model reads them (`trafficcore.notes`): times relative to the issue time,
places as distances, in the words of the training texts; on the demo city, whose events say when they are."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from trafficcore.data import demo
from trafficcore.data.panel import haversine_km, load_panel
from trafficcore.data.store import Store
from trafficcore.notes import Gazetteer, NoteLanguage, gazetteer, normalise_note
from trafficcore.text import event_when

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def panel(tmp_path_factory):
    store = Store(tmp_path_factory.mktemp("notes") / "demo.duckdb")
    store.ingest("demo", demo.generate(seed=0, weeks=8))
    return load_panel(store, "demo")


def km_to(panel, detector_id: str, lat: float, lon: float) -> float:
    det = panel.detectors.set_index("detector_id").loc[detector_id]
    return float(haversine_km(det["lat"], det["lon"], lat, lon))


def test_the_issue_example_reads_as_a_start_in_hours_at_the_stadiums_distance(panel):
    """"concert at the stadium at 7 pm" issued at 08:00 -> "starts in 11 h", and how far the stadium is."""
    n = normalise_note(panel, "S33:E", "2025-10-17 08:00", "concert at the stadium at 7 pm")
    stadium = panel.events[panel.events["text"].str.contains("Lindenhaven Stadium")]
    km = km_to(panel, "S33:E", stadium["lat"].mean(), stadium["lon"].mean())
    assert n.text == f"concert at the stadium (starts in 11 h, {km:.1f} km away)."
    assert n.minutes_from_now == 11 * 60 and n.place == "Lindenhaven Stadium"
    assert [r.kind for r in n.recognised] == ["start", "place"]
    assert n.recognised[0].words == "at 7 pm"


def test_an_end_given_as_a_weekday_runs_to_the_end_of_that_day(panel):
    n = normalise_note(panel, "S07:N", "2025-10-14 08:00", "road closed until Friday")  # a Tuesday
    assert n.text == "road closed (ends in 4 days)."
    assert n.minutes_to_end == int((pd.Timestamp("2025-10-17 23:59") - pd.Timestamp("2025-10-14 08:00")).seconds / 60
                                   + 3 * 1440)
    friday = normalise_note(panel, "S07:N", "2025-10-17 08:00", "road closed until Friday")  # Friday: today
    assert friday.minutes_to_end == 15 * 60 + 59


def test_a_road_is_as_far_as_its_nearest_detector(panel):
    n = normalise_note(panel, "S07:N", "2025-10-14 08:00", "roadworks on Park Rd")
    park = panel.detectors[panel.detectors["road"] == "Park Rd"]
    want = min(km_to(panel, "S07:N", la, lo) for la, lo in zip(park["lat"], park["lon"], strict=True))
    assert n.km == pytest.approx(want) and want > 2.5
    assert n.text == f"roadworks on Park Rd ({want:.1f} km away)."
    on_it = normalise_note(panel, "S12:N", "2025-10-14 08:00", "roadworks on Park Road")  # S12 is on Park Rd
    assert on_it.km < 0.1 and on_it.place == "Park Rd"


def test_the_most_specific_place_wins_and_a_landmark_alias_does_not_eat_a_road_name(panel):
    n = normalise_note(panel, "S06:N", "2025-10-13 07:30",
                       "Multi-vehicle crash on 6th Ave at the Park Rd / 6th Ave junction - minor delays")
    assert n.place == "Park Rd / 6th Ave" and n.km < 0.1


def test_relative_times_and_clock_times_nearest_the_issue_time(panel):
    at = "2025-10-14 00:30"
    assert normalise_note(panel, "S07:N", at, "crash reported 23:50").minutes_from_now == -40  # yesterday
    assert normalise_note(panel, "S07:N", at, "crash 10 minutes ago").text == "crash (started 10 min ago)."
    assert normalise_note(panel, "S07:N", at, "closure in 45 min").minutes_from_now == 45
    assert normalise_note(panel, "S07:N", "2025-10-14 08:00", "match tomorrow at 3pm for 2 hours").text == \
        "match (starts in 31 h, ends in 33 h)."


def test_a_range_over_midnight_ends_the_next_morning(panel):
    n = normalise_note(panel, "S07:N", "2025-10-14 19:15", "Lane closure on King St, 20:00-05:00: one lane closed")
    assert (n.minutes_from_now, n.minutes_to_end) == (45, 9 * 60 + 45)
    assert n.text.startswith("Lane closure on King St, one lane closed (starts in 45 min, ends in 10 h")


def test_counts_and_names_are_not_times(panel):
    text = "Football: Lindenhaven FC host Noordkamp '08, two lanes blocked, 13,400 supporters"
    n = normalise_note(panel, "S33:E", "2025-10-08 19:15", text)
    assert n.minutes_from_now is None and n.minutes_to_end is None
    assert n.text.startswith(text + " (")  # only the place is added


def test_a_note_without_time_or_place_is_left_as_typed(panel):
    n = normalise_note(panel, "S07:N", "2025-10-14 08:00", "heavy rain expected")
    assert n.text == "heavy rain expected" and n.recognised == () and not n.changed


def test_every_demo_event_text_gives_back_its_own_start_and_end(panel):
    """The generator's texts state their times in many wordings; read 45 min before the start, each text that
    states a start gives the event's start (to the minute, or its date for roadworks dated by day) and end."""
    g = gazetteer(panel)
    checked = 0
    for e in panel.events.itertuples(index=False):
        p = g.parse(e.text, pd.Timestamp(e.start_ts) - pd.Timedelta(minutes=45))
        if p.start is None:
            continue
        checked += 1
        assert p.start in (e.start_ts, pd.Timestamp(e.start_ts).normalize()), (e.text, p.start)
        assert p.end is None or p.end.normalize() == pd.Timestamp(e.end_ts).normalize(), (e.text, p.end)
        clocks = re.findall(r"\d{1,2}:\d\d", p.body)
        assert clocks in ([], ["09:00", "15:30"]), (p.body, clocks)  # none left but a daily schedule of roadworks
    assert checked >= 45


def test_what_if_renders_move_the_times_or_the_place(panel):
    g = gazetteer(panel)
    p = g.parse("Expect busy roads near Harbour Arena: concert, 20:00 until 22:30", "2025-10-16 19:15")
    det = panel.detectors.set_index("detector_id").loc["S07:N"]
    now = p.render(det["lat"], det["lon"])
    later = p.render(det["lat"], det["lon"], shift=pd.Timedelta(hours=10))
    far = p.render(det["lat"], det["lon"], km=5.0)
    assert now.text.endswith(f"({event_when(45, 195, now.km)}).")
    assert later.text.endswith(f"({event_when(645, 795, now.km)}).") and "starts in 11 h" in later.text
    assert far.text.endswith("(starts in 45 min, ends in 3 h, 5.0 km away).")


def test_the_training_texts_phrases_are_unchanged_for_events_the_model_was_shown():
    """Within 3 h the wording stays in minutes, as the shipped model was trained; beyond, hours and days."""
    assert event_when(120, 300, 0.4) == "starts in 120 min, ends in 5 h, 0.4 km away"
    assert event_when(-200) == "started 3 h ago" and event_when(660) == "starts in 11 h"
    assert event_when(3 * 1440) == "starts in 3 days" and event_when(0) == "starts now"


def test_a_gazetteer_without_places_finds_none():
    assert Gazetteer([]).find("on Park Rd") == []


def test_normalising_is_fast_once_warm(panel):
    normalise_note(panel, "S07:N", "2025-10-14 08:00", "concert at the stadium at 8 pm")  # warm: parser loaded
    t0 = time.perf_counter()
    for i in range(20):
        normalise_note(panel, "S07:N", f"2025-10-14 {8 + i % 10:02d}:00", f"gig at Harbour Arena at {i % 12 + 1} pm")
    per_note = (time.perf_counter() - t0) / 20
    assert per_note < 0.2, per_note
    t0 = time.perf_counter()
    normalise_note(panel, "S07:N", "2025-10-14 08:00", "concert at the stadium at 8 pm")  # a page re-run: memoised
    assert time.perf_counter() - t0 < 0.05


def test_importing_the_notes_module_does_not_load_the_date_parser():
    """dateparser takes ~0.15 s to import: it loads on the first note, not with the module (nor the CLI)."""
    code = "import json, sys, trafficcore.notes\nprint(json.dumps('dateparser' in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert json.loads(out.stdout.strip().splitlines()[-1]) is False


def test_distances_are_measured_from_the_detector(panel):
    a = normalise_note(panel, "S07:N", "2025-10-14 08:00", "gig at Harbour Arena at 8 pm")
    b = normalise_note(panel, "S40:W", "2025-10-14 08:00", "gig at Harbour Arena at 8 pm")
    assert a.km < 1.0 < b.km and np.isfinite(b.km)


def test_a_model_reads_a_note_only_inside_its_event_window(panel):
    """The same rule as for events: planned ones from the largest horizon + 1 h ahead, within the event radius."""
    lang = NoteLanguage(lead_min=120, radius_km=1.0)
    far_ahead = normalise_note(panel, "S33:E", "2025-10-17 08:00", "concert at the stadium at 7 pm", lang)
    assert far_ahead.unread == "it starts in 11 h, and the model reads events that start within the next 120 min"
    soon = normalise_note(panel, "S33:E", "2025-10-17 18:00", "concert at the stadium at 7 pm", lang)
    assert soon.unread is None and soon.minutes_from_now == 60
    away = normalise_note(panel, "S40:W", "2025-10-17 19:30", "gig at Harbour Arena at 8 pm", lang)
    assert away.unread.startswith(f"it is {away.km:.1f} km away") and away.km > 1.0
    over = normalise_note(panel, "S07:N", "2025-10-17 19:30", "lane closed 08:00 to 10:00", lang)
    assert over.unread.startswith("it ended 10 h ago")


def test_on_this_road_is_said_only_for_the_detectors_own_road(panel):
    lang = NoteLanguage(on_road=True)
    note = "Crash on Canal St at Canal St / 4th Ave, 10 minutes ago"
    on = normalise_note(panel, "S16:N", "2025-10-14 17:45", note, lang)  # S16:N is on Canal St
    off = normalise_note(panel, "S16:E", "2025-10-14 17:45", note, lang)  # S16:E is on 4th Ave
    assert on.text.endswith("km away, on this road).") and "on this road" not in off.text
    plain = normalise_note(panel, "S16:N", "2025-10-14 17:45", note)  # a model whose texts never said it
    assert "on this road" not in plain.text


def test_training_texts_can_speak_as_notes_are_read(panel):
    """`LMConfig.event_times="relative"`, `event_road=True`: an event's phrase is its text read as a note."""
    from trafficcore.models.lm.inputs import FastContext
    from trafficcore.text import context_parts

    e = panel.events.set_index("event_id").loc["E0067"]  # "Collision at Canal St / 4th Ave on Canal St, reported 17:35"
    row = panel.index_of(pd.Timestamp(e["start_ts"]).floor("15min") + pd.Timedelta(minutes=15))
    d_on, d_off = panel.column("S16:N"), panel.column("S16:E")
    plain = FastContext(panel)
    spoken = FastContext(panel, relative_times=True, roads=True)
    assert "reported 17:35" in " ".join(context_parts(plain.fields(d_on, row, details=True), include_static=False))
    on = " ".join(context_parts(spoken.fields(d_on, row, details=True), include_static=False))
    off = " ".join(context_parts(spoken.fields(d_off, row, details=True), include_static=False))
    assert on == "Collision at Canal St / 4th Ave on Canal St, queues building (started 10 min ago, 0.0 km away, " \
                 "on this road)."
    assert off.endswith("km away).") and "17:35" not in off
    typed = normalise_note(panel, "S16:N", pd.Timestamp(e["start_ts"]).floor("15min") + pd.Timedelta(minutes=15),
                           e["text"], NoteLanguage(on_road=True))
    assert typed.text == on  # the event typed as a note reads exactly as the model was trained to read it
