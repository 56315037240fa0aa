"""The paired moving-block bootstrap against cases small enough to work out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from trafficcore.evaluation.bootstrap import block_len_for, paired_interval, per_issue_sums, replicate_means


def test_a_constant_difference_gives_a_zero_width_interval_at_that_constant():
    issue = np.repeat(np.arange(50), 3)  # 50 issue times x 3 detectors
    out = paired_interval(np.full(150, -0.25), issue, block_len=4)
    assert out["mean"] == pytest.approx(-0.25)
    assert out["lo"] == pytest.approx(-0.25) and out["hi"] == pytest.approx(-0.25)
    assert out["share_below_zero"] == 1.0 and out["n"] == 150 and out["issue_times"] == 50


def test_blocks_that_each_average_the_same_leave_no_spread():
    # differences alternate 0, 4, 0, 4 in time: any 2 consecutive issue times average 2, single ones do not
    diff = np.tile([0.0, 4.0], 20)
    issue = np.arange(40)
    blocked = paired_interval(diff, issue, block_len=2)
    assert (blocked["lo"], blocked["mean"], blocked["hi"]) == pytest.approx((2.0, 2.0, 2.0))
    single = paired_interval(diff, issue, block_len=1)
    assert single["lo"] < 1.5 and single["hi"] > 2.5  # iid resampling of the same numbers is not degenerate


def test_four_issue_times_in_blocks_of_two_by_hand():
    # issue times 0..3 with differences 0, 0, 4, 4; blocks start at 0, 1 or 2 (means 0, 2, 4), two per replicate,
    # so a replicate mean is one of 0, 1, 2, 3, 4, and 0 and 4 each come up with probability 1/9 > 2.5%
    sums, counts = np.array([0.0, 0.0, 4.0, 4.0]), np.ones(4)
    reps = replicate_means(sums, counts, block_len=2, replicates=2000, seed=3)
    assert set(np.unique(reps)) == {0.0, 1.0, 2.0, 3.0, 4.0}
    assert np.mean(reps == 0.0) == pytest.approx(1 / 9, abs=0.025)
    out = paired_interval(np.array([0.0, 0.0, 4.0, 4.0]), np.arange(4), block_len=2, seed=3)
    assert (out["lo"], out["mean"], out["hi"]) == (0.0, 2.0, 4.0)


def test_all_detectors_of_an_issue_time_travel_together_and_missing_ones_drop_out():
    # issue time 7: detectors 1 and 3; issue time 9: 5 and a missing target -> pooled mean (1+3+5)/3 = 3
    rows, sums, counts = per_issue_sums(np.array([1.0, 5.0, 3.0, np.nan]), np.array([7, 9, 7, 9]))
    assert list(rows) == [7, 9] and list(sums) == [4.0, 5.0] and list(counts) == [2.0, 1.0]
    # one block spanning both issue times: every replicate is the whole sample
    out = paired_interval(np.array([1.0, 5.0, 3.0, np.nan]), np.array([7, 9, 7, 9]), block_len=2)
    assert out["mean"] == out["lo"] == out["hi"] == pytest.approx(3.0) and out["n"] == 3


def test_fixed_seed_reproduces_and_block_length_follows_the_issue_spacing():
    rng = np.random.default_rng(0)
    diff, issue = rng.normal(size=500), np.repeat(np.arange(100), 5)
    assert paired_interval(diff, issue, 8) == paired_interval(diff, issue, 8)
    assert paired_interval(diff, issue, 8, seed=1)["lo"] != paired_interval(diff, issue, 8, seed=2)["lo"]
    assert block_len_for(900) == 16 and block_len_for(300) == 48 and block_len_for(900, 1.0) == 4
    with pytest.raises(ValueError, match="no finite"):
        paired_interval(np.array([np.nan]), np.array([0]), 4)
