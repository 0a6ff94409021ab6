"""The radially averaged power spectrum: where blur shows as missing high frequencies.

Paper: Statistics of natural images: Scaling in the woods (Ruderman, Bialek, 1994),
https://doi.org/10.1103/PhysRevLett.73.814 -- natural images have power falling roughly as 1 / f^2
with spatial frequency f. A reconstruction that lost detail falls below the originals' curve at high
frequencies; one with invented texture or noise lies above it. Used that way in e.g. Focal Frequency
Loss for Image Reconstruction and Synthesis (Jiang et al., 2021), https://arxiv.org/abs/2012.12821.

Recipe: subtract each image's mean (the DC term says nothing about detail), multiply by a 2-D Hann
window (the image's borders would otherwise add a cross of false high-frequency power), take
|FFT|^2 normalized so that white noise of variance s^2 has power s^2 at every frequency, then average
over rings of radius k / N cycles per pixel, k = 1 .. N / 2 (N the shorter side).
"""
from __future__ import annotations

import torch


def hann_window_2d(height: int, width: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Outer product of two periodic Hann windows: (H, W), values in [0, 1]."""
    rows = torch.hann_window(height, periodic=True, dtype=dtype)
    cols = torch.hann_window(width, periodic=True, dtype=dtype)
    return rows[:, None] * cols[None, :]


def power_spectrum_2d(images: torch.Tensor, window: bool = True) -> torch.Tensor:
    """Power per 2-D frequency, averaged over images and channels: (B, C, H, W) -> (H, W), DC at [0, 0]."""
    _check_images(images)
    x = images.double()
    x = x - x.mean(dim=(-2, -1), keepdim=True)
    height, width = x.shape[-2:]
    w = hann_window_2d(height, width) if window else torch.ones(height, width, dtype=torch.float64)
    spectrum = torch.fft.fft2(x * w).abs() ** 2  # (B, C, H, W)
    return spectrum.mean(dim=(0, 1)) / (w ** 2).sum()  # white noise of variance s^2 -> s^2


def radial_power_spectrum(images: torch.Tensor, window: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Radially averaged power spectrum of ``images`` (B, C, H, W), averaged over images and channels.

    Returns (frequencies, power), both (N // 2,): ring k covers radii within half a step of k / N
    cycles per pixel, k = 1 .. N // 2, N = min(H, W). Plot power on a log scale against frequency.
    """
    power = power_spectrum_2d(images, window)  # (H, W)
    height, width = power.shape
    fy = torch.fft.fftfreq(height, dtype=torch.float64)[:, None]  # cycles per pixel
    fx = torch.fft.fftfreq(width, dtype=torch.float64)[None, :]
    n = min(height, width)
    ring = torch.round((fy ** 2 + fx ** 2).sqrt() * n).long()  # (H, W) ring index
    keep = (ring >= 1) & (ring <= n // 2)
    sums = torch.zeros(n // 2 + 1, dtype=torch.float64).index_add_(0, ring[keep], power[keep])
    counts = torch.zeros(n // 2 + 1, dtype=torch.float64).index_add_(0, ring[keep], torch.ones_like(power[keep]))
    frequencies = torch.arange(1, n // 2 + 1, dtype=torch.float64) / n
    return frequencies.float(), (sums[1:] / counts[1:]).float()


def _check_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or not images.is_floating_point():
        got = f"{tuple(images.shape)} {images.dtype}" if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"expected float images of shape (B, C, H, W), got {got}")
    if min(images.shape[-2:]) < 4 or images.shape[0] == 0:
        raise ValueError(f"expected a non-empty batch of images at least 4x4, got {tuple(images.shape)}")
