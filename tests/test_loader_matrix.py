"""The wide-matrix loader: CSV with and without times, METR-LA style HDF5, locations and adjacency."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from trafficcore.data.loaders import matrix
from trafficcore.errors import DataError

CSV_WITH_TIMES = """timestamp,773869,767541,767542
2012-03-01 00:00:00,64.4,67.6,
2012-03-01 00:05:00,62.8,68.6,65.0
2012-03-01 00:10:00,,,
2012-03-01 00:20:00,63.0,0,70.5
"""


def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_csv_with_times_infers_interval_and_skips_empty_cells(tmp_path):
    p = _write(tmp_path, "speeds.csv", CSV_WITH_TIMES)
    t = matrix.load(p, measure="speed", timezone="America/Los_Angeles")

    assert t.info.interval_s == 300  # the 10-minute gap is a gap, not the interval
    assert t.info.source == "matrix:speeds.csv"
    assert t.info.timezone == "America/Los_Angeles" and t.info.measure == "speed" and not t.info.synthetic
    assert list(t.sites["site_id"]) == ["773869", "767541", "767542"]
    assert list(t.detectors["detector_id"]) == list(t.detectors["site_id"]) == ["773869", "767541", "767542"]
    assert set(t.detectors["measure"]) == {"speed"} and set(t.detectors["interval_s"]) == {300}
    assert t.sites["lat"].isna().all()
    # 12 cells, 4 empty; the 0 is a real reading unless zero_is_missing
    assert len(t.observations) == 8
    one = t.observations[t.observations["detector_id"] == "767542"].reset_index(drop=True)
    assert list(one["ts"]) == [pd.Timestamp("2012-03-01 00:05"), pd.Timestamp("2012-03-01 00:20")]
    assert list(one["value"]) == [65.0, 70.5]
    assert t.observations["ts"].dtype == "datetime64[ns]"

    assert len(matrix.load(p, zero_is_missing=True).observations) == 7


def test_csv_written_by_pandas_with_unnamed_index(tmp_path):
    idx = pd.date_range("2014-08-01 07:50", periods=6, freq="5min")
    df = pd.DataFrame({"158324": [5, 6, 4, 1, 3, 2], "158355": [1, np.nan, 2, 2, 0, 1]}, index=idx)
    p = tmp_path / "counts.csv"
    df.to_csv(p)  # header starts with an empty name, as pandas writes an unnamed index
    t = matrix.load(p)
    assert t.info.interval_s == 300
    assert len(t.observations) == 11
    assert t.observations["ts"].min() == idx[0] and t.observations["ts"].max() == idx[-1]


@pytest.mark.parametrize("interval", [300, "300", "5min"])
def test_csv_without_times_needs_start_and_interval(tmp_path, interval):
    p = _write(tmp_path, "bare.csv", "a,b\n1,2\n3,\n5,6\n")
    t = matrix.load(p, start="2020-01-01 06:00", interval=interval)
    assert t.info.interval_s == 300
    assert len(t.observations) == 5
    b = t.observations[t.observations["detector_id"] == "b"]
    assert list(b["ts"]) == [pd.Timestamp("2020-01-01 06:00"), pd.Timestamp("2020-01-01 06:10")]


def test_missing_start_is_a_data_error(tmp_path):
    p = _write(tmp_path, "bare.csv", "a,b\n1,2\n3,4\n")
    with pytest.raises(DataError, match="--start") as e:
        matrix.load(p, interval="5min")
    assert e.value.file == str(p)
    with pytest.raises(DataError, match="--interval"):
        matrix.load(p, start="2020-01-01")
    with pytest.raises(DataError, match="not a positive whole number of seconds"):
        matrix.load(p, start="2020-01-01", interval="soon")


def test_off_grid_time_names_its_row(tmp_path):
    text = "timestamp,a\n2020-01-01 00:00,1\n2020-01-01 00:05,1\n2020-01-01 00:10,1\n2020-01-01 00:12,1\n"
    p = _write(tmp_path, "odd.csv", text)
    with pytest.raises(DataError, match="not a multiple") as e:
        matrix.load(p)
    assert (e.value.row, e.value.column) == (5, "timestamp")


def test_repeated_time_names_its_row(tmp_path):
    p = _write(tmp_path, "rep.csv", "timestamp,a\n2020-01-01 00:00,1\n2020-01-01 00:05,1\n2020-01-01 00:05,2\n")
    with pytest.raises(DataError, match="not after") as e:
        matrix.load(p)
    assert (e.value.row, e.value.column) == (4, "timestamp")


def test_bad_cell_names_row_and_node_column(tmp_path):
    p = _write(tmp_path, "bad.csv", "timestamp,a,b\n2020-01-01 00:00,1,2\n2020-01-01 00:05,1,x\n")
    with pytest.raises(DataError, match="not a number") as e:
        matrix.load(p)
    assert (e.value.row, e.value.column) == (3, "b")
    p = _write(tmp_path, "neg.csv", "timestamp,a,b\n2020-01-01 00:00,1,2\n2020-01-01 00:05,-1,2\n")
    with pytest.raises(DataError, match="non-negative") as e:
        matrix.load(p)
    assert (e.value.row, e.value.column) == (3, "a")


def test_metr_la_style_hdf5(tmp_path):
    idx = pd.date_range("2012-03-01", periods=288, freq="5min")
    rng = np.random.default_rng(0)
    speeds = rng.uniform(20, 70, size=(288, 4))
    speeds[10:20, 1] = 0.0  # METR-LA writes 0 for "no reading"
    df = pd.DataFrame(speeds, index=idx, columns=["773869", "767541", "767542", "717447"])
    p = tmp_path / "metr-la.h5"
    df.to_hdf(p, key="df")

    t = matrix.load(p, measure="speed", zero_is_missing=True, timezone="America/Los_Angeles")
    assert t.info.interval_s == 300 and t.info.source == "matrix:metr-la.h5"
    assert len(t.sites) == 4
    assert len(t.observations) == 288 * 4 - 10
    got = t.observations.set_index(["detector_id", "ts"])["value"]
    assert got[("717447", idx[100])] == pytest.approx(speeds[100, 3])
    assert len(matrix.load(p, measure="speed").observations) == 288 * 4


def test_plain_h5py_dataset_without_times(tmp_path):
    import h5py

    p = tmp_path / "plain.h5"
    with h5py.File(p, "w") as f:
        f["speed"] = np.arange(12, dtype=float).reshape(4, 3) + 1
    with pytest.raises(DataError, match="--start"):
        matrix.load(p)
    t = matrix.load(p, start="2021-05-01 00:00", interval="15min")
    assert list(t.sites["site_id"]) == ["0", "1", "2"]
    assert len(t.observations) == 12 and t.info.interval_s == 900
    assert t.observations["ts"].max() == pd.Timestamp("2021-05-01 00:45")


def test_not_an_hdf5_file(tmp_path):
    p = _write(tmp_path, "fake.h5", "hello")
    with pytest.raises(DataError, match="not one"):
        matrix.load(p)


def test_locations_and_adjacency_ingest(tmp_path, store):
    p = _write(tmp_path, "speeds.csv", CSV_WITH_TIMES)
    # METR-LA's graph_sensor_locations.csv: index,sensor_id,latitude,longitude
    loc = _write(tmp_path, "loc.csv", "index,sensor_id,latitude,longitude\n0,773869,34.15497,-118.31829\n"
                 "1,767541,34.11621,-118.23799\n")
    adj = _write(tmp_path, "adj.csv", "from,to,cost\n773869,767541,1200.5\n767541,767542,800\n773869,773869,0\n")
    t = matrix.load(p, locations=loc, adjacency=adj, measure="speed")

    sites = t.sites.set_index("site_id")
    assert sites.loc["773869", "lat"] == pytest.approx(34.15497)
    assert sites.loc["767541", "lon"] == pytest.approx(-118.23799)
    assert np.isnan(sites.loc["767542", "lat"])  # a node without a location keeps null coordinates
    assert len(t.adjacency) == 3 and set(t.adjacency["kind"]) == {"graph"}

    counts = store.ingest("la", t)
    assert counts["sites"] == 3 and counts["detectors"] == 3 and counts["observations"] == 8
    assert counts["adjacency"] == 3
    [info] = store.datasets()
    assert (info["name"], info["sites"], info["detectors"], info["observations"]) == ("la", 3, 3, 8)
    assert info["interval_s"] == 300 and info["start"] == "2012-03-01T00:00:00"
    edges = store.adjacency("la").set_index(["src", "dst"])["weight"]
    assert edges[("773869", "767541")] == pytest.approx(1200.5)
    assert store.sites("la").set_index("site_id").loc["767541", "lat"] == pytest.approx(34.11621)


def test_src_dst_weight_names_and_headerless_locations(tmp_path):
    p = _write(tmp_path, "speeds.csv", CSV_WITH_TIMES)
    loc = _write(tmp_path, "loc.csv", "773869,37.364085,-121.901149\n767541,37.253303,-121.94544\n")  # PEMS-BAY
    adj = _write(tmp_path, "adj.csv", "src,dst,weight\n773869,767541,0.5\n")
    t = matrix.load(p, locations=loc, adjacency=adj)
    assert t.sites.set_index("site_id").loc["767541", "lat"] == pytest.approx(37.253303)
    assert t.adjacency.iloc[0][["src", "dst", "weight"]].tolist() == ["773869", "767541", 0.5]


def test_unknown_nodes_in_locations_and_adjacency(tmp_path):
    p = _write(tmp_path, "speeds.csv", CSV_WITH_TIMES)
    loc = _write(tmp_path, "loc.csv", "id,lat,lon\n773869,34.1,-118.3\n999999,34.2,-118.2\n")
    with pytest.raises(DataError, match="unknown node") as e:
        matrix.load(p, locations=loc)
    assert (e.value.file, e.value.row, e.value.column) == (str(loc), 3, "id")

    adj = _write(tmp_path, "adj.csv", "from,to,cost\n773869,767541,1\n767542,42,1\n")
    with pytest.raises(DataError, match="unknown node") as e:
        matrix.load(p, adjacency=adj)
    assert (e.value.file, e.value.row, e.value.column) == (str(adj), 3, "to")

    far = _write(tmp_path, "far.csv", "id,lat,lon\n773869,134.1,-118.3\n")
    with pytest.raises(DataError, match="outside") as e:
        matrix.load(p, locations=far)
    assert (e.value.row, e.value.column) == (2, "lat")


@pytest.mark.realdata
def test_aarhus_count_matrix_loads(shared_data):
    p = shared_data / "aarhus_citypulse_traffic_2014" / "aarhus_vehicleCount_5min.csv.gz"
    if not p.exists():
        pytest.skip(f"real data not available: {p} is absent")
    t = matrix.load(p)
    assert t.info.interval_s == 300
    assert len(t.sites) == 449
    assert t.observations["ts"].min() == pd.Timestamp("2014-08-01 07:50")
    assert t.observations["ts"].max() == pd.Timestamp("2014-09-30 23:55")
    # the README reports 9.05% of the 17,474 x 449 cells empty
    assert len(t.observations) / (17474 * 449) == pytest.approx(1 - 0.0905, abs=0.001)
