"""Event feeds -> canonical events: the four formats, the CAD glossary, the matching rule, and bad input named."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from trafficcore.data.event_match import in_effect, near_matrix, road_key
from trafficcore.data.loaders.event_feeds import cad_meaning, parse_document, read_event_file
from trafficcore.errors import DataError

DATA = Path(__file__).resolve().parent / "data"
TZ = "Europe/Amsterdam"


def doc(name: str):
    return json.loads((DATA / name).read_text())


# ------------------------------------------------------------------------------------------ the formats
def test_wzdx_work_zones_become_events_in_local_time_with_their_lines():
    rows = read_event_file(DATA / "wzdx_demo.geojson", TZ)
    ev = rows.frame.set_index("event_id")
    assert rows.format == "wzdx" and len(ev) == 3
    park = ev.loc["wzdx:5c9a2e1e-3f0b-4c44-9d8e-2a1f6b7c0001"]
    # 19:00Z is 20:00 in Amsterdam (CET, after the DST change of 26 Oct 2025); 17:00Z on 31 Oct is 18:00
    assert park["start_ts"] == pd.Timestamp("2025-10-26 20:00") and park["end_ts"] == pd.Timestamp("2025-10-31 18:00")
    assert park["kind"] == "road works" and park["road"] == "Park Rd" and park["status"] == "active"
    assert park["text"].startswith("Roadworks on Park Rd northbound: one lane closed from Sun 26 Oct to Fri 31 Oct")
    assert park["geometry_wkt"].startswith("LINESTRING (5.1359500 52.0356000")
    assert park["updated_ts"] == pd.Timestamp("2025-10-26 19:30")
    night = ev.loc["wzdx:5c9a2e1e-3f0b-4c44-9d8e-2a1f6b7c0002"]
    assert "single-file traffic on Mon 27 Oct 00:30-05:00" in night["text"]
    assert ev.loc["wzdx:5c9a2e1e-3f0b-4c44-9d8e-2a1f6b7c0003", "geometry_wkt"].startswith("MULTIPOINT")


def test_open511_events_one_row_per_interval_archived_ones_ended():
    rows = read_event_file(DATA / "open511_demo.json", TZ)
    ev = rows.frame.set_index("event_id")
    assert rows.format == "open511" and rows.families == ("open511:",)
    crash = ev.loc["open511:lindenhaven/LH-2041"]
    assert crash["kind"] == "crash" and pd.isna(crash["end_ts"])
    assert crash["start_ts"] == pd.Timestamp("2025-10-26 23:05")
    assert crash["text"].startswith("Crash on King St at 2nd Ave: one lane closed, long delays, queues building.")
    nights = ev[ev.index.str.startswith("open511:lindenhaven/LH-2037#")]
    # Sun 26, Mon 27, Tue 28, Wed 29, Thu 30 Oct (days 7, 1, 2, 3, 4) from 22:00 to 05:00 the next day
    assert list(nights["start_ts"].dt.day) == [26, 27, 28, 29, 30]
    assert (nights["end_ts"] - nights["start_ts"] == pd.Timedelta(hours=7)).all()
    concert = ev.loc["open511:lindenhaven/LH-2020"]
    assert concert["status"] == "ended" and concert["kind"] == "concert"
    assert concert["start_ts"] == pd.Timestamp("2025-10-25 19:00")  # +02:00 (summer time) is local already


def test_cad_log_rows_in_plain_words():
    rows = read_event_file(DATA / "cad_demo.csv", TZ)
    ev = rows.frame
    assert rows.format == "cad" and list(ev["event_id"])[0] == "cad:20251026:0457"
    assert list(ev["kind"]) == ["crash", "incident", "crash", "fault"]
    assert ev["text"].iloc[0] == "Crash on Station Rd at 2nd Ave: injuries unknown"
    assert ev["text"].iloc[2] == "Collision on Harbour Rd at Old Dyke Rd: no injuries"
    assert ev["start_ts"].iloc[0] == pd.Timestamp("2025-10-26 23:20") and ev["end_ts"].isna().all()
    assert ev["road"].iloc[0] == "Station Rd; 2nd Ave"


@pytest.mark.parametrize("cell, kind, words", [
    ("1183-Trfc Collision-Unkn Inj", "crash", ("Crash", "injuries unknown")),
    ("1182-Trfc Collision-No Inj", "crash", ("Collision", "no injuries")),
    ("1125-Traffic Hazard", "incident", ("Traffic hazard", "an obstruction in the road")),
    ("1125A-Animal Hazard", "incident", ("Animal on the road", "slow traffic past the scene")),
    ("20002-Hit and Run No Injuries", "crash", ("Hit-and-run collision", "no injuries")),
    ("SIG Alert", "incident", ("Sig alert", "lanes blocked, long delays")),
    ("1198-Trfc Collision-Maj Inj", "crash", ("Traffic Collision, major injuries", "")),  # not in the glossary
])
def test_cad_glossary_turns_dispatch_codes_into_words(cell, kind, words):
    assert cad_meaning(cell) == (kind, *words)


def test_own_csv_and_json_and_the_api_list():
    rows = read_event_file(DATA / "events_demo.csv", TZ)
    assert rows.format == "own" and list(rows.frame["event_id"]) == ["LH-CONCERT-1027", "LH-CRASH-0001"]
    records = [{"id": "a", "start": "2025-10-26T22:00:00Z", "lat": 52.04, "lon": 5.11, "kind": "crash",
                "text": "Crash on Mill St", "status": "Cleared"}]
    api = parse_document(records, "events", TZ, rows_are_positions=True).frame.iloc[0]
    assert api["start_ts"] == pd.Timestamp("2025-10-26 23:00") and api["status"] == "ended"
    assert parse_document({"events": records}, "f.json", TZ).format == "own"


# ------------------------------------------------------------------------------------------ matching
def test_road_names_in_one_spelling():
    assert road_key("Park Road") == road_key("park rd") == "park rd"
    assert road_key("SR-99 N") == road_key("State Route 99") == "sr 99"
    assert road_key("First Avenue") == road_key("1st Ave") and road_key(None) == ""


def test_events_reach_further_along_their_own_road():
    det = pd.DataFrame({"detector_id": ["A", "B", "C"], "site_id": ["s1", "s2", "s3"],
                        "road": ["Park Rd", "Mill St", "Park Road"],
                        "lat": [52.0, 52.0, 52.0], "lon": [5.0 + 1.2 / 68.5, 5.0 + 1.2 / 68.5, 5.0 + 2.0 / 68.5]})
    line = "LINESTRING (5.0 51.99, 5.0 52.01)"  # north-south at lon 5.0; A and B 1.2 km east of it, C 2 km
    ev = pd.DataFrame({"event_id": ["w"], "site_id": [None], "lat": [52.0], "lon": [5.0], "road": ["Park Rd"],
                       "geometry_wkt": [line]})
    near, km = near_matrix(det, ev, 1.0)
    assert np.allclose(km[:, 0], [1.2, 1.2, 2.0], atol=0.02)
    assert list(near[:, 0]) == [True, False, False]  # same road within 1.5 km; another road only within 1 km
    point = ev.assign(road=None, geometry_wkt=None)
    assert not near_matrix(det, point, 1.0)[0].any()  # a point without a road: the radius alone, as before
    assert near_matrix(det, point, 1.3)[0][:, 0].tolist() == [True, True, False]


def test_in_effect_follows_the_models_visibility_rule():
    ev = pd.DataFrame({"event_id": ["crash", "works", "old"], "kind": ["crash", "road works", "crash"],
                       "start_ts": pd.to_datetime(["2025-10-27 00:10", "2025-10-27 01:50", "2025-10-26 20:00"]),
                       "end_ts": pd.to_datetime([None, "2025-10-27 05:00", "2025-10-26 22:30"])})
    at = pd.Timestamp("2025-10-27 00:00")
    assert list(in_effect(ev, at, 60)) == [False, True, False]  # a crash is unknown before it starts
    assert list(in_effect(ev, at + pd.Timedelta("15min"), 60)) == [True, True, False]


# ------------------------------------------------------------------------------------------ bad input
def _wzdx_with(path: list, value):
    d = doc("wzdx_demo.geojson")
    node = d
    for k in path[:-1]:
        node = node[k]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return d


@pytest.mark.parametrize("path, value, column, message", [
    (["features", 1, "properties", "start_date"], "next Tuesday", "features[1].properties.start_date",
     "not a date/time"),
    (["features", 0, "properties", "end_date"], KeyError, "features[0].properties.end_date", "value is missing"),
    (["features", 2, "properties", "vehicle_impact"], "mostly-closed", "features[2].properties.vehicle_impact",
     "is not one of"),
    (["features", 0, "geometry", "coordinates", 1, 1], 152.03, "features[0].geometry.coordinates[1][1]",
     "outside -90..90"),
    (["features", 0, "properties", "core_details", "road_names"], [], "features[0].properties.core_details.road_names",
     "at least one road name"),
    (["features", 1, "geometry", "type"], "Polygon", "features[1].geometry.type", "is not one of"),
    (["feed_info", "version"], "3.1", "feed_info.version", "not supported"),
    (["features", 0, "properties", "end_date"], "2025-10-20T00:00:00Z", "features[0].properties.end_date",
     "before the start"),
])
def test_a_bad_wzdx_value_is_named_by_its_json_path(path, value, column, message):
    with pytest.raises(DataError) as e:
        parse_document(_wzdx_with(path, value), "feed.geojson", TZ)
    assert e.value.column == column and message in e.value.message, str(e.value)
    assert str(e.value).startswith(f"feed.geojson, column '{column}'")


@pytest.mark.parametrize("change, column", [
    (lambda d: d["events"][1]["schedule"]["recurring_schedules"][0].update(days=[8]),
     "events[1].schedule.recurring_schedules[0].days[0]"),
    (lambda d: d["events"][0]["schedule"].update(intervals=["yesterday"]), "events[0].schedule.intervals[0]"),
    (lambda d: d["events"][2].update(status="DONE"), "events[2].status"),
    (lambda d: d["events"][0].pop("geography"), "events[0].geography"),
    (lambda d: d["events"][0]["roads"][0].update(state="HALF_OPEN"), "events[0].roads[0].state"),
])
def test_a_bad_open511_value_is_named_by_its_json_path(change, column):
    d = copy.deepcopy(doc("open511_demo.json"))
    change(d)
    with pytest.raises(DataError) as e:
        parse_document(d, "open511.json", TZ)
    assert e.value.column == column, str(e.value)


def test_bad_csv_rows_are_named_by_row_and_column(tmp_path):
    lines = (DATA / "cad_demo.csv").read_text().splitlines()
    lines[3] = lines[3].replace("52.033100", "")  # the third incident, row 4 of the file
    bad = tmp_path / "cad.csv"
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as e:
        read_event_file(bad, TZ)
    assert (e.value.row, e.value.column) == (4, "Latitude") and "missing" in e.value.message
    own = tmp_path / "own.csv"
    own.write_text("id,start,lat,lon,kind,text,colour\na,2025-10-26 10:00,52,5,crash,x,red\n")
    with pytest.raises(DataError, match="unknown field 'colour'"):
        read_event_file(own, TZ)
    own.write_text("id,start,lat,lon,kind,text\na,2025-10-26 10:00,52,5,crash,x\na,2025-10-26 11:00,52,5,crash,x\n")
    with pytest.raises(DataError) as e:
        read_event_file(own, TZ)
    assert (e.value.row, e.value.column) == (3, "id") and "conflicting duplicate" in e.value.message


def test_the_api_list_names_the_position_and_field():
    records = [{"id": "a", "start": "2025-10-26 10:00", "lat": 52, "lon": 5, "kind": "crash", "text": "x"},
               {"id": "b", "start": "2025-10-26 10:00", "lat": "north", "lon": 5, "kind": "crash", "text": "x"}]
    with pytest.raises(DataError) as e:
        parse_document(records, "events", TZ, rows_are_positions=True)
    assert (e.value.file, e.value.row, e.value.column) == ("events", 2, "lat")


def test_not_json_and_unknown_names_are_refused(tmp_path):
    p = tmp_path / "feed.json"
    p.write_text('{"type": "FeatureCollection", "features": [')
    with pytest.raises(DataError, match="not valid JSON"):
        read_event_file(p, TZ)
    q = tmp_path / "feed.xml"
    q.write_text("<events/>")
    with pytest.raises(DataError, match="cannot tell the format"):
        read_event_file(q, TZ)


def test_the_benchmarks_feeds_are_valid_in_every_format(town, tmp_path):
    from trafficcore.live.events_bench import synthetic_events, write_feeds

    ev = synthetic_events(town, "town", 25)
    for name, path in write_feeds(ev, tmp_path, "UTC").items():
        rows = read_event_file(path, "UTC")
        assert len(rows) == 25 and rows.frame["start_ts"].notna().all(), name
