"""Multi-seed benchmark: mean ± sd per model and horizon, deterministic models once, intervals against gbt."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pytest
import synthetic_panel
import typer
from typer.testing import CliRunner

from trafficcore.evaluation.benchmark import BenchmarkError
from trafficcore.evaluation.cli import benchmark
from trafficcore.evaluation.seeds import parse_seeds, run_seeds, summarise, takes_seed

FAST_GBT = dict(max_rounds=40, learning_rate=0.2, num_leaves=15, min_data_in_leaf=20, num_threads=1,
                max_train_samples=1500)


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    return synthetic_panel.panel(tmp_path_factory.mktemp("seeds"))


@pytest.fixture(scope="module")
def report(city):
    _, store = city
    return run_seeds(store, "tiny", "standard", ["persistence", "gbt"], [0, 1, 2], model_kwargs={"gbt": FAST_GBT},
                     replicates=300)


def test_summary_mean_and_sd_by_hand():
    runs = [{"results": [{"model": "m", "horizon_min": 15, "mae": v, "rmse": 2 * v, "n": 10}]} for v in (1.0, 2.0, 4.0)]
    (row,) = summarise(runs)
    assert row["mae"] == pytest.approx(7 / 3) and row["n_seeds"] == 3
    assert row["mae_sd"] == pytest.approx(np.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2))
    assert row["rmse_sd"] == pytest.approx(2 * row["mae_sd"]) and row["coverage_p10_p90"] is None
    (single,) = summarise(runs[:1])
    assert single["mae_sd"] == 0.0 and single["n_seeds"] == 1


def test_deterministic_models_run_once_and_seeded_ones_once_per_seed(report):
    assert takes_seed("gbt") and takes_seed("lm") and not takes_seed("persistence")
    assert report["deterministic"] == ["persistence"]
    assert [r["models"] for r in report["per_seed"]] == [["persistence", "gbt"], ["gbt"], ["gbt"]]
    per = {(run["seed"], r["horizon_min"]): r["mae"] for run in report["per_seed"] for r in run["results"]
           if r["model"] == "gbt"}
    for r in report["results"]:
        if r["model"] == "gbt":
            vals = [per[(s, r["horizon_min"])] for s in (0, 1, 2)]
            assert r["n_seeds"] == 3 and r["mae"] == pytest.approx(np.mean(vals))
            assert r["mae_sd"] == pytest.approx(np.std(vals, ddof=1))
        else:
            assert r["n_seeds"] == 1 and r["mae_sd"] == 0.0
    # seeds change what gbt learns (it subsamples its training rows by seed)
    assert len({per[(s, 15)] for s in (0, 1, 2)}) == 3


def test_interval_is_the_paired_difference_of_the_seed_mean_maes(report):
    means = {(r["model"], r["horizon_min"]): r["mae"] for r in report["results"]}
    cis = report["intervals"]
    assert [(c["model"], c["reference"], c["horizon_min"]) for c in cis] == [
        ("persistence", "gbt", h) for h in (15, 30, 45, 60)]
    for c in cis:
        assert c["mean"] == pytest.approx(means[("persistence", c["horizon_min"])] - means[("gbt", c["horizon_min"])])
        assert c["lo"] <= c["mean"] <= c["hi"] and c["lo"] < c["hi"]
        assert c["replicates"] == 300 and c["block_len"] == 16  # 4 hours of 15-minute issue times
    assert report["bootstrap"]["block_hours"] == 4.0


def test_each_seed_reaches_the_models_that_take_one():
    from trafficcore.evaluation.benchmark import _create

    assert _create("gbt", None, 5, {}).seed == 5
    assert _create("lm", None, 7, {}).seed == 7


def test_report_is_strict_json_with_a_utc_run_date_and_wall_times(report):
    json.dumps(report, allow_nan=False)
    when = dt.datetime.fromisoformat(report["run_date"])
    assert when.utcoffset() == dt.timedelta(0)
    assert abs((dt.datetime.now(dt.UTC) - when).total_seconds()) < 3600
    assert set(report["timing"]["wall_s_per_seed"]) == {"0", "1", "2"}
    assert report["protocol"] == "standard" and report["dataset"] == "tiny" and report["seeds"] == [0, 1, 2]


def test_cold_start_runs_every_model_on_every_seed(city):
    _, store = city
    rep = run_seeds(store, "tiny", "cold-start", ["historical_average", "gbt"], [0, 1], model_kwargs={"gbt": FAST_GBT},
                    replicates=50)
    assert rep["deterministic"] == [] and [r["models"] for r in rep["per_seed"]] == [["historical_average", "gbt"]] * 2
    assert all(r["n_seeds"] == 2 for r in rep["results"])


def test_command_prints_mean_sd_and_intervals_and_rejects_bad_seeds(city, tmp_path):
    _, store = city
    app = typer.Typer()
    app.command()(benchmark)
    app.command("noop")(lambda: None)
    runner = CliRunner()
    out = tmp_path / "seeds.json"
    res = runner.invoke(app, ["benchmark", "--dataset", "tiny", "--db", str(store.path), "--models",
                              "seasonal_naive,historical_average", "--seeds", "0,1", "--json", str(out)])
    assert res.exit_code == 0, res.output
    assert "| seasonal_naive | 15 |" in res.output and "± 0.000" in res.output and "1 (deterministic)" in res.output
    assert json.loads(out.read_text())["seeds"] == [0, 1]
    bad = runner.invoke(app, ["benchmark", "--dataset", "tiny", "--db", str(store.path), "--seeds", "0,zero"])
    assert bad.exit_code == 2 and "comma-separated integers" in bad.output
    with pytest.raises(BenchmarkError, match="distinct"):
        parse_seeds("1,1")
