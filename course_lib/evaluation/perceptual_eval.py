"""What a perceptual + adversarial tokenizer is judged on: PSNR / SSIM, a feature distance, and the power
spectrum's high frequencies, all on the same reconstructions.

Papers: Taming Transformers for High-Resolution Image Synthesis (VQGAN; Esser, Rombach, Ommer, 2021),
https://arxiv.org/abs/2012.09841 -- perceptual and adversarial losses trade a little PSNR for detail.
The Unreasonable Effectiveness of Deep Features as a Perceptual Metric (Zhang et al., 2018),
https://arxiv.org/abs/1801.03924 -- a feature-space distance as the yardstick for "looks alike".

A reconstruction that lost detail has too little power at high frequencies (L2's blur); one with
invented texture may have the right amount in the wrong places, which PSNR punishes and a spectrum
does not see. So no single number decides: this module reports them side by side.
"""
from __future__ import annotations

import torch
from torch import nn

from course_lib.evaluation.reconstruction import evaluate_tokenizer
from course_lib.evaluation.spectrum import radial_power_spectrum

HIGH_FREQUENCY = 0.25  # cycles per pixel: the upper half of the frequencies a 32x32 image has (Nyquist 0.5)


def high_frequency_power(originals: torch.Tensor, reconstructions: torch.Tensor,
                         above: float = HIGH_FREQUENCY) -> dict:
    """Compare radially averaged power spectra above ``above`` cycles per pixel; images (N, C, H, W).

    ``hf_power_ratio``: mean of P_rec / P_orig over those rings (1 = as much detail as the originals,
    below 1 = blur); ``hf_log_gap``: mean |log10 P_rec - log10 P_orig| (0 = the same spectrum).
    """
    if originals.shape != reconstructions.shape:
        raise ValueError(f"expected originals and reconstructions of the same shape, "
                         f"got {tuple(originals.shape)} and {tuple(reconstructions.shape)}")
    frequencies, original = radial_power_spectrum(originals)
    _, reconstructed = radial_power_spectrum(reconstructions)
    high = frequencies > above
    if not high.any():
        raise ValueError(f"no frequency ring above {above} cycles per pixel for images of side "
                         f"{min(originals.shape[-2:])}; the highest is {frequencies[-1].item():.3f}")
    ratio = reconstructed[high] / original[high]  # (rings,)
    return {"hf_power_ratio": ratio.mean().item(), "hf_log_gap": ratio.log10().abs().mean().item()}


@torch.no_grad()
def feature_distance_mean(distance: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256) -> float:
    """Mean of ``distance(x, y)`` (B,) over the pairs of (N, C, H, W) batches, in chunks."""
    if x.shape != y.shape:
        raise ValueError(f"expected two image batches of the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    device = next(distance.parameters()).device
    total = sum(distance(a.to(device), b.to(device)).sum().item() for a, b in zip(x.split(batch_size), y.split(batch_size)))
    return total / len(x)


def perceptual_report(model, images: torch.Tensor, distance: nn.Module, with_ssim: bool = True,
                      keep_outputs: bool = False) -> dict:
    """``evaluate_tokenizer``'s metrics plus ``feature_distance`` and the high-frequency comparison."""
    metrics = evaluate_tokenizer(model, images, with_ssim=with_ssim, keep_outputs=True)
    reconstruction = metrics["reconstruction"]
    metrics["feature_distance"] = feature_distance_mean(distance, reconstruction, images)
    metrics.update(high_frequency_power(images, reconstruction))
    if not keep_outputs:
        metrics.pop("reconstruction")
        metrics.pop("tokens")
    return metrics
