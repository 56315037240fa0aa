"""Bad long-format input: one test per case, each naming file, row and column, and none changing the store.

Every case starts from a store holding a good import (built once per module, copied per test),
snapshots it, then loads and ingests the same dataset with one bad file swapped in: the load must
raise `DataError` pointing at the right cell and the store must be exactly as before.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass

import pytest

from trafficcore.data.loaders import long
from trafficcore.data.schema import COLUMNS
from trafficcore.data.store import Store
from trafficcore.errors import DataError

SITES = "site_id,name,lat,lon\nS1,Main / 1st,-37.81,144.96\nS2,Main / 2nd,-37.82,144.97\n"
DETECTORS = "detector_id,site_id,approach,measure\nA1,S1,N,volume\nA2,S1,S,volume\nB1,S2,E,speed\n"
OBSERVATIONS = (
    "detector_id,timestamp,value\n"
    "A1,2024-03-04 08:00:00,120\n"
    "A1,2024-03-04 08:15:00,131\n"
    "A2,2024-03-04 08:00:00,40\n"
    "A2,2024-03-04 08:15:00,44\n"
    "B1,2024-03-04 08:00:00,52.5\n"
    "B1,2024-03-04 08:15:00,48.0\n"
)
HEADER = "detector_id,timestamp,value\n"


@dataclass
class Case:
    """One bad file: which of the three it replaces, its bytes, and where the error must point."""

    name: str
    which: str  # observations | sites | detectors
    content: bytes
    row: int | None
    column: str | None
    match: str
    max_file_mb: str | None = None


def _obs(*records: str) -> bytes:
    return (HEADER + "".join(r + "\n" for r in records)).encode()


CASES = [
    Case("wrong_column", "observations", b"detector_id,timestmp,value\nA1,2024-03-04 08:00,1\n", 1, "timestmp",
         "unknown column"),
    Case("missing_column", "observations", b"detector_id,timestamp\nA1,2024-03-04 08:00\n", 1, "value",
         "missing required column"),
    Case("unparsable_date", "observations", _obs("A1,2024-03-04 08:00,1", "A1,2024-03-04 25:00,2"), 3, "timestamp",
         "not a date/time"),
    Case("unparsable_number", "observations", _obs("A1,2024-03-04 08:00,1", "A2,2024-03-04 08:00,2", "A1,2024-03-04 "
         "08:15,1O"), 4, "value", "not a number"),
    Case("negative_count", "observations", _obs("A1,2024-03-04 08:00,1", "A1,2024-03-04 08:15,-3"), 3, "value",
         "negative"),
    Case("negative_speed", "observations", _obs("B1,2024-03-04 08:00,-50"), 2, "value", "negative"),
    Case("conflicting_duplicates", "observations",
         _obs("A1,2024-03-04 08:00,1", "A2,2024-03-04 08:00,2", "A1,2024-03-04T08:00:00,7"), 4, "value",
         "conflicting duplicate"),
    Case("unknown_detector_id", "observations", _obs("A1,2024-03-04 08:00,1", "Z9,2024-03-04 08:00,2"), 3,
         "detector_id", "unknown detector id 'Z9'"),
    Case("empty_file", "observations", b"", None, None, "empty"),
    Case("header_only_file", "observations", HEADER.encode(), 2, None, "no records"),
    Case("non_utf8_text", "observations", _obs("A1,2024-03-04 08:00,1") + "A2,2024-03-04 08:00,2 caf\xe9\n".encode(
        "latin-1"), 3, None, "not UTF-8"),
    # a day of 15-minute rows (~2.5 kB) against a 0.002 MB (~2.1 kB) limit; the good files are far smaller
    Case("over_size_limit", "observations", _obs(*[f"A1,2024-03-04 {h:02d}:{m:02d},1" for h in range(24)
                                                   for m in (0, 15, 30, 45)]), None, None,
         "over the", max_file_mb="0.002"),
    Case("timestamp_with_zone", "observations", _obs("A1,2024-03-04 08:00,1", "A1,2024-03-04 08:15Z,1"), 3,
         "timestamp", "time zone"),
    Case("unknown_site_id", "detectors", b"detector_id,site_id\nA1,S1\nA2,S1\nB1,S9\n", 4, "site_id",
         "unknown site id 'S9'"),
    Case("bad_measure", "detectors", b"detector_id,site_id,measure\nA1,S1,volume\nA2,S1,flow\nB1,S2,speed\n", 3,
         "measure", "measure must be"),
    Case("bad_lanes", "detectors", b"detector_id,site_id,lanes\nA1,S1,2\nA2,S1,1.5\nB1,S2,\n", 3, "lanes",
         "whole number"),
    Case("latitude_out_of_range", "sites", b"site_id,name,lat,lon\nS1,a,-37.8,144.9\nS2,b,-97.8,144.9\n", 3, "lat",
         "outside"),
    Case("longitude_unparsable", "sites", b"site_id,name,lat,lon\nS1,a,-37.8,144.9\nS2,b,-37.8,east\n", 3, "lon",
         "not a number"),
]


def _write_good(tmp_path):
    paths = {}
    for which, text in (("observations", OBSERVATIONS), ("sites", SITES), ("detectors", DETECTORS)):
        p = tmp_path / f"good_{which}.csv"
        p.write_text(text, encoding="utf-8")
        paths[which] = p
    return paths


def _snapshot(store) -> tuple:
    """What a user could see of the store: the dataset summaries and every table's row count."""
    sql = " UNION ALL ".join(f"SELECT '{t}' AS t, count(*) AS n FROM {t}" for t in COLUMNS)
    counts = dict(zip(*store.query(sql).to_dict("list").values(), strict=True))
    return store.datasets(), counts


def _load(paths: dict):
    return long.load(paths["observations"], paths["sites"], paths["detectors"], timezone="Australia/Melbourne")


@pytest.fixture(scope="module")
def good_store(tmp_path_factory):
    """The good files and a store holding them, built once; each test works on its own copy."""
    folder = tmp_path_factory.mktemp("good")
    paths = _write_good(folder)
    Store(folder / "good.duckdb").ingest("city", _load(paths))
    return paths, folder / "good.duckdb"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_file_is_reported_and_changes_nothing(case: Case, tmp_path, good_store, monkeypatch):
    good, db = good_store
    shutil.copy(db, tmp_path / "store.duckdb")
    store = Store(tmp_path / "store.duckdb")
    before = _snapshot(store)
    assert before[1]["observations"] == 6 and before[0][0]["name"] == "city"  # the good import really landed

    bad_path = tmp_path / f"bad_{case.which}.csv"
    bad_path.write_bytes(case.content)
    if case.max_file_mb is not None:
        assert bad_path.stat().st_size > float(case.max_file_mb) * 2**20 > good["sites"].stat().st_size
        monkeypatch.setenv("TRAFFICCORE_MAX_FILE_MB", case.max_file_mb)

    with pytest.raises(DataError, match=case.match) as e:
        store.ingest("city", _load({**good, case.which: bad_path}))
    assert (e.value.file, e.value.row, e.value.column) == (str(bad_path), case.row, case.column)
    assert _snapshot(store) == before
