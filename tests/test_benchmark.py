"""The benchmark runner and command on the tiny synthetic city (all three protocols)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import synthetic_panel
import typer
from typer.testing import CliRunner

from trafficcore.evaluation import metrics
from trafficcore.evaluation.benchmark import BenchmarkError, inference_speed, markdown_table, run_benchmark
from trafficcore.evaluation.cli import benchmark
from trafficcore.evaluation.protocols import tgcn_setup

FAST_GBT = dict(max_rounds=40, learning_rate=0.2, num_leaves=15, min_data_in_leaf=20, num_threads=1)
FIELDS = {"model", "horizon_min", "mae", "rmse", "wape", "coverage_p10_p90"}


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    return synthetic_panel.panel(tmp_path_factory.mktemp("bench"))


def test_standard_report_shape(city):
    _, store = city
    models = ["persistence", "historical_average", "gbt"]
    report = run_benchmark(store, "tiny", "standard", models, model_kwargs={"gbt": FAST_GBT}, ablations=True)
    assert set(report) == {"dataset", "protocol", "run_date", "split", "results", "ablations", "timing"}
    assert report["run_date"].endswith("+00:00")  # UTC, so the model report can rank reports by it
    assert report["dataset"] == "tiny" and report["protocol"] == "standard"
    assert report["split"]["test"] == ["2024-01-19", "2024-01-22"]
    assert [(r["model"], r["horizon_min"]) for r in report["results"]] == [
        (m, h) for m in models for h in (15, 30, 45, 60)]
    for r in report["results"]:
        assert FIELDS <= set(r) and r["mae"] > 0 and 0 <= r["coverage_p10_p90"] <= 1
    # the only model with ablation variants is gbt
    assert {(r["model"], r["variant"]) for r in report["ablations"]} == {
        ("gbt", "no_neighbours"), ("gbt", "no_profile_no_last_week")}
    assert all(FIELDS <= set(r) for r in report["ablations"])
    t = report["timing"]["models"]
    assert set(t) == set(models) | {"gbt/no_neighbours", "gbt/no_profile_no_last_week"}
    assert all(v["fit_s"] >= 0 and v["samples_per_s"] > 0 for v in t.values())
    json.dumps(report, allow_nan=False)  # strict JSON
    table = markdown_table(report)
    assert "| persistence | 15 |" in table and "gbt / no_neighbours" in table


def test_ablation_variants_can_be_chosen_by_name(city):
    """Each variant is a whole fit, so a run can ask for some; a name no model offers is refused with the list."""
    _, store = city
    report = run_benchmark(store, "tiny", "standard", ["gbt"], model_kwargs={"gbt": FAST_GBT},
                           variants=["no_neighbours"])
    assert {(r["model"], r["variant"]) for r in report["ablations"]} == {("gbt", "no_neighbours")}
    with pytest.raises(BenchmarkError, match=r"no_fgm.*available: \['no_neighbours', 'no_profile_no_last_week'\]"):
        run_benchmark(store, "tiny", "standard", ["gbt"], model_kwargs={"gbt": FAST_GBT}, variants=["no_fgm"])


def test_a_stack_blends_the_members_the_run_fitted(city, monkeypatch):
    """Listed before its members, the stack is still scored after them and reuses their fits (gbt fitted once),
    and on test its MAE is never worse than its worse member's."""
    from trafficcore.models.baselines import GradientBoosting

    _, store = city
    fits = []
    original = GradientBoosting.fit
    monkeypatch.setattr(GradientBoosting, "fit", lambda self, *a, **k: fits.append(1) or original(self, *a, **k))
    members = {"historical_average": {}, "gbt": FAST_GBT}
    report = run_benchmark(store, "tiny", "standard", ["stack", "historical_average", "gbt"],
                           model_kwargs={"gbt": FAST_GBT, "stack": {"members": members}})
    assert len(fits) == 1
    mae = {(r["model"], r["horizon_min"]): r["mae"] for r in report["results"]}
    assert [r["model"] for r in report["results"]][-1] == "stack"
    for h in (15, 30, 45, 60):
        assert mae[("stack", h)] <= max(mae[("gbt", h)], mae[("historical_average", h)]) + 1e-9


