"""The semantic note checks on the demo city (`trafficcore.evaluation.note_checks`): the pieces on their own, and
a subset of the measured checks with the shipped model (the full table is a command: docs/EXPLANATIONS.md)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from trafficcore import config
from trafficcore.data import demo
from trafficcore.data.panel import load_panel
from trafficcore.data.store import Store
from trafficcore.evaluation import note_checks as nc


@pytest.fixture(scope="module")
def panel(tmp_path_factory):
    store = Store(tmp_path_factory.mktemp("nc") / "demo.duckdb")
    store.ingest("demo", demo.generate(seed=0, weeks=8))
    return load_panel(store, "demo")


def test_an_event_is_removed_from_the_context_and_nothing_else(panel):
    p = nc.without_event(panel, "E0069")
    assert "E0069" not in set(p.events["event_id"]) and len(p.events) == len(panel.events) - 1
    assert p.values is panel.values and p.detectors is panel.detectors


def test_a_note_names_when_the_event_happened_only_where_its_text_does_not():
    ev = pd.Series({"text": "Crash on Canal St at Canal St / 3rd Ave: minor delays",
                    "start_ts": pd.Timestamp("2025-10-10 11:10")})
    assert nc.typed_note(ev, pd.Timestamp("2025-10-10 11:15"), None) == (
        "Crash on Canal St at Canal St / 3rd Ave: minor delays, from 11:10", True)
    assert nc.typed_note(ev, pd.Timestamp("2025-10-11 00:15"), None)[0].endswith(", from Fri 10 Oct 11:10")
    assert nc.typed_note(ev, pd.Timestamp("2025-10-10 11:15"), pd.Timestamp("2025-10-10 11:10"))[1] is False


def test_the_table_scores_each_reading_against_its_bar():
    res = pd.DataFrame({"right_ok": [True] * 8 + [False] * 2, "later_ok": [True] * 9 + [False],
                        "far_ok": [True] * 8 + [False] * 2, "model_right_ok": [True] * 5 + [False] * 5,
                        "model_later_ok": [True] * 10, "model_far_ok": [True] * 10})
    t = nc.table(res).set_index(["reading", "check"])
    assert list(t["verdict"]) == ["pass", "pass", "FAIL", "FAIL", "pass", "pass"]
    assert t["share"].tolist() == [0.8, 0.9, 0.8, 0.5, 1.0, 1.0]


#: the subset's events (seed 0): a concert at Harbour Arena, a football match, a crash on Canal St
SUBSET = ("E0069", "E0083", "E0067")


@pytest.fixture(scope="module")
def subset(panel):
    """The checks on three test-week events, one of each sort, at the 30-minute horizon, with the shipped model."""
    if not (config.DEMO_MODEL_DIR / "config.json").exists():
        pytest.skip(f"no shipped demo model in {config.DEMO_MODEL_DIR}")
    from trafficcore.models import load_model

    cases = nc.demo_cases(panel, [30])
    cases = cases[cases["event_id"].isin(SUBSET)]
    assert set(cases["event_id"]) == set(SUBSET)
    return nc.run_checks(load_model(config.DEMO_MODEL_DIR), panel, cases)


@pytest.mark.slow
def test_a_note_10_h_later_or_5_km_away_does_not_move_the_forecast(subset):
    """As served: the note lies outside the events the model reads, so it is not given to it (and says why)."""
    assert subset["later_ok"].all() and subset["far_ok"].all()
    assert (subset["unread_later"].str.startswith("it starts in")).all()
    assert (subset["unread_far"].str.startswith("it is 5.0 km away")).all()
    assert np.isfinite(subset[["model_move_later", "model_move_far"]].to_numpy()).all()


@pytest.mark.slow
def test_a_concert_or_match_note_at_the_right_time_raises_the_forecast(subset):
    planned = subset[subset["event_id"].isin(["E0069", "E0083"])]
    assert len(planned) == 8 and (planned["unread_right"] == "").all()
    assert (planned["move_right"] > 0).all(), planned[["event_id", "detector_id", "move_right"]]


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="the shipped model raises the forecast on a crash note (38% of 58 incident "
                                       "cases move the planted way; the demo-notes candidate: 98%, not shipped: "
                                       "data/demo_model/README.md)")
def test_a_crash_note_at_the_right_time_lowers_the_forecast_on_that_road(subset):
    crash = subset[subset["event_id"] == "E0067"]
    assert len(crash) >= 1 and (crash["move_right"] < 0).all(), crash[["detector_id", "move_right"]]
