"""Small helpers for torch DistributedDataParallel training.

Launch with ``torchrun --nproc_per_node K ...``; torchrun sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``.  Without
``WORLD_SIZE`` everything is a single-process no-op.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    is_main: bool

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return default if value in (None, "") else int(value)


def init_distributed(backend: str | None = None) -> DistInfo:
    """Join the torchrun process group (``nccl`` with CUDA, else ``gloo``).

    With ``WORLD_SIZE`` unset: no process group, rank 0 of 1, device ``cuda:0``
    when CUDA is available else ``cpu``.  Calling it again returns the same info.
    """
    cuda = torch.cuda.is_available()
    if "WORLD_SIZE" not in os.environ:
        device = torch.device("cuda", 0) if cuda else torch.device("cpu")
        return DistInfo(0, 1, 0, device, True)
    rank = _env_int("RANK", 0)
    world_size = _env_int("WORLD_SIZE", 1)
    local_rank = _env_int("LOCAL_RANK", rank)
    if cuda:
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if not is_distributed():
        dist.init_process_group(backend=backend or ("nccl" if cuda else "gloo"), init_method="env://",
                                rank=rank, world_size=world_size)
    return DistInfo(rank, world_size, local_rank, device, rank == 0)


def shard_indices(n: int, rank: int, world_size: int, epoch: int, seed: int, *, shuffle: bool = True) -> np.ndarray:
    """This rank's sample indices for one epoch.

    The permutation depends only on ``(seed, epoch)`` so all ranks agree.  It is
    padded by wrap-around to a multiple of ``world_size`` and dealt out
    round-robin, so every shard has ``ceil(n / world_size)`` entries and the
    union of shards covers all ``n`` samples.
    """
    if world_size < 1 or not (0 <= rank < world_size):
        raise ValueError(f"bad rank {rank} for world size {world_size}")
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    if shuffle:
        order = np.random.default_rng([int(seed), int(epoch)]).permutation(n).astype(np.int64)
    else:
        order = np.arange(n, dtype=np.int64)
    total = -(-n // world_size) * world_size
    if total > n:
        order = np.concatenate([order, np.resize(order, total - n)])
    return order[rank:total:world_size]


def all_reduce_mean(value: float) -> float:
    """Mean of ``value`` over all ranks (the value itself when not distributed)."""
    if not is_distributed() or dist.get_world_size() == 1:
        return float(value)
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    t = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t.item()) / dist.get_world_size()


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def cleanup() -> None:
    """Leave the process group, if any."""
    if is_distributed():
        dist.destroy_process_group()
