"""Real photographs that ship inside scikit-image, scikit-learn and matplotlib: no download needed.

Whole images come at full resolution; crops come from images first resized so that the shorter side
is ``base`` pixels, so a 32x32 crop holds some structure rather than a flat patch of sky. Train crops
and test crops come from disjoint source images.
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .imageset import ImageSet, split_seed

# name -> (package, loader); every one of these files is inside an installed wheel
SOURCES = {
    "astronaut": ("scikit-image", "skimage:astronaut"),
    "coffee": ("scikit-image", "skimage:coffee"),
    "chelsea": ("scikit-image", "skimage:chelsea"),
    "rocket": ("scikit-image", "skimage:rocket"),
    "hubble_deep_field": ("scikit-image", "skimage:hubble_deep_field"),
    "immunohistochemistry": ("scikit-image", "skimage:immunohistochemistry"),
    "china": ("scikit-learn", "sklearn:china.jpg"),
    "flower": ("scikit-learn", "sklearn:flower.jpg"),
    "grace_hopper": ("matplotlib", "matplotlib:grace_hopper.jpg"),
}
SPLITS = {
    "train": ("chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "china", "grace_hopper"),
    "test": ("astronaut", "coffee", "flower"),
}


@functools.lru_cache(maxsize=None)
def _load_uint8(name: str) -> np.ndarray:
    kind, _, key = SOURCES[name][1].partition(":")
    if kind == "skimage":
        import skimage.data
        return getattr(skimage.data, key)()
    if kind == "sklearn":
        import sklearn.datasets
        from PIL import Image
        path = Path(sklearn.datasets.__file__).parent / "images" / key
        return np.asarray(Image.open(path).convert("RGB"))
    import matplotlib
    from PIL import Image
    return np.asarray(Image.open(Path(matplotlib.get_data_path()) / "sample_data" / key).convert("RGB"))


def photo(name: str) -> torch.Tensor:
    """One whole photograph as a float tensor (3, H, W) in [0, 1]."""
    if name not in SOURCES:
        raise ValueError(f"unknown photo {name!r}; choose one of {sorted(SOURCES)}")
    array = _load_uint8(name)
    return torch.from_numpy(np.array(array[..., :3])).permute(2, 0, 1).float() / 255  # (3, H, W)


def astronaut() -> torch.Tensor:
    """The 512x512 astronaut (Eileen Collins), the lecture's 512x512 example: (3, 512, 512) in [0, 1]."""
    return photo("astronaut")


def photo_names(split: str | None = None) -> list[str]:
    """Source photographs of a split (``"train"``, ``"test"``) or all of them."""
    if split is None:
        return list(SOURCES)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)} or None, got {split!r}")
    return list(SPLITS[split])


def make_photo_crops(n: int, size: int = 32, split: str = "train", seed: int = 0, base: int = 256) -> ImageSet:
    """``n`` random ``size`` x ``size`` crops from the split's photographs; label ``source`` names the photo."""
    names = photo_names(split)
    if n < 1 or not 4 <= size <= base:
        raise ValueError(f"need n >= 1 and 4 <= size <= base ({base}), got n={n}, size={size}")
    sources = [_resized(name, base) for name in names]
    g = torch.Generator().manual_seed(split_seed(seed, split))
    which = torch.randint(len(sources), (n,), generator=g)
    crops = []
    for i in range(n):
        image = sources[which[i]]
        top = torch.randint(image.shape[1] - size + 1, (1,), generator=g).item()
        left = torch.randint(image.shape[2] - size + 1, (1,), generator=g).item()
        crops.append(image[:, top:top + size, left:left + size])
    images = torch.stack(crops)  # (N, 3, size, size)
    return ImageSet("photos", split, images, {"source": which}, {"source": names})


@functools.lru_cache(maxsize=32)
def _resized(name: str, base: int) -> torch.Tensor:
    image = photo(name)  # (3, H, W)
    scale = base / min(image.shape[1:])
    shape = (round(image.shape[1] * scale), round(image.shape[2] * scale))
    resized = F.interpolate(image[None], size=shape, mode="bilinear", antialias=True, align_corners=False)
    return resized[0].clamp(0, 1)  # (3, h, w)