def test_saved_models_are_rescored_without_fitting(city, tmp_path, monkeypatch):
    """--save-models then --load-models: the same forecasts, scored again with no fit (a stack blends them)."""
    from trafficcore.models.baselines import GradientBoosting

    _, store = city
    first = run_benchmark(store, "tiny", "standard", ["historical_average", "gbt"], model_kwargs={"gbt": FAST_GBT},
                          save_dir=tmp_path)

    def refit(*_a, **_k):
        raise AssertionError("a saved model was fitted again")

    monkeypatch.setattr(GradientBoosting, "fit", refit)
    again = run_benchmark(store, "tiny", "standard", ["historical_average", "gbt", "stack"], load_dir=tmp_path,
                          model_kwargs={"stack": {"members": {"historical_average": {}, "gbt": {}}}})
    assert [r for r in again["results"] if r["model"] != "stack"] == first["results"]
    assert again["timing"]["models"]["gbt"]["fit_s"] is None
    assert again["timing"]["models"]["gbt"]["loaded_from"] == str(tmp_path / "gbt")
    assert {r["model"] for r in again["results"]} == {"historical_average", "gbt", "stack"}


def test_standard_persistence_number_by_hand(city):
    panel, store = city
    report = run_benchmark(store, "tiny", "standard", ["persistence"])
    # test days Jan 19-22; the last issue time whose 60-minute target is still on Jan 22 is 23:00
    rows = np.arange(len(panel.times))
    test = rows[(panel.times >= "2024-01-19") & (panel.times <= "2024-01-22 23:00")]
    assert report["split"]["issue_times"]["test"] == len(test)
    y = panel.values[test]  # 15-minute horizon: the interval starting at the issue time
    last = panel.values[test - 1]
    assert report["results"][0]["mae"] == pytest.approx(metrics.mae(y, last), rel=1e-6)


def test_tgcn_report_pools_steps_like_the_reference(city):
    panel, store = city
    report = run_benchmark(store, "tiny", "tgcn", ["persistence", "seasonal_naive"])
    rows = [r for r in report["results"] if r["model"] == "persistence"]
    assert [(r["horizon_min"], r["pre_len"]) for r in rows] == [(15, 1), (30, 2), (45, 3), (60, 4)]
    for r in rows:
        assert {"accuracy", "r2", "explained_variance"} <= set(r)
    # by hand for 30 minutes: windows of the reference code, both steps pooled, persistence = last input
    setup = tgcn_setup(panel)
    t = setup.test_rows(2)
    y = np.stack([panel.values[t], panel.values[t + 1]], axis=1)
    yhat = np.repeat(panel.values[t - 1][:, None, :], 2, axis=1)
    expect = metrics.tgcn_metrics(y, yhat)
    for k in ("rmse", "mae", "accuracy", "r2", "explained_variance"):
        assert rows[1][k] == pytest.approx(expect[k], rel=1e-4), k
    assert report["split"]["max_value"] == pytest.approx(float(np.nanmax(panel.values)))


def test_cold_start_scores_only_held_out_detectors(city):
    panel, store = city
    report = run_benchmark(store, "tiny", "cold-start", ["historical_average", "gbt"], model_kwargs={"gbt": FAST_GBT})
    held = report["split"]["held_out_sites"]
    assert len(held) == 1 and report["split"]["held_out_detectors"] == 2
    n_test_issue = report["split"]["issue_times"]["test"]
    assert report["timing"]["models"]["gbt"]["test_samples"] == 2 * n_test_issue
    for r in report["results"]:
        assert r["n"] <= 2 * n_test_issue and np.isfinite(r["mae"])


def test_user_errors(city):
    _, store = city
    with pytest.raises(BenchmarkError, match="no dataset"):
        run_benchmark(store, "nowhere", "standard", ["persistence"])
    with pytest.raises(BenchmarkError, match="unknown model"):
        run_benchmark(store, "tiny", "standard", ["prophet"])
    with pytest.raises(BenchmarkError, match="unknown protocol"):
        run_benchmark(store, "tiny", "weekly", ["persistence"])


def test_command_prints_table_writes_json_and_exits_2_on_user_error(city, tmp_path):
    _, store = city
    app = typer.Typer()
    app.command()(benchmark)
    app.command("noop")(lambda: None)  # two commands, so typer keeps the sub-command name
    runner = CliRunner()
    out = tmp_path / "out" / "bench.json"
    res = runner.invoke(app, ["benchmark", "--dataset", "tiny", "--models", "persistence,seasonal_naive",
                              "--json", str(out), "--db", str(store.path)])
    assert res.exit_code == 0, res.output
    assert "| seasonal_naive | 60 |" in res.output
    assert json.loads(out.read_text())["results"][0]["model"] == "persistence"
    bad = runner.invoke(app, ["benchmark", "--dataset", "nowhere", "--db", str(store.path)])
    assert bad.exit_code == 2
    assert "error: no dataset named 'nowhere'" in bad.output
    missing = runner.invoke(app, ["benchmark", "--dataset", "tiny", "--db", str(tmp_path / "none.duckdb")])
    assert missing.exit_code == 2 and "no store" in missing.output


