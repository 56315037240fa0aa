"""Per-dataset evaluation settings: Aarhus CityPulse is scored on 15-minute sums of its 5-minute counts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import synthetic_panel

from trafficcore.evaluation import metrics
from trafficcore.evaluation.benchmark import run_benchmark
from trafficcore.evaluation.datasets import DATASET_SETTINGS, aggregate, prepare, settings_for


def five_minute_panel(tmp_path, name="aarhus", source="synthetic test city"):
    return synthetic_panel.panel(tmp_path, name=name, interval_min=5, days=8, source=source, start="2024-01-01 07:50")


def test_sums_three_five_minute_counts_aligned_to_the_quarter_hour(tmp_path):
    panel, _ = five_minute_panel(tmp_path)
    out = aggregate(panel, 15)
    assert out.interval == pd.Timedelta(minutes=15) and out.info["interval_s"] == 900
    # 07:50 and 07:55 are a partial quarter-hour: the first interval is 08:00-08:15, rows 2, 3 and 4
    assert out.times[0] == pd.Timestamp("2024-01-01 08:00")
    np.testing.assert_allclose(out.values[0], panel.values[2:5].sum(axis=0))
    np.testing.assert_allclose(out.values[5], panel.values[17:20].sum(axis=0))
    assert len(out.times) == (len(panel.times) - 2) // 3
    # a quarter-hour with one 5-minute reading missing is missing, not a low count
    col = panel.column("A:N")
    row = int((pd.Timestamp("2024-01-05 08:00") - out.times[0]) / out.interval)
    assert np.isfinite(panel.values[panel.index_of("2024-01-05 08:05"), col])
    panel.values[panel.index_of("2024-01-05 08:05"), col] = np.nan
    again = aggregate(panel, 15)
    assert np.isnan(again.values[row, col]) and np.isfinite(again.values[row, col + 1])


def test_settings_are_found_by_name_or_source_and_only_for_standard_and_cold_start(tmp_path):
    panel, _ = five_minute_panel(tmp_path)
    assert settings_for(panel) == DATASET_SETTINGS["aarhus"] and settings_for(panel).aggregate_min == 15
    other, _ = five_minute_panel(tmp_path / "b", name="city2", source="CityPulse Aarhus road traffic 2014 (copy)")
    assert settings_for(other).aggregate_min == 15
    plain, _ = five_minute_panel(tmp_path / "c", name="plain")
    assert prepare(plain, "standard") == (plain, {})
    assert prepare(panel, "tgcn")[0] is panel
    prepared, info = prepare(panel, "cold-start")
    assert info["interval_s"] == 900 and info["source_interval_s"] == 300 and info["time_steps"] == len(prepared.times)
    with pytest.raises(ValueError, match="cannot sum"):
        aggregate(panel, 7)


def test_benchmark_scores_aarhus_on_the_quarter_hour_grid(tmp_path):
    panel, store = five_minute_panel(tmp_path)
    report = run_benchmark(store, "aarhus", "standard", ["persistence"])
    split = report["split"]
    assert split["interval_s"] == 900 and split["evaluation"]["aggregate_min"] == 15
    # persistence at 15 minutes by hand on the summed panel: the last quarter-hour's sum
    q = aggregate(panel, 15)
    rows = np.arange(len(q.times))
    test = rows[(q.times >= split["test"][0]) & (q.times <= pd.Timestamp(split["test"][1]) + pd.Timedelta("23:00:00"))]
    assert split["issue_times"]["test"] == len(test)
    assert report["results"][0]["mae"] == pytest.approx(metrics.mae(q.values[test], q.values[test - 1]), rel=1e-6)
