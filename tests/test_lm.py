"""The language-model forecaster: its inputs (no leakage, fast context == reference), the network, save/load,
ablation variants, and the shipped demo model.

Model tests use the real MiniLM backbone cut to one layer and a handful of steps on a tiny panel.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import tiny_tables

from trafficcore import config
from trafficcore.data.panel import load_panel
from trafficcore.data.profile import DetectorProfile
from trafficcore.data.windows import WindowSpec, build_samples, context_fields, issue_grid
from trafficcore.models.backbone import DEFAULT_BACKBONE, load_backbone, weights_sha256
from trafficcore.models.base import predict
from trafficcore.models.lm import RECIPES, LMForecaster, Phase, Recipe
from trafficcore.models.lm.inputs import FastContext, numeric_inputs
from trafficcore.models.lm.net import pinball
from trafficcore.training.engine import calibrate_bands, draw_samples, stop_subset

SPEC = WindowSpec()


def tiny_recipe(numeric: float = 0.5, steps: int = 4, batch: int = 16, evals: int = 2, val: int = 128,
                **text) -> Recipe:
    """A recipe small enough for tests: an optional numeric phase, then `steps` of the transformer (trained
    alone after a numeric phase, else together with the numeric path, as the GPU recipe does)."""
    phases = []
    if numeric:
        phases.append(Phase("numeric", trains="numeric", epochs=numeric, batch_size=64, lr=2e-3, evals=2))
    if steps:
        phases.append(Phase("text", trains="text" if numeric else "all", steps=steps, batch_size=batch, evals=evals,
                            keep_start=bool(numeric), **text))
    return Recipe("test", "a tiny recipe for tests", tuple(phases), model={"num_layers": 1}, val_samples=val,
                  eval_samples=val)


def tiny_lm(recipe: Recipe | None = None, **architecture) -> LMForecaster:
    return LMForecaster(recipe=recipe or tiny_recipe(), device="cpu", progress=False, **architecture)


def _tiny_with_context():
    """tiny_tables plus events (planned, unplanned, holiday, far away) and hourly weather; not synthetic."""
    t = tiny_tables(days=15)
    t.info = dataclasses.replace(t.info, synthetic=False)
    t.events = pd.DataFrame({
        "event_id": ["e1", "e2", "e3", "e4", "e5"],
        "start_ts": pd.to_datetime(["2025-01-12 18:00", "2025-01-13 07:30", "2025-01-06 00:00",
                                    "2025-01-12 19:00", "2025-01-14 08:00"]),
        "end_ts": pd.to_datetime(["2025-01-12 22:00", None, "2025-01-06 23:59", "2025-01-12 21:00",
                                  "2025-01-14 12:00"]),
        "lat": [52.0, np.nan, np.nan, 40.0, 52.02],
        "lon": [5.0, np.nan, np.nan, 5.0, 5.01],
        "site_id": [None, "B", None, None, None],
        "kind": ["concert", "crash", "holiday", "concert", "road works"],
        "text": ["Concert for 20000 people at A Arena", "Collision blocks two lanes on B St",
                 "Founders Day", "Far away show", "Road works on C St, one lane closed"],
        "source": "test",
    })
    hours = pd.date_range("2025-01-01", periods=24 * 15, freq="h")
    t.weather = pd.DataFrame({"ts": hours, "temp_c": 5.0, "precip_mm": np.where(np.arange(len(hours)) % 7 == 0, 2.0,
                                                                                  0.0),
                              "humidity_pct": 80.0, "wind_kmh": np.nan, "condition": "rain"})
    return t


@pytest.fixture(scope="module")
def panel(tmp_path_factory):
    from trafficcore.data.store import Store

    store = Store(tmp_path_factory.mktemp("lm") / "t.duckdb")
    store.ingest("tiny", _tiny_with_context())
    return load_panel(store, "tiny")


def _split(panel):
    from trafficcore.evaluation.protocols import standard_split

    return standard_split(panel, SPEC)


@pytest.fixture(scope="module")
def fitted(panel):
    sp = _split(panel)
    return tiny_lm().fit(panel, sp.train, sp.val)


# ------------------------------------------------------------------------------ inputs
def test_fast_context_equals_the_reference(panel):
    fc = FastContext(panel, SPEC)
    rows = issue_grid(panel, spec=SPEC)
    rng = np.random.default_rng(0)
    picks = [(d, int(r)) for d in range(3) for r in rng.choice(rows, 60, replace=False)]
    picks += [(0, panel.index_of("2025-01-12 17:30")), (1, panel.index_of("2025-01-13 08:00")),
              (2, panel.index_of("2025-01-14 09:00")), (0, panel.index_of("2025-01-06 10:00"))]
    n_events = 0
    for d, r in picks:
        want = context_fields(panel, d, r, SPEC)
        got = fc.fields(d, r)
        assert got == want, (d, r)
        n_events += bool(got["events"])
    assert n_events >= 3, "the probe must include samples with events"
    assert fc.fields(0, panel.index_of("2025-01-06 10:00"))["holiday"]
    # one interval past the data: the reference cannot index it, the fast path extrapolates the clock
    assert fc.fields(0, len(panel.times))["issued_at"] == panel.times[-1] + panel.interval


def test_profile_uses_training_rows_only(panel):
    rows = np.arange(96 * 7)
    a = DetectorProfile.fit(panel, rows)
    changed = dataclasses.replace(panel, values=panel.values.copy())
    changed.values[96 * 7:] = 1e6
    b = DetectorProfile.fit(changed, rows)
    assert np.allclose(a.scale, b.scale) and np.allclose(a.table, b.table, equal_nan=True)
    assert np.allclose(a.scale, np.nanmean(panel.values[rows], axis=0))
    unseen = DetectorProfile.fit(panel, rows, exclude={"B:N"})
    scale, prof = unseen.for_panel(panel)
    assert np.isnan(unseen.scale[1]) and np.isfinite(scale[1]) and np.isfinite(prof[1]).all()


def test_numeric_inputs_never_read_the_issue_interval_or_later(panel):
    """Rewrite everything from the issue time on: the inputs of samples issued then must not change."""
    stats = DetectorProfile.fit(panel, np.arange(96 * 8))
    t0 = panel.index_of("2025-01-11 08:00")
    nb = panel.neighbour_matrix(SPEC.n_neighbours, SPEC.neighbour_method)
    future = dataclasses.replace(panel, values=panel.values.copy())
    future.values[t0:] = np.random.default_rng(0).uniform(0, 1e5, future.values[t0:].shape)
    a = numeric_inputs(panel, build_samples(panel, np.array([t0]), spec=SPEC, neighbour_idx=nb), stats, nb)
    b = numeric_inputs(future, build_samples(future, np.array([t0]), spec=SPEC, neighbour_idx=nb), stats, nb)
    for f in ("own", "nbr", "week", "target", "calendar", "anchor", "scale"):
        assert np.array_equal(getattr(a, f), getattr(b, f)), f
    c = numeric_inputs(panel, build_samples(panel, np.array([t0 + 1]), spec=SPEC, neighbour_idx=nb), stats, nb)
    assert not np.array_equal(a.own, c.own)


def test_training_inputs_leave_their_own_reading_out_of_the_profile(panel):
    """A training sample's profile is the mean of the *other* training days at that slot; other samples keep
    the plain profile."""
    from trafficcore.data.profile import daytype_slot

    fit_rows = np.arange(96 * 8)
    stats = DetectorProfile.fit(panel, fit_rows)
    nb = panel.neighbour_matrix(SPEC.n_neighbours, SPEC.neighbour_method)
    t0 = panel.index_of("2025-01-07 10:00")  # inside the fit rows
    s = build_samples(panel, np.array([t0]), spec=SPEC, neighbour_idx=nb)
    plain = numeric_inputs(panel, s, stats, nb)
    loo = numeric_inputs(panel, s, stats, nb, leave_own_out=True)
    patch = 4
    H = SPEC.history_steps
    cell = np.stack(daytype_slot(panel, fit_rows), axis=1)  # (rows, 2): day type, slot
    for i, d in enumerate(s.detector_idx):
        want = []
        for r in t0 + np.arange(-H, 0):
            others = fit_rows[(cell == cell[r]).all(axis=1) & (fit_rows != r)]
            want.append(np.nanmean(panel.values[others, d]))
        got = loo.own[i, :, patch:2 * patch].reshape(-1) * loo.scale[i]
        assert np.allclose(got, want, rtol=1e-4), (d, got, want)
        assert not np.allclose(plain.own[i, :, patch:2 * patch], loo.own[i, :, patch:2 * patch])
    # a sample issued after the fit rows reads the plain profile either way
    late = build_samples(panel, np.array([panel.index_of("2025-01-11 08:00")]), spec=SPEC, neighbour_idx=nb)
    a, b = numeric_inputs(panel, late, stats, nb), numeric_inputs(panel, late, stats, nb, leave_own_out=True)
    for f in ("own", "nbr", "target", "anchor"):
        assert np.array_equal(getattr(a, f), getattr(b, f)), f
    # a loaded model does not know its fit rows: nothing to leave out
    restored = DetectorProfile.restore(stats.config(), stats.tensors())
    assert restored.own_out_tables(panel) is None
    np.testing.assert_array_equal(restored.for_panel(panel)[1], stats.for_panel(panel)[1])


def test_anchor_follows_the_recent_ratio(panel):
    """The tiny data grow steadily, so recent readings exceed the training profile and the anchor rises above it."""
    stats = DetectorProfile.fit(panel, np.arange(96 * 8))
    nb = panel.neighbour_matrix(SPEC.n_neighbours, SPEC.neighbour_method)
    s = build_samples(panel, np.array([panel.index_of("2025-01-11 08:00")]), spec=SPEC, neighbour_idx=nb)
    x = numeric_inputs(panel, s, stats, nb)
    assert x.anchor.shape == (3, 4) and np.isfinite(x.anchor).all()
    target_profile, anchor = x.target[:, :4], x.target[:, 4:8]
    assert (anchor > 1.05 * target_profile).all()
    assert np.allclose(anchor * x.scale[:, None], x.anchor, rtol=1e-5)


# ------------------------------------------------------------------------------ backbone
def test_backbone_loads_offline_and_hashes_weights():
    bb = load_backbone(num_layers=1)
    assert bb.name == DEFAULT_BACKBONE and bb.num_layers == 1 and bb.hidden_size == 384
    assert len(bb.model.encoder.layer) == 1
    assert bb.sha256 == weights_sha256(bb.path) and len(bb.sha256) == 64
    rnd = load_backbone(num_layers=1, random_init=True)
    w = bb.model.encoder.layer[0].attention.self.query.weight
    assert not torch.allclose(w, rnd.model.encoder.layer[0].attention.self.query.weight)
    with pytest.raises(FileNotFoundError):
        load_backbone(Path("/nonexistent/model"))
    with pytest.raises(ValueError, match="num_layers"):
        load_backbone(num_layers=99)


# ------------------------------------------------------------------------------ the model
def test_pinball_and_calibration():
    q = torch.tensor([[[-1.0, 0.0, 1.0]]])
    assert float(pinball(q, torch.tensor([[0.0]]))) == pytest.approx((0.1 + 0 + 0.1) / 3)
    assert float(pinball(q, torch.tensor([[float("nan")]]))) == 0.0
    rng = np.random.default_rng(0)
    y = rng.normal(size=(4000, 1))
    narrow = np.stack([-0.5 * np.ones_like(y), np.zeros_like(y), 0.5 * np.ones_like(y)], axis=-1)
    f = calibrate_bands(narrow, y)
    lo, hi = -0.5 * f[0, 0], 0.5 * f[0, 1]
    assert np.mean((y[:, 0] >= lo) & (y[:, 0] <= hi)) == pytest.approx(0.8, abs=0.01)


def test_fit_predict_protocol(fitted, panel):
    m = fitted
    sp = _split(panel)
    nb = panel.neighbour_matrix(SPEC.n_neighbours, SPEC.neighbour_method)
    s = build_samples(panel, sp.test[:5], spec=SPEC, neighbour_idx=nb)
    q = m.predict_samples(panel, s)
    assert q.shape == (15, 4, 3) and np.isfinite(q).all()
    assert (q[..., 0] <= q[..., 1]).all() and (q[..., 1] <= q[..., 2]).all() and (q >= 0).all()
    df = predict(m, panel, panel.times[sp.test[0]])
    assert len(df) == 12 and list(df["horizon_min"].unique()) == [15, 30, 45, 60]
    assert [p["phase"] for p in m.metrics["phases"]] == ["numeric", "text"]
    assert m.metrics["phases"][1]["steps"] == 4 and set(m.metrics["val"]) == {"15", "30", "45", "60"}
    assert m.metrics["phases"][0]["steps"] >= 1 and m.metrics["clock_cut"] == []


def test_the_model_reads_the_text(panel):
    """Same numbers, different words -> a different forecast (the text path is live)."""
    m = tiny_lm(tiny_recipe(numeric=0, steps=3, evals=1, val=64))
    sp = _split(panel)
    m.fit(panel, sp.train, sp.val)
    assert m.reads_text
    nb = panel.neighbour_matrix(SPEC.n_neighbours, SPEC.neighbour_method)
    s = build_samples(panel, np.array([panel.index_of("2025-01-12 17:30")]), spec=SPEC, neighbour_idx=nb)
    base = m.predict_samples(panel, s)
    original = m.texts
    try:
        m.texts = lambda p, smp: ["Stadium emptying after a cup final, 60000 fans leaving now."] * len(smp)
        other = m.predict_samples(panel, s)
    finally:
        m.texts = original
    assert not np.allclose(base, other)
    texts = m.texts(panel, s)
    assert "Concert for 20000 people" in texts[0] and "Sunday 17:30" in texts[0]


def test_zero_head_shortcut_is_exact(fitted, panel, monkeypatch):
    """With the transformer head at zero the encoder is skipped at inference; forcing it on changes nothing."""
    from trafficcore.models.lm import net as lm_mod

    m = fitted
    nb = panel.neighbour_matrix(SPEC.n_neighbours, SPEC.neighbour_method)
    s = build_samples(panel, _split(panel).test[:4], spec=SPEC, neighbour_idx=nb)
    last = m.net.head[-1]
    saved = (last.weight.detach().clone(), last.bias.detach().clone())
    try:
        with torch.no_grad():
            last.weight.zero_()
            last.bias.zero_()
        m.reset_inference()
        short = m.predict_samples(panel, s)
        assert m._inference_net().skip_only and not m.reads_text
        assert m.display_name == "Language model, numeric path only (its text path added nothing on validation)"
        monkeypatch.setattr(lm_mod.FusionNet, "head_is_zero", lambda self: False)
        m.reset_inference()
        full = m.predict_samples(panel, s)
        assert not m._inference_net().skip_only
    finally:
        with torch.no_grad():
            last.weight.copy_(saved[0])
            last.bias.copy_(saved[1])
        m.reset_inference()
    assert np.allclose(short, full, atol=1e-5)


def test_save_load_roundtrip_stores_adapters_and_heads_only(fitted, panel, tmp_path):
    m = fitted
    m.save(tmp_path / "m")
    from safetensors.torch import load_file

    keys = load_file(str(tmp_path / "m" / "model.safetensors")).keys()
    assert any("lora_A" in k for k in keys) and any(k.startswith("net.head.") for k in keys)
    assert not any(k.endswith("attention.self.query.base_layer.weight") or "word_embeddings" in k for k in keys)
    assert (tmp_path / "m" / "model.safetensors").stat().st_size < 10 * 2**20
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["backbone"]["sha256"] == weights_sha256(load_backbone(num_layers=1).path)
    assert len(cfg["training_data_sha256"]) == 64 and cfg["model_class"] == "lm"
    from trafficcore.models.registry import load_model

    again = load_model(tmp_path / "m")
    nb = panel.neighbour_matrix(SPEC.n_neighbours, SPEC.neighbour_method)
    s = build_samples(panel, _split(panel).test[:7], spec=SPEC, neighbour_idx=nb)
    assert np.allclose(m.predict_samples(panel, s), again.predict_samples(panel, s), atol=1e-5)
    assert again.recipe == m.recipe and again.cfg == m.cfg  # from the folder, whatever the presets say today
    bad = json.loads(json.dumps(cfg))
    bad["model"]["level_feature"] = True  # a setting this version does not know: refused, not silently dropped
    (tmp_path / "m" / "config.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="unknown architecture fields"):
        LMForecaster.load(tmp_path / "m")
    cfg["backbone"]["sha256"] = "0" * 64
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="sha256"):
        LMForecaster.load(tmp_path / "m")


def test_ablation_variants_differ_in_one_thing_each():
    m = LMForecaster(num_layers=1)
    v = m.ablation_variants()
    assert set(v) == {"no_text", "random_init", "frozen_encoder", "full", "numeric_only", "fgm"}
    assert not v["no_text"].cfg.use_text and v["random_init"].cfg.random_init
    assert v["frozen_encoder"].cfg.mode == "frozen" and v["full"].cfg.mode == "full"
    assert not v["numeric_only"].cfg.transformer
    assert v["fgm"].recipe.phases[-1].fgm_eps > 0 and m.recipe.phases[-1].fgm_eps == 0
    for name, x in v.items():
        diff = {k for k in dataclasses.asdict(m.cfg) if getattr(x.cfg, k) != getattr(m.cfg, k)}
        if name == "fgm":  # a training change: same architecture, one phase setting differs
            assert not diff and x.recipe.phases[:-1] == m.recipe.phases[:-1]
        else:
            assert len(diff) == 1 and x.recipe == m.recipe, (name, diff)
        assert x.net is None and x.seed == m.seed


def test_numeric_only_ensemble_with_extra_tokens_roundtrips(panel, tmp_path):
    m = tiny_lm(tiny_recipe(val=64), transformer=False, skip_members=3, extra_tokens=("day", "long"))
    sp = _split(panel)
    m.fit(panel, sp.train, sp.val)
    assert len(m.net.skip) == 3 and m.net.encoder is None and m.tokenizer is None
    assert set(m.token_dims) == {"own", "nbr", "week", "target", "calendar", "day", "long"}
    assert m.token_dims["target"][1] == 16  # profile, anchor, last week, its flags (4 each)
    assert [p["phase"] for p in m.metrics["phases"]] == ["numeric"]  # no transformer: the numeric phase alone
    assert m.display_name == "Numeric network (no language model)" and not m.reads_text
    nb = panel.neighbour_matrix(SPEC.n_neighbours, SPEC.neighbour_method)
    s = build_samples(panel, sp.test[:6], spec=SPEC, neighbour_idx=nb)
    q = m.predict_samples(panel, s)
    assert q.shape == (18, 4, 3) and np.isfinite(q).all()
    m.save(tmp_path / "e")
    assert np.allclose(LMForecaster.load(tmp_path / "e").predict_samples(panel, s), q, atol=1e-5)


def test_frozen_mode_trains_no_encoder_weight(panel):
    m = tiny_lm(tiny_recipe(numeric=0, steps=2, batch=8, evals=1, val=64), mode="frozen", use_text=False)
    sp = _split(panel)
    m.fit(panel, sp.train, sp.val)
    assert not any(p.requires_grad for p in m.net.encoder.parameters())
    fresh = load_backbone(num_layers=1).model
    w = m.net.encoder.encoder.layer[0].output.dense.weight
    assert torch.equal(w, fresh.encoder.layer[0].output.dense.weight)


def test_fgm_perturbs_the_fusion_embeddings(panel, monkeypatch):
    from trafficcore.models.lm import net as lm_mod

    seen = []
    forward = lm_mod.FusionNet.forward

    def spy(self, batch, embed_delta=None):
        if embed_delta is not None:
            seen.append(float(embed_delta.flatten(1).norm(dim=1).mean()))
        return forward(self, batch, embed_delta=embed_delta)

    monkeypatch.setattr(lm_mod.FusionNet, "forward", spy)
    m = tiny_lm(tiny_recipe(numeric=0, steps=2, batch=8, evals=1, val=32, fgm_eps=0.5))
    sp = _split(panel)
    m.fit(panel, sp.train, sp.val)
    # step 1: the zero-initialised output layers make the loss flat in the embeddings (no direction yet)
    assert len(seen) == 2 and seen[0] == 0.0 and seen[1] == pytest.approx(0.5, rel=1e-4)


def test_training_resumes_from_its_state(panel, tmp_path):
    """Stopped by its clock guard after one step, the text phase continues from step 1 to the end on resume,
    without rerunning the numeric phase; the cut is recorded."""
    sp = _split(panel)
    cut = tiny_recipe(numeric=0.2, batch=8, val=64).with_changes(phases={"text": {"guard_minutes": 0.0}})
    first = tiny_lm(cut, use_text=False).fit(panel, sp.train, sp.val, state_dir=tmp_path / "s")
    assert first.metrics["phases"][-1]["steps"] == 1 and first.metrics["clock_cut"] == ["text"]
    again = tiny_lm(tiny_recipe(numeric=0.2, batch=8, val=64), use_text=False).fit(
        panel, sp.train, sp.val, state_dir=tmp_path / "s", resume=tmp_path / "s")
    assert [p["phase"] for p in again.metrics["phases"]] == ["text"] and again.metrics["clock_cut"] == []
    assert again.metrics["phases"][0]["steps"] == 4
    assert [h["step"] for h in again.metrics["phases"][0]["history"]] == [0, 1, 2, 4]  # 0: the numeric weights


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_recipe_trains_a_tiny_round(panel, name):
    """Each preset runs end to end (BasicTS-style smoke test): its phases, its architecture (one encoder layer,
    two steps per phase), the engine's samplers and early-stopping subsets, on the tiny panel."""
    r = RECIPES[name]
    short = {p.name: {"steps": 2, "epochs": None, "batch_size": 16, "evals": 1, "samples": 64 if p.samples else None}
             for p in r.phases}
    m = tiny_lm(dataclasses.replace(r.with_changes(phases=short), val_samples=64, eval_samples=32), num_layers=1)
    assert r.purpose and m.cfg.to_dict()["extra_tokens"] == list(r.model.get("extra_tokens", ()))
    sp = _split(panel)
    m.fit(panel, sp.train, sp.val)
    assert [p["phase"] for p in m.metrics["phases"]] == [p.name for p in r.phases]
    assert all(p["steps"] == 2 for p in m.metrics["phases"]) and np.isfinite(m.metrics["reproduce"]["mae"])


