"""Procedural shapes: 32x32 RGB images with known factors (shape, colour, size, position).

Every image is drawn from its factors with 4x supersampling, so edges are anti-aliased. The same
seed gives the same tensors; train and test use different streams of the same seed.
"""
from __future__ import annotations

import torch
from einops import reduce

from .imageset import ImageSet, split_seed

SHAPES = ("circle", "square", "triangle", "diamond")
COLOURS = {"red": (0.9, 0.15, 0.15), "green": (0.2, 0.8, 0.2), "blue": (0.2, 0.35, 0.95),
           "yellow": (0.95, 0.85, 0.15), "magenta": (0.85, 0.2, 0.85), "cyan": (0.15, 0.85, 0.9)}
SIZES = {"small": 0.3, "medium": 0.45, "large": 0.6}  # half-width as a fraction of the image
POSITIONS = ("top-left", "top", "top-right", "left", "centre", "right", "bottom-left", "bottom", "bottom-right")
_SUPERSAMPLE = 4
# membership tests in shape units, one per entry of SHAPES
_INSIDE = (
    lambda dx, dy: dx ** 2 + dy ** 2 <= 1,                       # circle
    lambda dx, dy: (dx.abs() <= 0.85) & (dy.abs() <= 0.85),      # square
    lambda dx, dy: (dy <= 0.8) & (dy >= 2 * dx.abs() - 1.0),     # triangle, apex up
    lambda dx, dy: dx.abs() + dy.abs() <= 1,                     # diamond
)


def make_shapes(n: int, seed: int = 0, split: str = "train", size: int = 32) -> ImageSet:
    """``n`` shape images of ``size`` x ``size`` with labels shape, colour, size, position (and x, y)."""
    if n < 1 or size < 8:
        raise ValueError(f"need n >= 1 and size >= 8, got n={n}, size={size}")
    g = torch.Generator().manual_seed(split_seed(seed, split))
    shape = torch.randint(len(SHAPES), (n,), generator=g)
    colour = torch.randint(len(COLOURS), (n,), generator=g)
    scale = torch.randint(len(SIZES), (n,), generator=g)
    half = torch.tensor(list(SIZES.values()))[scale]
    # centres keep the whole shape inside the frame: x, y in [-1 + half, 1 - half]
    centre = (torch.rand(n, 2, generator=g) * 2 - 1) * (1 - half[:, None])
    images = torch.cat([_draw(shape[i:i + 512], colour[i:i + 512], half[i:i + 512], centre[i:i + 512], size)
                        for i in range(0, n, 512)])
    cell = ((centre + 1) / 2 * 3).clamp(0, 2.999).long()  # (N, 2) grid cell of (x, y)
    labels = {"shape": shape, "colour": colour, "size": scale, "position": cell[:, 1] * 3 + cell[:, 0]}
    classes = {"shape": list(SHAPES), "colour": list(COLOURS), "size": list(SIZES), "position": list(POSITIONS)}
    return ImageSet("shapes", split, images, labels, classes)


def _draw(shape, colour, half, centre, size):
    s = size * _SUPERSAMPLE
    axis = (torch.arange(s) + 0.5) / s * 2 - 1
    y, x = torch.meshgrid(axis, axis, indexing="ij")  # (H, W) each, in [-1, 1]
    dx = (x[None] - centre[:, 0, None, None]) / half[:, None, None]  # (B, H, W) in shape units
    dy = (y[None] - centre[:, 1, None, None]) / half[:, None, None]
    mask = torch.zeros_like(dx, dtype=torch.bool)  # (B, H, W)
    for k, inside in enumerate(_INSIDE):
        chosen = shape == k
        if chosen.any():
            mask[chosen] = inside(dx[chosen], dy[chosen])
    mask = mask.float()
    mask = reduce(mask, "b (h p1) (w p2) -> b h w", "mean", p1=_SUPERSAMPLE, p2=_SUPERSAMPLE)
    rgb = torch.tensor(list(COLOURS.values()))[colour]  # (B, 3)
    background = 0.08
    images = background + mask[:, None] * (rgb[:, :, None, None] - background)
    return images.float().contiguous()  # (B, 3, H, W)
