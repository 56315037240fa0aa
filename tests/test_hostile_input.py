"""Hostile input (issue 15): far-dated and implausible readings, bad dataset names, files that are no store.

Each case must end in one clear line (exit 2 in the CLI, a DataError naming file, row and field in
code) and leave the store as it was; a store that already holds a stray far-dated reading must still
load into a panel of ordinary size.
"""

from __future__ import annotations

import json
import os
import sqlite3
import tracemalloc

import numpy as np
import pandas as pd
import pytest
from conftest import shared_path
from helpers import tiny_tables
from typer.testing import CliRunner

from trafficcore.cli import app
from trafficcore.data import validate
from trafficcore.data.loaders import long
from trafficcore.data.panel import load_panel
from trafficcore.data.store import Store
from trafficcore.errors import DataError
from trafficcore.ui.uploads import check_dataset_name as upload_name_problem

runner = CliRunner()


def _counts(store: Store) -> dict:
    return {t: int(store.query(f"SELECT count(*) AS n FROM {t}")["n"][0]) for t in ("datasets", "observations")}


# ------------------------------------------------------------------------------- a far-dated row already stored
def _tiny_with_stray(tmp_path, when: str) -> Store:
    store = Store(tmp_path / "stray.duckdb")
    store.ingest("tiny", tiny_tables(days=15))
    with store.connect() as con:  # written behind the loaders' back, as an older version could
        con.execute("INSERT INTO observations VALUES ('tiny', 'A:N', ?, 5.0)", [pd.Timestamp(when).to_pydatetime()])
    return store


def test_a_stray_1900_reading_does_not_make_the_panel_span_a_century(tmp_path):
    good = load_panel(_fresh(tmp_path), "tiny")
    store = _tiny_with_stray(tmp_path, "1900-01-01")
    tracemalloc.start()
    try:
        panel = load_panel(store, "tiny")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20  # the old code allocated 125 years x 3 detectors of float32: 52 MB here
    assert panel.values.shape == good.values.shape == (96 * 15, 3)
    assert panel.times[0] == pd.Timestamp("2025-01-01") and panel.times[-1] == good.times[-1]
    np.testing.assert_array_equal(panel.values, good.values)
    assert "1900-01-01" in panel.note and "left out" in panel.note


def _fresh(tmp_path) -> Store:
    store = Store(tmp_path / "fresh.duckdb")
    store.ingest("tiny", tiny_tables(days=15))
    return store


def test_the_cell_cap_keeps_the_newest_intervals(tmp_path, monkeypatch):
    store = _fresh(tmp_path)
    full = load_panel(store, "tiny")
    monkeypatch.setenv("TRAFFICCORE_MAX_PANEL_CELLS", str(3 * 96))  # one day of three detectors
    day = load_panel(store, "tiny")
    assert day.values.shape == (96, 3)
    assert day.times[-1] == full.times[-1] and day.times[0] == full.times[-96]
    np.testing.assert_array_equal(day.values, full.values[-96:])
    assert "cell limit" in day.note


# ------------------------------------------------------------------------------- import: dates and values
def _scats_file(tmp_path, column: int, value: str):
    """The first records of the real SCATS file with one cell of its fifth line (row 5) replaced."""
    lines = shared_path("scats_boroondara_oct2006", "scats_oct2006_data.csv").read_text().splitlines()[:30]
    good = tmp_path / "good.csv"
    good.write_text("\n".join(lines) + "\n")
    cells = lines[4].split(",")
    cells[column] = value
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join([*lines[:4], ",".join(cells), *lines[5:]]) + "\n")
    return good, bad


@pytest.mark.parametrize("column,value,field,why", [
    (9, "1900-01-01", "Date", "out of range"),
    (9, "2250-01-01", "Date", "out of range"),
    (9, "2300-01-01", "Date", "out of range"),  # was a traceback (pandas cannot hold it in nanoseconds)
    (9, "1990-10-04", "Date", "more than 366 days"),
    (14, "1e12", "V04", "implausible count"),
    (14, "1.7e308", "V04", "implausible count"),  # overflowed the float32 panel
])
def test_scats_far_dates_and_huge_counts_exit_2_and_change_nothing(tmp_path, column, value, field, why):
    good, bad = _scats_file(tmp_path, column, value)
    db = str(tmp_path / "s.duckdb")
    assert runner.invoke(app, ["import", "scats", str(good), "--dataset", "scats", "--db", db]).exit_code == 0
    before = runner.invoke(app, ["datasets", "--json", "--db", db]).output
    res = runner.invoke(app, ["import", "scats", str(bad), "--dataset", "scats", "--db", db])
    assert res.exit_code == 2, res.output
    assert "bad.csv, row 5" in res.output and f"'{field}'" in res.output and why in res.output
    assert len(res.output.strip().splitlines()) == 1
    assert runner.invoke(app, ["datasets", "--json", "--db", db]).output == before


LONG_SITES = "site_id,name,lat,lon\nS1,a,-37.81,144.96\n"
LONG_DETECTORS = "detector_id,site_id,measure\nA1,S1,volume\nB1,S1,speed\n"


