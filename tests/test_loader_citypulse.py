"""The Aarhus CityPulse loader: the real folder end to end, and bad input on tiny synthetic copies."""

from __future__ import annotations

import dataclasses
import gzip
import math

import numpy as np
import pandas as pd
import pytest
from conftest import shared_path

from trafficcore.data.loaders import citypulse
from trafficcore.data.store import Store
from trafficcore.errors import DataError

TRAFFIC = "aarhus_citypulse_traffic_2014"
EVENTS = ("aarhus_citypulse_events", "aarhus_events_2013_2015.csv")


# --------------------------------------------------------------------------- real data
@pytest.fixture(scope="module")
def tables():
    """The whole folder plus the event listings, loaded once for the module (about 5 s)."""
    return citypulse.load(shared_path(TRAFFIC), events=shared_path(*EVENTS))


@pytest.fixture(scope="module")
def raw():
    """The two matrices and the metadata read directly with pandas, independently of the loader."""
    folder = shared_path(TRAFFIC)
    counts = pd.read_csv(folder / citypulse.COUNT_FILE, index_col="timestamp")
    speeds = pd.read_csv(folder / citypulse.SPEED_FILE, index_col="timestamp")
    meta = pd.read_csv(folder / citypulse.META_FILE, dtype=str)
    return counts, speeds.reindex(index=counts.index, columns=counts.columns), meta


@pytest.fixture(scope="module")
def split(tables):
    """(counts, speeds, count keys, speed keys): a key is (segment, 5-minute slot) packed in one int64.

    Factorising the 898 detector ids once and working on integer codes keeps this to about a
    second over 11 million rows (string splitting row by row takes minutes).
    """
    obs = tables.observations
    codes, uniq = pd.factorize(obs["detector_id"])
    uniq = pd.Index(uniq)
    site_code = pd.Index(sorted(tables.sites["site_id"])).get_indexer(uniq.str.slice(0, -6))
    assert (site_code >= 0).all() and uniq.str.endswith((":count", ":speed")).all()
    is_speed = np.asarray(uniq.str.endswith(":speed"))[codes]
    slot = obs["ts"].to_numpy().astype("int64") // 300_000_000_000
    key = site_code[codes].astype(np.int64) * 10_000_000 + slot
    return obs[~is_speed], obs[is_speed], key[~is_speed], key[is_speed]


def distinct(keys: np.ndarray) -> bool:
    """No key repeats (sort + diff: much faster than np.unique on millions of int64)."""
    return bool((np.diff(np.sort(keys)) != 0).all())


@pytest.mark.realdata
def test_sites_and_detectors(tables, raw):
    _, _, meta = raw
    sites, det = tables.sites, tables.detectors
    assert len(sites) == 449 and sites["site_id"].is_unique
    assert set(sites["site_id"]) == set(meta["REPORT_ID"])
    assert len(det) == 898 and det["detector_id"].is_unique
    assert set(det["detector_id"]) == {f"{r}:{k}" for r in meta["REPORT_ID"] for k in ("count", "speed")}
    assert dict(det.groupby("measure").size()) == {"speed": 449, "volume": 449}
    assert (det.loc[det["detector_id"].str.endswith(":count"), "measure"] == "volume").all()
    assert (det["interval_s"] == 300).all()
    assert set(det["approach"]) <= {"N", "NE", "E", "SE", "S", "SW", "W", "NW"}
    assert det["description"].str.contains("sample of traffic, not the total flow").sum() == 449

    m = meta.set_index("REPORT_ID").loc["158895"]  # Søftenvej, 4364 -> 4349
    s = sites.set_index("site_id").loc["158895"]
    lat1, lon1, lat2, lon2 = (float(m[c]) for c in ("POINT_1_LAT", "POINT_1_LNG", "POINT_2_LAT", "POINT_2_LNG"))
    assert s["lat"] == pytest.approx((lat1 + lat2) / 2) and s["lon"] == pytest.approx((lon1 + lon2) / 2)
    assert s["geometry_wkt"] == f"LINESTRING ({lon1:.8f} {lat1:.8f}, {lon2:.8f} {lat2:.8f})"
    assert "Søftenvej" in s["name"] and "AAR_BT_0020 4364 4349" in s["name"]
    assert "1505 m" in s["description"] and "normal driving speed 70 km/h" in s["description"]
    # the segment runs east-south-east (lon rises, lat falls): initial bearing about 119 degrees
    d = det.set_index("detector_id").loc["158895:count"]
    assert d["approach"] == "SE" and d["road"] == "Søftenvej"
    twin = sites.set_index("site_id").loc["187509"]
    assert twin["name"].startswith("Skanderborgvej → Viby Ringvej")


