"""The training loop, checkpoints, DDP and the train/forecast commands.

Loop tests use a toy linear task (milliseconds per step); the DDP test launches two real processes
through torchrun on a tiny panel; the command tests run the real commands against a tiny store.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import tiny_tables
from typer.testing import CliRunner

from trafficcore.training import checkpoint
from trafficcore.training.loop import TrainConfig, lr_factor, param_groups, train

CPU = torch.device("cpu")


def real_tiny():
    """The tiny dataset, marked as not synthetic so the standard split is 70/10/20 by days."""
    import dataclasses

    t = tiny_tables()
    t.info = dataclasses.replace(t.info, synthetic=False)
    return t


class Toy(torch.nn.Module):
    """y = w.x + b, with an input-embedding hook like the fusion model's (for FGM)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin = torch.nn.Linear(4, 1)
        self.norm = torch.nn.LayerNorm(4)
        self.last_inputs_embeds = None

    def forward(self, batch, embed_delta=None):
        x = batch["x"][:, None, :] * 1.0
        x = x + 0.0 * self.norm.weight  # keeps the graph through a parameter, so x requires grad
        if embed_delta is not None:
            x = x + embed_delta
        if self.training and x.requires_grad:
            x.retain_grad()
            self.last_inputs_embeds = x
        return self.lin(x[:, 0])[:, 0]


class ToyTask:
    """Fixed regression data; validation error optionally made to worsen over time."""

    def __init__(self, n=256, worsen=False):
        g = torch.Generator().manual_seed(1)
        self.x = torch.randn(n, 4, generator=g)
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.1
        self.worsen, self.evals, self.loss_calls = worsen, 0, 0

    def batch(self, index, batch_size, device):
        n = len(self.x) // batch_size
        i = index % n
        sl = slice(i * batch_size, (i + 1) * batch_size)
        return {"x": self.x[sl].to(device), "y": self.y[sl].to(device)}

    def loss(self, model, batch, embed_delta=None):
        self.loss_calls += 1
        return ((model(batch, embed_delta=embed_delta) - batch["y"]) ** 2).mean()

    def val_error(self, model, device, rank, world):
        self.evals += 1
        with torch.no_grad():
            err = float((model({"x": self.x}) - self.y).abs().sum())
        if self.worsen:
            err = 100.0 * self.evals if self.evals > 1 else 1.0
        return err, float(len(self.y))


def _cfg(**kw):
    base = {"lr": 0.05, "encoder_lr": 0.05, "max_steps": 20, "batch_size": 16, "eval_every": 5, "patience": 100,
            "warmup_frac": 0.1, "progress": False, "weight_decay": 0.0}
    return TrainConfig(**{**base, **kw})


def test_schedule_warmup_then_decay():
    assert lr_factor(0, 100, 10, "cosine") == pytest.approx(0.1)
    assert lr_factor(9, 100, 10, "cosine") == pytest.approx(1.0)
    assert lr_factor(10, 100, 10, "cosine") == pytest.approx(1.0)
    assert lr_factor(55, 100, 10, "cosine") == pytest.approx(0.5, abs=1e-6)
    assert lr_factor(100, 100, 10, "linear") == pytest.approx(0.0)
    assert lr_factor(55, 100, 10, "linear") == pytest.approx(0.5)
    with pytest.raises(ValueError):
        lr_factor(50, 100, 10, "exponential")


def test_param_groups_split_decay_and_encoder_lr():
    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = torch.nn.Linear(3, 3)
            self.head = torch.nn.Linear(3, 1)
            self.head_norm = torch.nn.LayerNorm(3)

    groups = param_groups(M(), TrainConfig(lr=1e-3, encoder_lr=1e-5, weight_decay=0.1))
    by = {(g["lr"], g["weight_decay"]): len(g["params"]) for g in groups}
    assert by[(1e-5, 0.1)] == 1  # encoder.weight
    assert by[(1e-5, 0.0)] == 1  # encoder.bias
    assert by[(1e-3, 0.1)] == 1  # head.weight
    assert by[(1e-3, 0.0)] == 3  # head.bias, norm weight and bias


def test_training_fits_the_toy_problem():
    model, task = Toy(), ToyTask()
    before = task.val_error(model, CPU, 0, 1)[0]
    res = train(model, task, _cfg(max_steps=150, lr=0.2, clip_grad=0.0), CPU)
    assert res.steps == 150 and res.stopped == "max_steps"
    assert res.best_val_mae < 0.05 * before / len(task.y)
    assert res.samples_seen == 150 * 16


