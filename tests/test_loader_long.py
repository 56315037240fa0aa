"""The generic long format: good files, idempotent re-import, overlapping ranges upsert."""

from __future__ import annotations

import pandas as pd
import pytest

from trafficcore.data.loaders import long
from trafficcore.errors import DataError

SITES = """site_id,name,lat,lon,description
S1,Main St / 1st Ave,-37.8136,144.9631,Four-way signalised junction by the market
S2,Main St / 2nd Ave,-37.8150,144.9660,
"""

DETECTORS = """detector_id,site_id,approach,description,lanes,measure,interval_s
S1-N,S1,N,Main St northbound stop line,2,volume,
S1-S,S1,S,Main St southbound stop line,2,,
S2-E,S2,E,,1,speed,900
"""


def _observations(start: str, slots: int, scale: float = 1.0) -> str:
    lines = ["detector_id,timestamp,value"]
    for k, ts in enumerate(pd.date_range(start, periods=slots, freq="15min")):
        for j, det in enumerate(("S1-N", "S1-S", "S2-E")):
            lines.append(f"{det},{ts:%Y-%m-%d %H:%M:%S},{(10 * j + k) * scale:g}")
    return "\n".join(lines) + "\n"


@pytest.fixture
def files(tmp_path):
    def write(name, text):
        p = tmp_path / name
        p.write_text(text, encoding="utf-8")
        return p

    return {
        "write": write,
        "obs": write("obs.csv", _observations("2024-03-04 07:00", 8)),
        "sites": write("sites.csv", SITES),
        "detectors": write("detectors.csv", DETECTORS),
    }


def test_good_files(files):
    t = long.load(files["obs"], files["sites"], files["detectors"], timezone="Australia/Melbourne")
    assert t.info.source == "long:obs.csv" and t.info.timezone == "Australia/Melbourne" and not t.info.synthetic
    assert t.info.interval_s == 900 and t.info.measure == "volume"
    assert len(t.sites) == 2 and len(t.detectors) == 3 and len(t.observations) == 24

    det = t.detectors.set_index("detector_id")
    assert det.loc["S1-S", "measure"] == "volume"  # blank measure means volume
    assert det.loc["S2-E", "measure"] == "speed"
    assert det["lanes"].tolist() == [2, 2, 1]
    assert det["interval_s"].tolist() == [900, 900, 900]  # two inferred, one declared
    sites = t.sites.set_index("site_id")
    assert sites.loc["S1", "lat"] == pytest.approx(-37.8136)
    assert pd.isna(sites.loc["S2", "description"])

    obs = t.observations.set_index(["detector_id", "ts"])["value"]
    assert obs[("S2-E", pd.Timestamp("2024-03-04 07:15"))] == 21.0
    assert t.observations["ts"].dtype == "datetime64[ns]"


def test_ingest_and_reimport_changes_nothing(files, store):
    args = (files["obs"], files["sites"], files["detectors"])
    counts = store.ingest("city", long.load(*args))
    assert (counts["sites"], counts["detectors"], counts["observations"]) == (2, 3, 24)
    before = store.datasets()
    values_before = store.observations("city")

    store.ingest("city", long.load(*args))
    assert store.datasets() == before
    pd.testing.assert_frame_equal(store.observations("city"), values_before)
    [info] = before
    assert (info["sites"], info["detectors"], info["observations"]) == (2, 3, 24)
    assert (info["start"], info["end"]) == ("2024-03-04T07:00:00", "2024-03-04T08:45:00")


def test_overlapping_range_upserts(files, store):
    store.ingest("city", long.load(files["obs"], files["sites"], files["detectors"]))
    # 08:00..09:45: the last four slots of the first file with new values, then four new slots
    second = files["write"]("obs2.csv", _observations("2024-03-04 08:00", 8, scale=3.0))
    store.ingest("city", long.load(second, files["sites"], files["detectors"]))

    [info] = store.datasets()
    assert info["observations"] == 3 * 12  # 07:00..09:45, no slot twice
    assert (info["start"], info["end"]) == ("2024-03-04T07:00:00", "2024-03-04T09:45:00")
    obs = store.observations("city").set_index(["detector_id", "ts"])["value"]
    assert obs[("S1-S", pd.Timestamp("2024-03-04 07:45"))] == 13.0  # only in the first file: kept
    assert obs[("S1-S", pd.Timestamp("2024-03-04 08:00"))] == 30.0  # in both: the second file's value
    assert obs[("S2-E", pd.Timestamp("2024-03-04 09:45"))] == 81.0  # only in the second file


def test_exact_duplicates_are_dropped(files):
    text = files["obs"].read_text() + "S1-N,2024-03-04 07:00:00,0\n"
    t = long.load(files["write"]("dup.csv", text), files["sites"], files["detectors"])
    assert len(t.observations) == 24


def test_interval_option_and_gaps(files):
    # S1-N reports only every other slot: with --interval 900 the gaps are gaps, not a 30-minute detector
    text = "detector_id,timestamp,value\nS1-N,2024-03-04 07:00,1\nS1-N,2024-03-04 07:30,2\nS1-N,2024-03-04 08:00,3\n"
    obs = files["write"]("gappy.csv", text)
    t = long.load(obs, files["sites"], files["detectors"], interval="15min")
    assert t.info.interval_s == 900
    assert t.detectors.set_index("detector_id").loc["S1-N", "interval_s"] == 900
    t = long.load(obs, files["sites"], files["detectors"])
    assert t.detectors.set_index("detector_id").loc["S1-N", "interval_s"] == 1800


def test_mostly_missing_series_takes_its_smallest_step(files):
    # steps 15, 30, 30 min: the mode (30) would put 07:15 off the grid, so the interval is 15 min
    text = "detector_id,timestamp,value\n" + "".join(
        f"S1-N,2024-03-04 {hm},1\n" for hm in ("07:00", "07:15", "07:45", "08:15")
    )
    t = long.load(files["write"]("sparse.csv", text), files["sites"], files["detectors"])
    assert t.detectors.set_index("detector_id").loc["S1-N", "interval_s"] == 900


def test_timestamp_off_the_declared_grid(files):
    text = "detector_id,timestamp,value\nS2-E,2024-03-04 07:00,1\nS2-E,2024-03-04 07:10,2\n"
    p = files["write"]("off.csv", text)
    with pytest.raises(DataError, match="not a multiple of its 900 s interval") as e:
        long.load(p, files["sites"], files["detectors"])
    assert (e.value.file, e.value.row, e.value.column) == (str(p), 3, "timestamp")


def test_zoned_timestamps_are_refused(files):
    text = "detector_id,timestamp,value\nS1-N,2024-03-04 07:00,1\nS1-N,2024-03-04T07:15:00+11:00,2\n"
    p = files["write"]("zoned.csv", text)
    with pytest.raises(DataError, match="time zone") as e:
        long.load(p, files["sites"], files["detectors"])
    assert (e.value.row, e.value.column) == (3, "timestamp")


def test_unknown_timezone(files):
    with pytest.raises(DataError, match="unknown time zone"):
        long.load(files["obs"], files["sites"], files["detectors"], timezone="Mars/Olympus")


def test_headers_are_case_insensitive_and_optional_columns_optional(files):
    det = files["write"]("det_min.csv", "Detector_ID,Site_ID\nS1-N,S1\nS1-S,S1\nS2-E,S2\n")
    t = long.load(files["obs"], files["sites"], det)
    assert set(t.detectors["measure"]) == {"volume"}
    assert t.detectors["lanes"].isna().all()
