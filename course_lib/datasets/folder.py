"""A user's own images: every image file in a folder, resized and converted to one size and channel count.

Files are sorted by path; every tenth file (the 10th, 20th, ...) is the test split, the rest train.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .imageset import ImageSet

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
SPLITS = ("train", "test", "all")


def load_folder(path: str | Path, split: str = "train", size: int = 32, channels: int = 3) -> ImageSet:
    """Images under ``path`` (recursively), centre-cropped to a square and resized to ``size``."""
    folder = Path(path).expanduser()
    if folder.is_file():
        raise ValueError(f"folder:{path} is a file; give the folder that holds the images")
    if not folder.is_dir():
        raise ValueError(f"folder:{path}: no such folder")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file())
    if split != "all":
        files = [p for i, p in enumerate(files) if (i % 10 == 9) == (split == "test")]
    if not files:
        which = "images" if split == "all" else f"{split} images (every 10th file is a test image)"
        raise ValueError(f"folder:{path} has no {which}: expected files ending in {', '.join(EXTENSIONS)}")
    images = torch.stack([_load(p, size, channels) for p in files])  # (N, C, size, size)
    return ImageSet(f"folder:{folder}", split, images)


def _load(path: Path, size: int, channels: int) -> torch.Tensor:
    try:
        with Image.open(path) as image:
            image = ImageOps.fit(image.convert("RGB" if channels == 3 else "L"), (size, size), Image.LANCZOS)
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"{path} is not a readable image: {error}") from None
    array = np.asarray(image, dtype=np.float32) / 255
    return torch.from_numpy(array).reshape(size, size, channels).permute(2, 0, 1)  # (C, H, W)
