"""Images to PNG files: one image, or a batch as one grid; what the command lines write.

Shapes: B images, C channels (1 or 3), H W height and width.
"""
from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from PIL import Image

from course_lib.engine.files import write_atomic


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, C, H, W) in [0, 1] -> (B, H, W, C) uint8."""
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected images of shape (B, 1 or 3, H, W), got {tuple(images.shape)}")
    return (rearrange(images.detach().cpu().clamp(0, 1), "b c h w -> b h w c") * 255).round().byte().numpy()


def save_png(array: np.ndarray, path: str | Path) -> Path:
    """One (H, W, C) uint8 image to ``path`` (written atomically)."""
    buffer = io.BytesIO()
    Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(buffer, format="PNG")
    return write_atomic(path, buffer.getvalue())


def save_grid(images: torch.Tensor, path: str | Path, ncols: int | None = None, pad: int = 2) -> Path:
    """All images (B, C, H, W) in one PNG, ``ncols`` per row (default: a square), ``pad`` black pixels between."""
    b, c, h, w = images.shape
    ncols = ncols or math.ceil(math.sqrt(b))
    nrows = math.ceil(b / ncols)
    canvas = torch.zeros(c, nrows * (h + pad) + pad, ncols * (w + pad) + pad)
    for i, image in enumerate(images):
        top, left = pad + (i // ncols) * (h + pad), pad + (i % ncols) * (w + pad)
        canvas[:, top:top + h, left:left + w] = image.clamp(0, 1)
    return save_png(to_uint8(canvas[None])[0], path)