@pytest.mark.realdata
def test_observation_counts_match_raw_cells(tables, raw, split):
    counts, speeds, _ = raw
    cnt, spd, cnt_key, spd_key = split
    assert len(cnt) == int(counts.notna().to_numpy().sum())
    with np.errstate(invalid="ignore"):
        usable = (counts.to_numpy() > 0) & (speeds.to_numpy() > 0)
    assert len(spd) == int(usable.sum())
    assert len(tables.observations) == len(cnt) + len(spd)
    assert distinct(cnt_key) and distinct(spd_key)

    # one segment, value by value, after the +2 h shift
    rid = "158324"
    expect = counts[rid].dropna()
    got = cnt[cnt["detector_id"] == f"{rid}:count"].set_index("ts")["value"]
    shifted = pd.to_datetime(expect.index) + pd.Timedelta(hours=2)
    assert list(got.index) == list(shifted)
    assert np.array_equal(got.to_numpy(), expect.to_numpy())


@pytest.mark.realdata
def test_timestamps_shifted_to_local_wall_time(tables, raw):
    counts, _, _ = raw
    assert counts.index[0] == "2014-08-01 07:50:00"
    obs = tables.observations
    assert obs["ts"].min() == pd.Timestamp("2014-08-01 09:50")
    assert obs["ts"].max() == pd.Timestamp(counts.index[-1]) + pd.Timedelta(hours=2)
    first = obs[(obs["detector_id"] == "158324:count") & (obs["ts"] == "2014-08-01 09:50")]["value"]
    assert list(first) == [counts.loc["2014-08-01 07:50:00", "158324"]] == [5.0]
    assert tables.info.timezone == "Europe/Copenhagen"


@pytest.mark.realdata
def test_weekday_peaks_fall_at_local_commuting_hours(raw, split):
    """The evidence for the UTC reading: file peaks at 05-06 h, local peaks at 07-08 h."""
    counts, _, _ = raw

    def profile(total: pd.Series) -> pd.Series:
        weekday = total[total.index.day_of_week < 5]
        return weekday.groupby(weekday.index.hour).mean()

    file_profile = profile(counts.sum(axis=1).set_axis(pd.to_datetime(counts.index)))
    assert file_profile[file_profile.index < 12].idxmax() in (5, 6)

    cnt = split[0]
    local = profile(cnt.groupby("ts")["value"].sum())
    assert local[local.index < 12].idxmax() in (7, 8)
    assert local[local.index >= 12].idxmax() in (15, 16)
    assert local.idxmin() in (2, 3)


@pytest.mark.realdata
def test_speed_only_where_count_positive(split):
    cnt, spd, cnt_key, spd_key = split
    order = np.argsort(cnt_key, kind="stable")
    sorted_keys, sorted_vals = cnt_key[order], cnt["value"].to_numpy()[order]
    pos = np.searchsorted(sorted_keys, spd_key).clip(max=len(sorted_keys) - 1)
    assert (sorted_keys[pos] == spd_key).all()  # every speed has a count at the same segment and time
    assert (sorted_vals[pos] > 0).all()  # ... and that count is positive
    assert (spd["value"] > 0).all()
    assert (cnt["value"] == 0).sum() > 1_000_000  # plenty of zero counts exist, so the check has teeth


@pytest.mark.realdata
def test_dataset_info(tables):
    info = tables.info
    assert info.synthetic is False and info.interval_s == 300 and info.measure == "volume"
    assert info.source == "CityPulse Aarhus road traffic 2014 (Open Data Aarhus / COWI Bluetooth)"