# ------------------------------------------------------------------------------ events: the text and phase-2 sampling
def _one(panel, at: str, d: int = 0):
    nb = panel.neighbour_matrix(SPEC.n_neighbours, SPEC.neighbour_method)
    return build_samples(panel, np.array([panel.index_of(at)]), np.array([d]), spec=SPEC, neighbour_idx=nb)


def test_event_phrases_come_first_and_survive_the_demo_token_limit(panel):
    from trafficcore.text import context_text

    m = LMForecaster(event_details=True)
    s = _one(panel, "2025-01-12 17:30")
    parts = m.text_parts(panel, s)[0]
    # event phrases can also say, in words, when the event ends and how far away it is
    assert parts[0].startswith("Concert for 20000 people at A Arena (starts in 30 min, ends in 4 h, ")
    assert parts[0].endswith(" km away).") and "Sunday 17:30, weekend." in parts
    plain = LMForecaster().text_parts(panel, s)[0]
    assert plain[0] == "Concert for 20000 people at A Arena (starts in 30 min)."
    assert m.texts(panel, s)[0] == " ".join(parts)
    noted = m.text_parts(panel, s, note="concert at the stadium at 19:00")[0]
    assert noted[1] == "concert at the stadium at 19:00." and noted[0] == parts[0]  # the note comes before the site
    demo_preset = LMForecaster(recipe="demo")  # text_scope "events": the event phrases and the note only
    assert demo_preset.text_parts(panel, s)[0] == parts[:1]
    assert demo_preset.text_parts(panel, _one(panel, "2025-01-08 12:00"))[0] == []
    tok = load_backbone(num_layers=1).tokenizer
    long_site = {"site_name": "X " * 80, "approach": "N", "road": "R", "issued_at": pd.Timestamp("2025-01-12 17:30"),
                 "events": [{"kind": "concert", "text": "Concert at the arena", "minutes_from_now": 45},
                            {"kind": "road works", "text": "Road works", "minutes_from_now": -4400}]}
    text = context_text(long_site)
    assert text.startswith("Concert at the arena (starts in 45 min). Road works (started 3 days ago).")
    kept = tok.decode(tok(text, truncation=True, max_length=m.cfg.max_text_tokens)["input_ids"])
    assert "starts in 45 min" in kept  # the site, not the event's timing, is what truncation drops


