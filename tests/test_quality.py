"""Data quality counts only what is missing (issue 15): the hour a DST spring-forward skips is not a gap,
real gaps still are, and the coverage heatmap names its rows."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import shared_path
from streamlit.testing.v1 import AppTest
from test_app_support import GAP, STUCK, ZERO, city_tables

from trafficcore.data.panel import load_panel
from trafficcore.data.store import Store
from trafficcore.ui import quality

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "app.py"


# ---------------------------------------------------------------------------- real SCATS data
@pytest.fixture(scope="module")
def scats_panel(tmp_path_factory):
    """October 2006 SCATS imported the way a user does it, with the command line."""
    src = shared_path("scats_boroondara_oct2006")
    db = tmp_path_factory.mktemp("scats") / "scats.duckdb"
    subprocess.run([sys.executable, "-m", "trafficcore.cli", "import", "scats",
                    str(src / "Scats_Data_October_2006.xlsx"), "--sites-listing",
                    str(src / "SCATSSiteListingSpreadsheet_VicRoads.xls"), "--dataset", "scats", "--db", str(db)],
                   cwd=REPO, check=True, capture_output=True)
    return load_panel(Store(db, read_only=True), "scats")


def test_scats_daylight_saving_hour_is_not_a_gap(scats_panel):
    """Melbourne's clocks jumped 02:00 -> 03:00 on 29 Oct 2006; the loader drops the workbook's zeros for
    that hour (labelled 01:45-02:30). A detector missing nothing else has no gap."""
    p = scats_panel
    flags = quality.fault_flags(p).set_index("detector_id")
    missing = ~np.isfinite(p.values)
    dst = np.asarray((p.times >= "2006-10-29 01:45") & (p.times <= "2006-10-29 02:45"))
    in_dst = missing[dst].any(axis=0)
    elsewhere = missing[~dst].any(axis=0)
    only_dst = p.detectors["detector_id"][in_dst & ~elsewhere]
    assert len(only_dst) >= 80  # most detectors miss the skipped hour and nothing else
    assert (flags.loc[only_dst, "gaps"] == 0).all() and (flags.loc[only_dst, "status"] == "ok").all()
    # the real gaps stay: whole days without readings (34 detectors, each at least a day long)
    gappy = flags[flags["gaps"] > 0]
    assert len(gappy) == 34 and (gappy["longest_gap_h"] >= 24).all()
    assert quality.quality_summary(flags.reset_index())["with_gaps"] == 34


# ---------------------------------------------------------------------------- small synthetic store
def _without_dst_hour_and_with(gaps: dict[str, list[str]]) -> Store:
    """The test city (Europe/Amsterdam, through Sunday 30 March 2025 when 02:00-02:45 did not exist) as a
    clock-aware feed delivers it: no readings at the skipped local times, plus the given real gaps."""
    tables = city_tables()
    obs = tables.observations
    drop = obs["ts"].between(pd.Timestamp("2025-03-30 02:00"), pd.Timestamp("2025-03-30 02:45"))
    for det, times in gaps.items():
        drop |= (obs["detector_id"] == det) & obs["ts"].isin(pd.DatetimeIndex(times))
    tables.observations = obs[~drop].reset_index(drop=True)
    return tables


@pytest.fixture(scope="module")
def dst_panel(tmp_path_factory):
    gaps = {
        "S5:E": list(pd.date_range("2025-03-25 10:00", periods=4, freq="15min")),  # 1 h on a normal day
        # 01:00-01:45 and 03:00 local: five intervals, 1.25 h of real time across the jump
        "S6:N": [*pd.date_range("2025-03-30 01:00", periods=4, freq="15min"), pd.Timestamp("2025-03-30 03:00")],
    }
    store = Store(tmp_path_factory.mktemp("dst") / "city.duckdb")
    store.ingest("city", _without_dst_hour_and_with(gaps))
    return load_panel(store, "city")


def test_real_gaps_are_reported_and_the_skipped_hour_is_not(dst_panel):
    flags = quality.fault_flags(dst_panel).set_index("detector_id")
    assert set(flags.index[flags["gaps"] > 0]) == {GAP[0], "S5:E", "S6:N"}
    assert set(flags.index[flags["status"] == "check"]) == {GAP[0], "S5:E", "S6:N", STUCK[0], ZERO[0]}
    assert flags.loc["S5:E", "longest_gap_h"] == 1.0
    assert (flags.loc["S6:N", "gaps"], flags.loc["S6:N", "longest_gap_h"]) == (1, 1.25)  # one gap, not two
    assert flags.loc["S1:N", "coverage_pct"] == 100.0
    cov = quality.coverage_matrix(dst_panel)
    assert cov.loc["S1:N", "2025-03-30"] == 100.0  # a 23-hour day fully reported is fully covered
    assert cov.loc["S6:N", "2025-03-30"] == pytest.approx(100 * (92 - 5) / 92, abs=0.1)


def test_skipped_wall_times_are_the_spring_forward_hour_only():
    times = pd.date_range("2025-03-29", "2025-10-27", freq="15min")
    skipped = times[quality.skipped_wall_times(times, "Europe/Amsterdam")]
    assert list(skipped.strftime("%Y-%m-%d %H:%M")) == [f"2025-03-30 02:{m:02d}" for m in (0, 15, 30, 45)]
    assert not quality.skipped_wall_times(times, "UTC").any()


# ---------------------------------------------------------------------------- the page
def test_coverage_heatmap_rows_are_labelled_with_site_and_detector(tmp_path, monkeypatch):
    db = tmp_path / "city.duckdb"
    Store(db).ingest("city", city_tables())
    monkeypatch.setenv("TRAFFICCORE_DB", str(db))
    monkeypatch.setenv("TRAFFICCORE_REPORTS", str(tmp_path))
    at = AppTest.from_file(str(APP), default_timeout=90).run().switch_page("pages/import_quality.py").run()
    assert not at.exception
    [heat] = [json.loads(c.proto.spec) for c in at.get("plotly_chart")
              if json.loads(c.proto.spec)["data"][0]["type"] == "heatmap"]
    rows = heat["data"][0]["y"]
    assert len(rows) == 24 and "Mill St / 1st Ave N (S1:N)" in rows
    assert heat["layout"]["yaxis"].get("showticklabels", True) is True and heat["layout"]["yaxis"]["dtick"] == 1