@pytest.mark.realdata
def test_events_all_kept_with_text_verbatim(tables):
    ev = tables.events
    assert len(ev) == 1647 and ev["event_id"].is_unique
    window = ev[(ev["start_ts"] >= "2014-08-01") & (ev["start_ts"] < "2014-10-01")]
    assert len(window) == 223
    assert dict(window.groupby("kind").size()) == {"cultural": 17, "library": 206}
    assert set(ev["source"]) == {"citypulse:cultural", "citypulse:library"}
    texts = set(ev["text"])
    assert "Workshop: >Tegn i SketchUp at Aarhus" in texts
    assert "Hist & Her - Sanseudstilling at Balkongalleriet" in texts
    assert "Susanne Butcher udstiller p? ?by Bibliotek i oktober at ?by" in texts  # the '?' quirk, as given

    timed = ev["start_ts"] != ev["start_ts"].dt.normalize()
    assert ((ev["end_ts"] - ev["start_ts"])[timed] == pd.Timedelta(hours=2)).all()
    assert ev.loc[~timed, "end_ts"].isna().all() and (~timed).sum() == 30

    # a venue tied to a segment is within the radius of its line; ids are stable across loads
    sites = tables.sites.set_index("site_id")
    row = ev[ev["site_id"].notna()].iloc[0]
    line = sites.loc[row["site_id"], "geometry_wkt"]
    (x1, y1), (x2, y2) = (tuple(map(float, p.split())) for p in line[12:-1].split(", "))
    km_lat, km_lon = 111.195, 111.195 * math.cos(math.radians(row["lat"]))
    mid = ((x1 + x2) / 2, (y1 + y2) / 2)
    half = math.hypot((x2 - x1) * km_lon, (y2 - y1) * km_lat) / 2
    assert math.hypot((row["lon"] - mid[0]) * km_lon, (row["lat"] - mid[1]) * km_lat) <= 1.0 + half
    meta = citypulse._read_metadata(shared_path(TRAFFIC, citypulse.META_FILE))
    again = citypulse._read_events(shared_path(*EVENTS), meta)
    assert list(again["event_id"]) == list(ev["event_id"])


@pytest.mark.realdata
def test_weather_is_local_and_averaged(tables):
    w = tables.weather
    assert len(w) == 4356  # 4,357 rows, one without any value
    assert w["ts"].is_unique and w["ts"].is_monotonic_increasing
    assert w["ts"].iloc[0] == pd.Timestamp("2014-08-01 00:00")
    assert w["precip_mm"].isna().all()
    by_hour = w.groupby(w["ts"].dt.hour)["temp_c"].mean()
    assert by_hour.idxmax() in (14, 15, 16) and by_hour.idxmin() in (4, 5, 6)


@pytest.mark.realdata
def test_adjacency_links_end_to_start(tables, raw):
    _, _, meta = raw
    adj = tables.adjacency
    start, end = meta.set_index("REPORT_ID")["POINT_1_NAME"], meta.set_index("REPORT_ID")["POINT_2_NAME"]
    assert (end[adj["src"]].to_numpy() == start[adj["dst"]].to_numpy()).all()
    expect = sum(((start == e) & (start.index != rid)).sum() for rid, e in end.items())
    assert len(adj) == expect > 0
    assert set(adj["kind"]) == {"graph"} and (adj["weight"] == 1.0).all()


@pytest.mark.realdata
def test_ingests_into_store(tables, tmp_path):
    """Every table as loaded, with the observations cut to one day to keep the test quick."""
    obs = tables.observations
    day = obs[(obs["ts"] >= "2014-08-05") & (obs["ts"] < "2014-08-06")]
    store = Store(tmp_path / "s.duckdb")
    counts = store.ingest("citypulse", dataclasses.replace(tables, observations=day))
    assert counts == {"sites": 449, "detectors": 898, "observations": len(day), "events": 1647,
                      "weather": len(tables.weather), "adjacency": len(tables.adjacency)}
    assert store.dataset_info("citypulse")["timezone"] == "Europe/Copenhagen"
    ev = store.events("citypulse")
    assert ev["end_ts"].isna().sum() == 30 and ev["site_id"].isna().sum() == tables.events["site_id"].isna().sum()


