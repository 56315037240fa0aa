"""Continual fine-tuning (trafficcore.live.update, `trafficcore update`) on a tiny synthetic panel whose volumes
jump by 60% on day 10: a tiny language model (one MiniLM layer) learns days 1-8 (day 9 validates), the update
fine-tunes it on days 10-12 with replay (day 13 validates) and is judged on day 14, which it never sees.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from helpers import tiny_tables
from typer.testing import CliRunner

from trafficcore.cli import app
from trafficcore.data.panel import load_panel
from trafficcore.data.store import Store
from trafficcore.live import registry as reg
from trafficcore.live import serving
from trafficcore.live.update import UpdateError, replay_rows, rows_between, run_update, split_windows

DAYS, CHANGE_DAY = 14, 9  # 2025-01-01 .. 2025-01-14; the jump starts on 2025-01-10
pytestmark = pytest.mark.slow  # one tiny LM fit (~10 s on an idle core), shared by the module


def shifted_tables(factor: float = 1.6):
    """Three detectors with a daily profile and Poisson noise; from CHANGE_DAY on, volumes are `factor` times higher."""
    t = tiny_tables(days=DAYS)
    times = pd.date_range("2025-01-01", periods=96 * DAYS, freq="15min")
    tod = np.asarray(times.hour * 60 + times.minute) / 1440
    base = 40 + 30 * np.sin(2 * np.pi * (tod - 0.25)) ** 2
    jump = np.where(times >= pd.Timestamp("2025-01-01") + pd.Timedelta(days=CHANGE_DAY), factor, 1.0)
    rng = np.random.default_rng(0)
    vals = [rng.poisson(base * (1 + 0.2 * k) * jump).astype(float) for k in range(3)]
    t.observations = pd.DataFrame({"detector_id": np.repeat(t.detectors["detector_id"].to_numpy(), len(times)),
                                   "ts": np.tile(times, 3), "value": np.concatenate(vals)})
    return t


@pytest.fixture(scope="module")
def base_model(tmp_path_factory):
    """A tiny LM trained on days 1-8 and validated on day 9 (so it has seen data up to 2025-01-09 23:45)."""
    from trafficcore.models.lm import LMForecaster, Phase, Recipe

    store = Store(tmp_path_factory.mktemp("upd") / "fit.duckdb")
    store.ingest("shift", shifted_tables())
    panel = load_panel(store, "shift")
    recipe = Recipe("test", "a tiny base model", (Phase("numeric", trains="numeric", epochs=2, batch_size=64),
                                                  Phase("text", trains="text", steps=2, batch_size=16, evals=1,
                                                        keep_start=True)),
                    model={"num_layers": 1}, val_samples=256, eval_samples=256)
    m = LMForecaster(recipe=recipe, device="cpu", progress=False)
    m.fit(panel, rows_between(panel, "2025-01-01", "2025-01-09", m.spec),
          rows_between(panel, "2025-01-09", "2025-01-10", m.spec))
    folder = tmp_path_factory.mktemp("base") / "lm"
    m.save(folder)
    return folder


@pytest.fixture
def live(tmp_path, base_model):
    """A fresh store with the shifted data and the base model registered and promoted."""
    store = Store(tmp_path / "live.duckdb")
    store.ingest("shift", shifted_tables())
    folder = tmp_path / "base"
    shutil.copytree(base_model, folder)
    run_id = reg.register(store, "shift", "lm", folder, {}, {}, promote=True)
    serving.clear_cache()
    return store, run_id


def test_the_checkpoint_records_how_far_its_data_went(base_model):
    cfg = json.loads((base_model / "config.json").read_text())
    assert cfg["train_end"] == "2025-01-09 23:45:00"


def test_windows_do_not_overlap(live):
    store, _ = live
    panel = load_panel(store, "shift")
    from trafficcore.data.windows import WindowSpec

    spec = WindowSpec()
    w = split_windows(panel, spec, "2025-01-09 23:45", holdout_days=1)
    t = panel.times
    last = 3  # the 60-minute target is 3 intervals after the issue interval
    assert t[w.train.min()] == pd.Timestamp("2025-01-10") and t[w.train.max() + last] < pd.Timestamp("2025-01-13")
    assert t[w.val.min()] == pd.Timestamp("2025-01-13") and t[w.val.max() + last] < pd.Timestamp("2025-01-14")
    assert t[w.holdout.min()] == pd.Timestamp("2025-01-14") and t[w.holdout.max() + last] == t[-1]
    assert t[w.older.min()] == pd.Timestamp("2025-01-09")
    assert t[w.older.max() + last] == pd.Timestamp("2025-01-09 23:45")
    assert t[w.replay_pool.max() + last] < pd.Timestamp("2025-01-09")  # replay never draws the forgetting window
    rep = replay_rows(w, 0.5, seed=0)
    assert len(rep) == len(w.train) and set(rep) <= set(w.replay_pool)
    assert len(replay_rows(w, 0.0, seed=0)) == 0
    with pytest.raises(UpdateError, match="no new readings"):
        split_windows(panel, spec, "2025-01-14 23:45")
    with pytest.raises(UpdateError, match="too little new data"):
        split_windows(panel, spec, "2025-01-13 23:45")


def test_update_fine_tunes_evaluates_and_promotes_only_when_better(live):
    store, base_id = live
    r = run_update(store, "shift", steps=60, progress=False, echo=lambda *_: None)
    ev = r.evaluation
    assert set(ev) == {"holdout", "older"} and set(ev["holdout"]["current"]["horizons"]) == {"15", "30", "45", "60"}
    assert ev["holdout"]["current"]["n_samples"] == ev["holdout"]["candidate"]["n_samples"] > 0
    # the jump is learnt from the new days: better on the held-out newest day, hence promoted
    assert ev["holdout"]["candidate"]["mae"] < ev["holdout"]["current"]["mae"]
    assert r.promoted and r.current_run_id == base_id
    row = reg.promoted(store, "shift")
    assert row["run_id"] == r.candidate_run_id and row["parent_run_id"] == base_id
    assert row["train_end"] == pd.Timestamp("2025-01-13 23:45")  # the held-out day stays unseen for the next update
    assert row["metrics"]["holdout_mae"] == pytest.approx(ev["holdout"]["candidate"]["mae"])
    saved = store.path.parent / "models" / "shift" / r.candidate_run_id
    assert r.candidate_path == str(saved) and (saved / "model.safetensors").exists()
    served = serving.serving_model(store, "shift")
    model, info = served.model, served.info()
    assert info["run_id"] == r.candidate_run_id and model.train_end == "2025-01-13 23:45:00"

    # a zero-step update changes no weights: its held-out MAE is not lower, so it is registered but not promoted
    again = run_update(store, "shift", model_dir=r.candidate_path, since="2025-01-09 23:45", steps=0,
                       progress=False, echo=lambda *_: None)
    h = again.evaluation["holdout"]
    assert h["candidate"]["mae"] == pytest.approx(h["current"]["mae"], abs=1e-6)
    assert not again.promoted and reg.get(store, again.candidate_run_id)["status"] == "rejected"
    assert reg.promoted(store, "shift")["run_id"] == r.candidate_run_id
    assert reg.get(store, again.candidate_run_id)["parent_run_id"] == r.candidate_run_id


def test_update_command(live, tmp_path):
    store, base_id = live
    db = str(store.path)
    out = tmp_path / "cand"
    res = CliRunner().invoke(app, ["update", "--dataset", "shift", "--steps", "30", "--no-promote", "--out", str(out),
                                   "--no-progress", "--json", str(tmp_path / "u.json"), "--db", db])
    assert res.exit_code == 0, res.output
    assert "| held out 2025-01-14..2025-01-14 | current |" in res.output and "| older" in res.output
    result = json.loads((tmp_path / "u.json").read_text())
    assert not result["promoted"] and (out / "config.json").exists()
    assert reg.promoted(store, "shift")["run_id"] == base_id  # --no-promote
    assert reg.get(store, result["candidate_run_id"])["status"] in ("candidate", "rejected")
    res = CliRunner().invoke(app, ["update", "--dataset", "shift", "--since", "2025-01-14 23:45", "--db", db])
    assert res.exit_code == 2 and "no new readings" in res.output
    reg.register(store, "shift", "seasonal_naive", _baseline_folder(store, tmp_path), {}, {}, promote=True)
    res = CliRunner().invoke(app, ["update", "--dataset", "shift", "--db", db])
    assert res.exit_code == 2 and "not a language model" in res.output


def _baseline_folder(store, tmp_path):
    from trafficcore.live.fallback import fit_baseline

    model, _ = fit_baseline("seasonal_naive", load_panel(store, "shift"))
    model.save(tmp_path / "sn")
    return tmp_path / "sn"


def _serve(store, run_id: str, model_dir, first_day: str, last_day: str) -> int:
    """Store the model's forecasts at every issue time of [first_day, last_day] as live run `live:<run_id>`, as if
    it had served them; returns the number of issue times."""
    from trafficcore.live.serving import load_saved
    from trafficcore.models.base import forecast_frame

    panel = load_panel(store, "shift")
    model = load_saved(model_dir)
    rows = rows_between(panel, first_day, pd.Timestamp(last_day) + pd.Timedelta(days=1), model.spec)
    samples = model.samples(panel, rows)
    fc = forecast_frame(panel, samples, model.predict_samples(panel, samples))
    store.write_frame("forecasts", fc.assign(run_id=f"live:{run_id}")[["run_id", *fc.columns]], "shift")
    return len(rows)


def test_update_reports_the_served_window_and_weighs_it(live):
    store, base_id = live
    n_issue = _serve(store, base_id, reg.promoted(store, "shift")["path"], "2025-01-12", "2025-01-14")
    r = run_update(store, "shift", steps=30, progress=False, echo=lambda *_: None)
    s = r.evaluation["served"]
    assert r.periods["served"][0] == "2025-01-12 00:00:00" and r.periods["served_issue_times"] == n_issue
    assert r.periods["served_in_holdout"] == len(rows_between(load_panel(store, "shift"), "2025-01-14",
                                                              "2025-01-15", serving.load_saved(r.candidate_path)
                                                              .spec))
    # the same model on the same issue times: what it served is what it scores again
    assert s["as_served"]["mae"] == pytest.approx(s["current"]["mae"], rel=1e-5)
    assert s["as_served"]["n_samples"] == s["current"]["n_samples"] == s["candidate"]["n_samples"] > 0
    assert r.promoted == (s["candidate"]["mae"] <= s["current"]["mae"]
                          and r.evaluation["holdout"]["candidate"]["mae"] < r.evaluation["holdout"]["current"]["mae"])
    row = reg.get(store, r.candidate_run_id)
    assert row["metrics"]["served_mae"] == pytest.approx(s["candidate"]["mae"])
    assert row["metrics"]["served_mae_parent"] == pytest.approx(s["as_served"]["mae"])
    from trafficcore.live.update import report_lines

    text = "\n".join(report_lines(r))
    assert "| served 2025-01-12 00:00..2025-01-14" in text and "| current, as served |" in text
    assert f"served window: {n_issue} issue times" in text
    listed = CliRunner().invoke(app, ["models", "list", "--dataset", "shift", "--db", str(store.path)])
    assert f"served window {s['candidate']['mae']:.3f} vs parent as served" in listed.output


def test_verdict_needs_the_held_out_day_and_the_served_window():
    from trafficcore.live.update import verdict

    def ev(hold_cur, hold_cand, served=None):
        out = {"holdout": {"current": {"mae": hold_cur}, "candidate": {"mae": hold_cand}}}
        if served is not None:
            out["served"] = {"current": {"mae": served[0]}, "candidate": {"mae": served[1]}}
        return out

    assert verdict(ev(10.0, 9.0)) == (True, "better on the held-out day (no live forecasts served by the current "
                                            "model to compare on)")
    assert verdict(ev(10.0, 9.0, (8.0, 7.5)))[0] is True
    assert verdict(ev(10.0, 10.0, (8.0, 7.5)))[0] is False
    ok, why = verdict(ev(10.0, 9.0, (8.0, 8.5)))
    assert not ok and "worse than the current model on the served window" in why
