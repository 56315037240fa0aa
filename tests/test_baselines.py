"""Baselines on a tiny synthetic city: fit, forecast frame, hand-checked values, save/load.

The real-data check (SCATS, October 2006) is at the bottom, marked realdata/slow.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import synthetic_panel

from trafficcore.data.schema import FORECAST_COLUMNS
from trafficcore.data.windows import WindowSpec, build_samples
from trafficcore.evaluation import metrics
from trafficcore.evaluation.protocols import standard_split
from trafficcore.models import predict
from trafficcore.models.baselines import (
    GradientBoosting,
    HistoricalAverage,
    Persistence,
    ResidualQuantiles,
    SeasonalNaive,
    neighbour_index,
)
from trafficcore.models.registry import create, load_model

FAST_GBT = dict(max_rounds=60, learning_rate=0.2, num_leaves=15, min_data_in_leaf=20, num_threads=1)


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    panel, _ = synthetic_panel.panel(tmp_path_factory.mktemp("city"))
    return panel, standard_split(panel)


@pytest.fixture(scope="module")
def fitted(city):
    panel, split = city
    models = {
        "persistence": Persistence(),
        "seasonal_naive": SeasonalNaive(),
        "historical_average": HistoricalAverage(),
        "gbt": GradientBoosting(**FAST_GBT),
    }
    return {k: m.fit(panel, split.train, split.val) for k, m in models.items()}


@pytest.fixture(scope="module")
def test_samples(city):
    panel, split = city
    spec = WindowSpec()
    return build_samples(panel, split.test, spec=spec, neighbour_idx=neighbour_index(panel, spec))


def test_registry_names_create_these_classes():
    assert isinstance(create("persistence"), Persistence)
    assert isinstance(create("seasonal_naive"), SeasonalNaive)
    assert isinstance(create("historical_average"), HistoricalAverage)
    assert isinstance(create("gbt"), GradientBoosting)


@pytest.mark.parametrize("name", ["persistence", "seasonal_naive", "historical_average", "gbt"])
def test_forecast_frame_shape_and_order(fitted, city, test_samples, name):
    panel, split = city
    model = fitted[name]
    q = model.predict_samples(panel, test_samples)
    assert q.shape == (len(test_samples), 4, 3)
    assert np.isfinite(q).all()
    assert (q[..., 0] <= q[..., 1]).all() and (q[..., 1] <= q[..., 2]).all()
    assert (q >= 0).all()  # counts: never below the smallest training value (0)

    issued = panel.times[split.test[10]]
    frame = predict(model, panel, issued)
    assert list(frame.columns) == FORECAST_COLUMNS
    assert len(frame) == panel.values.shape[1] * 4
    assert set(frame["horizon_min"]) == {15, 30, 45, 60}
    assert (frame["issued_at"] == issued).all()
    expect = issued + pd.to_timedelta(frame["horizon_min"], unit="min") - pd.Timedelta(minutes=15)
    assert (frame["target_ts"] == expect).all()
    assert (frame["p10"] <= frame["p50"]).all() and (frame["p50"] <= frame["p90"]).all()


@pytest.mark.parametrize("name", ["persistence", "seasonal_naive", "historical_average", "gbt"])
def test_save_load_round_trip_is_identical(fitted, city, test_samples, tmp_path, name):
    panel, _ = city
    model = fitted[name]
    model.save(tmp_path / name)
    assert (tmp_path / name / "config.json").exists()
    assert list((tmp_path / name).glob("*.safetensors"))
    assert not list((tmp_path / name).glob("*.pkl"))
    again = load_model(tmp_path / name)
    assert type(again) is type(model)
    before = model.predict_samples(panel, test_samples)
    np.testing.assert_array_equal(again.predict_samples(panel, test_samples), before)


def test_persistence_is_the_newest_reading(fitted, city, test_samples):
    panel, _ = city
    p50 = fitted["persistence"].predict_samples(panel, test_samples)[..., 1]
    last = panel.values[test_samples.issue_idx - 1, test_samples.detector_idx]
    ok = np.isfinite(last)
    assert ok.mean() > 0.99
    for j in range(4):
        np.testing.assert_allclose(p50[ok, j], last[ok])


def test_persistence_skips_a_missing_newest_reading(fitted, city):
    panel, _ = city
    det = panel.column("A:N")
    row = panel.index_of("2024-01-15 08:00")  # missing in the synthetic data
    assert np.isnan(panel.values[row, det])
    no_nb = np.full((6, 4), -1)
    samples = build_samples(panel, np.array([row + 1]), np.array([det]), WindowSpec(), neighbour_idx=no_nb)
    p50 = fitted["persistence"].predict_samples(panel, samples)[0, :, 1]
    np.testing.assert_allclose(p50, panel.values[row - 1, det])


def test_seasonal_naive_is_same_time_last_week(fitted, city, test_samples):
    panel, _ = city
    p50 = fitted["seasonal_naive"].predict_samples(panel, test_samples)[..., 1]
    week = 7 * 96
    for j, step in enumerate([1, 2, 3, 4]):
        target = test_samples.issue_idx + step - 1
        expect = panel.values[target - week, test_samples.detector_idx]
        ok = np.isfinite(expect)
        np.testing.assert_allclose(p50[ok, j], expect[ok])


def test_historical_average_is_the_training_mean(fitted, city):
    panel, split = city
    model = fitted["historical_average"]
    # hand computation: mean of detector B:N at 08:00 over the training weekdays only
    frame = panel.frame(["B:N"])
    train_days = pd.date_range(split.info["train"][0], split.info["train"][1], freq="D")
    at8 = frame[(frame.index.time == pd.Timestamp("08:00").time()) & (frame.index.day_of_week < 5)
                & frame.index.normalize().isin(train_days)]
    expect = at8["B:N"].mean()
    # a Wednesday after training; issued at 08:00, the 15-minute horizon is the interval 08:00-08:15
    issue = pd.Timestamp("2024-01-17 08:00")
    assert issue.normalize() > train_days[-1]
    samples = build_samples(panel, np.array([panel.index_of(issue)]), np.array([panel.column("B:N")]), WindowSpec(),
                            neighbour_idx=np.full((6, 4), -1))
    assert model.predict_samples(panel, samples)[0, 0, 1] == pytest.approx(expect, rel=1e-6)


def test_historical_average_ignores_rows_after_training(city):
    panel, split = city
    base = HistoricalAverage().fit(panel, split.train, split.val)
    values = panel.values.copy()
    values[split.test.min():] += 1000.0  # change everything in the test period
    changed = HistoricalAverage().fit(dataclasses.replace(panel, values=values), split.train, split.val)
    np.testing.assert_array_equal(base.profile.table, changed.profile.table)


def test_unseen_detector_gets_the_cross_site_profile(city, test_samples):
    panel, split = city
    values = panel.values.copy()
    values[:, panel.column("C:W")] = np.nan  # a detector with no readings at all
    blank = dataclasses.replace(panel, values=values)
    model = HistoricalAverage().fit(blank, split.train, split.val)
    mine = test_samples.detector_idx == panel.column("C:W")
    p50 = model.predict_samples(blank, test_samples.subset(mine))[:, 0, 1]
    rows = test_samples.issue_idx[mine]
    others = [c for c in range(6) if c != panel.column("C:W")]
    expect = np.nanmean(model.profile.table[others], axis=0)  # (2, slots)
    day = (panel.times[rows].day_of_week >= 5).astype(int)
    slot = panel.times[rows].hour * 4 + panel.times[rows].minute // 15
    np.testing.assert_allclose(p50, expect[day, slot], rtol=1e-5)


@pytest.mark.parametrize("name", ["persistence", "seasonal_naive", "historical_average", "gbt"])
def test_missing_inputs_still_give_forecasts(fitted, city, test_samples, name):
    panel, _ = city
    s = test_samples.subset(np.arange(50))
    s.history[:] = np.nan
    s.neighbours[:] = np.nan
    s.last_week[:] = np.nan
    q = fitted[name].predict_samples(panel, s)
    assert np.isfinite(q).all()


def test_gbt_beats_naive_baselines_on_structured_data(fitted, city, test_samples):
    panel, _ = city
    y = test_samples.targets
    mae = {k: metrics.mae(y, m.predict_samples(panel, test_samples)[..., 1]) for k, m in fitted.items()}
    assert mae["gbt"] < min(mae["persistence"], mae["seasonal_naive"], mae["historical_average"])


def test_gbt_cold_start_uses_no_own_history(city):
    panel, split = city
    model = GradientBoosting(**FAST_GBT)
    model.configure_cold_start(["C:W"])
    values = panel.values.copy()
    values[:, panel.column("C:W")] = np.nan
    blank = dataclasses.replace(panel, values=values)
    model.fit(blank, split.train, split.val)
    assert not any(n.startswith(("lag_", "own_", "lw_", "ratio")) for n in model.feature_names)
    spec = WindowSpec()
    cw = np.array([panel.column("C:W")])
    s = build_samples(blank, split.test, cw, spec, neighbour_idx=neighbour_index(blank, spec))
    assert np.isfinite(model.predict_samples(blank, s)).all()


def test_gbt_ablation_variants_drop_feature_groups():
    variants = GradientBoosting(**FAST_GBT).ablation_variants()
    assert set(variants) == {"no_neighbours", "no_profile_no_last_week"}
    assert "neighbours" in variants["no_neighbours"].drop
    assert not variants["no_neighbours"].uses_neighbours
    with pytest.raises(ValueError, match="unknown feature groups"):
        GradientBoosting(drop=("weather",))


def test_residual_quantiles_cover_80_percent_out_of_sample():
    rng = np.random.default_rng(1)

    def draw(n):
        level = rng.uniform(5, 300, size=(n, 2))
        return level, level + rng.normal(0, 0.1 * level + 2)  # spread grows with the level

    p, y = draw(20000)
    rq = ResidualQuantiles.fit(p, y)
    p2, y2 = draw(20000)
    lo, hi = rq.apply(p2)
    assert metrics.coverage(y2, lo, hi) == pytest.approx(0.8, abs=0.02)
    # and the band is conditional on the level, not one width for all
    width = hi - lo
    assert width[p2 > 250].mean() > 3 * width[p2 < 30].mean()


def test_predict_before_fit_and_wrong_horizons_fail(city, test_samples):
    panel, split = city
    with pytest.raises(RuntimeError, match="fit"):
        Persistence().predict_samples(panel, test_samples)
    model = Persistence(spec=WindowSpec(horizons_min=(15, 30))).fit(panel, split.train, split.val)
    with pytest.raises(ValueError, match="horizons"):
        model.predict_samples(panel, test_samples)


# ------------------------------------------------------------------------------ real data
@pytest.mark.realdata
@pytest.mark.slow
def test_scats_baselines_match_measured_mae(tmp_path):
    from conftest import shared_path

    xlsx = shared_path("scats_boroondara_oct2006", "Scats_Data_October_2006.xlsx")
    from trafficcore.data.loaders import scats
    from trafficcore.data.panel import load_panel
    from trafficcore.data.store import Store

    store = Store(tmp_path / "scats.duckdb")
    store.ingest("scats", scats.load(xlsx))
    panel = load_panel(store, "scats")
    split = standard_split(panel)
    assert split.info["rule"] == "scats-oct2006" and split.info["test"] == ["2006-10-25", "2006-10-31"]
    spec = WindowSpec()
    samples = build_samples(panel, split.test, spec=spec, neighbour_idx=np.full((panel.values.shape[1], 4), -1))
    mae15 = {}
    for model in (Persistence(), SeasonalNaive(), HistoricalAverage()):
        q = model.fit(panel, split.train, split.val).predict_samples(panel, samples)
        mae15[model.name] = metrics.mae(samples.targets[:, 0], q[:, 0, 1])
        cover = metrics.coverage(samples.targets, q[..., 0], q[..., 2])
        assert 0.65 < cover < 0.9, (model.name, cover)
    # measured in the issue: 15.1, 13.3, 12.1 vehicles per 15 minutes
    assert 13.5 < mae15["persistence"] < 16.5, mae15
    assert 12.0 < mae15["seasonal_naive"] < 14.5, mae15
    assert 11.0 < mae15["historical_average"] < 13.0, mae15
    assert mae15["historical_average"] < mae15["seasonal_naive"] < mae15["persistence"]


def test_profile_leaving_own_out_reads_the_other_days_only_inside_the_block(city, tmp_path):
    from trafficcore.data.profile import DetectorProfile, daytype_slot

    panel, split = city
    rows = np.asarray(split.train)
    prof = DetectorProfile.fit(panel, rows)
    r = int(rows[200])
    cell = np.stack(daytype_slot(panel, rows), axis=1)
    others = rows[(cell == cell[200]).all(axis=1) & (rows != r)]
    d = np.arange(len(panel.detectors))
    plain = prof.lookup(panel, d, np.full(len(d), r))
    with prof.leaving_own_out(panel):
        loo = prof.lookup(panel, d, np.full(len(d), r))
        later = prof.lookup(panel, d, np.full(len(d), int(split.test[0])))  # not a fit row: unchanged
    assert np.allclose(loo, np.nanmean(panel.values[others], axis=0))
    assert not np.allclose(loo, plain)
    assert np.array_equal(later, prof.lookup(panel, d, np.full(len(d), int(split.test[0]))))
    assert np.array_equal(prof.lookup(panel, d, np.full(len(d), r)), plain)  # the block ended


def test_gbt_leave_own_out_is_saved_and_trains(city, tmp_path):
    panel, split = city
    m = GradientBoosting(leave_own_out=True, **FAST_GBT).fit(panel, split.train, split.val)
    m.save(tmp_path / "g")
    back = load_model(tmp_path / "g")
    assert back.leave_own_out is True
    s = build_samples(panel, split.test[:8], spec=m.spec, neighbour_idx=neighbour_index(panel, m.spec))
    assert np.allclose(m.predict_samples(panel, s), back.predict_samples(panel, s))


@pytest.mark.parametrize("name", ["persistence", "seasonal_naive", "historical_average", "gbt"])
def test_forecasts_issued_just_after_the_newest_reading(fitted, city, name):
    """Live forecasts are issued one interval past the newest reading (its targets are all in the future)."""
    panel, _ = city
    issued = panel.times[-1] + panel.interval
    fc = predict(fitted[name], panel, issued)
    assert (fc["issued_at"] == issued).all() and fc["target_ts"].min() == issued
    assert np.isfinite(fc[["p10", "p50", "p90"]].to_numpy()).all()
