"""Hostile input to the loaders (issue 15): pickles in HDF5, decompression bombs, broken containers.

Each case is run the way a user meets it, through `trafficcore import` (exit code 2, one line
naming the file) or the dashboard's upload loader, and none may write to the store.
"""

from __future__ import annotations

import gzip
import time
import tracemalloc
import warnings
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from trafficcore.cli import app
from trafficcore.data import files
from trafficcore.data.loaders import matrix
from trafficcore.errors import DataError
from trafficcore.ui import uploads

runner = CliRunner()


class Payload:
    """Unpickling this creates the file `marker`: proof that a reader ran code from the file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _import(*args: str, db: Path):
    return runner.invoke(app, ["import", *args, "--dataset", "x", "--db", str(db)])


def _one_line_error(res, name: str) -> str:
    """The run exited 2 with a single `error:` line that names the file."""
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and name in lines[0], res.output
    return lines[0]


# ---------------------------------------------------------------------------------------------- HDF5
def _evil_h5(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "pwned"
    idx = pd.date_range("2012-03-01", periods=4, freq="5min")
    df = pd.DataFrame({"773869": [1.0, 2.0, 3.0, 4.0]}, index=idx)
    df["evil"] = [Payload(marker)] * 4  # an object block: pandas' fixed format pickles it
    p = tmp_path / "evil.h5"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pd.errors.PerformanceWarning)  # "PyTables will pickle object types"
        df.to_hdf(p, key="df", format="fixed")
    assert not marker.exists()
    return p, marker


def test_hdf5_pickle_is_refused_on_the_command_line_and_never_run(tmp_path):
    p, marker = _evil_h5(tmp_path)
    res = _import("matrix", str(p), db=tmp_path / "s.duckdb")
    line = _one_line_error(res, "evil.h5")
    assert "block1_values" in line and "pickle" in line
    assert not marker.exists()
    assert not (tmp_path / "s.duckdb").exists()  # refused before the store was opened


def test_hdf5_pickle_is_refused_by_the_upload_page_and_never_run(tmp_path):
    p, marker = _evil_h5(tmp_path)
    with pytest.raises(DataError, match="Python objects"):
        uploads.load("matrix", {"path": p})
    assert not marker.exists()


def test_pandas_hdf5_layouts_read_without_pandas(tmp_path):
    """Mixed dtype blocks keep their columns in order; an aware index is placed in local time."""
    idx = pd.date_range("2012-03-01", periods=3, freq="1h", tz="UTC")
    df = pd.DataFrame({"a": [1.5, 2.5, 3.5], "b": [1, 2, 3], "c": [7.0, np.nan, 9.0]}, index=idx)
    p = tmp_path / "mixed.h5"
    df.to_hdf(p, key="df")
    t = matrix.load(p, timezone="Europe/Copenhagen")
    got = t.observations.pivot(index="ts", columns="detector_id", values="value")
    assert list(got.columns) == ["a", "b", "c"] and t.info.interval_s == 3600
    assert got.index[0] == pd.Timestamp("2012-03-01 01:00")  # 00:00 UTC is 01:00 in Copenhagen
    assert got["b"].tolist() == [1.0, 2.0, 3.0] and np.isnan(got["c"].iloc[1])

    s = tmp_path / "series.h5"
    pd.Series([4.0, 5.0], name="s1").to_hdf(s, key="df")
    assert matrix.load(s, start="2020-01-01", interval=60).observations["value"].tolist() == [4.0, 5.0]


def test_pandas_table_format_is_refused_with_a_hint(tmp_path):
    p = tmp_path / "table.h5"
    pd.DataFrame({"a": [1.0, 2.0]}).to_hdf(p, key="df", format="table")
    with pytest.raises(DataError, match="format='fixed'"):
        matrix.load(p, start="2020-01-01", interval=60)


def test_broken_hdf5_is_one_clean_line(tmp_path):
    p = tmp_path / "broken.h5"
    p.write_bytes(matrix.HDF5_MAGIC + b"\x00" * 64 + b"junk" * 100)
    line = _one_line_error(_import("matrix", str(p), db=tmp_path / "s.duckdb"), "broken.h5")
    assert "cannot read HDF5 file" in line and "HDF5-DIAG" not in line


# ---------------------------------------------------------------------------------------------- gzip
LINE = b"2012-03-01 00:00:00,1,2\n"


def _bomb(path: Path, unpacked: int = 2**31) -> Path:
    """A small .csv.gz that unpacks to `unpacked` bytes: one compressed 64 MiB member, repeated."""
    block = LINE * (2**26 // len(LINE))
    z = zlib.compressobj(6, zlib.DEFLATED, 31)
    member = z.compress(block) + z.flush()
    with open(path, "wb") as f:
        f.write(gzip.compress(b"timestamp,a,b\n"))
        for _ in range(unpacked // len(block) + 1):
            f.write(member)
    assert path.stat().st_size < 10 * 2**20
    return path


def test_gzip_bomb_is_refused_fast_and_small_at_the_default_limit(tmp_path):
    bomb = _bomb(tmp_path / "bomb.csv.gz")
    tracemalloc.start()
    t0, cpu0 = time.perf_counter(), time.process_time()
    try:
        res = _import("matrix", str(bomb), db=tmp_path / "s.duckdb")
        seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    line = _one_line_error(res, "bomb.csv.gz")
    assert "unpacks to more than the 200.0 MB limit" in line
    # CPU seconds, since the wall clock on a shared machine also counts other people's work
    assert cpu < 1.0 and seconds < 5.0 and peak < 500 * 2**20, (cpu, seconds, peak / 2**20)
    assert not (tmp_path / "s.duckdb").exists()


def test_unpacked_limit_follows_the_setting_for_every_reader(tmp_path, monkeypatch):
    monkeypatch.setenv("TRAFFICCORE_MAX_FILE_MB", "1")
    bomb = _bomb(tmp_path / "bomb.csv.gz", unpacked=2**26)
    for read in (files.read_bytes, files.check_unpacked, lambda p: pd.read_csv(files.open_text(p))):
        with pytest.raises(DataError, match="unpacks to more than the 1.0 MB limit"):
            read(bomb)
    small = tmp_path / "small.csv.gz"
    small.write_bytes(gzip.compress(b"timestamp,a\n2012-03-01 00:00,1\n2012-03-01 00:05,2\n"))
    assert len(matrix.load(small).observations) == 2  # under the limit a .gz still reads


@pytest.mark.parametrize(
    "content, message",
    [
        (b"timestamp,a\n2012-03-01 00:00,1\n", "not a valid gzip file"),
        (gzip.compress(b"timestamp,a\n" + LINE * 1000)[:40], "truncated"),
    ],
    ids=["not_gzip", "truncated"],
)
def test_broken_gzip_is_one_line_naming_the_file(tmp_path, content, message):
    p = tmp_path / "counts.csv.gz"
    p.write_bytes(content)
    assert message in _one_line_error(_import("matrix", str(p), db=tmp_path / "s.duckdb"), "counts.csv.gz")


# ---------------------------------------------------------------------------------------------- workbooks
OLE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # the signature of a legacy .xls


def _zip(path: Path) -> Path:
    import zipfile

    with zipfile.ZipFile(path, "w") as z:
        z.writestr("readme.txt", "not a workbook")
    return path


def _garbage_xls(path: Path) -> Path:
    path.write_bytes(OLE + bytes(range(256)) * 12)
    return path


def _scats_csv(path: Path) -> Path:
    from trafficcore.data.loaders import scats

    counts = ",".join(str(k % 7) for k in range(96))
    path.write_text(",".join(scats.REQUIRED) + "\n" + f"970,WARRIGAL_RD N of HIGH STREET_RD,-37.86,145.09,1,"
                    f"2006-10-02,{counts}\n")
    return path


@pytest.mark.parametrize("role", ["data", "listing"])
@pytest.mark.parametrize("make", [_garbage_xls, _zip], ids=["garbage_xls", "zip"])
def test_broken_workbook_is_one_line_naming_the_file(tmp_path, role, make):
    name = "sites.xls" if make is _garbage_xls else "sites.zip"
    bad = make(tmp_path / name)
    if role == "data":
        args = ["scats", str(bad)]
    else:
        good = _scats_csv(tmp_path / "scats.csv")
        assert _import("scats", str(good), db=tmp_path / "ok.duckdb").exit_code == 0  # the data file is fine
        args = ["scats", str(good), "--sites-listing", str(bad)]
    line = _one_line_error(_import(*args, db=tmp_path / "s.duckdb"), name)
    assert "cannot read the workbook" in line
    assert not (tmp_path / "s.duckdb").exists()


# ---------------------------------------------------------------------------------------------- messages
def test_huge_bad_cell_is_echoed_as_a_short_prefix(tmp_path):
    p = tmp_path / "m.csv"
    p.write_text("timestamp,a,b\n2012-03-01 00:00,1,2\n2012-03-01 00:05," + "x" * 10_000_000 + ",2\n")
    line = _one_line_error(_import("matrix", str(p), db=tmp_path / "s.duckdb"), "m.csv")
    assert "row 3, column 'a': not a number: '" + "x" * 80 + "…'" in line
    assert len(line) < 400


@pytest.mark.parametrize("length", [100_000, 1_000_000], ids=["long_name", "over_csv_field_limit"])
def test_huge_header_name_is_one_short_line(tmp_path, length):
    p = tmp_path / "m.csv"
    p.write_text(f"timestamp,{'n' * length}\n2012-03-01 00:00,1\n2012-03-01 00:05,oops\n")
    line = _one_line_error(_import("matrix", str(p), db=tmp_path / "s.duckdb"), "m.csv")
    assert len(line) < 400
    if length == 100_000:
        assert f"column '{'n' * 80}…': not a number: 'oops'" in line


@pytest.mark.parametrize(
    "body, row, fields",
    [
        ("2012-03-01 00:00,1,2,3\n2012-03-01 00:05,1,2\n", 2, 4),  # a long first record (pandas took it as index)
        ("2012-03-01 00:00,1,2\n2012-03-01 00:05,1\n", 3, 2),  # a short record (pandas padded it)
        ('2012-03-01 00:00,1,2\n"2012-03-01 00:05",1,2,"3"\n', 3, 4),  # quoted fields: counted by the csv module
    ],
    ids=["long_first", "short", "quoted"],
)
def test_ragged_matrix_row_is_reported_as_wrong_field_count(tmp_path, body, row, fields):
    p = tmp_path / "m.csv"
    p.write_text("timestamp,a,b\n" + body)
    line = _one_line_error(_import("matrix", str(p), db=tmp_path / "s.duckdb"), "m.csv")
    assert f"row {row}: {fields} fields, but the header has 3" in line


def test_infinite_value_is_printed_as_a_plain_number(tmp_path):
    p = tmp_path / "m.csv"
    p.write_text("timestamp,a,b\n2012-03-01 00:00,1,2\n2012-03-01 00:05,inf,2\n")
    line = _one_line_error(_import("matrix", str(p), db=tmp_path / "s.duckdb"), "m.csv")
    assert line.endswith("row 3, column 'a': not a finite number: inf")


# ---------------------------------------------------------------------------------------------- dense adjacency
def test_headerless_dense_adjacency_takes_ids_from_the_locations_order(tmp_path):
    """T-GCN style: an N x N weight matrix with no header, nodes in the locations file's order."""
    ids = ["773869", "767541", "767542"]
    p = tmp_path / "speeds.csv"
    p.write_text("timestamp," + ",".join(ids) + "\n2012-03-01 00:00:00,1,2,3\n2012-03-01 00:05:00,4,5,6\n")
    loc = tmp_path / "loc.csv"  # a different order from the matrix's columns
    loc.write_text("id,lat,lon\n767542,34.1,-118.1\n773869,34.2,-118.2\n767541,34.3,-118.3\n")
    adj = tmp_path / "adj.csv"
    adj.write_text("0,1,0\n1,0,0.5\n0,0,0\n")
    db = tmp_path / "s.duckdb"
    res = runner.invoke(app, ["import", "matrix", str(p), "--locations", str(loc), "--adjacency", str(adj),
                              "--dataset", "x", "--db", str(db)])
    assert res.exit_code == 0, res.output
    from trafficcore.data.store import Store

    edges = Store(db, read_only=True).adjacency("x").set_index(["src", "dst"])["weight"].sort_index()
    assert edges.to_dict() == {("767542", "773869"): 1.0, ("773869", "767542"): 1.0, ("773869", "767541"): 0.5}

    wrong = tmp_path / "wrong.csv"  # 2 x 2 for 3 nodes: not the dense form, and the error says what is expected
    wrong.write_text("0,1\n1,0\n")
    with pytest.raises(DataError, match="3 x 3"):
        matrix.load(p, locations=loc, adjacency=wrong)
    bad = tmp_path / "bad.csv"
    bad.write_text("0,1,0\n1,0,-2\n0,0,0\n")
    with pytest.raises(DataError, match="negative") as e:
        matrix.load(p, locations=loc, adjacency=bad)
    assert (e.value.row, e.value.column) == (2, "767541")
