"""Seeded epoch samplers that shard across DDP ranks (shuffled or class-weighted)."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler


class ShardedSampler(Sampler[int]):
    """Per epoch: a seeded permutation, or draws with replacement by ``weights``; rank's share.

    Like ``DistributedSampler`` (padding by wrap-around so every rank sees the same number of
    items), with class-weighted sampling as an option. ``shuffle=False`` keeps dataset order
    and does not pad (for evaluation, where ranks' results are gathered).
    """

    def __init__(
        self,
        size: int,
        *,
        weights: np.ndarray | None = None,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world of size {world_size}")
        self.size, self.shuffle, self.seed = size, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Draw the order of ``epoch``."""
        self.epoch = int(epoch)

    def _order(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.size))
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        if self.weights is not None:
            drawn = torch.multinomial(
                self.weights, self.size, replacement=True, generator=generator
            )
            return drawn.tolist()
        return torch.randperm(self.size, generator=generator).tolist()

    def __iter__(self) -> Iterator[int]:
        order = self._order()
        if self.shuffle:
            total = math.ceil(self.size / self.world_size) * self.world_size
            order = (order * math.ceil(total / max(len(order), 1)))[:total]
        return iter(order[self.rank :: self.world_size])

    def __len__(self) -> int:
        if self.shuffle:
            return math.ceil(self.size / self.world_size)
        return len(range(self.rank, self.size, self.world_size))
