"""Rank and world size, read when an epoch starts (a loader may be built before `init_process_group`)."""
from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist


def rank_world() -> tuple[int, int]:
    """(rank, world size) of the default process group, (0, 1) without one.

    >>> rank_world()
    (0, 1)
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def collective_device() -> torch.device:
    """Where tensors of a collective live: CUDA for NCCL, the CPU otherwise."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def gather_ints(values: list[int]) -> list[list[int]]:
    """Every rank's `values` (same length on every rank), by rank; `[values]` without a process group."""
    if rank_world()[1] == 1:
        return [list(values)]
    t = torch.tensor(values, dtype=torch.int64, device=collective_device())
    out = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(out, t)
    return [o.tolist() for o in out]


def gather_objects(value: Any) -> list:
    """Every rank's picklable `value`, by rank (a collective); `[value]` without a process group."""
    if rank_world()[1] == 1:
        return [value]
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


def all_reduce_sum(values: list[float]) -> list[float]:
    """The sum over ranks of `values` (same length on every rank), in float64 (a collective)."""
    t = torch.tensor(values, dtype=torch.float64, device=collective_device())
    dist.all_reduce(t)
    return t.tolist()
