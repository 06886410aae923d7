"""Small helpers for torch DistributedDataParallel training.

Launch with ``torchrun --nproc_per_node K ...`` on one machine, or on each of
N machines with ``torchrun --nnodes N --nproc-per-node K --rdzv-backend c10d
--rdzv-endpoint HOST:PORT --rdzv-id JOB ...`` (ranks are assigned at the
rendezvous); torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``.  Without ``WORLD_SIZE`` everything is a
single-process no-op.

``students.batch_size`` is per rank: a step of W ranks averages W batches, so
the global batch is ``W * batch_size`` (the learning rate is not rescaled).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler


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


def train_sampler(n: int, rank: int, world_size: int, seed: int, *, shuffle: bool = True,
                  drop_last: bool = False) -> DistributedSampler:
    """The ``DistributedSampler`` over ``n`` training samples for one rank.

    Its permutation is ``torch.randperm(n)`` seeded with ``seed + epoch`` (call
    ``set_epoch``), the same on every rank (so seed 1 at epoch 0 replays seed 0's
    epoch 1 order: training seeds a few apart share most epochs' orders, shifted).
    With ``drop_last=False`` (what ``train_student`` uses) it is padded by
    wrap-around to a multiple of ``world_size`` and dealt out round-robin: every
    rank gets ``ceil(n / world_size)`` samples, hence the same
    number of batches (a DDP step is a collective: unequal counts would hang),
    and at most ``world_size - 1`` samples are seen twice an epoch.
    """
    if world_size < 1 or not (0 <= rank < world_size):
        raise ValueError(f"bad rank {rank} for world size {world_size}")
    return DistributedSampler(range(max(int(n), 0)), num_replicas=world_size, rank=rank, shuffle=shuffle,
                              seed=int(seed), drop_last=drop_last)


def epoch_indices(n: int, rank: int, world_size: int, epoch: int, seed: int, *, shuffle: bool = True,
                  drop_last: bool = False) -> np.ndarray:
    """This rank's sample order for one epoch: ``train_sampler`` after ``set_epoch(epoch)``, as int64.

    One process (``world_size`` 1) gets the whole fixed-seed permutation of the
    epoch.  Rank ``r`` gets positions ``r, r + W, r + 2W, ...`` of that permutation,
    so with ``B`` faces a batch per rank, step ``k`` of the ``W`` ranks together
    covers positions ``[k*W*B, (k+1)*W*B)``: the ``k``-th batch of one process
    with batch ``W*B`` (when ``n`` is a multiple of ``W``; otherwise the padding
    repeats up to ``W - 1`` faces in the last step).
    """
    sampler = train_sampler(n, rank, world_size, seed, shuffle=shuffle, drop_last=drop_last)
    sampler.set_epoch(int(epoch))
    return np.fromiter(iter(sampler), dtype=np.int64, count=len(sampler))


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
