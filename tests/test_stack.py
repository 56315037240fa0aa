"""The stacking forecaster on the tiny synthetic city, with cheap members (historical average + light gbt).

What a user relies on: the blend is no worse than its members on validation, its band holds the
promised 80% there, it round-trips through save/load without pickle, and a member fitted
elsewhere is reused rather than retrained.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import synthetic_panel

from trafficcore.data.windows import WindowSpec, build_samples
from trafficcore.models.baselines import GradientBoosting, HistoricalAverage, neighbour_index
from trafficcore.models.registry import create, display_name, load_model, model_display_name
from trafficcore.models.stack import StackForecaster, conformal_offset, simplex_weights

FAST_GBT = dict(max_rounds=60, learning_rate=0.2, num_leaves=15, min_data_in_leaf=20, num_threads=1)
MEMBERS = {"historical_average": {}, "gbt": FAST_GBT}


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    from trafficcore.evaluation.protocols import standard_split

    panel, _ = synthetic_panel.panel(tmp_path_factory.mktemp("city"))
    return panel, standard_split(panel)


@pytest.fixture(scope="module")
def stack(city):
    panel, split = city
    return StackForecaster(members=MEMBERS).fit(panel, split.train, split.val)


def _quantiles(model, panel, rows):
    samples = build_samples(panel, rows, spec=model.spec, neighbour_idx=neighbour_index(panel, model.spec))
    return model.predict_samples(panel, samples), samples.targets


def _mae(y, yhat):
    ok = np.isfinite(y)
    return float(np.abs(y[ok] - yhat[ok]).mean())


def test_registry_creates_a_stack_of_gbt_and_lm_by_default():
    model = create("stack")
    assert isinstance(model, StackForecaster)
    assert model.member_names == ["gbt", "lm"]
    assert model.display_name == "Gradient boosting + language model"
    assert model_display_name(model) == "Gradient boosting + language model"
    assert display_name("gbt") == "Gradient boosting"


def test_weights_are_convex_per_horizon(stack):
    assert stack.weights.shape == (4, 2)
    assert ((stack.weights >= 0) & (stack.weights <= 1)).all()
    assert np.allclose(stack.weights.sum(axis=1), 1.0)


def test_blend_is_no_worse_than_each_member_on_validation(stack, city):
    panel, split = city
    q, y = _quantiles(stack, panel, split.val)
    blend = _mae(y, q[..., 1])
    for name, member in stack.members.items():
        mq, _ = _quantiles(member, panel, split.val)
        assert blend <= _mae(y, mq[..., 1]) + 1e-6, name


def test_band_covers_80_percent_of_validation_readings(stack, city):
    panel, split = city
    q, y = _quantiles(stack, panel, split.val)
    ok = np.isfinite(y)
    inside = (y[ok] >= q[..., 0][ok]) & (y[ok] <= q[..., 2][ok])
    assert 0.75 <= inside.mean() <= 0.85
    assert all(0.75 <= v["coverage_p10_p90"] <= 0.85 for v in stack.metrics["val"].values())  # per horizon
    assert (q[..., 0] <= q[..., 1]).all() and (q[..., 1] <= q[..., 2]).all()


def test_band_is_recalibrated_to_the_coverage_asked_for(stack, city):
    """The members' own bands hold about 80% here, so ask for 50%: the band must narrow to it."""
    panel, split = city
    half = StackForecaster(members=MEMBERS, fitted=dict(stack.members), coverage=0.5).fit(panel, split.train,
                                                                                        split.val)
    q, y = _quantiles(half, panel, split.val)
    ok = np.isfinite(y)
    assert 0.45 <= ((y[ok] >= q[..., 0][ok]) & (y[ok] <= q[..., 2][ok])).mean() <= 0.55
    assert (half.offsets < 0).all()