def test_recent_event_mask_agrees_with_the_text(panel):
    fc = FastContext(panel, SPEC)
    rows = issue_grid(panel, spec=SPEC)
    det = np.repeat(np.arange(len(panel.detectors)), len(rows))
    iss = np.tile(rows, len(panel.detectors))
    got = fc.recent_event_mask(det, iss)
    want = np.array([any(e["minutes_from_now"] >= -180 for e in fc.fields(int(d), int(r))["events"])
                     for d, r in zip(det, iss, strict=True)])
    assert want.sum() >= 20 and (got == want).all()


def test_event_sampler_gives_the_phase_the_asked_event_share(panel):
    nb = panel.neighbour_matrix(SPEC.n_neighbours, SPEC.neighbour_method)
    tr = build_samples(panel, issue_grid(panel, spec=SPEC), spec=SPEC, neighbour_idx=nb)  # the events are late
    flag = FastContext(panel, SPEC).recent_event_mask(tr.detector_idx, tr.issue_idx)
    assert 0 < flag.mean() < 0.05  # events are rare in the plain data

    def phase(sampler: str, n: int) -> Phase:
        return Phase("text", trains="text", steps=1, sampler=sampler, samples=n, event_share=0.5)

    m = LMForecaster()
    n = 2 * int(flag.sum())
    pool = draw_samples(m, panel, tr, phase("events", n), np.random.default_rng(0))
    assert len(pool) == n and len(np.unique(pool)) == len(pool)
    assert flag[pool].mean() == pytest.approx(0.5, abs=0.01)
    plain = draw_samples(m, panel, tr, phase("random", n), np.random.default_rng(0))  # plain random draws
    assert flag[plain].mean() < 0.1
    no_text = LMForecaster(use_text=False)  # nothing to read: no reason to oversample
    assert flag[draw_samples(no_text, panel, tr, phase("events", 400), np.random.default_rng(0))].mean() < 0.1
    many = draw_samples(m, panel, tr, phase("events", 4 * n), np.random.default_rng(0))
    assert flag[many].mean() == pytest.approx(0.5, abs=0.01)  # event samples repeat: 4 passes over each
    assert np.bincount(many[flag[many]]).max() == 4 and len(np.unique(many[~flag[many]])) == (~flag[many]).sum()


