"""Equal-MSE distortions: why L2 (and PSNR) is a poor judge of what a picture looks like.

Papers: Mean Squared Error: Love It or Leave It? (Wang, Bovik, 2009), https://doi.org/10.1109/MSP.2008.930649
-- its "Einstein" figure: images with the same MSE (blur, noise, a shift, JPEG blocks) that look nothing alike.
The Unreasonable Effectiveness of Deep Features as a Perceptual Metric (Zhang et al., 2018),
https://arxiv.org/abs/1801.03924 -- a feature-space distance ranks them closer to how people do.

How each distortion hits the target MSE exactly: make it at the weakest strength in a list that
reaches the target (a blur sigma, a noise level, a JPEG quality), then blend it with the original,
x + a (d(x) - x) with a = sqrt(target / MSE(d(x))) <= 1, whose MSE is a^2 MSE(d(x)) = target. The
blend is a convex combination, so it stays in [0, 1]; blended with the original, a one-pixel shift
is a sub-pixel shift (linear interpolation), a blur a milder blur, noise weaker noise.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from course_lib.evaluation.jpeg import jpeg_roundtrip
from course_lib.evaluation.metrics import mse, psnr, ssim

DISTORTIONS = ("blur", "noise", "shift", "jpeg")
BLUR_SIGMAS = (0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0)
NOISE_LEVELS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5)
JPEG_QUALITIES = (95, 90, 80, 70, 60, 50, 40, 30, 20, 10, 5, 1)  # weakest first


def shift_one_pixel(images: torch.Tensor) -> torch.Tensor:
    """Move every image one pixel right, repeating its left column: (B, C, H, W) -> (B, C, H, W)."""
    return torch.cat([images[..., :1], images[..., :-1]], dim=-1)


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur with reflected borders: (B, C, H, W) -> (B, C, H, W)."""
    radius = min(int(3 * sigma + 0.5), min(images.shape[-2:]) - 1)
    offsets = torch.arange(-radius, radius + 1, dtype=images.dtype)
    kernel = torch.exp(-offsets ** 2 / (2 * sigma ** 2))
    kernel = kernel / kernel.sum()
    channels = images.shape[1]
    rows = kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1)  # (C, 1, k, 1)
    cols = kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1)  # (C, 1, 1, k)
    padded = F.pad(images, (radius, radius, radius, radius), mode="reflect")
    return F.conv2d(F.conv2d(padded, rows, groups=channels), cols, groups=channels)


def match_mse(images: torch.Tensor, candidates: list[torch.Tensor], target: torch.Tensor,
              name: str) -> torch.Tensor:
    """Per image, the weakest candidate whose MSE reaches ``target`` (B,), blended down to it exactly.

    ``candidates`` are distorted copies of ``images``, weakest first, each (B, C, H, W).
    """
    errors = torch.stack([mse(c, images) for c in candidates])  # (S, B)
    reaches = errors >= target
    if not reaches.any(0).all():
        worst = int((~reaches.any(0)).nonzero()[0])
        raise ValueError(f"the strongest {name} reaches MSE {errors[:, worst].max().item():.3g} on image "
                         f"{worst}, below the target {target[worst].item():.3g}; ask for a smaller mse_target "
                         f"or keep the images where reaches_target(images) is True")
    first = reaches.float().argmax(0)  # (B,) index of the weakest candidate that reaches the target
    chosen = torch.stack(candidates)[first, torch.arange(len(images))]  # (B, C, H, W)
    a = (target / errors[first, torch.arange(len(images))]).sqrt()  # (B,)
    return images + a[:, None, None, None] * (chosen - images)


def candidates(images: torch.Tensor, seed: int = 0) -> dict[str, list[torch.Tensor]]:
    """Each distortion of ``images`` (B, C, H, W) at every strength in its list, weakest first."""
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed))
    return {"blur": [gaussian_blur(images, s) for s in BLUR_SIGMAS],
            "noise": [(images + s * noise).clamp(0, 1) for s in NOISE_LEVELS],
            "shift": [shift_one_pixel(images)],
            "jpeg": [jpeg_roundtrip(images, q)[0] for q in JPEG_QUALITIES]}


def equal_mse_distortions(images: torch.Tensor, mse_target: float | torch.Tensor | None = None,
                          seed: int = 0) -> dict[str, torch.Tensor]:
    """Blur, noise, a shift and JPEG blocks of ``images`` (B, C, H, W), all at the same MSE per image.

    ``mse_target``: one number, one per image (B,), or None for each image's one-pixel-shift MSE (then
    the shift is exactly one pixel). Noise is drawn from a generator seeded with ``seed``. Raises
    when a distortion cannot reach the target on some image; ``reaches_target`` says which images can.
    """
    _check_images(images)
    target = _target(images, mse_target)
    return {name: match_mse(images, batch, target, name) for name, batch in candidates(images, seed).items()}


def reaches_target(images: torch.Tensor, mse_target: float | torch.Tensor | None = None,
                   seed: int = 0) -> torch.Tensor:
    """(B,) bool: True where every distortion can reach the target MSE.

    Fails on e.g. a fine texture whose one-pixel shift errs more than even a flat grey version of
    it (the strongest blur) does, or on a flat crop at a fixed target.
    """
    _check_images(images)
    target = _target(images, mse_target)
    ok = torch.ones(len(images), dtype=torch.bool)
    for batch in candidates(images, seed).values():
        ok &= torch.stack([mse(c, images) for c in batch]).max(0).values >= target
    return ok


def _target(images: torch.Tensor, mse_target) -> torch.Tensor:
    if mse_target is None:
        target = mse(shift_one_pixel(images), images)
    else:
        target = torch.as_tensor(mse_target, dtype=torch.float32).flatten()
        target = target.expand(len(images)).clone() if target.numel() == 1 else target
    if target.shape != (len(images),) or not (target > 0).all():
        raise ValueError(f"mse_target must be positive, one number or one per image ({len(images)}), got "
                         f"{mse_target!r} (flat images have no one-pixel-shift error: pass a number)")
    return target


def _check_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] not in (1, 3):
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"expected images of shape (B, C, H, W) with C in (1, 3), got {shape}")
    if not images.is_floating_point() or images.min() < 0 or images.max() > 1:
        raise ValueError("expected float images in [0, 1]")
    if min(images.shape[-2:]) < 8:
        raise ValueError(f"expected images of at least 8x8 (JPEG works on 8x8 blocks), got {tuple(images.shape[-2:])}")


def compare_distortions(images: torch.Tensor, distorted: dict[str, torch.Tensor],
                        distances: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] | None = None
                        ) -> dict[str, dict[str, float]]:
    """Mean MSE, PSNR, SSIM and each extra distance ((B, C, H, W) twice -> (B,)) per distortion."""
    table = {}
    for name, batch in distorted.items():
        row = {"mse": mse(batch, images).mean().item(), "psnr": psnr(batch, images).mean().item(),
               "ssim": ssim(batch, images).mean().item()}
        with torch.no_grad():
            row.update({key: fn(batch, images).mean().item() for key, fn in (distances or {}).items()})
        table[name] = row
    return table
