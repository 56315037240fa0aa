"""Export: plan JSON, CSV timing sheet and SUMO additional file, each read back."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd
import pytest

from trafficcore.errors import DataError
from trafficcore.signal import (
    SumoError,
    load_plan,
    read_timing_sheet,
    timing_sheet,
    write_plan_json,
    write_sumo_additional,
    write_timing_sheet,
)
from trafficcore.signal import sumo as sumo_mod

EXAMPLES = Path(__file__).resolve().parents[1] / "docs" / "examples"


@pytest.fixture
def plan():
    return load_plan(EXAMPLES / "plan_4leg.json").with_timing(96, [12, 44, 26], offset=17)


def test_plan_json_round_trip(tmp_path, plan):
    p = write_plan_json(plan, tmp_path / "out" / "plan.json")
    assert load_plan(p) == plan


def test_timing_sheet_contents(plan):
    sheet = timing_sheet(plan)
    assert sheet["phase"].tolist() == [p.name for p in plan.phases]
    assert sheet["start_s"].tolist() == [0.0, 16.0, 65.0]
    assert sheet["end_s"].iloc[-1] == plan.cycle
    assert sheet["split_pct"].sum() == pytest.approx(100.0, abs=0.02)
    assert sheet["movements"].iloc[0] == "N.L S.L"
    assert (sheet["offset_s"] == 17).all()


def test_timing_sheet_round_trip_and_hand_edit(tmp_path, plan):
    p = write_timing_sheet(plan, tmp_path / "sheet.csv")
    assert read_timing_sheet(p, plan) == plan
    edited = pd.read_csv(p)
    edited.loc[1, "green_s"] = 40
    edited.loc[2, "green_s"] = 30
    edited.to_csv(p, index=False)
    again = read_timing_sheet(p, plan)
    assert again.greens == [12, 40, 30] and again.cycle == 96
    edited.loc[2, "green_s"] = 35  # no longer adds up to the cycle
    edited.to_csv(p, index=False)
    with pytest.raises(DataError, match="cycle is 96"):
        read_timing_sheet(p, plan)
    edited.loc[2, "green_s"] = 30
    edited.loc[0, "phase"] = "something else"
    edited.to_csv(p, index=False)
    with pytest.raises(DataError, match="phase 1 is 'NS protected left'") as e:
        read_timing_sheet(p, plan)
    assert (e.value.row, e.value.column) == (2, "phase")


def test_sumo_additional_round_trip(tmp_path, plan):
    try:
        sumo_mod.sumo_binary("netconvert")
    except SumoError as e:
        pytest.skip(f"SUMO is not available here: {e}")
    p = write_sumo_additional(plan, tmp_path / "signal.add.xml")
    tl = ET.parse(p).getroot().find("tlLogic")
    assert tl.get("id") == "C" and tl.get("programID") == "trafficcore" and float(tl.get("offset")) == 17
    phases = tl.findall("phase")
    durations = [float(ph.get("duration")) for ph in phases]
    assert sum(durations) == pytest.approx(plan.cycle)
    assert durations[::3] == plan.greens  # green, yellow, all-red per plan phase
    states = [ph.get("state") for ph in phases]
    assert len({len(s) for s in states}) == 1 and len(states[0]) == 14
    assert all(set(s) <= set("GgyrR") for s in states)
    assert states[0].count("G") == 2  # the two protected lefts
