"""Protocols: chronological whole-day splits, the SCATS dates, cold-start sites, the T-GCN windows."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import synthetic_panel

from trafficcore.data.windows import WindowSpec
from trafficcore.evaluation.protocols import (
    ProtocolError,
    cold_start_split,
    held_out_sites,
    standard_split,
    tgcn_setup,
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return synthetic_panel.panel(tmp_path_factory.mktemp("tiny"))[0]


def _days(panel, rows):
    return set(panel.times[rows].normalize())


def test_standard_split_is_chronological_disjoint_and_by_whole_days(tiny):
    split = standard_split(tiny)
    assert split.train.max() < split.val.min() and split.val.max() < split.test.min()
    assert not (set(split.train) & set(split.val) or set(split.val) & set(split.test))
    # 22 days -> 16 / 2 / 4 (70/10/20 by days, rounded), and no day is shared between periods
    assert split.info["rule"] == "days-70-10-20"
    assert (split.info["train"], split.info["val"], split.info["test"]) == (
        ["2024-01-01", "2024-01-16"], ["2024-01-17", "2024-01-18"], ["2024-01-19", "2024-01-22"])
    d_train, d_val, d_test = (_days(tiny, r) for r in (split.train, split.val, split.test))
    assert len(d_train) == 16 and len(d_val) == 2 and len(d_test) == 4
    assert max(d_train) < min(d_val) and max(d_val) < min(d_test)
    # purged: the 60-minute target of the last training issue time is still a training day
    last_target = tiny.times[split.train.max()] + 3 * tiny.interval
    assert last_target < pd.Timestamp("2024-01-17")
    # every issue time of a period is used except its last three (their 60-minute target lies beyond it)
    per_day = pd.Series(tiny.times[split.val].normalize()).value_counts().sort_index()
    assert list(per_day) == [96, 96 - 3]


def test_split_respects_history_and_longest_horizon(tiny):
    spec = WindowSpec(history_steps=32, horizons_min=(15, 120))
    split = standard_split(tiny, spec)
    assert split.train.min() >= 32
    end_of_train = pd.Timestamp(split.info["train"][1]) + pd.Timedelta(days=1)
    assert tiny.times[split.train.max()] + 7 * tiny.interval < end_of_train


def test_scats_uses_the_october_2006_dates(tmp_path):
    panel, _ = synthetic_panel.panel(tmp_path, name="scats", days=31, start="2006-10-01")
    split = standard_split(panel)
    assert split.info["rule"] == "scats-oct2006"
    assert split.info["train"] == ["2006-10-01", "2006-10-21"]
    assert split.info["val"] == ["2006-10-22", "2006-10-24"]
    assert split.info["test"] == ["2006-10-25", "2006-10-31"]
    assert _days(panel, split.test) == set(pd.date_range("2006-10-25", "2006-10-31"))
    # recognised by its source too, whatever the dataset is called
    other = dataclasses.replace(panel, dataset="boroondara", info={**panel.info, "source": "VicRoads SCATS volumes"})
    assert standard_split(other).info["rule"] == "scats-oct2006"
    # a SCATS dataset from another month falls back to 70/10/20
    later = dataclasses.replace(panel, times=panel.times + pd.Timedelta(days=400))
    assert standard_split(later).info["rule"] == "days-70-10-20"


def test_demo_city_uses_its_documented_split(tiny):
    demo = pytest.importorskip("trafficcore.data.demo")
    if not hasattr(demo, "split_days"):
        pytest.skip("trafficcore.data.demo has no split_days")
    panel = dataclasses.replace(tiny, info={**tiny.info, "source": "trafficcore demo city (synthetic) seed=0"})
    split = standard_split(panel)
    want = demo.split_days("2024-01-01", 4)
    assert split.info["rule"] == "demo"
    assert {k: split.info[k] for k in ("train", "val", "test")} == {k: list(v) for k, v in want.items()}


def test_too_short_a_dataset_is_a_user_error(tiny):
    short = dataclasses.replace(tiny, times=tiny.times[:150], values=tiny.values[:150])
    with pytest.raises(ProtocolError, match="at least 3"):
        standard_split(short)


def test_cold_start_holds_out_whole_sites(tiny):
    cs = cold_start_split(tiny, seed=0)
    sites = tiny.detectors["site_id"].to_numpy()
    assert len(cs.held_out_sites) == 1  # round(20% of 3 sites)
    held = np.isin(sites, cs.held_out_sites)
    assert set(cs.held_out_idx) == set(np.flatnonzero(held))
    for s in set(sites):  # all or none of each site's detectors
        assert held[sites == s].all() or not held[sites == s].any()
    assert np.isnan(cs.panel.values[:, held]).all()
    np.testing.assert_array_equal(cs.panel.values[:, ~held], tiny.values[:, ~held])
    assert np.isfinite(tiny.values[:, held]).any()  # the original panel is untouched
    assert cs.split.info["held_out_sites"] == cs.held_out_sites
    # deterministic by seed
    assert cold_start_split(tiny, seed=0).held_out_sites == cs.held_out_sites
    draws = {tuple(held_out_sites(tiny, seed=s)) for s in range(10)}
    assert len(draws) > 1


def test_cold_start_fraction_on_forty_sites(tiny):
    det = pd.DataFrame({"detector_id": [f"d{i}" for i in range(80)], "site_id": [f"s{i // 2}" for i in range(80)]})
    many = dataclasses.replace(tiny, detectors=det.assign(measure="volume", lat=0.0, lon=0.0),
                               values=np.zeros((len(tiny.times), 80), np.float32))
    assert len(held_out_sites(many, seed=3)) == 8


def test_tgcn_normalises_by_the_series_max_and_windows_like_the_reference(tiny):
    setup = tgcn_setup(tiny)
    T = len(tiny.times)
    assert setup.max_value == pytest.approx(np.nanmax(tiny.values))
    assert np.nanmax(setup.panel.values) == pytest.approx(1.0)
    np.testing.assert_allclose(setup.panel.values * setup.max_value, tiny.values, rtol=1e-6)
    assert setup.spec.history_steps == 12 and setup.spec.horizons_min == (15, 30, 45, 60)
    assert setup.pre_lens == {15: 1, 30: 2, 45: 3, 60: 4}
    assert setup.train_size == int(0.8 * T)
    # training and validation windows (inputs and 4 targets) lie inside the first 80%
    assert setup.train.min() == 12 and setup.val.max() + 4 - 1 < setup.train_size
    val_start = setup.val.min() - 12  # validation windows read from here on
    assert setup.train.max() + 4 - 1 < val_start
    # test windows: `range(len(test) - seq_len - pre_len)` of the reference code, per pre_len
    n_test = T - setup.train_size
    for k in (1, 2, 3, 4):
        rows = setup.test_rows(k)
        assert len(rows) == n_test - 12 - k
        assert rows[0] == setup.train_size + 12 and rows[-1] + k - 1 <= T - 2
    np.testing.assert_array_equal(setup.test, setup.test_rows(1))


def test_tgcn_on_five_minute_data_predicts_twelve_steps(tmp_path):
    panel, _ = synthetic_panel.panel(tmp_path, days=3, interval_min=5)
    setup = tgcn_setup(panel)
    assert setup.spec.horizons_min == tuple(range(5, 65, 5))
    assert setup.pre_lens == {15: 3, 30: 6, 45: 9, 60: 12}


def test_tgcn_rejects_a_grid_that_does_not_divide_15_minutes(tiny):
    odd = dataclasses.replace(tiny, info={**tiny.info, "interval_s": 600})
    with pytest.raises(ProtocolError, match="5- or 15-minute"):
        tgcn_setup(odd)
