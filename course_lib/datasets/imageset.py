"""The one container every dataset returns, and the one value range and layout of the course.

Images are float32 tensors of shape (N, C, H, W) with values in [0, 1] (C = 1 for grey, 3 for RGB).
Labels are int64 tensors of shape (N,), one per labelled factor, with the class names alongside.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

ROOT = Path(__file__).resolve().parents[2]
DATA_ENV = "COURSE_DATA_DIR"


def data_dir() -> Path:
    """Where downloads are cached: ``$COURSE_DATA_DIR`` or the repository's ``data/``."""
    return Path(os.environ.get(DATA_ENV) or ROOT / "data")


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

    def loader(self, batch_size: int = 64, shuffle: bool = True, seed: int = 0, label: str | None = None) -> DataLoader:
        """Batches of images (or (images, labels[label]) pairs), shuffled with an explicit seed."""
        tensors = [self.images] if label is None else [self.images, self.label(label)]
        generator = torch.Generator().manual_seed(seed)
        return DataLoader(TensorDataset(*tensors), batch_size=batch_size, shuffle=shuffle,
                          generator=generator, drop_last=shuffle)

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
