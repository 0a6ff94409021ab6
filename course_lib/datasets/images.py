"""Images in the shape a model takes: any course dataset (or folder) converted to C channels and S x S pixels."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import load_dataset

_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, as PIL's "L" mode
_SIZED = ("shapes", "photos", "glyphs", "digits")  # generated at the size asked for; others are resized after loading


def load_images(name: str, split: str, channels: int, size: int, n: int | None = None, seed: int = 0) -> torch.Tensor:
    """A dataset's images as a model takes them: (N, channels, size, size) in [0, 1]."""
    sized = name in _SIZED or name.startswith("folder:")
    images = load_dataset(name, split, n=n, seed=seed, size=size if sized else None).images
    return convert_images(images, channels, size)


def convert_images(images: torch.Tensor, channels: int, size: int) -> torch.Tensor:
    """Grey <-> RGB and square resizing (antialiased bilinear): (N, C, H, W) -> (N, channels, size, size)."""
    if images.shape[1] == 3 and channels == 1:
        weights = torch.tensor(_LUMA, dtype=images.dtype).view(1, 3, 1, 1)
        images = (images * weights).sum(1, keepdim=True)  # (N, 1, H, W)
    elif images.shape[1] == 1 and channels == 3:
        images = images.expand(-1, 3, -1, -1)  # (N, 3, H, W)
    if images.shape[-2:] != (size, size):
        images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return images.clamp(0, 1).contiguous()
