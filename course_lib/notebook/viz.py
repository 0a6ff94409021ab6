"""Figures for the notebooks: image grids, side-by-side comparisons, token-index maps.

Images follow the course convention, float (N, C, H, W) or (C, H, W) in [0, 1]. Model outputs that
overshoot a little can be shown with ``clip=True``; anything else outside [0, 1] is an error that says so.
"""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import torch
from einops import rearrange

_TOLERANCE = 1e-3


def as_display(images, clip: bool = False, what: str = "images") -> np.ndarray:
    """(N, H, W, C) numpy floats in [0, 1] from a tensor (N, C, H, W) / (C, H, W) in [0, 1]."""
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"expected {what} as a tensor (N, C, H, W) in [0, 1], got {type(images).__name__}")
    images = images.detach().cpu()
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected {what} of shape (N, C, H, W) or (C, H, W) with C in (1, 3), "
                         f"got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"expected {what} as floats in [0, 1], got dtype {images.dtype} "
                         f"(for uint8 pixels divide by 255 first)")
    low, high = images.min().item(), images.max().item()
    if not clip and (low < -_TOLERANCE or high > 1 + _TOLERANCE):
        raise ValueError(f"expected {what} in [0, 1], got values in [{low:.3g}, {high:.3g}]; "
                         f"pass clip=True to clip model outputs, or map [-1, 1] images with (x + 1) / 2")
    return rearrange(images.clamp(0, 1), "n c h w -> n h w c").numpy()


def show_images(images, ncols: int | None = None, title: str | None = None, labels=None, clip: bool = False,
                scale: float = 1.2, ax_size: float | None = None):
    """A grid of images with optional per-image labels; returns the figure."""
    array = as_display(images, clip)
    n = len(array)
    ncols = ncols or min(n, 8)
    nrows = math.ceil(n / ncols)
    size = ax_size or scale
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * size, nrows * size + (0.3 if title else 0)),
                             squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            _imshow(ax, array[i])
            if labels is not None:
                ax.set_title(str(labels[i]), fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def compare(rows: dict, n: int = 8, clip: bool = True, scale: float = 1.2):
    """Side-by-side rows (e.g. {"original": x, "reconstruction": y}) of the first ``n`` images each."""
    if not isinstance(rows, dict) or not rows:
        raise ValueError("expected a non-empty dict {row name: images}")
    arrays = {name: as_display(images, clip, what=f"images of row {name!r}")[:n] for name, images in rows.items()}
    ncols = max(len(a) for a in arrays.values())
    fig, axes = plt.subplots(len(arrays), ncols, figsize=(ncols * scale + 1.2, len(arrays) * scale), squeeze=False)
    for r, (name, array) in enumerate(arrays.items()):
        for c, ax in enumerate(axes[r]):
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if c < len(array):
                _imshow(ax, array[c])
        axes[r, 0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
    fig.tight_layout()
    return fig


def show_tokens(indices, codebook_size: int | None = None, images=None, ncols: int = 8, scale: float = 1.4,
                annotate: bool | None = None):
    """Token-index maps (N, h, w) as colour maps, optionally above their images; returns the figure."""
    if not isinstance(indices, torch.Tensor) or indices.ndim not in (2, 3) or indices.is_floating_point():
        raise ValueError(f"expected integer token indices of shape (N, h, w) or (h, w), "
                         f"got {type(indices).__name__} {tuple(getattr(indices, 'shape', ()))}")
    indices = indices.detach().cpu()
    if indices.ndim == 2:
        indices = indices[None]
    top = int(codebook_size or indices.max().item() + 1)
    if indices.min() < 0 or indices.max() >= top:
        raise ValueError(f"token indices must lie in [0, {top}), got [{indices.min()}, {indices.max()}]")
    pictures = as_display(images, clip=True) if images is not None else None
    n = min(len(indices), ncols)
    annotate = indices.shape[-1] <= 8 if annotate is None else annotate
    rows = 2 if pictures is not None else 1
    fig, axes = plt.subplots(rows, n, figsize=(n * scale, rows * scale), squeeze=False)
    for i in range(n):
        ax = axes[-1, i]
        ax.imshow(indices[i].numpy(), cmap="tab20" if top <= 20 else "viridis", vmin=0, vmax=top - 1,
                  interpolation="nearest")
        if annotate:
            for (y, x), value in np.ndenumerate(indices[i].numpy()):
                ax.text(x, y, str(value), ha="center", va="center", fontsize=5, color="white")
        ax.axis("off")
        if pictures is not None:
            _imshow(axes[0, i], pictures[i])
            axes[0, i].axis("off")
    fig.suptitle(f"token indices (K = {top})", fontsize=10)
    fig.tight_layout()
    return fig


def _imshow(ax, image: np.ndarray) -> None:
    if image.shape[-1] == 1:
        ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(image, interpolation="nearest")


@torch.no_grad()
def decode_masked(tokenizer, grids: torch.Tensor, mask_id: int, grey: float = 0.5) -> torch.Tensor:
    """Images (B, C, H, W) of token grids (B, h, w) that hold ``mask_id`` where unknown: the known tokens
    decoded (a masked cell decodes as token 0 first, which its neighbours' edges may show), the masked
    cells painted ``grey``."""
    if grids.ndim != 3:
        raise ValueError(f"expected token grids of shape (B, h, w), got {tuple(grids.shape)}")
    hidden = grids == mask_id  # (B, h, w)
    images = tokenizer.decode(grids.masked_fill(hidden, 0)).clamp(0, 1)  # (B, C, H, W)
    cell_h, cell_w = images.shape[-2] // grids.shape[-2], images.shape[-1] // grids.shape[-1]
    cover = hidden.repeat_interleave(cell_h, 1).repeat_interleave(cell_w, 2)[:, None]  # (B, 1, H, W)
    return torch.where(cover, torch.full_like(images, grey), images)
