"""Training state: tensors in safetensors, everything else in JSON; nothing is ever pickled.

(Saved models are written by `trafficcore.models.files`, the one writer every model uses.)

A training-state folder (written during training, used by `--resume`) holds the trainable weights,
the best weights so far, the AdamW moments, the step, the early-stopping counters and the RNG
state, so a run stopped at any evaluation continues as if it had not stopped.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from trafficcore.models.files import to_jsonable

STATE_JSON = "training_state.json"
STATE_TENSORS = "training_state.safetensors"
BEST_TENSORS = "best.safetensors"


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _atomic_save(tensors: dict[str, torch.Tensor], path: Path, metadata: dict | None = None) -> None:
    tmp = path.with_name(path.name + ".tmp")
    clean = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    save_file(clean, str(tmp), metadata={k: str(v) for k, v in (metadata or {}).items()})
    os.chmod(tmp, 0o644)  # a model folder is meant to be shared and committed
    os.replace(tmp, path)


# ------------------------------------------------------------------------------ training state
def state_names(model: torch.nn.Module) -> set[str]:
    """Parameters a checkpoint holds: the model's `saved_parameter_names()` if it says, else the trainable ones."""
    if hasattr(model, "saved_parameter_names"):
        return set(model.saved_parameter_names())
    return {n for n, p in model.named_parameters() if p.requires_grad}


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Copies of the parameters training may have changed (see `state_names`)."""
    keep = state_names(model)
    return {n: p.detach().clone() for n, p in model.named_parameters() if n in keep}


def save_training_state(directory: str | os.PathLike, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                        best: dict[str, torch.Tensor] | None, state: dict) -> Path:
    """Everything `resume_training_state` needs; rank 0 calls this at each evaluation."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    names = {id(p): n for n, p in model.named_parameters()}
    tensors: dict[str, torch.Tensor] = {f"param.{n}": v for n, v in trainable_state(model).items()}
    for group in optimizer.param_groups:
        for p in group["params"]:
            st = optimizer.state.get(p, {})
            for k, v in st.items():
                if torch.is_tensor(v):
                    tensors[f"optim.{names[id(p)]}.{k}"] = v.reshape(-1) if v.dim() == 0 else v
    tensors["rng.torch"] = torch.get_rng_state()
    _atomic_save(tensors, directory / STATE_TENSORS)
    if best is not None:
        _atomic_save(best, directory / BEST_TENSORS)
    _atomic_write_text(directory / STATE_JSON, json.dumps(to_jsonable(state), indent=2) + "\n")
    return directory


def has_training_state(directory: str | os.PathLike) -> bool:
    d = Path(directory)
    return (d / STATE_JSON).exists() and (d / STATE_TENSORS).exists()


def resume_training_state(directory: str | os.PathLike, model: torch.nn.Module,
                          optimizer: torch.optim.Optimizer) -> tuple[dict, dict[str, torch.Tensor] | None]:
    """Restore weights, optimiser moments and RNG in place; returns (state dict, best weights or None)."""
    directory = Path(directory)
    if not has_training_state(directory):
        raise FileNotFoundError(f"{directory} holds no training state ({STATE_JSON} + {STATE_TENSORS}) to resume")
    state = json.loads((directory / STATE_JSON).read_text())
    tensors = load_file(str(directory / STATE_TENSORS))
    params = dict(model.named_parameters())
    keep = state_names(model)
    missing = [n for n in sorted(keep) if f"param.{n}" not in tensors]
    if missing:
        raise ValueError(f"training state in {directory} does not match the model (missing {missing[:3]}...)")
    with torch.no_grad():
        for n in keep:
            params[n].copy_(tensors[f"param.{n}"].to(params[n].device, params[n].dtype))
    for group in optimizer.param_groups:
        for p in group["params"]:
            name = next(n for n, q in params.items() if q is p)
            st = {}
            for key in ("step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
                k = f"optim.{name}.{key}"
                if k in tensors:
                    v = tensors[k]
                    st[key] = v.reshape(()) if key == "step" else v.to(p.device)
            if st:
                optimizer.state[p] = st
    torch.set_rng_state(tensors["rng.torch"])
    best_path = directory / BEST_TENSORS
    best = load_file(str(best_path)) if best_path.exists() else None
    return state, best
