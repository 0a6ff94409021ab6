"""Data-parallel training over several processes, started by ``torchrun``.

PyTorch Distributed: Experiences on Accelerating Data Parallel Training (Li et al., VLDB 2020),
https://arxiv.org/abs/2006.15704 -- DistributedDataParallel (DDP) averages the gradients of all
ranks during ``backward``.

``torchrun --nproc_per_node=N -m course_lib.train ...`` starts N processes with ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` set; :func:`setup` joins them into
one process group (NCCL between GPUs, gloo between CPU processes). Every rank draws the same global
batch from the same seeded order and keeps its own contiguous slice (:meth:`Ranks.shard`); since the
slices have equal sizes, the mean of the ranks' mean losses is the global mean, so N ranks with a
global batch B take the steps one process takes with batch B. Rank 0 alone writes checkpoints and logs.

The collectives below (:func:`all_reduce_sum_`, :func:`all_gather_cat`, :func:`broadcast_`) do nothing
in a single process, so a model can call them unconditionally (VQ's EMA codebook does).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from course_lib.engine.runtime import pick_device


def active() -> bool:
    """True inside a process group of more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


@dataclass(frozen=True)
class Ranks:
    """This process's place in the group: rank, number of ranks, and the device it trains on."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def check_batch(self, batch_size: int) -> None:
        if batch_size % self.world_size:
            raise ValueError(f"the global batch_size {batch_size} must be divisible by the {self.world_size} "
                             f"ranks (each rank takes batch_size / ranks examples)")

    def shard(self, indices: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous slice of a global batch: (B,) -> (B / world_size,)."""
        per_rank = len(indices) // self.world_size
        return indices[self.rank * per_rank:(self.rank + 1) * per_rank]

    def wrap(self, model: nn.Module) -> nn.Module:
        """``model`` in DDP when there are several ranks (its ``forward`` then averages gradients)."""
        if self.world_size == 1:
            return model
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DataParallelModel(model, device_ids=device_ids)

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """The mean of a scalar over all ranks (a NaN or inf on any rank reaches every rank)."""
        if self.world_size == 1:
            return value
        total = value.detach().float().clone()
        dist.all_reduce(total)
        return total / self.world_size

    def average_gradients(self, parameters) -> None:
        """Average ``.grad`` over ranks by hand, for parameters that are not inside a DDP wrapper."""
        if self.world_size == 1:
            return
        for parameter in parameters:
            if parameter.grad is not None:
                dist.all_reduce(parameter.grad)
                parameter.grad /= self.world_size

    def gather(self, value) -> list:
        """Every rank's ``value`` (any picklable object), in rank order."""
        if self.world_size == 1:
            return [value]
        values = [None] * self.world_size
        dist.all_gather_object(values, value)
        return values

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()


class DataParallelModel(DistributedDataParallel):
    """DDP that lets a loss read the model's plain attributes (``config``, ``kind``) but not its parts.

    DDP averages gradients only for work done inside its ``forward``: a loss that called
    ``model.encoder(x)`` or ``model.encode(x)`` would train each rank on its own gradients, silently.
    """

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            value = getattr(self.module, name)
        if isinstance(value, (nn.Module, torch.Tensor)) or (callable(value) and not isinstance(value, type)):
            raise AttributeError(f"under torchrun the loss gets the model wrapped in DistributedDataParallel, "
                                 f"which averages gradients only through model(...): call the model itself "
                                 f"instead of model.{name}") from None
        return value


def setup(prefer: str | None = None) -> Ranks:
    """Join the process group torchrun describes in the environment (if any); returns this rank's place."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    device = pick_device(prefer)
    if world_size == 1 and not dist.is_initialized():
        return Ranks(0, 1, device)
    if device.type == "mps":
        raise ValueError("several ranks need cuda (NCCL) or cpu (gloo) processes; mps has no process-group backend")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    rank, world_size = dist.get_rank(), dist.get_world_size()
    if device.type == "cuda":  # one GPU per process: torchrun numbers them per node
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank % torch.cuda.device_count())))
        torch.cuda.set_device(device)
    return Ranks(rank, world_size, device)


def shutdown() -> None:
    """Leave the process group (the end of a torchrun process)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# ----- collectives a model may call from its forward; no-ops in a single process -----

def all_reduce_sum_(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over ranks, in place."""
    if active():
        dist.all_reduce(tensor)
    return tensor


def all_gather_cat(tensor: torch.Tensor) -> torch.Tensor:
    """Every rank's ``tensor`` concatenated along dim 0 in rank order: (n, ...) -> (world_size * n, ...).

    Ranks hold equal-sized shards, so the result is the global batch in the order one process sees it.
    """
    if not active():
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def broadcast_(tensor: torch.Tensor, source: int = 0) -> torch.Tensor:
    """Overwrite ``tensor`` on every rank with rank ``source``'s, in place (random choices made once)."""
    if active():
        dist.broadcast(tensor, source)
    return tensor