@pytest.fixture(scope="module")
def saved_gbt(city, tmp_path_factory):
    """A fitted gbt saved as a model folder (what --speed times)."""
    _, store = city
    out = tmp_path_factory.mktemp("models")
    run_benchmark(store, "tiny", "standard", ["gbt"], model_kwargs={"gbt": FAST_GBT}, save_dir=out)
    return out / "gbt"


def test_speed_times_every_detector_horizon_and_quantile(city, saved_gbt, tmp_path):
    panel, store = city
    rep = inference_speed(store, "tiny", [saved_gbt], repeats=2)
    (row,) = rep["speed"]
    n_det = panel.values.shape[1]
    assert row["detectors"] == n_det and row["horizons"] == 4 and row["forecast_values"] == n_det * 4 * 3
    assert 0 < row["warm_s"] <= row["warm_max_s"] and row["samples_per_s"] == pytest.approx(n_det / row["warm_s"])
    assert row["peak_rss_mb"] > 0
    # the warm calls forecast successive issue times, the last ones the data allows
    assert rep["issued_at"] == str(panel.times[len(panel.times) - 3])
    with pytest.raises(BenchmarkError, match="cannot load a model"):
        inference_speed(store, "tiny", [tmp_path / "nothing"], repeats=1)


def test_command_speed_and_preset_options(city, saved_gbt, tmp_path):
    _, store = city
    app = typer.Typer()
    app.command()(benchmark)
    app.command("noop")(lambda: None)
    runner = CliRunner()
    res = runner.invoke(app, ["benchmark", "--dataset", "tiny", "--db", str(store.path), "--speed",
                              str(saved_gbt), "--repeats", "1", "--json", str(tmp_path / "speed.json")])
    assert res.exit_code == 0, res.output
    assert "samples/s (warm)" in res.output and f"| {saved_gbt} |" in res.output
    assert json.loads((tmp_path / "speed.json").read_text())["speed"][0]["detectors"] > 0
    bad = runner.invoke(app, ["benchmark", "--dataset", "tiny", "--db", str(store.path), "--models", "lm",
                              "--preset", "huge"])
    assert bad.exit_code == 2 and "unknown preset 'huge'" in bad.output
    nolm = runner.invoke(app, ["benchmark", "--dataset", "tiny", "--db", str(store.path), "--models", "gbt",
                               "--preset", "quick"])
    assert nolm.exit_code == 2 and "lm is not in --models" in nolm.output


def test_lm_inference_last_layer_reads_only_what_the_head_reads():
    """The speed fix behind the 140-detector timing: the pruned last layer gives the same forecasts."""
    import copy

    import torch

    from trafficcore.models.backbone import load_backbone
    from trafficcore.models.lm import LMConfig
    from trafficcore.models.lm.net import FusionNet, prune_last_layer

    torch.manual_seed(0)
    cfg = LMConfig(num_layers=2, dropout=0.0)
    dims = {"own": (4, 12), "target": (1, 16)}
    net = FusionNet(load_backbone(num_layers=2, dropout=0.0).model, dims, 4, cfg).eval()
    torch.nn.init.normal_(net.head[-1].weight, std=0.5)  # a trained head, not the zero start
    B, L = 6, 9
    lengths = torch.tensor([9, 3, 5, 9, 7, 2])  # padded texts of different lengths
    batch = {"own": torch.randn(B, 4, 12), "target": torch.randn(B, 16),
             "input_ids": torch.randint(1000, 2000, (B, L)),
             "attention_mask": (torch.arange(L)[None, :] < lengths[:, None]).long()}
    pruned = copy.deepcopy(net)
    assert prune_last_layer(pruned) and not prune_last_layer(pruned)  # once only
    with torch.inference_mode():
        full, fast = net(batch), pruned(batch)
    assert full.abs().max() > 0.1
    torch.testing.assert_close(fast, full, atol=1e-4, rtol=1e-4)