def test_late_fusion_reads_the_text_and_roundtrips(panel, tmp_path):
    """The demo preset's late fusion: words change the forecast; only the head and skip path are saved."""
    demo = RECIPES["demo"]
    text = dataclasses.replace(demo.phases[-1], trains="all", steps=6, batch_size=32, evals=2, keep_start=False)
    m = tiny_lm(dataclasses.replace(demo, phases=(text,), val_samples=128, eval_samples=128), num_layers=1)
    sp = _split(panel)
    m.fit(panel, np.concatenate([sp.train, sp.test]), sp.val)  # the tiny panel's events are all after training
    assert m.net.late is not None and not m.net.head_is_zero()
    s = _one(panel, "2025-01-12 17:30")
    own = m.predict_samples(panel, s)
    other = m.predict_with_texts(panel, s, ["Stadium emptying after a cup final, 60000 fans leaving now."])
    assert not np.allclose(own, other)
    quiet = _one(panel, "2025-01-08 12:00")  # no event, no note: the text is empty and the head adds exactly 0
    np.testing.assert_array_equal(m.predict_samples(panel, quiet), m.predict_numeric_path(panel, quiet))
    m.save(tmp_path / "m")
    names = json.loads((tmp_path / "m" / "config.json").read_text())["model"]
    assert names["fusion"] == "late" and names["mode"] == "frozen"
    from safetensors import safe_open

    with safe_open(tmp_path / "m" / "model.safetensors", "pt") as f:
        keys = list(f.keys())
    assert not any(k.startswith("net.encoder") for k in keys) and any(k.startswith("net.late.") for k in keys)
    again = LMForecaster.load(tmp_path / "m")
    np.testing.assert_allclose(again.predict_samples(panel, s), own, rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="frozen"):
        LMForecaster(fusion="late", mode="lora")
    # early stopping scores event samples drawn from the whole validation period, not only the few that a seeded
    # subset of it happens to hold (the demo city: 258 of 4,096), so that it can tell a text head from noise
    rows = sp.test  # the tiny panel's events are here
    nb = panel.neighbour_matrix(SPEC.n_neighbours, SPEC.neighbour_method)
    whole = build_samples(panel, rows, spec=SPEC, neighbour_idx=nb)
    fc = FastContext(panel, SPEC)
    n_whole = int(fc.recent_event_mask(whole.detector_idx, whole.issue_idx).sum())
    m.recipe = dataclasses.replace(m.recipe, val_samples=24, eval_samples=24)
    small = m.validation_samples(panel, rows)
    n_small = int(fc.recent_event_mask(small.detector_idx, small.issue_idx).sum())
    sub = stop_subset(m, panel, text, small, m.prepare(panel, small), rows)
    assert len(sub) == 24 and n_small < min(12, n_whole)
    assert (sub.text_lengths() > 0).sum() >= min(12, n_whole)  # event samples have text; half of the subset


