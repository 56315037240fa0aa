"""The training loop shared by every neural model: AdamW, warm-up then cosine or linear decay, weight
decay, gradient accumulation and clipping, early stopping on validation MAE, mixed precision on CUDA,
optional FGM adversarial training, fixed seeds, DDP, resumable state, and a progress bar.

The loop knows nothing about traffic. A `TrainTask` supplies batches by global index (so a resumed
run sees exactly the batches an uninterrupted run would; under DDP each rank's task returns its own share
of that global batch, and the loss its share of the global loss), the loss, and the validation error as
(sum of absolute errors, count) so that ranks can add theirs up.

FGM (Miyato et al.; "fast gradient method"): after the clean backward pass the gradient with
respect to the input embeddings `g` gives a perturbation `eps * g / ||g||` (per sample); the loss on
the perturbed embeddings is backpropagated as well. The model exposes its input embeddings as
`last_inputs_embeds`, accepts `embed_delta=`, and may say `supports_fgm = False` (no embeddings to perturb).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from trafficcore.training import checkpoint, ddp


@dataclass
class TrainConfig:
    """Optimisation settings; presets in `trafficcore.training.cli` fill these in."""

    lr: float = 1e-3  # new parameters: numeric projections, type embeddings, heads
    encoder_lr: float = 2e-4  # pretrained encoder weights or its LoRA adapters
    weight_decay: float = 0.01
    warmup_frac: float = 0.05
    schedule: str = "cosine"  # cosine | linear | constant
    max_steps: int = 1000  # optimiser steps
    batch_size: int = 64  # per micro-step, over all ranks together (each rank's task draws its share)
    grad_accum: int = 1
    clip_grad: float = 1.0
    eval_every: int = 100  # optimiser steps
    patience: int = 6  # evaluations without improvement before stopping
    min_delta: float = 0.0
    max_minutes: float | None = None  # wall-clock safety stop (results then depend on machine speed)
    amp: str = "auto"  # auto (bf16 where supported, else fp16) | bf16 | fp16 | off; CUDA only
    fgm_eps: float = 0.0  # 0 = no adversarial training
    eval_at_start: bool = False  # score the starting weights too, so training can only improve on them
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    progress: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


class TrainTask(Protocol):
    """What the loop needs from a model's data."""

    def batch(self, index: int, batch_size: int, device: torch.device) -> dict:
        """This rank's share of the global micro-batch `index` of `batch_size` samples (deterministic; epochs
        wrap around). Under DDP the shares' losses must add up, after DDP's averaging over ranks, to the loss
        of the whole micro-batch (see `trafficcore.training.engine.SampleTask`)."""
        ...

    def loss(self, model: torch.nn.Module, batch: dict, embed_delta: torch.Tensor | None = None) -> torch.Tensor: ...

    def val_error(self, model: torch.nn.Module, device: torch.device, rank: int, world: int) -> tuple[float, float]:
        """(sum of absolute errors, number of known targets) over this rank's share of validation."""
        ...


@dataclass
class TrainResult:
    steps: int
    best_step: int
    best_val_mae: float
    stopped: str  # "max_steps" | "early_stopping" | "time_limit"
    wall_s: float
    samples_seen: int
    samples_per_s: float
    history: list[dict] = field(default_factory=list)


def resolve_device(name: str) -> torch.device:
    """auto -> CUDA when present, else CPU; asking for CUDA without one is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda requested but torch sees no CUDA device (use auto or cpu)")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, not {name!r}")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """Linear warm-up to 1, then cosine or linear decay to 0 at `total`."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "linear":
        return 1.0 - progress
    raise ValueError(f"schedule must be cosine, linear or constant, not {schedule!r}")


