"""Datasets of the course, offline first, behind one call: ``load_dataset(name, split)``.

Every set returns an :class:`ImageSet` whose images are float32 (N, C, H, W) in [0, 1].

| name            | images             | labels                              | source                      |
|-----------------|--------------------|-------------------------------------|-----------------------------|
| ``shapes``      | (N, 3, 32, 32)     | shape, colour, size, position       | drawn procedurally          |
| ``photos``      | (N, 3, size, size) | source                              | photos inside installed wheels |
| ``glyphs``      | (N, 1, size, size) | char, font                          | matplotlib's fonts          |
| ``digits``      | (N, 1, size, size) | char (0-9), font                    | the glyphs of 0-9 only      |
| ``mnist``       | (N, 1, 28, 28)     | class                               | torchvision (download)      |
| ``fashion_mnist`` | (N, 1, 28, 28)   | class                               | torchvision (download)      |
| ``cifar10``     | (N, 3, 32, 32)     | class                               | torchvision (download)      |
| ``folder:PATH`` | (N, C, size, size) | none                                | your own image files        |
"""
from __future__ import annotations

import functools

from .downloads import DatasetUnavailable, load_cifar10, load_idx_set
from .folder import load_folder
from .glyphs import DIGITS, make_glyphs
from course_lib.paths import data_dir

from .imageset import ImageSet, check_images
from .photos import astronaut, make_photo_crops, photo, photo_names
from .shapes import make_shapes

OFFLINE = ("shapes", "photos", "glyphs", "digits")
DOWNLOADABLE = ("mnist", "fashion_mnist", "cifar10")
NAMES = (*OFFLINE, *DOWNLOADABLE, "folder:PATH")
SPLITS = ("train", "test")
DEFAULT_SIZE = {"train": 8192, "test": 1024}

__all__ = ["ImageSet", "DatasetUnavailable", "load_dataset", "check_images", "data_dir", "astronaut", "photo",
           "photo_names", "NAMES"]


def load_dataset(name: str, split: str = "train", n: int | None = None, seed: int = 0,
                 size: int | None = None) -> ImageSet:
    """Load a dataset by name; ``n`` caps the number of images, ``size`` sets the side where it can.

    Procedural and photo sets are deterministic in ``seed``; downloadable sets ignore it.
    """
    if not isinstance(name, str):
        raise ValueError(f"dataset name must be a string, one of {NAMES}; got {name!r}")
    if split not in SPLITS and not (name.startswith("folder:") and split == "all"):
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if n is not None and (not isinstance(n, int) or n < 1):
        raise ValueError(f"n must be a positive int or None, got {n!r}")
    if size is not None and (not isinstance(size, int) or size < 8):
        raise ValueError(f"size must be an int >= 8 or None, got {size!r}")
    if name.startswith("folder:"):
        images = load_folder(name.removeprefix("folder:"), split, size or 32)
        return images.subset(min(n, len(images))) if n else images
    if name in OFFLINE:
        return _offline(name, split, n or DEFAULT_SIZE[split], seed, size)
    if name in DOWNLOADABLE:
        if size is not None:
            raise ValueError(f"{name} comes at its native size; size must be None, got {size}")
        images = load_cifar10(split) if name == "cifar10" else load_idx_set(name, split)
        return images.subset(min(n, len(images))) if n else images
    raise ValueError(f"unknown dataset {name!r}; choose one of {NAMES}")


@functools.lru_cache(maxsize=16)
def _offline(name: str, split: str, n: int, seed: int, size: int | None) -> ImageSet:
    if name == "shapes":
        return make_shapes(n, seed=seed, split=split, size=size or 32)
    if name == "photos":
        return make_photo_crops(n, size=size or 32, split=split, seed=seed)
    if name == "digits":
        return make_glyphs(n, seed=seed, split=split, size=size or 32, characters=DIGITS)
    return make_glyphs(n, seed=seed, split=split, size=size or 32)