@pytest.mark.parametrize("record,why", [
    ("A1,2024-03-04 08:30,1e12", "implausible count in 900 s"),
    ("B1,2024-03-04 08:30,1000", "implausible speed"),
    ("A1,1900-01-01 00:00,1", "out of range"),
    ("A1,2023-01-01 00:00,1", "more than 366 days"),
])
def test_long_refuses_implausible_readings_naming_the_row(tmp_path, record, why):
    obs = tmp_path / "obs.csv"
    obs.write_text("detector_id,timestamp,value\n" + "".join(
        f"{d},2024-03-04 08:{m:02d},{v}\n" for d, v in (("A1", 10), ("B1", 50)) for m in (0, 15)) + record + "\n")
    (tmp_path / "s.csv").write_text(LONG_SITES)
    (tmp_path / "d.csv").write_text(LONG_DETECTORS)
    with pytest.raises(DataError, match=why) as e:
        long.load(obs, tmp_path / "s.csv", tmp_path / "d.csv")
    assert (e.value.file, e.value.row) == (str(obs), 6)


def test_the_store_refuses_readings_far_from_those_it_holds(tmp_path):
    """Every import path (the matrix loader too) meets the store's backstop: a year-2027 file against 2025 data."""
    store = _fresh(tmp_path)
    before = _counts(store)
    with pytest.raises(DataError, match="more than 366 days outside the stored readings") as e:
        store.ingest("tiny", tiny_tables(days=1, start="2027-06-01"))
    assert e.value.file == "test" and e.value.column == "ts" and "'A:N'" in e.value.message
    with pytest.raises(DataError, match="implausible count"):
        store.ingest("tiny", tiny_tables(days=1, start="2025-01-16", value_offset=1e12))
    assert _counts(store) == before


# ------------------------------------------------------------------------------- dataset names
BAD_NAMES = ["../../x", "a b", "", "é", "x'; drop table", "a" * 41, "a" * 10_000, "-x", "_x"]


@pytest.mark.parametrize("name", BAD_NAMES, ids=range(len(BAD_NAMES)))
def test_bad_dataset_names_exit_2_in_every_command(tmp_path, name):
    db = str(tmp_path / "n.duckdb")
    for command in ("demo", "train", "forecast", "benchmark", "ingest", "replay"):
        res = runner.invoke(app, [command, "--dataset", name, "--db", db])
        assert res.exit_code == 2, (command, res.output)
        assert res.output.startswith("error: --dataset: dataset name") and "not allowed" in res.output
    assert not os.path.exists(db) or Store(db).dataset_names() == []


@pytest.mark.parametrize("name", ["demo", "demo-live", "scats", "aarhus", "city_2", "A" * 40, "9"])
def test_one_name_rule_for_cli_api_and_dashboard(name):
    assert validate.check_dataset_name(name) == name
    assert upload_name_problem(name, []) is None
    from trafficcore.api import schemas
    assert schemas.DATASET_PATTERN == validate.DATASET_NAME_PATTERN and schemas.DATASET_MAX == 40
    for bad in BAD_NAMES:
        assert upload_name_problem(bad, []) is not None


# ------------------------------------------------------------------------------- files that are no store
def _not_a_store(tmp_path, kind: str):
    p = tmp_path / f"{kind}.duckdb"
    if kind == "text":
        p.write_text("hello\n" * 100)
    elif kind == "sqlite":
        con = sqlite3.connect(p)
        con.execute("CREATE TABLE t (x)")
        con.commit()
        con.close()
    elif kind == "empty":
        p.write_bytes(b"")
    elif kind == "folder":
        p.mkdir()
    elif kind == "truncated":
        Store(tmp_path / "whole.duckdb").ingest("tiny", tiny_tables(days=15))
        whole = (tmp_path / "whole.duckdb").read_bytes()
        p.write_bytes(whole[: len(whole) // 3])
    return p


@pytest.mark.parametrize("kind,why", [
    ("text", "not a DuckDB store"), ("sqlite", "SQLite database"), ("empty", "empty file"),
    ("folder", "is a folder"), ("truncated", "truncated or damaged"),
])
def test_a_db_that_is_no_store_exits_2_with_one_line_and_is_left_alone(tmp_path, kind, why):
    db = _not_a_store(tmp_path, kind)
    data = None if db.is_dir() else db.read_bytes()
    (tmp_path / "s.csv").write_text(LONG_SITES)
    (tmp_path / "d.csv").write_text(LONG_DETECTORS)
    (tmp_path / "o.csv").write_text("detector_id,timestamp,value\nA1,2024-03-04 08:00,1\nA1,2024-03-04 08:15,2\n")
    for args in (["datasets"], ["import", "long", str(tmp_path / "o.csv"), "--sites", str(tmp_path / "s.csv"),
                                "--detectors", str(tmp_path / "d.csv"), "--dataset", "ok"]):
        res = runner.invoke(app, [*args, "--db", str(db)])
        assert res.exit_code == 2, (args, res.output)
        assert res.output == f"error: {db}: {res.output.split(': ', 2)[2]}" and why in res.output
        assert len(res.output.strip().splitlines()) == 1 and "INSTALL" not in res.output
    assert data is None or db.read_bytes() == data


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only files")
def test_a_read_only_store_exits_2(tmp_path):
    db = tmp_path / "ro.duckdb"
    Store(db).ingest("tiny", tiny_tables(days=2))
    db.chmod(0o444)
    res = runner.invoke(app, ["demo", "--weeks", "1", "--dataset", "d2", "--db", str(db)])
    assert res.exit_code == 2 and str(db) in res.output


def test_stores_never_load_or_install_extensions(tmp_path):
    store = Store(tmp_path / "e.duckdb")
    with store.connect() as con:
        got = con.execute("SELECT current_setting('autoload_known_extensions'), "
                          "current_setting('autoinstall_known_extensions')").fetchone()
    assert got == (False, False)
    assert json.loads(runner.invoke(app, ["datasets", "--json", "--db", str(store.path)]).output) == []
