"""Mask schedules for masked token modelling: how many tokens stay masked as decoding progresses.

Paper: MaskGIT: Masked Generative Image Transformer (Chang et al., 2022), https://arxiv.org/abs/2202.04200,
section 3.3 ("masking design"), with the reference code in google-research/maskgit's
``libml/mask_schedule.py`` (https://github.com/google-research/maskgit/blob/main/maskgit/libml/mask_schedule.py).

A schedule is a mask ratio gamma(r) of the decoding progress r in [0, 1]: gamma(0) = 1 (every
token masked), gamma(1) = 0 (none), decreasing in between. The same function serves twice:

- **training** draws r ~ U[0, 1) per sample and masks ceil(gamma(r) * N) of its N tokens (at least one);
- **decoding** in T steps keeps floor(gamma((t + 1) / T) * N) tokens masked after step t, so a
  concave schedule (cosine, square) reveals few tokens first and many at the end.

Schedules: "cosine" cos(pi r / 2) (the paper's choice), "linear" 1 - r, "square" 1 - r^2,
"sqrt" 1 - sqrt(r), and "constant": also 1 - r as a ratio, but its decoding counts split the
N tokens into T near-equal parts (the first N mod T steps reveal one more), so every step reveals
the same number of tokens up to one; "linear" rounds through the floor like the reference code.

Shapes: B batch, N tokens.
"""
from __future__ import annotations

import math

import torch

SCHEDULES = ("cosine", "linear", "square", "sqrt", "constant")


def check_schedule(schedule: str) -> None:
    """Raise, naming the known schedules, unless ``schedule`` is one of them."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown mask schedule {schedule!r}; choose one of {list(SCHEDULES)}")


def mask_ratio(r: torch.Tensor | float, schedule: str = "cosine") -> torch.Tensor:
    """gamma(r): the fraction of tokens still masked at decoding progress r in [0, 1] (same shape as r)."""
    check_schedule(schedule)
    r = torch.as_tensor(r, dtype=torch.float64)
    if r.numel() and (r.min() < 0 or r.max() > 1):
        raise ValueError(f"decoding progress r must lie in [0, 1], got values in [{float(r.min())}, {float(r.max())}]")
    if schedule == "cosine":
        ratio = torch.cos(math.pi / 2 * r)
    elif schedule == "square":
        ratio = 1 - r ** 2
    elif schedule == "sqrt":
        ratio = 1 - r.sqrt()
    else:  # "linear" and "constant"
        ratio = 1 - r
    return torch.where(r >= 1, 0.0, ratio)  # cos(pi / 2) is 6e-17 in floating point, not 0


def check_steps(step, steps: int) -> None:
    """Raise unless steps is a positive int and step an int in [0, steps)."""
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if not isinstance(step, int) or not 0 <= step < steps:
        raise ValueError(f"step must be an int in [0, {steps}), got {step!r}")


def masked_after(step: int, steps: int, unknown, masked_now, schedule: str = "cosine"):
    """How many tokens stay masked after decoding step ``step`` (0-based) of ``steps``.

    unknown: the number of masked tokens when decoding started; masked_now: the number masked
    before this step. Both ints or (B,) long tensors (one count per sample, e.g. for inpainting).
    Every step reveals at least one token while any remain, and the last step reveals all: the
    schedule's count is clamped to [steps - 1 - step, masked_now - 1] (and at 0), as the reference
    code clamps it to [1, masked_now - 1].
    """
    check_schedule(schedule)
    check_steps(step, steps)
    unknown, masked_now = torch.as_tensor(unknown), torch.as_tensor(masked_now)
    if schedule == "constant":
        # reveal unknown // steps per step, one more in the first unknown % steps steps
        revealed = (step + 1) * (unknown // steps) + torch.clamp(unknown % steps, max=step + 1)
        target = unknown - revealed
    else:
        # the 1e-9 keeps 10 * (1 - 0.2) = 7.999... from flooring to 7
        target = torch.floor(unknown * mask_ratio((step + 1) / steps, schedule) + 1e-9).long()
    # 1. leave at least one token for each remaining step; 2. reveal at least one now; 3. never below 0
    target = torch.maximum(target, torch.as_tensor(steps - 1 - step))
    target = torch.minimum(target, masked_now - 1)
    return target.clamp(min=0)


def mask_counts(n: int, steps: int, schedule: str = "cosine") -> list[int]:
    """The number of tokens still masked after each of ``steps`` steps, for n tokens masked at the start."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int (tokens to generate), got {n!r}")
    check_steps(0, steps)
    counts, masked = [], n
    for step in range(steps):
        masked = int(masked_after(step, steps, n, masked, schedule))
        counts.append(masked)
    return counts


def training_mask(batch: int, num_tokens: int, schedule: str = "cosine", generator: torch.Generator | None = None,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """Booleans (B, N), True where a token is masked for training.

    MaskGIT section 3.2: per sample, r ~ U[0, 1), then ceil(gamma(r) * N) tokens chosen uniformly
    at random are masked (at least one, so every sample has a target).
    """
    check_schedule(schedule)
    if batch < 1 or num_tokens < 1:
        raise ValueError(f"expected batch >= 1 and num_tokens >= 1, got {batch} and {num_tokens}")
    r = torch.rand(batch, generator=generator, device=device)  # (B,)
    count = torch.ceil(mask_ratio(r.cpu(), schedule) * num_tokens).long().clamp(1, num_tokens).to(device)  # (B,)
    scores = torch.rand(batch, num_tokens, generator=generator, device=device)  # (B, N)
    ranks = scores.argsort(dim=1).argsort(dim=1)  # (B, N): each token's place in a random order
    return ranks < count[:, None]  # (B, N)
