"""Token generators side by side: wall time of drawing samples (interleaved), and the work each does.

Lesson 08 sets MaskGIT's parallel decoding against the GPT's one-token-per-step loop on the same
tokens. Two rules keep that comparison honest:

- **interleaved timing**: every repeat times every sampler once, in turn, so a slow moment of the
  machine hits all of them alike; the median over repeats is reported;
- **the same work on both sides**: each sampler is a function ``(classes, generator) -> grids`` for
  the same classes and batch; decoding grids to images is left out of the time for all of them.

The yardstick scores the same functions (``Yardstick.sample_and_score``).

``token_passes`` counts the work a sampler does: a transformer evaluates each position of its input
once per forward pass, so a KV-cached GPT does about N + 1 token passes per sample (each token once,
plus the class token), MaskGIT (steps x (N + 1)), a KV-cached VAR every token of every scale once (L, the
first scale's positions reading the class; ``scale_passes``); classifier-free guidance doubles all three.
The *sequential* passes, one after another, are N for the GPT, ``steps`` for MaskGIT, one per scale for VAR.

Shapes: B batch, N tokens, h w grid.
"""
from __future__ import annotations

import statistics
import time
from typing import Callable

import torch

Sampler = Callable[[torch.Tensor, torch.Generator], torch.Tensor]  # (classes (B,), generator) -> grids (B, h, w)


def time_samplers(samplers: dict[str, Sampler], classes: torch.Tensor, repeats: int = 3,
                  seed: int = 0) -> dict[str, float]:
    """Median wall seconds of each sampler drawing grids for ``classes`` (B,), timed in turn, ``repeats`` times."""
    if repeats < 1 or not samplers:
        raise ValueError(f"expected repeats >= 1 and at least one sampler, got {repeats} and {list(samplers)}")
    seconds: dict[str, list[float]] = {name: [] for name in samplers}
    for repeat in range(repeats):
        for name, sampler in samplers.items():
            generator = torch.Generator().manual_seed(seed + repeat)
            began = time.perf_counter()
            sampler(classes, generator)
            seconds[name].append(time.perf_counter() - began)
    return {name: statistics.median(times) for name, times in seconds.items()}


def token_passes(num_tokens: int, steps: int | None = None, cfg: bool = False) -> int:
    """Positions a transformer evaluates per sample: N + 1 for a KV-cached GPT (``steps=None``), else
    steps x (N + 1) for a model that reads the whole grid and its class token at every step; x 2 with CFG."""
    if num_tokens < 1 or (steps is not None and steps < 1):
        raise ValueError(f"expected num_tokens >= 1 and steps None or >= 1, got {num_tokens} and {steps}")
    passes = (num_tokens + 1) * (1 if steps is None else steps)
    return passes * (2 if cfg else 1)


def scale_passes(scales: tuple[int, ...], cfg: bool = False) -> int:
    """Positions a KV-cached VAR evaluates per sample: L = sum of k^2 over the scales; x 2 with CFG."""
    if not scales or any(k < 1 for k in scales):
        raise ValueError(f"expected positive scale sides, got {scales!r}")
    return sum(k * k for k in scales) * (2 if cfg else 1)