def test_save_load_round_trip_gives_identical_forecasts_and_no_pickle(stack, city, tmp_path):
    panel, split = city
    stack.save(tmp_path / "stack")
    cfg = json.loads((tmp_path / "stack" / "config.json").read_text())
    assert cfg["model_class"] == "stack" and cfg["members"] == ["historical_average", "gbt"]
    from safetensors.numpy import load_file

    assert load_file(str(tmp_path / "stack" / "model.safetensors"))["weights"].shape == (4, 2)
    assert sorted(p.name for p in (tmp_path / "stack" / "members").iterdir()) == ["gbt", "historical_average"]
    assert not [p for p in (tmp_path / "stack").rglob("*") if p.suffix in (".pkl", ".pickle", ".pt", ".joblib")]
    again = load_model(tmp_path / "stack")
    a, _ = _quantiles(stack, panel, split.test)
    b, _ = _quantiles(again, panel, split.test)
    np.testing.assert_array_equal(a, b)
    assert again.display_name == stack.display_name


def test_a_fitted_member_is_reused_not_refitted(city):
    panel, split = city
    gbt = GradientBoosting(**FAST_GBT).fit(panel, split.train, split.val)
    boosters = list(gbt.boosters)

    def refit(*_a, **_k):
        raise AssertionError("a member handed in fitted was fitted again")

    gbt.fit = refit
    model = StackForecaster(members=MEMBERS, fitted={"gbt": gbt}).fit(panel, split.train, split.val)
    assert model.members["gbt"] is gbt and model.members["gbt"].boosters == boosters
    assert isinstance(model.members["historical_average"], HistoricalAverage)


def test_fitted_member_with_other_horizons_is_refused(city):
    panel, split = city
    ha = HistoricalAverage(spec=WindowSpec(horizons_min=(15, 30))).fit(panel, split.train, split.val)
    with pytest.raises(ValueError, match="horizons"):
        StackForecaster(spec=WindowSpec(), members=MEMBERS, fitted={"historical_average": ha})


def test_unknown_or_path_like_member_names_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown stack member"):
        StackForecaster(members={"../evil": {}})
    (tmp_path / "config.json").write_text(json.dumps({"model_class": "stack", "members": ["../x"]}))
    with pytest.raises(ValueError, match="unknown stack member"):
        StackForecaster.load(tmp_path)


def test_zero_weight_member_is_named_as_not_used():
    model = StackForecaster()
    model.weights = np.array([[1.0, 0.0], [1.0, 0.0]])
    assert model.display_name == "Gradient boosting (language model not used)"


def test_simplex_weights_find_the_better_member_and_a_mix():
    rng = np.random.default_rng(0)
    y = rng.normal(size=2000)
    good, bad = y + rng.normal(0, 0.1, y.size), y + rng.normal(0, 2.0, y.size)
    assert simplex_weights(np.stack([bad, good]), y)[1] >= 0.95
    a, b = y + 1.0, y - 1.0  # opposite biases: the half-half mix is exact
    assert np.allclose(simplex_weights(np.stack([a, b]), y), [0.5, 0.5])


def test_conformal_offset_widens_a_narrow_band_to_the_coverage():
    rng = np.random.default_rng(1)
    y = rng.normal(size=5000)
    q = conformal_offset(np.full(y.size, -0.1), np.full(y.size, 0.1), y, 0.8)
    assert 0.75 < np.mean(np.abs(y) <= 0.1 + q) < 0.85
    assert q > 1.0


def test_a_stack_with_a_tiny_language_model_fits_saves_and_loads(city, tmp_path):
    """Smoke test with the real `lm` member at its smallest settings (one encoder layer, two steps)."""
    pytest.importorskip("torch")
    panel, split = city
    from trafficcore.models.lm import Phase, Recipe

    tiny = Recipe("tiny", "two steps", (Phase("all", trains="all", steps=2, batch_size=8, evals=1),),
                  model={"num_layers": 1}, val_samples=64, eval_samples=64)
    lm = {"recipe": tiny, "mode": "frozen", "use_text": False, "device": "cpu", "progress": False}
    val = split.val[::8]  # a few issue times keep the language model's forecasts quick
    model = StackForecaster(members={"gbt": FAST_GBT, "lm": lm}).fit(panel, split.train, val)
    assert np.allclose(model.weights.sum(axis=1), 1.0) and "language model" in model.display_name.lower()
    model.save(tmp_path / "s")
    a, _ = _quantiles(model, panel, split.test[:4])
    b, _ = _quantiles(load_model(tmp_path / "s"), panel, split.test[:4])
    np.testing.assert_allclose(a, b, atol=1e-4)
