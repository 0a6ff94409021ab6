"""Image quality and token statistics.

PSNR = 10 log10(MAX^2 / MSE), computed per image and averaged: images with different errors should
not be pooled into one MSE first.

SSIM: Wang, Bovik, Sheikh, Simoncelli, "Image quality assessment: from error visibility to structural
similarity", IEEE TIP 2004, https://ieeexplore.ieee.org/document/1284395 -- luminance, contrast and
structure compared in an 11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, eq. (13).

Codebook usage and perplexity say how much of a codebook a tokenizer really uses (a collapsed VQ uses
a few codes); perplexity exp(H) is the number of equally likely codes with the same entropy H, as in
the VQ-VAE-2 / Jukebox codebook diagnostics.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def mse(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-image mean squared error: (B, C, H, W), (B, C, H, W) -> (B,)."""
    _same_shape(x, y)
    return ((x - y) ** 2).flatten(1).mean(1)


def psnr(x: torch.Tensor, y: torch.Tensor, max_value: float = 1.0) -> torch.Tensor:
    """Per-image PSNR in dB for images in [0, max_value]: (B, C, H, W), (B, C, H, W) -> (B,)."""
    error = mse(x.clamp(0, max_value), y.clamp(0, max_value))
    return 10 * torch.log10(max_value ** 2 / error.clamp(min=1e-10))


def ssim(x: torch.Tensor, y: torch.Tensor, max_value: float = 1.0, window_size: int = 11,
         sigma: float = 1.5) -> torch.Tensor:
    """Per-image SSIM (Wang et al. 2004): (B, C, H, W), (B, C, H, W) -> (B,), 1 for identical images.

    Local statistics come from a Gaussian window applied without padding ("valid", as in the paper's
    reference code); the SSIM map is averaged over positions and channels of each image.
    """
    _same_shape(x, y)
    if window_size % 2 == 0 or window_size > min(x.shape[-2:]):
        raise ValueError(f"window_size must be odd and at most the image side {min(x.shape[-2:])}, "
                         f"got {window_size}")
    x, y = x.clamp(0, max_value).double(), y.clamp(0, max_value).double()
    c1, c2 = (0.01 * max_value) ** 2, (0.03 * max_value) ** 2
    # 1. local means, variances and covariance under the window
    mu_x, mu_y = _gaussian_filter(x, window_size, sigma), _gaussian_filter(y, window_size, sigma)
    var_x = _gaussian_filter(x * x, window_size, sigma) - mu_x ** 2
    var_y = _gaussian_filter(y * y, window_size, sigma) - mu_y ** 2
    cov = _gaussian_filter(x * y, window_size, sigma) - mu_x * mu_y
    # 2. eq. (13): the product of luminance and contrast-structure terms
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))
    return ssim_map.flatten(1).mean(1).float()  # (B,)


def _gaussian_filter(x: torch.Tensor, window_size: int, sigma: float) -> torch.Tensor:
    """Separable normalized Gaussian blur per channel, no padding: (B, C, H, W) -> (B, C, H-w+1, W-w+1)."""
    channels = x.shape[1]
    offsets = torch.arange(window_size, dtype=x.dtype, device=x.device) - window_size // 2
    kernel = torch.exp(-offsets ** 2 / (2 * sigma ** 2))
    kernel = kernel / kernel.sum()
    rows = kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1)  # (C, 1, w, 1)
    cols = kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1)  # (C, 1, 1, w)
    return F.conv2d(F.conv2d(x, rows, groups=channels), cols, groups=channels)


def code_histogram(indices: torch.Tensor, codebook_size: int) -> torch.Tensor:
    """How often each code occurs: indices of any shape with values in [0, K) -> counts (K,)."""
    if codebook_size < 1:
        raise ValueError(f"codebook_size must be >= 1, got {codebook_size}")
    if indices.is_floating_point() or indices.is_complex():
        raise ValueError(f"expected integer code indices, got dtype {indices.dtype}")
    flat = indices.reshape(-1).long()
    if flat.numel() == 0:
        raise ValueError("expected at least one code index, got an empty tensor")
    if flat.min() < 0 or flat.max() >= codebook_size:
        raise ValueError(f"indices must lie in [0, {codebook_size}), got values in "
                         f"[{flat.min().item()}, {flat.max().item()}]")
    return torch.bincount(flat, minlength=codebook_size)  # (K,)


def codebook_usage(indices: torch.Tensor, codebook_size: int) -> float:
    """Fraction of the K codes used at least once by ``indices`` (a whole evaluation set's codes)."""
    return (code_histogram(indices, codebook_size) > 0).float().mean().item()


def perplexity(indices: torch.Tensor, codebook_size: int) -> float:
    """exp(entropy) of the code histogram: 1 when one code is used, K when all are used equally."""
    probs = code_histogram(indices, codebook_size).double()
    probs = probs / probs.sum()
    entropy = -(probs * probs.clamp(min=1e-30).log()).sum()  # nats; 0 log 0 = 0
    return entropy.exp().item()


def bits_per_image(tokens: int, codebook_size: int) -> float:
    """Bits to store ``tokens`` indices of a codebook of size K without entropy coding: tokens * log2(K)."""
    if tokens < 1 or codebook_size < 2:
        raise ValueError(f"need tokens >= 1 and codebook_size >= 2, got {tokens}, {codebook_size}")
    return tokens * math.log2(codebook_size)


def compression_ratio(bits: float, image_shape: tuple[int, int, int], bit_depth: int = 8) -> float:
    """Raw pixel bits (C * H * W * bit_depth) over the bits a codec spends on one image."""
    if len(image_shape) != 3 or min(image_shape) < 1:
        raise ValueError(f"expected image_shape (C, H, W) of positive ints, got {tuple(image_shape)}")
    if not bits > 0:
        raise ValueError(f"bits per image must be positive, got {bits}")
    channels, height, width = image_shape
    return channels * height * width * bit_depth / bits


def _same_shape(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.shape != y.shape or x.ndim != 4:
        raise ValueError(f"expected two image batches of the same shape (B, C, H, W), "
                         f"got {tuple(x.shape)} and {tuple(y.shape)}")
