"""DistributedDataParallel plumbing for ``torchrun --nproc_per_node=P -m metamem train ...``.

torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``;
:func:`init_distributed` joins the process group (NCCL on GPU, gloo on CPU) when
``WORLD_SIZE > 1`` and does nothing otherwise. Each rank draws its own episodes from
:func:`rank_seed` (a hash of the experiment seed and the rank), gradients are averaged by
DDP, and only rank 0 writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from metamem.rng import episode_keys_from_seed

__all__ = ["DistInfo", "init_distributed", "rank_seed", "all_reduce_", "barrier", "shutdown"]


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: ``rank`` of ``world_size`` (``local_rank`` on its node)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: torch.device) -> DistInfo:
    """Join the torchrun process group if ``WORLD_SIZE > 1`` (idempotent)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend, rank=info.rank, world_size=world)
    return info


def shutdown(info: DistInfo) -> None:
    """Leave the process group joined by :func:`init_distributed`."""
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def rank_seed(seed: int, rank: int) -> int:
    """The training-sampler seed of ``rank``: a hash of ``(seed, rank)``, distinct per rank."""
    return int(episode_keys_from_seed(seed, torch.tensor([rank], dtype=torch.int64))[0])


def barrier(info: DistInfo) -> None:
    """Wait for every rank (no-op outside torchrun)."""
    if info.enabled:
        dist.barrier()


def all_reduce_(tensor: torch.Tensor, info: DistInfo, op: str = "sum") -> torch.Tensor:
    """In-place all-reduce across ranks (no-op outside torchrun); ``op`` is sum or min."""
    if info.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MIN)
    return tensor