# ------------------------------------------------------------------------------ the shipped demo model
@pytest.fixture(scope="module")
def demo_panel(tmp_path_factory):
    """The default demo city, regenerated (what `trafficcore demo` imports by default)."""
    if not (config.DEMO_MODEL_DIR / "config.json").exists():
        pytest.skip(f"no shipped demo model in {config.DEMO_MODEL_DIR} (train it with the command in its README)")
    from trafficcore.data import demo
    from trafficcore.data.store import Store

    store = Store(tmp_path_factory.mktemp("demo") / "demo.duckdb")
    store.ingest("demo", demo.generate(seed=0, weeks=8))
    return load_panel(store, "demo")


@pytest.mark.slow
def test_demo_model_scenario_note_changes_the_forecast(demo_panel):
    """The dashboard's "Why this forecast" note: the shipped model reads it, and credits it."""
    from trafficcore.explain import explain, phrases

    m = LMForecaster.load(config.DEMO_MODEL_DIR)
    det, at = "S33:E", "2025-10-08 17:00"  # next to Lindenhaven Stadium, a Wednesday with no event there
    plain = explain(m, demo_panel, det, at, 60, n_permutations=2)
    note = "Concert at Lindenhaven Stadium, 30,000 fans, 19:00 until 22:00"
    noted = explain(m, demo_panel, det, at, 60, note=note, n_permutations=2)
    # read as the training texts speak: times relative to the issue time, the stadium as a distance
    assert noted.note_read.startswith("Concert at Lindenhaven Stadium, 30,000 fans (starts in 120 min, ends in 5 h, ")
    assert noted.note_read in noted.text and not plain.text
    assert noted.prediction > plain.prediction + 1.0, (plain.prediction, noted.prediction)
    assert dict(phrases(noted))[noted.note_read] > 1.0


@pytest.mark.slow
def test_demo_model_reproduces_its_validation_metric(demo_panel):
    folder = config.DEMO_MODEL_DIR
    cfg = json.loads((folder / "config.json").read_text())
    rec = cfg["metrics"]["reproduce"]
    panel = demo_panel
    m = LMForecaster.load(folder)
    assert m.fingerprint == cfg["training_data_sha256"], "the regenerated demo city differs from the training data"
    from trafficcore.evaluation.protocols import standard_split

    got = m.validation_check(panel, standard_split(panel, m.spec).val)
    assert got["n"] == rec["n"]
    assert got["mae"] == pytest.approx(rec["mae"], rel=0.01), (got, rec)