# --------------------------------------------------------------------------- tiny synthetic folders
META_HEADER = [
    "POINT_1_STREET", "POINT_1_NAME", "POINT_2_NAME", "POINT_2_STREET", "POINT_1_LAT", "POINT_1_LNG",
    "POINT_2_LAT", "POINT_2_LNG", "REPORT_ID", "REPORT_NAME", "DISTANCE_IN_METERS", "NDT_IN_KMH", "ROAD_TYPE",
]
META_ROWS = [  # a chain of three segments: 10 -> 20 -> 30 -> 40, heading east
    ["Avej", "10", "20", "Avej", "56.15", "10.10", "56.15", "10.11", "1", "AAR_1 10 20", "600", "50", "MAJOR_ROAD"],
    ["Avej", "20", "30", "Bvej", "56.15", "10.11", "56.15", "10.12", "2", "AAR_2 20 30", "600", "50", "MAJOR_ROAD"],
    ["Bvej", "30", "40", "Bvej", "56.15", "10.12", "56.16", "10.12", "3", "AAR_3 30 40", "1100", "", "MAJOR_ROAD"],
]
TIMES = ["2014-08-01 07:50:00", "2014-08-01 07:55:00", "2014-08-01 08:00:00"]
COUNTS = [["4", "", "0"], ["5", "2", ""], ["0", "3", "7"]]
SPEEDS = [["40", "50", "33"], ["41", "52", "60"], ["41", "0", "55"]]


def write_matrix(path, times, rows, header=("timestamp", "1", "2", "3")):
    text = ",".join(header) + "\n" + "".join(f"{t},{','.join(r)}\n" for t, r in zip(times, rows, strict=True))
    path.write_bytes(gzip.compress(text.encode("utf-8")))


