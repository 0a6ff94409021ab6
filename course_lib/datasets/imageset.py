"""The one container every dataset returns, and the one value range and layout of the course.

Images are float32 tensors of shape (N, C, H, W) with values in [0, 1] (C = 1 for grey, 3 for RGB).
Labels are int64 tensors of shape (N,), one per labelled factor, with the class names alongside.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

SPLIT_SEED_OFFSET = {"train": 0, "test": 1_000_003}  # generated sets: the test split never repeats a train seed


def split_seed(seed: int, split: str) -> int:
    """The seed a generated set draws its ``split`` from."""
    if split not in SPLIT_SEED_OFFSET:
        raise ValueError(f"split must be one of {sorted(SPLIT_SEED_OFFSET)}, got {split!r}")
    return seed + SPLIT_SEED_OFFSET[split]


@dataclass
class ImageSet:
    """A dataset held in memory: images (N, C, H, W) in [0, 1] and named integer labels."""

    name: str
    split: str
    images: torch.Tensor
    labels: dict[str, torch.Tensor] = field(default_factory=dict)
    classes: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_images(self.images, f"{self.name} images")
        for key, values in self.labels.items():
            if values.shape != (len(self.images),):
                raise ValueError(f"label {key!r} must have shape ({len(self.images)},), got {tuple(values.shape)}")

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index):
        return self.images[index]

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(self.images.shape[1:])

    def label(self, key: str) -> torch.Tensor:
        if key not in self.labels:
            raise ValueError(f"{self.name} has no label {key!r}; labels: {sorted(self.labels)}")
        return self.labels[key]

    def subset(self, n: int) -> "ImageSet":
        """The first ``n`` items."""
        if not 0 < n <= len(self):
            raise ValueError(f"n must be in 1..{len(self)}, got {n}")
        return ImageSet(self.name, self.split, self.images[:n], {k: v[:n] for k, v in self.labels.items()},
                        self.classes)


def check_images(images: torch.Tensor, what: str = "images", channels: tuple[int, ...] = (1, 3)) -> None:
    """Raise a ValueError unless ``images`` is a float tensor (N, C, H, W) in [0, 1] with C in ``channels``."""
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"expected {what} as a torch.Tensor (N, C, H, W), got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] not in channels:
        raise ValueError(f"expected {what} of shape (N, C, H, W) with C in {channels}, got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"expected {what} as floats in [0, 1], got dtype {images.dtype}")
    if images.numel() and (images.min() < 0 or images.max() > 1):
        raise ValueError(f"expected {what} in [0, 1], got values in "
                         f"[{images.min().item():.3g}, {images.max().item():.3g}]")