def param_groups(model: torch.nn.Module, cfg: TrainConfig) -> list[dict]:
    """Encoder vs new parameters (two learning rates, times the model's optional `lr_scale(name)`),
    and no weight decay on biases, norms and embeddings."""
    scale_of = getattr(model, "lr_scale", lambda name: 1.0)
    groups: dict[tuple[float, bool], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        lr = (cfg.encoder_lr if name.startswith("encoder.") else cfg.lr) * float(scale_of(name))
        no_decay = p.dim() < 2 or "norm" in name.lower() or "embedding" in name.lower() or name.endswith(".bias")
        groups.setdefault((lr, no_decay), []).append(p)
    out = [
        {"params": params, "lr": lr, "base_lr": lr, "weight_decay": 0.0 if no_decay else cfg.weight_decay}
        for (lr, no_decay), params in sorted(groups.items(), key=lambda kv: kv[0])
    ]
    if not out:
        raise ValueError("the model has no trainable parameters")
    return out


_DEFAULT_THREADS = torch.get_num_threads()


def cpu_threads(device: torch.device, world_size: int = 1) -> int:
    """Torch CPU threads for training: all cores on an idle machine, one when the CPU is oversubscribed.

    Measured on this project's 2-core machine with a load average of ~6 (other jobs): one thread
    trained the fusion model 2.5x faster than two (76 vs 30 samples/s), because intra-op barriers
    wait for threads the OS has descheduled. TRAFFICCORE_THREADS overrides the choice.
    """
    import os

    if device.type != "cpu":
        return torch.get_num_threads()
    env = os.environ.get("TRAFFICCORE_THREADS")
    if env:
        return max(1, int(env))
    cores = max(1, min(os.cpu_count() or 1, _DEFAULT_THREADS) // max(1, world_size))
    try:
        load = os.getloadavg()[0]
    except OSError:  # pragma: no cover - not on every platform
        load = 0.0
    return 1 if load >= (os.cpu_count() or 1) else cores


def _autocast(device: torch.device, amp: str):
    """bf16/fp16 autocast on CUDA only; CPU runs in float32 (CPU autocast is slower than fp32 here)."""
    if device.type != "cuda" or amp == "off":
        return None, None
    if amp == "auto":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    elif amp in ("bf16", "fp16"):
        dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    else:
        raise ValueError(f"amp must be auto, bf16, fp16 or off, not {amp!r}")
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    return dtype, scaler


def train(model: torch.nn.Module, task: TrainTask, cfg: TrainConfig, device: torch.device,
          state_dir: str | Path | None = None, resume: str | Path | None = None,
          on_eval: Callable[[dict], None] | None = None) -> TrainResult:
    """Train `model` (already on `device`) in place; on return it holds the best validation weights.

    `state_dir`: where rank 0 writes the resumable training state at every evaluation.
    `resume`: a state folder written earlier by this function for the same model and task.
    """
    ctx = ddp.current()
    base = model
    net = ddp.wrap(model, ctx, device)
    opt = torch.optim.AdamW(param_groups(base, cfg), lr=cfg.lr)
    amp_dtype, scaler = _autocast(device, cfg.amp)
    step, best_mae, best_step, bad, history = 0, math.inf, 0, 0, []
    best: dict[str, torch.Tensor] | None = None
    wall_before = 0.0
    if resume is not None:
        state, best = checkpoint.resume_training_state(resume, base, opt)
        step, best_step, bad = int(state["step"]), int(state["best_step"]), int(state["bad_evals"])
        best_mae = math.inf if state["best_val_mae"] is None else float(state["best_val_mae"])
        history, wall_before = list(state.get("history", [])), float(state.get("wall_s", 0.0))
    warmup = int(round(cfg.warmup_frac * cfg.max_steps))
    bar = None
    if cfg.progress and ctx.is_main:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.max_steps, initial=step, desc="train", unit="step", dynamic_ncols=True)
    t0 = time.perf_counter()
    stopped, samples, last_loss = "max_steps", 0, float("nan")

    def evaluate() -> float:
        net.eval()
        with torch.no_grad():
            err, n = task.val_error(base, device, ctx.rank, ctx.world_size)
        net.train()
        err, n = ddp.all_reduce_sum([err, n], ctx)
        return err / n if n else math.inf

    if cfg.eval_at_start and resume is None:
        best_mae, best_step = evaluate(), 0
        best = checkpoint.trainable_state(base)
        history.append({"step": 0, "loss": None, "val_mae": best_mae, "elapsed_s": time.perf_counter() - t0})
    net.train()
    while step < cfg.max_steps:
        for g in opt.param_groups:
            g["lr"] = g["base_lr"] * lr_factor(step, cfg.max_steps, warmup, cfg.schedule)
        opt.zero_grad(set_to_none=True)
        loss_sum = 0.0
        for a in range(cfg.grad_accum):
            index = step * cfg.grad_accum + a
            batch = task.batch(index, cfg.batch_size, device)
            passes = 2 if cfg.fgm_eps > 0 and getattr(base, "supports_fgm", True) else 1
            for k in range(passes):
                last = a == cfg.grad_accum - 1 and k == passes - 1
                sync = ddp_sync(net, last)
                with sync:
                    delta = None
                    if k == 1:
                        g = base.last_inputs_embeds.grad
                        norm = g.flatten(1).norm(dim=1).clamp_min(1e-12)[:, None, None]
                        delta = (cfg.fgm_eps * g / norm).detach()
                    if amp_dtype is not None:
                        with torch.autocast("cuda", dtype=amp_dtype):
                            loss = task.loss(net, batch, embed_delta=delta)
                    else:
                        loss = task.loss(net, batch, embed_delta=delta)
                    scaled = loss / cfg.grad_accum
                    (scaler.scale(scaled) if scaler is not None else scaled).backward()
                if k == 0:
                    loss_sum += float(loss.detach())
            samples += int(next(iter(v for v in batch.values() if torch.is_tensor(v))).shape[0])
        if scaler is not None:
            scaler.unscale_(opt)
        if cfg.clip_grad:
            torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], cfg.clip_grad)
        if scaler is not None:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        step += 1
        last_loss = loss_sum / cfg.grad_accum
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{last_loss:.4f}", val_mae=f"{best_mae:.3f}" if best_mae < math.inf else "-")
        out_of_time = cfg.max_minutes is not None and (time.perf_counter() - t0) / 60 > cfg.max_minutes
        out_of_time = ddp.broadcast_flag(out_of_time, ctx)
        if step % cfg.eval_every == 0 or step == cfg.max_steps or out_of_time:
            mae = evaluate()
            if ctx.enabled:  # the step's loss: the mean of the ranks' (each its share of it times the ranks)
                last_loss = ddp.all_reduce_sum([last_loss], ctx)[0] / ctx.world_size
            improved = mae < best_mae - cfg.min_delta
            if improved:
                best_mae, best_step, bad = mae, step, 0
                best = checkpoint.trainable_state(base)
            else:
                bad += 1
            rec = {"step": step, "loss": last_loss, "val_mae": mae, "elapsed_s": wall_before + time.perf_counter() - t0}
            history.append(rec)
            if bar is not None:
                bar.set_postfix(loss=f"{last_loss:.4f}", val_mae=f"{mae:.3f}", best=f"{best_mae:.3f}")
            if on_eval is not None and ctx.is_main:
                on_eval(rec)
            if state_dir is not None and ctx.is_main:
                checkpoint.save_training_state(state_dir, base, opt, best, {
                    "step": step, "best_step": best_step, "best_val_mae": best_mae, "bad_evals": bad,
                    "history": history, "wall_s": wall_before + time.perf_counter() - t0, "config": cfg.to_dict(),
                })
            if bad >= cfg.patience:
                stopped = "early_stopping"
                break
            if out_of_time:
                stopped = "time_limit"
                break
    if bar is not None:
        bar.close()
    if best is not None:
        with torch.no_grad():
            params = dict(base.named_parameters())
            for n, v in best.items():
                params[n].copy_(v.to(params[n].device, params[n].dtype))
    wall = time.perf_counter() - t0
    total_samples = int(ddp.all_reduce_sum([samples], ctx)[0])
    return TrainResult(
        steps=step, best_step=best_step, best_val_mae=best_mae, stopped=stopped, wall_s=wall_before + wall,
        samples_seen=total_samples, samples_per_s=total_samples / max(wall, 1e-9), history=history,
    )


def ddp_sync(net: torch.nn.Module, sync: bool):
    """DDP averages gradients only on the last backward of an optimiser step."""
    import contextlib

    if not sync and hasattr(net, "no_sync"):
        return net.no_sync()
    return contextlib.nullcontext()