def tiny_folder(tmp_path, meta_header=META_HEADER, meta_rows=META_ROWS, times=TIMES, counts=COUNTS, speeds=SPEEDS):
    folder = tmp_path / "citypulse"
    folder.mkdir()
    lines = [",".join(meta_header)] + [",".join(r) for r in meta_rows]
    (folder / citypulse.META_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")
    write_matrix(folder / citypulse.COUNT_FILE, times, counts)
    write_matrix(folder / citypulse.SPEED_FILE, times, speeds)
    return folder


def test_tiny_folder_loads(tmp_path):
    t = citypulse.load(tiny_folder(tmp_path))
    obs = t.observations.set_index(["detector_id", "ts"])["value"]
    ts = pd.Timestamp("2014-08-01 09:50")
    five = pd.Timedelta(minutes=5)
    # counts: every non-empty cell, zeros included
    assert obs["1:count"].to_dict() == {ts: 4.0, ts + five: 5.0, ts + 2 * five: 0.0}
    assert obs["2:count"].to_dict() == {ts + five: 2.0, ts + 2 * five: 3.0}
    assert obs["3:count"].to_dict() == {ts: 0.0, ts + 2 * five: 7.0}
    # speeds: only where the count is > 0 and the speed is > 0
    assert obs["1:speed"].to_dict() == {ts: 40.0, ts + five: 41.0}
    assert obs["2:speed"].to_dict() == {ts + five: 52.0}
    assert obs["3:speed"].to_dict() == {ts + 2 * five: 55.0}
    assert t.weather.empty and t.events.empty
    assert list(zip(t.adjacency["src"], t.adjacency["dst"], strict=True)) == [("1", "2"), ("2", "3")]
    det = t.detectors.set_index("detector_id")
    assert det.loc["1:count", "approach"] == "E" and det.loc["3:speed", "approach"] == "N"
    assert det.loc["2:count", "road"] == "Avej → Bvej"
    assert "normal driving speed" not in t.sites.set_index("site_id").loc["3", "description"]


def test_repeated_autumn_hour_keeps_first_pass(tmp_path):
    times = ["2014-10-26 00:00:00", "2014-10-26 00:55:00", "2014-10-26 01:00:00"]  # UTC: 02:00 CEST, 02:55, 02:00 CET
    t = citypulse.load(tiny_folder(tmp_path, times=times))
    got = t.observations[t.observations["detector_id"] == "1:count"].set_index("ts")["value"]
    assert got.to_dict() == {pd.Timestamp("2014-10-26 02:00"): 4.0, pd.Timestamp("2014-10-26 02:55"): 5.0}


def test_letter_in_a_cell_names_row_and_column(tmp_path):
    counts = [["4", "", "0"], ["5", "2x", ""], ["0", "3", "7"]]
    with pytest.raises(DataError) as e:
        citypulse.load(tiny_folder(tmp_path, counts=counts))
    assert e.value.file.endswith(citypulse.COUNT_FILE)
    assert (e.value.row, e.value.column) == (3, "2") and "2x" in e.value.message


def test_negative_count_names_row_and_column(tmp_path):
    counts = [["4", "", "0"], ["5", "2", ""], ["0", "3", "-7"]]
    with pytest.raises(DataError) as e:
        citypulse.load(tiny_folder(tmp_path, counts=counts))
    assert e.value.file.endswith(citypulse.COUNT_FILE) and (e.value.row, e.value.column) == (4, "3")


def test_missing_metadata_column(tmp_path):
    header = [c for c in META_HEADER if c != "NDT_IN_KMH"]
    rows = [r[:11] + r[12:] for r in META_ROWS]
    with pytest.raises(DataError) as e:
        citypulse.load(tiny_folder(tmp_path, meta_header=header, meta_rows=rows))
    assert e.value.file.endswith(citypulse.META_FILE) and (e.value.row, e.value.column) == (1, "NDT_IN_KMH")


def test_bad_timestamp_names_row(tmp_path):
    times = ["2014-08-01 07:50:00", "2014-08-01 07:55:00", "2014-08-01 25:00:00"]
    with pytest.raises(DataError) as e:
        citypulse.load(tiny_folder(tmp_path, times=times))
    assert e.value.file.endswith(citypulse.COUNT_FILE) and (e.value.row, e.value.column) == (4, "timestamp")


def test_off_grid_timestamp(tmp_path):
    times = ["2014-08-01 07:50:00", "2014-08-01 07:53:00", "2014-08-01 08:00:00"]
    with pytest.raises(DataError) as e:
        citypulse.load(tiny_folder(tmp_path, times=times))
    assert (e.value.row, e.value.column) == (3, "timestamp") and "grid" in e.value.message


def test_unknown_segment_column(tmp_path):
    folder = tiny_folder(tmp_path)
    write_matrix(folder / citypulse.SPEED_FILE, TIMES, SPEEDS, header=("timestamp", "1", "2", "99"))
    with pytest.raises(DataError) as e:
        citypulse.load(folder)
    assert e.value.file.endswith(citypulse.SPEED_FILE) and (e.value.row, e.value.column) == (1, "99")


def test_bad_weather_and_events(tmp_path):
    folder = tiny_folder(tmp_path)
    weather = folder / citypulse.WEATHER_FILE
    weather.write_text(
        "hum,tempm,wspdm,TIMESTAMP\n80,15,5.6,2014-08-01T00:00:00\n70,16,-9999,2014-08-01T00:00:00\n"
        ",,,2014-08-01T00:20:00\n", encoding="utf-8",
    )
    w = citypulse.load(folder).weather
    assert len(w) == 1 and w.iloc[0][["temp_c", "humidity_pct", "wind_kmh"]].tolist() == [15.5, 75.0, 5.6]

    events = tmp_path / "events.csv"
    events.write_text(
        "source,event_time,title,price,url,venue_name,latitude,longitude\n"
        "library,2014-08-01T10:00:00,<b>Talk</b> & tea,0,u,Aarhus,56.150,10.105\n"
        "cultural,2014-08-02T00:00:00,Far away,0,v,Elsewhere,55.0,9.0\n", encoding="utf-8",
    )
    ev = citypulse.load(folder, events=events).events.set_index("kind")
    assert ev.loc["library", "text"] == "<b>Talk</b> & tea at Aarhus" and ev.loc["library", "site_id"] == "1"
    assert ev.loc["library", "end_ts"] == pd.Timestamp("2014-08-01 12:00")
    assert ev.loc["cultural", "site_id"] is None or pd.isna(ev.loc["cultural", "site_id"])
    assert pd.isna(ev.loc["cultural", "end_ts"])

    events.write_text(
        "source,event_time,title,price,url,venue_name,latitude,longitude\nlibrary,soon,x,0,u,Aarhus,56.1,10.1\n",
        encoding="utf-8",
    )
    with pytest.raises(DataError) as e:
        citypulse.load(folder, events=events)
    assert (e.value.row, e.value.column) == (2, "event_time")


def test_row_with_surplus_fields_is_named(tmp_path):
    folder = tiny_folder(tmp_path)
    write_matrix(folder / citypulse.COUNT_FILE, TIMES, [["4", "", "0"], ["5", "2", "", "9"], ["0", "3", "7"]])
    with pytest.raises(DataError) as e:
        citypulse.load(folder)
    assert e.value.file.endswith(citypulse.COUNT_FILE) and e.value.row == 3 and "5 fields" in e.value.message
