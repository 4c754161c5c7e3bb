"""DDP set-up from the ``torchrun`` environment (RANK, WORLD_SIZE, LOCAL_RANK)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: rank, world size, local rank."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Only rank 0 writes checkpoints, logs and progress bars."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """Whether a process group of more than one process is running."""
        return self.world_size > 1


def current_context() -> DistContext:
    """The context of an initialised process group, else a single process."""
    if dist.is_available() and dist.is_initialized():
        return DistContext(
            dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0))
        )
    return DistContext()


def init_distributed(device: str = "auto") -> DistContext:
    """Join the process group when launched by ``torchrun`` with WORLD_SIZE > 1.

    Uses NCCL when the run is on CUDA (and binds the process to ``cuda:LOCAL_RANK``), gloo
    otherwise. A plain launch returns a single-process context and initialises nothing.
    """
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    if world_size <= 1 or (dist.is_available() and dist.is_initialized()):
        return current_context()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return current_context()


def shutdown_distributed() -> None:
    """Leave the process group if one is running."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def gather_objects(value: Any, context: DistContext) -> list[Any]:
    """Every rank's ``value`` (in rank order) on every rank; ``[value]`` without DDP."""
    if not context.enabled:
        return [value]
    gathered: list[Any] = [None] * context.world_size
    dist.all_gather_object(gathered, value)
    return gathered
