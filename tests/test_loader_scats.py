"""SCATS loader: the real Boroondara workbook end to end, its quirks, and bad input on small files.

The real workbook is read once per module (about 3 s); small bad files are written to tmp_path.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import shared_path

from trafficcore.data.loaders import scats
from trafficcore.data.panel import haversine_km
from trafficcore.errors import DataError

FOLDER = "scats_boroondara_oct2006"
WARRIGAL_N = "WARRIGAL_RD N of HIGH STREET_RD"


@pytest.fixture(scope="module")
def xlsx_tables():
    """The workbook as distributed, named from the VicRoads .xls site listing."""
    folder = shared_path(FOLDER)
    return scats.load(folder / "Scats_Data_October_2006.xlsx", folder / "SCATSSiteListingSpreadsheet_VicRoads.xls")


@pytest.fixture(scope="module")
def csv_tables():
    """The CSV export, without a listing (sites named from their roads)."""
    return scats.load(shared_path(FOLDER, "scats_oct2006_data.csv"))


# --------------------------------------------------------------------------- the real workbook
@pytest.mark.realdata
def test_workbook_shape(xlsx_tables):
    t = xlsx_tables
    assert len(t.sites) == 40
    assert len(t.detectors) == 140
    # every approach-day's 96 intervals, less the 437 zeros of the hour the clocks skipped on 2006-10-29
    assert len(t.observations) == 4192 * 96 - 437 == 401_995
    days = t.observations.assign(day=t.observations["ts"].dt.normalize())[["detector_id", "day"]].drop_duplicates()
    assert len(days) == 4192
    assert t.observations["ts"].min() == pd.Timestamp("2006-10-01 00:00")
    assert t.observations["ts"].max() == pd.Timestamp("2006-10-31 23:45")
    assert t.info.synthetic is False
    assert t.info.timezone == "Australia/Melbourne" and t.info.interval_s == 900 and t.info.measure == "volume"
    assert set(t.detectors["measure"]) == {"volume"} and set(t.detectors["interval_s"]) == {900}
    assert t.detectors["lanes"].isna().all()
    assert t.detectors["detector_id"].is_unique and t.sites["site_id"].is_unique
    assert set(t.detectors["site_id"]) == set(t.sites["site_id"])


@pytest.mark.realdata
def test_csv_export_gives_identical_observations(xlsx_tables, csv_tables):
    pd.testing.assert_frame_equal(xlsx_tables.observations, csv_tables.observations)
    pd.testing.assert_frame_equal(xlsx_tables.detectors, csv_tables.detectors)
    # Workbook says "0970", the export 970: both are site "970".
    assert "970" in set(csv_tables.sites["site_id"]) and "970" in set(xlsx_tables.sites["site_id"])


@pytest.mark.realdata
def test_site_names_from_listing_or_roads(xlsx_tables, csv_tables, shared_data):
    import xlrd.book

    names = xlsx_tables.sites.set_index("site_id")["name"]
    assert names["970"] == "WARRIGAL/HIGH ST RD"
    # The workaround for the listing's bad defined name is undone after reading.
    assert xlrd.book.evaluate_name_formula.__module__ == "xlrd.formula"
    assert names["4266"] == "BURWOOD/AUBURN"
    # The CSV copy of the listing names every site the same way as the .xls.
    from_csv = scats.load(
        shared_data / FOLDER / "scats_oct2006_data.csv", shared_data / FOLDER / "scats_site_listing.csv"
    ).sites.set_index("site_id")["name"]
    pd.testing.assert_series_equal(names, from_csv)
    # Without a listing, the name comes from the roads that meet there.
    assert csv_tables.sites.set_index("site_id").loc["970", "name"] == "WARRIGAL RD / HIGH STREET RD"


@pytest.mark.realdata
def test_zero_coordinates_borrow_the_site_centroid(xlsx_tables):
    det = xlsx_tables.detectors
    auburn_n = det[(det["site_id"] == "4266") & (det["approach"] == "N")].iloc[0]
    assert auburn_n["description"] == "AUBURN_RD N of BURWOOD_RD"
    assert auburn_n["lat"] == pytest.approx(-37.8253, abs=2e-4)
    assert auburn_n["lon"] == pytest.approx(145.0435, abs=2e-4)
    assert det["lat"].between(-37.87, -37.78).all() and det["lon"].between(145.0, 145.1).all()
    # Detectors keep their own points; the site is their centroid.
    site = xlsx_tables.sites.set_index("site_id").loc["970"]
    mine = det[det["site_id"] == "970"]
    assert mine["lat"].nunique() == 4
    assert site["lat"] == pytest.approx(mine["lat"].mean()) and site["lon"] == pytest.approx(mine["lon"].mean())


@pytest.mark.realdata
def test_site_4335_has_two_detectors_on_one_location(xlsx_tables):
    det = xlsx_tables.detectors
    shared = det[(det["site_id"] == "4335") & (det["description"] == "HIGH_ST NE of CHARLES_ST")]
    assert sorted(shared["detector_id"]) == ["4335:15722", "4335:5485"]
    obs = xlsx_tables.observations
    a = obs[obs["detector_id"] == "4335:15722"].set_index("ts")["value"]
    b = obs[obs["detector_id"] == "4335:5485"].set_index("ts")["value"]
    assert len(a) > 0 and len(b) > 0 and not a.equals(b)


@pytest.mark.realdata
def test_detectors_without_an_internal_id_use_their_location(xlsx_tables):
    ids = set(xlsx_tables.detectors["detector_id"])
    assert {"2846:WILLS_ST_NW_OF_HIGH_ST", "4051:SEVERN_ST_S_OF_DONCASTER_RD", "4821:WALMER_ST_N_OF_VICTORIA_ST"} <= ids
    assert not any(i.endswith(":-1") for i in ids)


@pytest.mark.realdata
@pytest.mark.realdata
def test_the_hour_daylight_saving_skipped_is_missing_not_zero(xlsx_tables):
    """2006-10-29: the clocks skipped 02:00-03:00; its intervals read 0 on most rows (labelled 01:45-02:30)."""
    obs = xlsx_tables.observations
    day = obs[obs["ts"].dt.normalize() == pd.Timestamp("2006-10-29")]
    per_slot = day.groupby("ts")["value"].agg(["size", lambda v: int((v == 0).sum())])
    per_slot.columns = ["n", "zeros"]
    gap = pd.date_range("2006-10-29 01:45", "2006-10-29 02:30", freq="15min")
    # the rows that kept counting through the change keep their readings; the zeros are gone
    assert per_slot.loc[gap, "n"].tolist() == [28, 27, 28, 28]
    assert per_slot.loc[gap, "zeros"].sum() == 0
    assert (per_slot.drop(gap)["n"] == 137).all()  # every other interval of the day has all its approaches
    assert obs[obs["ts"] == pd.Timestamp("2006-10-29 02:45")]["value"].eq(0).sum() == 3  # real zeros stay
    # no other day loses anything: 96 intervals per approach-day
    other = obs[obs["ts"].dt.normalize() != pd.Timestamp("2006-10-29")]
    assert (other.groupby(["detector_id", other["ts"].dt.normalize()]).size() == 96).all()


def test_clock_change_gap_only_on_spring_forward_days():
    days = np.array(["2006-10-28", "2006-10-29", "2006-10-29", "2006-10-30"], dtype="datetime64[ns]")
    assert [str(t)[11:16] for t in scats.clock_change_gap(days)] == ["01:45", "02:00", "02:15", "02:30"]
    # Melbourne's autumn change (clocks back, 2 April 2006) repeats an hour and skips none
    assert len(scats.clock_change_gap(np.array(["2006-04-02"], dtype="datetime64[ns]"))) == 0
    assert len(scats.clock_change_gap(days, "UTC")) == 0
    eu = scats.clock_change_gap(np.array(["2006-03-26"], dtype="datetime64[ns]"), "Europe/Copenhagen")
    assert [str(t)[11:16] for t in eu] == ["01:45", "02:00", "02:15", "02:30"]


def test_zeros_on_the_skipped_hour_are_dropped_real_counts_kept(tmp_path):
    zeros = _record(date="2006-10-29", base=5)
    zeros[6 + 7:6 + 11] = ["0"] * 4  # V07..V10 read 0, as on most rows of the workbook
    kept = _record(location="WARRIGAL_RD S of HIGH STREET_RD", hf="10503", date="2006-10-29", base=5)
    t = scats.load(_write(tmp_path / "dst.csv", [zeros, kept, _record(date="2006-10-28")]))
    n = t.observations.groupby("detector_id").size()
    assert n["970:249"] == 2 * 96 - 4 and n["970:10503"] == 96
    obs = t.observations.set_index(["detector_id", "ts"])["value"]
    assert ("970:249", pd.Timestamp("2006-10-29 02:00")) not in obs.index
    assert obs[("970:10503", pd.Timestamp("2006-10-29 02:00"))] == 5 + 8
    assert obs[("970:249", pd.Timestamp("2006-10-28 02:00"))] == 8  # the day before: untouched


def test_first_and_last_interval_of_970(xlsx_tables):
    det = xlsx_tables.detectors
    row = det[(det["site_id"] == "970") & (det["description"] == WARRIGAL_N)].iloc[0]
    assert row["detector_id"] == "970:249"
    assert (row["approach"], row["road"]) == ("N", "WARRIGAL RD")
    obs = xlsx_tables.observations
    day = obs[(obs["detector_id"] == "970:249") & (obs["ts"].dt.normalize() == pd.Timestamp("2006-10-01"))]
    day = day.set_index("ts")["value"]
    assert len(day) == 96
    assert day.index[0] == pd.Timestamp("2006-10-01 00:00") and day.iloc[0] == 86  # V00
    assert day.index[-1] == pd.Timestamp("2006-10-01 23:45") and day.iloc[-1] == 34  # V95
    assert day[pd.Timestamp("2006-10-01 01:15")] == 44  # V05


@pytest.mark.realdata
def test_adjacency_follows_shared_roads(xlsx_tables):
    adj = xlsx_tables.adjacency
    assert set(adj["kind"]) == {"road"}
    pairs = set(zip(adj["src"], adj["dst"], strict=True))
    assert all((b, a) in pairs for a, b in pairs)  # both directions
    # Warrigal Rd as a chain of consecutive sites, not a clique.
    for a, b in [("970", "3685"), ("3685", "2000"), ("2000", "3682"), ("3682", "3126")]:
        assert (a, b) in pairs
    assert ("970", "3126") not in pairs
    # High St Glen Iris (2846) is not a neighbour of High St Kew.
    assert not any("2846" in p for p in pairs)
    # weight = distance between site centroids in metres.
    pos = xlsx_tables.sites.set_index("site_id")
    e = adj[(adj["src"] == "970") & (adj["dst"] == "3685")].iloc[0]
    expect = haversine_km(pos.loc["970", "lat"], pos.loc["970", "lon"], pos.loc["3685", "lat"], pos.loc["3685", "lon"])
    assert e["weight"] == pytest.approx(float(expect) * 1000)
    assert 1000 < e["weight"] < 2000


@pytest.mark.realdata
def test_reimporting_the_workbook_changes_nothing(xlsx_tables, store):
    first = store.ingest("boroondara", xlsx_tables)
    again = store.ingest("boroondara", xlsx_tables)
    assert first == again
    summary = store.datasets()[0]
    assert (summary["sites"], summary["detectors"], summary["observations"]) == (40, 140, 401_995)
    assert len(store.adjacency("boroondara")) == len(xlsx_tables.adjacency)


# --------------------------------------------------------------------------- Location parsing
@pytest.mark.parametrize(
    "location, expected",
    [
        ("WARRIGAL_RD N of HIGH STREET_RD", ("WARRIGAL RD", "N", "HIGH STREET RD")),
        ("CHURCH_ST sw of BARKERS_RD", ("CHURCH ST", "SW", "BARKERS RD")),
        ("TRAFALGAR_RD NE OF CAMBERWELL_RD", ("TRAFALGAR RD", "NE", "CAMBERWELL RD")),
        ("wills_st Nw Of high_st", ("WILLS ST", "NW", "HIGH ST")),
        ("Studley Park_rd  W of PRINCESS_ST", ("STUDLEY PARK RD", "W", "PRINCESS ST")),
        ("EARL_ST SE of PRINCESS_ST", ("EARL ST", "SE", "PRINCESS ST")),
        ("BALWYN_RD S OF BELMORE_RD", ("BALWYN RD", "S", "BELMORE RD")),
        ("BURWOOD_HWY E of WARRIGAL_RD", ("BURWOOD HWY", "E", "WARRIGAL RD")),
        ("S.E.ARTERIAL N OF HIGH_ST", ("S.E.ARTERIAL", "N", "HIGH ST")),
    ],
)
def test_parse_location(location, expected):
    assert scats.parse_location(location) == expected


@pytest.mark.parametrize(
    "location", ["WARRIGAL_RD", "N of HIGH_ST", "WARRIGAL_RD NNE of HIGH_ST", "WARRIGAL_RD near HIGH_ST", ""]
)
def test_parse_location_rejects(location):
    assert scats.parse_location(location) is None


# --------------------------------------------------------------------------- small files
HEADER = list(scats.ID_COLUMNS[:4]) + ["HF VicRoads Internal", "Date"] + scats.COUNT_COLUMNS


def _record(site="970", location=WARRIGAL_N, hf="249", date="2006-10-01", lat="-37.86703", lon="145.09159", base=0):
    return [site, location, lat, lon, hf, date] + [str(base + k) for k in range(96)]


def _write(path, records, header=HEADER):
    lines = [",".join(header)] + [",".join(r) for r in records]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _good(tmp_path, name="good.csv"):
    return _write(
        tmp_path / name,
        [
            _record(),
            _record(date="2006-10-02", base=5),
            _record(location="WARRIGAL_RD S of HIGH STREET_RD", hf="10503", lat="-37.8676", lon="145.09146"),
            _record(site="3685", location="WARRIGAL_RD N of HIGHBURY_RD", hf="77", lat="-37.8549", lon="145.0939"),
        ],
    )


def test_small_file_builds_tables(tmp_path):
    t = scats.load(_good(tmp_path))
    assert list(t.sites["site_id"]) == ["970", "3685"]
    assert len(t.detectors) == 3 and len(t.observations) == 4 * 96
    obs = t.observations.set_index(["detector_id", "ts"])["value"]
    assert obs[("970:249", pd.Timestamp("2006-10-02 00:00"))] == 5
    assert obs[("970:249", pd.Timestamp("2006-10-02 23:45"))] == 5 + 95
    assert set(zip(t.adjacency["src"], t.adjacency["dst"], strict=True)) == {("970", "3685"), ("3685", "970")}


def test_dmy_dates_and_leading_zeros_match_iso(tmp_path):
    iso = scats.load(_good(tmp_path))
    dmy = _write(
        tmp_path / "dmy.csv",
        [
            _record(site="0970", date="1/10/2006"),
            _record(site="0970", date="02/10/2006", base=5),
            _record(site="0970", location="WARRIGAL_RD S of HIGH STREET_RD", hf="10503", date="1/10/2006",
                    lat="-37.8676", lon="145.09146"),
            _record(site="03685", location="WARRIGAL_RD N of HIGHBURY_RD", hf="77", date="2006-10-01 00:15",
                    lat="-37.8549", lon="145.0939"),
        ],
    )
    pd.testing.assert_frame_equal(scats.load(dmy).observations, iso.observations)


def test_exact_duplicate_days_are_dropped(tmp_path):
    path = _write(tmp_path / "dup.csv", [_record(), _record(), _record(date="2006-10-02")])
    assert len(scats.load(path).observations) == 2 * 96


def _bad(tmp_path, records, header=HEADER):
    path = _write(tmp_path / "bad.csv", records, header)
    with pytest.raises(DataError) as e:
        scats.load(path)
    assert e.value.file == str(path)
    return e.value


def test_letter_in_a_count_cell(tmp_path):
    bad = _record(date="2006-10-02")
    bad[HEADER.index("V05")] = "1O"
    e = _bad(tmp_path, [_record(), bad])
    assert (e.row, e.column) == (3, "V05")
    assert "1O" in e.message


def test_rows_count_blank_lines_as_the_file_shows_them(tmp_path):
    bad = _record(date="2006-10-02")
    bad[HEADER.index("V00")] = "x"
    path = _write(tmp_path / "blank.csv", [_record(), [], bad])
    with pytest.raises(DataError) as e:
        scats.load(path)
    assert (e.value.row, e.value.column) == (4, "V00")


def test_negative_count(tmp_path):
    bad = _record()
    bad[HEADER.index("V17")] = "-3"
    e = _bad(tmp_path, [_record(date="2006-10-02"), _record(date="2006-10-03"), bad])
    assert (e.row, e.column) == (4, "V17")
    assert "negative" in e.message


def test_fractional_count(tmp_path):
    bad = _record()
    bad[HEADER.index("V00")] = "2.5"
    e = _bad(tmp_path, [bad])
    assert (e.row, e.column) == (2, "V00")


@pytest.mark.parametrize("date", ["2006-13-01", "31/02/2006", "yesterday", "", "2006-10-01 garbage"])
def test_bad_date(tmp_path, date):
    e = _bad(tmp_path, [_record(), _record(date=date)])
    assert (e.row, e.column) == (3, "Date")


def test_missing_column(tmp_path):
    header = [h for h in HEADER if h != "V95"]
    e = _bad(tmp_path, [_record()[:-1]], header=header)
    assert (e.row, e.column) == (1, "V95")


def test_unreadable_location(tmp_path):
    e = _bad(tmp_path, [_record(), _record(location="WARRIGAL RD AT HIGH ST", hf="5")])
    assert (e.row, e.column) == (3, "Location")


def test_bad_site_number(tmp_path):
    e = _bad(tmp_path, [_record(), _record(site="97O")])
    assert (e.row, e.column) == (3, "SCATS Number")


def test_conflicting_duplicate_day(tmp_path):
    other = _record()
    other[HEADER.index("V42")] = "999"
    e = _bad(tmp_path, [_record(), _record(date="2006-10-02"), other])
    assert (e.row, e.column) == (4, "V42")
    assert "row 2" in e.message


def test_one_internal_id_with_two_locations(tmp_path):
    e = _bad(tmp_path, [_record(), _record(date="2006-10-02", location="WARRIGAL_RD S of HIGH STREET_RD")])
    assert (e.row, e.column) == (3, "Location")


def test_empty_non_utf8_and_oversized_files(tmp_path, monkeypatch):
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match="empty"):
        scats.load(empty)
    header_only = _write(tmp_path / "header.csv", [])
    with pytest.raises(DataError, match="no records"):
        scats.load(header_only)
    latin = tmp_path / "latin.csv"
    latin.write_bytes(_good(tmp_path).read_bytes().replace(b"WARRIGAL_RD N", "WARRIGAL_RD\xe9 N".encode("latin-1"), 1))
    with pytest.raises(DataError, match="UTF-8") as e:
        scats.load(latin)
    assert e.value.row == 2
    monkeypatch.setenv("TRAFFICCORE_MAX_FILE_MB", "0.001")
    with pytest.raises(DataError, match="limit"):
        scats.load(_good(tmp_path))


def test_spreadsheet_errors_name_the_sheet_row(tmp_path):
    """In a workbook the header is on sheet row 2, so the first record is row 3."""
    import openpyxl

    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "Data"
    ws.append([None] * 9 + ["Start Time"])
    ws.append(HEADER)
    good = [int(v) if v.isdigit() else v for v in _record()]
    good[2:4] = [-37.86703, 145.09159]
    good[HEADER.index("Date")] = pd.Timestamp("2006-10-01 00:15").to_pydatetime()
    ws.append(good)
    bad = list(good)
    bad[HEADER.index("Date")] = pd.Timestamp("2006-10-02 00:15").to_pydatetime()
    bad[HEADER.index("V63")] = "x"
    ws.append(bad)
    path = tmp_path / "bad.xlsx"
    wb.save(path)
    with pytest.raises(DataError) as e:
        scats.load(path)
    assert (e.value.row, e.value.column) == (4, "V63")
    # Once fixed, the same workbook loads, with 00:15 dates cut to the day.
    ws.cell(row=4, column=HEADER.index("V63") + 1, value=63)
    wb.save(path)
    t = scats.load(path)
    assert t.observations["ts"].min() == pd.Timestamp("2006-10-01 00:00")
    assert len(t.observations) == 2 * 96 and t.sites["site_id"].tolist() == ["970"]


def test_listing_must_have_its_columns(tmp_path):
    listing = tmp_path / "listing.csv"
    listing.write_text("Site,Description\n970,WARRIGAL/HIGH ST RD\n", encoding="utf-8")
    with pytest.raises(DataError) as e:
        scats.load(_good(tmp_path), listing)
    assert e.value.column == "Site Number"
    listing.write_text("Site Number,Location Description\n0970,WARRIGAL/HIGH ST RD\n", encoding="utf-8")
    names = scats.load(_good(tmp_path), listing).sites.set_index("site_id")["name"]
    assert names["970"] == "WARRIGAL/HIGH ST RD"
    assert names["3685"] == "WARRIGAL RD / HIGHBURY RD"  # not in this listing: named from roads


# --------------------------------------------------------------------------- the store
def _snapshot(store):
    tables = ("datasets", "sites", "detectors", "observations", "adjacency")
    return {t: store.query(f"SELECT * FROM {t} ORDER BY ALL") for t in tables}


def test_failed_import_leaves_the_store_unchanged(tmp_path, store):
    good = scats.load(_good(tmp_path))
    store.ingest("scats", good)
    before = _snapshot(store)
    assert len(before["observations"]) == 4 * 96

    bad = _record(site="4000", location="BURKE_RD N of HIGH_ST", hf="1")
    bad[HEADER.index("V95")] = "n/a"
    path = _write(tmp_path / "more.csv", [_record(site="4000", location="BURKE_RD S of HIGH_ST", hf="2"), bad])
    with pytest.raises(DataError):
        store.ingest("scats", scats.load(path))  # load raises before ingest runs

    # Tables that slip past a loader are still refused by the store, in full.
    other = _write(tmp_path / "other.csv", [_record(site="4000", location="BURKE_RD S of HIGH_ST", hf="2")])
    broken = scats.load(other)
    broken.observations.loc[len(broken.observations) - 1, "detector_id"] = "nowhere:1"
    with pytest.raises(DataError):
        store.ingest("scats", broken)

    after = _snapshot(store)
    for table in before:
        pd.testing.assert_frame_equal(before[table], after[table])


def test_reimporting_a_small_file_changes_nothing(tmp_path, store):
    t = scats.load(_good(tmp_path))
    store.ingest("scats", t)
    first = _snapshot(store)
    store.ingest("scats", scats.load(_good(tmp_path)))
    second = _snapshot(store)
    for table in first:
        pd.testing.assert_frame_equal(first[table], second[table])
    assert np.array_equal(store.observations("scats")["value"].to_numpy(), t.observations["value"].to_numpy())