def test_early_stopping_restores_best_weights():
    model, task = Toy(), ToyTask(worsen=True)
    res = train(model, task, _cfg(max_steps=100, eval_every=2, patience=3), CPU)
    assert res.stopped == "early_stopping"
    assert res.steps == 8  # evals at 2 (best), 4, 6, 8 -> three without improvement
    assert res.best_step == 2
    again = Toy()  # same schedule, stopped right after its first (best) evaluation
    train(again, ToyTask(worsen=True), _cfg(max_steps=100, eval_every=2, patience=1), CPU)
    for a, b in zip(model.parameters(), again.parameters(), strict=True):
        assert torch.allclose(a, b), "the returned model is not the one of the best evaluation"


def test_gradient_accumulation_matches_a_bigger_batch():
    a, b = Toy(), Toy()
    train(a, ToyTask(), _cfg(batch_size=32, grad_accum=1, max_steps=5), CPU)
    train(b, ToyTask(), _cfg(batch_size=16, grad_accum=2, max_steps=5), CPU)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-6)


def test_fgm_adds_an_adversarial_pass():
    plain, adv = Toy(), Toy()
    t_plain, t_adv = ToyTask(), ToyTask()
    train(plain, t_plain, _cfg(max_steps=5), CPU)
    train(adv, t_adv, _cfg(max_steps=5, fgm_eps=0.5), CPU)
    assert t_adv.loss_calls == 2 * t_plain.loss_calls
    assert not torch.allclose(plain.lin.weight, adv.lin.weight)


def test_resume_continues_exactly(tmp_path):
    straight = Toy()
    train(straight, ToyTask(), _cfg(max_steps=10, eval_every=5, weight_decay=0.01), CPU)
    first = Toy()
    train(first, ToyTask(), _cfg(max_steps=10, eval_every=5, weight_decay=0.01, max_minutes=0.0), CPU,
          state_dir=tmp_path / "state")
    state = json.loads((tmp_path / "state" / checkpoint.STATE_JSON).read_text())
    assert state["step"] == 1  # max_minutes=0 stops after the first step, with an evaluation
    resumed = Toy()
    res = train(resumed, ToyTask(), _cfg(max_steps=10, eval_every=5, weight_decay=0.01), CPU,
                resume=tmp_path / "state")
    assert res.steps == 10
    for p, q in zip(straight.parameters(), resumed.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-6)


def test_model_folder_is_safetensors_and_json(tmp_path):
    from trafficcore.models import files

    d = files.save_folder(tmp_path / "m", {"model_class": "lm", "x": np.float32(1.5), "p": Path("/a")},
                          {"w": np.ones((2, 3), np.float32), "s": np.arange(4, dtype=np.float32)},
                          {"extra.json": {"v": np.int64(3)}})
    assert sorted(f.name for f in d.iterdir()) == ["config.json", "extra.json", "model.safetensors"]
    tensors, cfg = files.read_folder(d, "lm")
    assert tensors["w"].tolist() == [[1, 1, 1]] * 2 and tensors["s"].tolist() == [0, 1, 2, 3]
    assert cfg["x"] == 1.5 and cfg["p"] == "/a" and cfg["format_version"] == files.FORMAT_VERSION
    assert files.read_document(d, "extra.json") == {"v": 3}
    with pytest.raises(ValueError, match="holds a 'lm' model, not 'gbt'"):
        files.read_folder(d, "gbt")
    with pytest.raises(FileNotFoundError, match="config.json is missing"):
        files.read_folder(tmp_path / "nothing")
    cfg["format_version"] = 1
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="format 1.*train it again"):
        files.read_folder(d)


def test_fingerprint_changes_with_any_reading():
    v = np.arange(12, dtype=np.float32).reshape(4, 3)
    times = np.arange(4).astype("datetime64[h]")
    from trafficcore.models.files import data_fingerprint

    a = data_fingerprint(v, times, ["a", "b", "c"], "x")
    v2 = v.copy()
    v2[2, 1] += 1
    assert a == data_fingerprint(v.copy(), times, ["a", "b", "c"], "x")
    assert a != data_fingerprint(v2, times, ["a", "b", "c"], "x")
    assert a != data_fingerprint(v, times, ["a", "b", "d"], "x")


# ------------------------------------------------------------------------------ DDP
DDP_WORKER = textwrap.dedent('''
    import os, sys
    import numpy as np
    from safetensors.torch import save_file
    from trafficcore.data.store import Store
    from trafficcore.data.panel import load_panel
    from trafficcore.evaluation.protocols import standard_split
    from trafficcore.models.lm import LMForecaster, Phase, Recipe
    from trafficcore.training import checkpoint

    rank = int(os.environ["RANK"])
    store = Store(sys.argv[1], read_only=True)
    panel = load_panel(store, "tiny")
    recipe = Recipe("ddp", "two ranks", (Phase("numeric", trains="numeric", epochs=0.2, batch_size=32, evals=2),
                                         Phase("text", trains="text", steps=3, batch_size=8, evals=2,
                                               keep_start=True)),
                    model={"num_layers": 1}, val_samples=64, eval_samples=64)
    m = LMForecaster(recipe=recipe, device="cpu", progress=False)
    split = standard_split(panel, m.spec)
    m.fit(panel, split.train, split.val)
    state = checkpoint.trainable_state(m.net)
    save_file({k: v.contiguous() for k, v in state.items()}, os.path.join(sys.argv[2], f"rank{rank}.safetensors"))
    with open(os.path.join(sys.argv[2], f"rank{rank}.txt"), "w") as f:
        f.write(str(m.metrics["world_size"]))
''')


