"""Glyphs: characters rendered from the fonts that matplotlib ships, with class labels.

Each image is one character (digits and capital letters) in one of matplotlib's DejaVu / STIX fonts,
white on black, with a random size, a small rotation and a small offset. Train and test draw from
the same fonts with different random streams of the same seed.
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from .imageset import ImageSet, split_seed

CHARACTERS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
DIGITS = CHARACTERS[:10]
FONTS = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf",
         "DejaVuSansMono.ttf", "DejaVuSans-Oblique.ttf", "STIXGeneral.ttf", "STIXGeneralBol.ttf")


def make_glyphs(n: int, seed: int = 0, split: str = "train", size: int = 32,
                characters: str = CHARACTERS) -> ImageSet:
    """``n`` grey glyph images (N, 1, size, size) in [0, 1], labelled by ``char`` (an index into
    ``characters``) and ``font``."""
    if n < 1 or size < 8:
        raise ValueError(f"need n >= 1 and size >= 8, got n={n}, size={size}")
    if not characters or len(set(characters)) != len(characters):
        raise ValueError(f"characters must be distinct and at least one, got {characters!r}")
    rng = np.random.default_rng(split_seed(seed, split))
    chars = rng.integers(len(characters), size=n)
    fonts = rng.integers(len(FONTS), size=n)
    scales = rng.uniform(0.55, 0.8, size=n)
    angles = rng.uniform(-12, 12, size=n)
    shifts = rng.uniform(-0.1, 0.1, size=(n, 2))
    images = np.stack([_render(characters[c], FONTS[f], s, a, d, size)
                       for c, f, s, a, d in zip(chars, fonts, scales, angles, shifts)])
    images = torch.from_numpy(images).float()[:, None] / 255  # (N, 1, H, W)
    labels = {"char": torch.from_numpy(chars).long(), "font": torch.from_numpy(fonts).long()}
    classes = {"char": list(characters), "font": [f.removesuffix(".ttf") for f in FONTS]}
    return ImageSet("glyphs" if characters == CHARACTERS else "digits", split, images, labels, classes)


@functools.lru_cache(maxsize=None)
def _font(name: str, pixels: int) -> ImageFont.FreeTypeFont:
    import matplotlib
    return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / name), pixels)


def _render(char: str, font: str, scale: float, angle: float, shift, size: int) -> np.ndarray:
    big = size * 4  # draw large, rotate, then shrink: smooth edges
    canvas = Image.new("L", (big, big), 0)
    face = _font(font, int(big * scale))
    draw = ImageDraw.Draw(canvas)
    left, top, right, bottom = draw.textbbox((0, 0), char, font=face)
    x = (big - (right - left)) / 2 - left + shift[0] * big
    y = (big - (bottom - top)) / 2 - top + shift[1] * big
    draw.text((x, y), char, fill=255, font=face)
    canvas = canvas.rotate(angle, resample=Image.BILINEAR)
    return np.asarray(canvas.resize((size, size), Image.LANCZOS))
