"""Image quality and token statistics.

PSNR = 10 log10(MAX^2 / MSE), computed per image and averaged: images with different errors should
not be pooled into one MSE first.

SSIM: Wang, Bovik, Sheikh, Simoncelli, "Image quality assessment: from error visibility to structural
similarity", IEEE TIP 2004, https://ieeexplore.ieee.org/document/1284395 -- luminance, contrast and
structure compared in an 11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, eq. (13).

Codebook usage and perplexity live with the quantizers (``course_lib/tokenizers/quantizer.py``) and
are importable from here too, so evaluation code finds every metric in one place.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from course_lib.tokenizers.quantizer import code_histogram, codebook_usage, perplexity  # noqa: F401


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
