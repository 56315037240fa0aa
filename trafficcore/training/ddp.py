"""Distributed data-parallel training, started by `torchrun`.

The same command serves a laptop and a multi-GPU box: `torchrun --nproc_per_node N ...` sets
RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT, and `init_from_env` joins the group
with NCCL when the processes train on CUDA and gloo on CPU. Without those variables training is
single-process and nothing here does anything. The data are split into detector shards
(`trafficcore.data.shard`); each rank trains on its shards' share of every optimiser step, the loss is
normalised by the whole step's count of known targets, and DDP averages the gradients, so all ranks hold
identical weights after each step, equal to those of one process training on all shards
(`trafficcore.training.engine`; docs/SCALE.md, "Beyond one machine").
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = DistContext()


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_from_env(device: torch.device) -> DistContext:
    """Join the process group torchrun prepared (once); single-process context otherwise."""
    if env_world_size() <= 1:
        return SINGLE
    rank = int(os.environ["RANK"])
    world = int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
    return DistContext(rank, world, local)


def current() -> DistContext:
    """The context of an already initialised group (single-process when there is none)."""
    if dist.is_available() and dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", dist.get_rank())))
    return SINGLE


def device_for(device: torch.device, ctx: DistContext) -> torch.device:
    """Each rank on its own GPU under torchrun; CPU ranks share the CPU."""
    if device.type == "cuda" and ctx.enabled:
        return torch.device("cuda", ctx.local_rank)
    return device


def wrap(model: torch.nn.Module, ctx: DistContext, device: torch.device) -> torch.nn.Module:
    """DistributedDataParallel around the model when running distributed, else the model itself."""
    if not ctx.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [device.index] if device.type == "cuda" else None
    # parameters may go unused in a step (e.g. the text path on a batch without text): allow it
    return DDP(model, device_ids=ids, find_unused_parameters=True)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") and isinstance(model.module, torch.nn.Module) else model


def _comm_device() -> torch.device:
    """NCCL moves CUDA tensors only; gloo moves CPU tensors."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(values: list[float], ctx: DistContext) -> list[float]:
    """Sum floats over ranks (used for validation error sums and counts)."""
    if not ctx.enabled:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.cpu().tolist()


def all_gather_object(obj, ctx: DistContext) -> list:
    """Every rank's `obj`, in rank order, on every rank (small Python objects: per-shard profiles,
    validation forecasts, forecast frames)."""
    if not ctx.enabled:
        return [obj]
    out: list = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_flag(flag: bool, ctx: DistContext) -> bool:
    """Rank 0's decision, on every rank (e.g. the wall-clock budget ran out)."""
    if not ctx.enabled:
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int64, device=_comm_device())
    dist.broadcast(t, src=0)
    return bool(t.item())


def broadcast_int(value: int, ctx: DistContext) -> int:
    """Rank 0's integer on every rank (e.g. a step count derived from a timing probe)."""
    if not ctx.enabled:
        return int(value)
    t = torch.tensor([int(value)], dtype=torch.int64, device=_comm_device())
    dist.broadcast(t, src=0)
    return int(t.item())


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def shutdown(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()
