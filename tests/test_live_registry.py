"""The model registry (trafficcore.live.registry): one promoted version per dataset, rollback and its undo,
listings, the `trafficcore models` commands, and which model serves a dataset (trafficcore.live.serving) and why.

Saved models here are seasonal-naive baselines (a folder in milliseconds); the language model's update path is
in test_live_update.py.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from helpers import tiny_tables
from typer.testing import CliRunner

from trafficcore import config
from trafficcore.cli import app
from trafficcore.data.panel import load_panel
from trafficcore.data.store import Store
from trafficcore.live import registry as reg
from trafficcore.live import serving
from trafficcore.live.fallback import fit_baseline


@pytest.fixture
def tiny(store):
    store.ingest("tiny", tiny_tables(days=15))
    serving.clear_cache()
    return store


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> Path:
    """One saved seasonal-naive model; tests copy it (a copy is a distinct version with its own path)."""
    store = Store(tmp_path_factory.mktemp("reg") / "m.duckdb")
    store.ingest("tiny", tiny_tables(days=15))
    model, _ = fit_baseline("seasonal_naive", load_panel(store, "tiny"))
    folder = tmp_path_factory.mktemp("model") / "m"
    model.save(folder)
    return folder


@pytest.fixture
def saved(model_folder):
    def copy(folder: Path) -> Path:
        shutil.copytree(model_folder, folder)
        return folder

    return copy


def _promoted_ids(store, dataset="tiny") -> list[str]:
    return list(store.query("SELECT run_id FROM model_runs WHERE dataset = ? AND promoted", [dataset])["run_id"])


def test_register_list_and_exactly_one_promoted(tiny, tmp_path, saved):
    a = reg.register(tiny, "tiny", "seasonal_naive", saved(tmp_path / "a"), {"mae": 3.0}, {"k": 1},
                     train_end="2025-01-10 23:45")
    b = reg.register(tiny, "tiny", "seasonal_naive", saved(tmp_path / "b"), {"mae": 2.0}, {}, parent=a)
    # a forecast record (trafficcore forecast writes these) is not a model version
    tiny.write_frame("model_runs", pd.DataFrame([{"run_id": "fc-tiny-x", "dataset": "tiny", "model": "lm",
                                                  "created_at": pd.Timestamp.now(), "path": str(tmp_path / "a"),
                                                  "metrics_json": "{}", "config_json": "{}", "promoted": False}]))
    df = reg.runs(tiny, "tiny")
    assert set(df["run_id"]) == {a, b}
    assert reg.promoted(tiny, "tiny") is None
    row = reg.get(tiny, b)
    assert row["parent_run_id"] == a and row["metrics"] == {"mae": 2.0} and row["status"] == "registered"
    assert reg.get(tiny, a)["train_end"] == pd.Timestamp("2025-01-10 23:45")

    reg.promote(tiny, a)
    assert _promoted_ids(tiny) == [a]
    reg.promote(tiny, b)
    assert _promoted_ids(tiny) == [b]
    assert reg.get(tiny, a)["status"] == "retired" and reg.promoted(tiny, "tiny")["run_id"] == b
    # another dataset's promotion is independent
    tiny.ingest("other", tiny_tables(days=15))
    c = reg.register(tiny, "other", "seasonal_naive", tmp_path / "a", {}, {}, promote=True)
    assert _promoted_ids(tiny) == [b] and _promoted_ids(tiny, "other") == [c]


def test_rollback_and_undo(tiny, tmp_path, saved):
    a = reg.register(tiny, "tiny", "seasonal_naive", saved(tmp_path / "a"), {}, {}, promote=True)
    with pytest.raises(reg.RegistryError, match="only version ever promoted"):
        reg.rollback(tiny, "tiny")
    b = reg.register(tiny, "tiny", "seasonal_naive", saved(tmp_path / "b"), {}, {}, promote=True)
    c = reg.register(tiny, "tiny", "seasonal_naive", saved(tmp_path / "c"), {}, {}, promote=True)
    r = reg.rollback(tiny, "tiny")
    assert (r["from"], r["to"]) == (c, b) and _promoted_ids(tiny) == [b]
    r = reg.rollback(tiny, "tiny")  # undo
    assert (r["from"], r["to"]) == (b, c) and _promoted_ids(tiny) == [c]
    reg.promote(tiny, a)
    assert reg.rollback(tiny, "tiny")["to"] == c


def test_bad_requests_change_nothing(tiny, tmp_path, saved):
    with pytest.raises(reg.RegistryError, match="no promoted model"):
        reg.rollback(tiny, "tiny")
    a = reg.register(tiny, "tiny", "seasonal_naive", saved(tmp_path / "a"), {}, {}, promote=True)
    with pytest.raises(reg.RegistryError, match="no model version"):
        reg.promote(tiny, "nope")
    with pytest.raises(reg.RegistryError, match="config.json is missing"):
        reg.register(tiny, "tiny", "lm", tmp_path / "missing", {}, {}, promote=True)
    gone = reg.register(tiny, "tiny", "seasonal_naive", saved(tmp_path / "gone"), {}, {})
    for f in (tmp_path / "gone").iterdir():
        f.unlink()
    with pytest.raises(reg.RegistryError, match="no saved model folder"):
        reg.promote(tiny, gone)
    with pytest.raises(reg.RegistryError, match="already registered"):
        reg.register(tiny, "tiny", "seasonal_naive", tmp_path / "a", {}, {}, run_id=a, promote=True)
    assert _promoted_ids(tiny) == [a] and len(reg.runs(tiny, "tiny")) == 2


def test_an_older_store_gains_the_registry_columns(tmp_path, saved):
    db = tmp_path / "old.duckdb"
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE model_runs (run_id VARCHAR, dataset VARCHAR, model VARCHAR, created_at TIMESTAMP, "
                "path VARCHAR, metrics_json VARCHAR, config_json VARCHAR, promoted BOOLEAN)")
    con.execute("INSERT INTO model_runs VALUES ('train-old', 'tiny', 'lm', now(), NULL, '{}', '{}', false)")
    con.close()
    store = Store(db)
    assert reg.get(store, "train-old")["status"] is None
    store.ingest("tiny", tiny_tables(days=15))
    rid = reg.register(store, "tiny", "seasonal_naive", saved(tmp_path / "a"), {}, {}, promote=True)
    assert reg.promoted(store, "tiny")["run_id"] == rid


def _serve(store):
    served = serving.serving_model(store, "tiny")
    return served.model, served.info()


def test_serving_prefers_promoted_then_shipped_then_baseline(tiny, tmp_path, monkeypatch, saved):
    monkeypatch.setattr(config, "DEMO_MODEL_DIR", tmp_path / "no_shipped_model")
    model, info = _serve(tiny)
    assert info["source"] == "baseline" and info["model"] == "historical_average"
    assert info["display_name"] == "Historical average (fitted now)"
    assert "no promoted version" in info["reason"] and model.spec.horizons_min[0] == 15
    assert _serve(tiny)[0] is model  # fitted once, then cached

    shipped = saved(tmp_path / "shipped")
    cfg = json.loads((shipped / "config.json").read_text())
    (shipped / "config.json").write_text(json.dumps({**cfg, "dataset_source": "test"}))  # tiny_tables' source
    monkeypatch.setattr(config, "DEMO_MODEL_DIR", shipped)
    model, info = _serve(tiny)
    assert info["source"] == "shipped" and info["path"] == str(shipped.resolve())
    assert info["display_name"] == "Seasonal naive"

    rid = reg.register(tiny, "tiny", "seasonal_naive", saved(tmp_path / "p"), {"mae": 1.5}, {}, promote=True)
    model, info = _serve(tiny)
    assert (info["source"], info["run_id"], info["metrics"]) == ("promoted", rid, {"mae": 1.5})
    assert _serve(tiny)[0] is model  # cached by path + mtime
    st = os.stat(tmp_path / "p" / "config.json")
    os.utime(tmp_path / "p" / "config.json", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # the folder was re-saved
    assert _serve(tiny)[0] is not model

    (tmp_path / "p" / "config.json").unlink()  # the promoted folder is gone: say so, answer with the next best
    model, info = _serve(tiny)
    assert info["source"] == "shipped" and f"promoted version {rid} could not be loaded" in info["reason"]


def _val(mae: float) -> dict:
    return {"val": {"15": {"mae": mae, "coverage_p10_p90": 0.8, "n": 10}, "30": {"mae": mae, "n": 10}}}


def test_without_a_promotion_the_best_on_validation_serves(tiny, tmp_path, monkeypatch, saved):
    shipped = saved(tmp_path / "shipped")
    cfg = json.loads((shipped / "config.json").read_text())
    (shipped / "config.json").write_text(json.dumps({**cfg, "dataset_source": "test", "metrics": _val(5.0)}))
    monkeypatch.setattr(config, "DEMO_MODEL_DIR", shipped)
    worse = reg.register(tiny, "tiny", "seasonal_naive", saved(tmp_path / "w"), _val(6.0), {})
    better = reg.register(tiny, "tiny", "seasonal_naive", saved(tmp_path / "b"), _val(4.0), {})
    unscored = reg.register(tiny, "tiny", "seasonal_naive", saved(tmp_path / "u"), {}, {})
    order = [c.key for c in serving.candidates(tiny, "tiny")]
    assert order == [f"run:{better}", "shipped", f"run:{worse}", f"run:{unscored}", "fit:historical_average"]
    _, info = _serve(tiny)
    assert info["run_id"] == better and info["source"] == "registered" and info["val_mae"] == 4.0
    assert "validation MAE 4.000" in info["reason"]
    reg.set_status(tiny, better, "rejected")  # a rejected version never serves, whatever its score
    assert _serve(tiny)[1]["source"] == "shipped"
    reg.promote(tiny, worse)  # an operator's promotion beats any score
    assert _serve(tiny)[1]["run_id"] == worse


def test_a_stack_serves_under_its_members_names(tiny, tmp_path, monkeypatch):
    from trafficcore.evaluation.protocols import standard_split
    from trafficcore.models.stack import StackForecaster

    monkeypatch.setattr(config, "DEMO_MODEL_DIR", tmp_path / "no_shipped_model")
    panel = load_panel(tiny, "tiny")
    split = standard_split(panel)
    stack = StackForecaster(members={"historical_average": {}, "seasonal_naive": {}}).fit(panel, split.train,
                                                                                         split.val)
    stack.weights[:] = [1.0, 0.0]  # as if validation chose the historical average alone
    stack.save(tmp_path / "stack")
    reg.register(tiny, "tiny", "stack", tmp_path / "stack", {}, {}, promote=True)
    served = serving.serving_model(tiny, "tiny")
    assert isinstance(served.model, StackForecaster)
    assert served.display_name == "Historical average (seasonal naive not used)"


def test_models_commands(tiny, tmp_path, saved):
    db = str(tiny.path)
    a = reg.register(tiny, "tiny", "seasonal_naive", saved(tmp_path / "a"), {"holdout_mae": 4.25}, {})
    b = reg.register(tiny, "tiny", "seasonal_naive", saved(tmp_path / "b"), {}, {}, parent=a)
    run = CliRunner().invoke
    r = run(app, ["models", "promote", a, "--db", db])
    assert r.exit_code == 0 and f"promoted {a}" in r.output
    r = run(app, ["models", "promote", b, "--db", db])
    assert r.exit_code == 0
    r = run(app, ["models", "list", "--dataset", "tiny", "--db", db])
    lines = r.output.splitlines()
    assert r.exit_code == 0 and lines[0].startswith(f"* {b}") and f"from {a}" in lines[0]
    assert "held-out MAE 4.250" in r.output
    r = run(app, ["models", "rollback", "--dataset", "tiny", "--db", db])
    assert r.exit_code == 0 and f"{b} -> {a}" in r.output and _promoted_ids(tiny) == [a]
    listed = json.loads(run(app, ["models", "list", "--dataset", "tiny", "--json", "--db", db]).output)
    assert {x["run_id"]: x["promoted"] for x in listed} == {a: True, b: False}
    r = run(app, ["models", "promote", "nope", "--db", db])
    assert r.exit_code == 2 and "no model version" in r.output
    r = run(app, ["models", "list", "--dataset", "nope", "--db", db])
    assert r.exit_code == 2 and "no dataset named 'nope'" in r.output


def test_a_promotion_by_another_process_is_seen_within_the_lookup_ttl(tiny, tmp_path, monkeypatch, saved):
    monkeypatch.setattr(config, "DEMO_MODEL_DIR", tmp_path / "no_shipped_model")
    rid = reg.register(tiny, "tiny", "seasonal_naive", saved(tmp_path / "a"), {}, {})
    assert _serve(tiny)[1]["source"] == "registered"
    with tiny.connect() as con:  # what `trafficcore models promote` does from another process
        con.execute("UPDATE model_runs SET promoted = true, promoted_at = now() WHERE run_id = ?", [rid])
    assert _serve(tiny)[1]["source"] == "registered"  # memoised lookup (LOOKUP_TTL_S)
    monkeypatch.setattr(reg, "LOOKUP_TTL_S", 0.0)
    info = _serve(tiny)[1]
    assert (info["source"], info["run_id"]) == ("promoted", rid)
