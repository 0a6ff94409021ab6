"""The data order of a run: batches of indices from a seeded permutation per epoch, resumable.

The order depends on the seed and the global batch size only, never on the number of ranks: under
torchrun every rank draws the same global batch and keeps its own slice
(:meth:`course_lib.engine.distributed.Ranks.shard`).
"""
from __future__ import annotations

import torch


class BatchSampler:
    """Index batches from a per-epoch permutation drawn with an explicit generator; resumable."""

    def __init__(self, size: int, batch_size: int, seed: int):
        if batch_size > size:
            raise ValueError(f"batch_size {batch_size} is larger than the {size} training examples")
        self.size, self.batch_size = size, batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.order, self.position = torch.randperm(size, generator=self.generator), 0

    def next(self) -> torch.Tensor:
        if self.position + self.batch_size > self.size:  # the last partial batch is dropped
            self.order, self.position = torch.randperm(self.size, generator=self.generator), 0
        batch = self.order[self.position:self.position + self.batch_size]
        self.position += self.batch_size
        return batch  # (batch_size,)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "order": self.order, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.order, self.position = state["order"], state["position"]
