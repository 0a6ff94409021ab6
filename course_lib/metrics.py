"""Image quality and token statistics.

PSNR = 10 log10(MAX^2 / MSE), computed per image and averaged: images with different errors should
not be pooled into one MSE first.
"""
from __future__ import annotations

import math

import torch


def mse(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-image mean squared error: (B, C, H, W), (B, C, H, W) -> (B,)."""
    _same_shape(x, y)
    return ((x - y) ** 2).flatten(1).mean(1)


def psnr(x: torch.Tensor, y: torch.Tensor, max_value: float = 1.0) -> torch.Tensor:
    """Per-image PSNR in dB for images in [0, max_value]: (B, C, H, W), (B, C, H, W) -> (B,)."""
    error = mse(x.clamp(0, max_value), y.clamp(0, max_value))
    return 10 * torch.log10(max_value ** 2 / error.clamp(min=1e-10))


def bits_per_image(tokens: int, codebook_size: int) -> float:
    """Bits to store ``tokens`` indices of a codebook of size K without entropy coding: tokens * log2(K)."""
    if tokens < 1 or codebook_size < 2:
        raise ValueError(f"need tokens >= 1 and codebook_size >= 2, got {tokens}, {codebook_size}")
    return tokens * math.log2(codebook_size)


def _same_shape(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.shape != y.shape or x.ndim != 4:
        raise ValueError(f"expected two image batches of the same shape (B, C, H, W), "
                         f"got {tuple(x.shape)} and {tuple(y.shape)}")
