"""The GPU path of the training loop: bf16 autocast, ``torch.compile``, pinned host memory.

- bfloat16 keeps float32's 8 exponent bits, so it needs no loss scaling (float16 does): Kalamkar et
  al., "A Study of BFLOAT16 for Deep Learning Training" (2019), https://arxiv.org/abs/1905.12322
- ``torch.compile``: Ansel et al., "PyTorch 2: Faster Machine Learning Through Dynamic Python
  Bytecode Transformation and Graph Compilation" (ASPLOS 2024), https://pytorch.org/assets/pytorch2-2.pdf

Where bf16 is not safe, the model turns it off itself: a tokenizer's bottleneck (nearest-code
distances, FSQ rounding, the KL posterior) always runs in float32 (:func:`full_precision`).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

COMPILE_BACKENDS = ("inductor", "aot_eager", "eager")


@dataclass
class Accelerate:
    """How the loop uses the device; none of it changes what a checkpoint holds, so it may differ on resume."""

    bf16: bool = True  # autocast matmuls and convolutions to bfloat16 on cuda (never on the cpu: see autocast)
    compile: bool = False  # torch.compile the model (minutes of compilation on a cpu; pays off on long gpu runs)
    compile_backend: str = "inductor"  # "aot_eager" / "eager" trace without generating kernels (tests)
    device_data_gb: float = 2.0  # data up to this size moves to the gpu once; larger data stays in pinned host memory

    def __post_init__(self):
        if self.compile_backend not in COMPILE_BACKENDS:
            raise ValueError(f"unknown compile_backend {self.compile_backend!r}; choose one of {list(COMPILE_BACKENDS)}")
        if self.device_data_gb < 0:
            raise ValueError(f"device_data_gb must be >= 0, got {self.device_data_gb!r}")


def autocast(device: torch.device, config: Accelerate):
    """bf16 autocast on a cuda device that supports it; otherwise a context that changes nothing."""
    # off on the cpu: most laptop cpus emulate bf16 (slower, not faster), and float32 keeps a resumed
    # run bit-identical to the uninterrupted one (tests/test_training.py)
    if config.bf16 and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def full_precision(device_type: str):
    """Turn autocast off inside a block (a quantizer's arithmetic), whatever the caller enabled."""
    return torch.autocast(device_type, enabled=False)


def compiled(model: nn.Module, config: Accelerate) -> nn.Module:
    """``torch.compile(model)`` when asked; the returned module shares ``model``'s parameters."""
    return torch.compile(model, backend=config.compile_backend) if config.compile else model


def place_data(tensors: tuple[torch.Tensor, ...], device: torch.device,
               config: Accelerate) -> tuple[torch.Tensor, ...]:
    """Move the training data to ``device`` once, or, on cuda and above ``device_data_gb``, pin it on the host."""
    size_gb = sum(t.numel() * t.element_size() for t in tensors) / 2**30
    if device.type != "cuda" or size_gb <= config.device_data_gb:
        return tuple(t.to(device) for t in tensors)
    # pinned (page-locked) host memory lets each batch copy to the gpu asynchronously
    return tuple(t.cpu().pin_memory() for t in tensors)


def fetch(tensors: tuple[torch.Tensor, ...], indices: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, ...]:
    """The rows ``indices`` (B,) of every tensor, on ``device``; from pinned host memory without blocking."""
    batch = tuple(t[indices.to(t.device)] for t in tensors)
    if all(_on(t, device) for t in batch):
        return batch
    pinned = device.type == "cuda"
    return tuple((t.pin_memory() if pinned else t).to(device, non_blocking=pinned) for t in batch)


def _on(tensor: torch.Tensor, device: torch.device) -> bool:
    # "cuda" and "cuda:0" name the same device but do not compare equal
    return tensor.device.type == device.type and device.index in (None, tensor.device.index)