@pytest.mark.slow
def test_ddp_two_cpu_ranks_end_identical(tmp_path):
    from safetensors.torch import load_file

    from trafficcore.data.store import Store

    Store(tmp_path / "tiny.duckdb").ingest("tiny", real_tiny())
    script = tmp_path / "worker.py"
    script.write_text(DDP_WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TRAFFICCORE_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
           str(script), str(tmp_path / "tiny.duckdb"), str(tmp_path)]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    a, b = load_file(str(tmp_path / "rank0.safetensors")), load_file(str(tmp_path / "rank1.safetensors"))
    assert a.keys() == b.keys() and len(a) > 4
    for k in a:
        assert torch.equal(a[k], b[k]), f"ranks differ in {k}"
    assert (tmp_path / "rank0.txt").read_text() == "2"
    # and training moved the weights away from their (shared, zero) initialisation
    assert float(a["skip.5.weight"].abs().sum()) > 0


# ------------------------------------------------------------------------------ commands
@pytest.fixture
def tiny_db(tmp_path):
    from trafficcore.data.store import Store

    path = tmp_path / "tc.duckdb"
    Store(path).ingest("tiny", real_tiny())
    return path


def _invoke(*args):
    from trafficcore.training.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def test_train_and_forecast_commands(tiny_db, tmp_path):
    from trafficcore.data.store import Store

    out = tmp_path / "ha"
    r = _invoke("train", "--dataset", "tiny", "--model", "historical_average", "--out", out, "--db", tiny_db,
                "--no-progress")
    assert r.exit_code == 0, r.output
    assert (out / "config.json").exists()
    r = _invoke("forecast", "--dataset", "tiny", "--db", tiny_db, "--at", "2025-01-10 08:00")
    assert r.exit_code == 0, r.output
    assert "3 detectors x 4 horizons" in r.output
    store = Store(tiny_db, read_only=True)
    fc = store.query("SELECT * FROM forecasts")
    assert len(fc) == 12 and fc["dataset"].eq("tiny").all() and fc["run_id"].nunique() == 1
    assert (fc["p10"] <= fc["p50"]).all() and (fc["p50"] <= fc["p90"]).all()
    runs = store.query("SELECT * FROM model_runs ORDER BY created_at")
    assert len(runs) == 2 and runs["run_id"].iloc[-1] == fc["run_id"].iloc[0]
    assert json.loads(runs["metrics_json"].iloc[-1])["issued_at"] == "2025-01-10 08:00:00"


def test_train_lm_command_writes_a_small_model(tiny_db, tmp_path):
    out = tmp_path / "lm"
    r = _invoke("train", "--dataset", "tiny", "--out", out, "--db", tiny_db, "--max-steps", "2", "--no-progress",
                "--device", "cpu")
    assert r.exit_code == 0, r.output
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_class"] == "lm" and cfg["backbone"]["sha256"] and cfg["training_data_sha256"]
    assert set(cfg["metrics"]["val"]) == {"15", "30", "45", "60"}
    assert (out / "training_state" / "text" / checkpoint.STATE_JSON).exists()
    assert cfg["recipe"]["name"] == "quick" and cfg["recipe"]["phases"][-1]["steps"] == 2
    assert (out / "model.safetensors").stat().st_size < 10 * 2**20


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--dataset", "nope", "--out", "X"], "no dataset named 'nope'"),
        (["train", "--dataset", "tiny", "--out", "X", "--preset", "huge"], "unknown preset 'huge'"),
        (["train", "--dataset", "tiny", "--out", "X", "--model", "magic"], "unknown model 'magic'"),
        (["forecast", "--dataset", "tiny", "--at", "yesterday-ish"], "is not a timestamp"),
        (["forecast", "--dataset", "tiny", "--at", "2025-01-10 08:07"], "not on the data's"),
        (["forecast", "--dataset", "tiny", "--at", "2030-01-01"], "after the newest reading"),
        (["forecast", "--dataset", "tiny", "--at", "latest"], "no trained model for dataset 'tiny'"),
    ],
)
def test_user_errors_exit_2_with_one_line(tiny_db, tmp_path, args, message):
    args = [a if a != "X" else str(tmp_path / "x") for a in args]
    r = _invoke(*args, "--db", tiny_db)
    assert r.exit_code == 2
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], r.output


def test_device_resolution():
    from trafficcore.training.loop import resolve_device

    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA"):
            resolve_device("cuda")
    assert not math.isnan(lr_factor(0, 1, 0, "constant"))
