"""Labelled images: a course dataset's images with one class per image, and real images with the classes in turn.

A class is one label (``"char"``) or several combined (``("shape", "colour")`` -> 24 classes named
``"circle-red"``, ...): :func:`course_lib.datasets.tokens.class_label`. Classifiers train on these;
the yardstick's floor and ceiling are measured on images whose classes come in turn, the proportions
in which class-conditional samples are drawn.

Shapes: N images, C channels, H W height and width.
"""
from __future__ import annotations

import torch

from . import load_dataset
from .tokens import class_label


def labelled_images(data: str, split: str, label, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Images (N, C, H, W), classes (N,) and the class names of a course dataset."""
    images = load_dataset(data, split, n=n)
    classes, names = class_label(images, label)
    return images.images, classes, names


def images_in_turn(data: str, split: str, label, n: int, pool: int = 4) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """``n`` real images whose classes come in turn (0, 1, ..., C - 1, 0, ...), the proportions in which
    class-conditional samples are drawn: the yardstick's floor and ceiling are measured on these, since
    the Frechet distance also notices how often each class appears. Picked in order from the first
    ``pool * n`` images of the split."""
    images, classes, names = labelled_images(data, split, label, pool * n)
    if not names:
        raise ValueError(f"images in turn need classes: give a label of {data}, got {label!r}")
    wanted = torch.arange(n) % len(names)  # (n,)
    index, taken = [], [0] * len(names)
    positions = [(classes == c).nonzero()[:, 0] for c in range(len(names))]
    for c in wanted.tolist():
        if taken[c] == len(positions[c]):
            raise ValueError(f"{data} {split} has only {len(positions[c])} images of class {names[c]!r} among its "
                             f"first {len(images)}; {n} images in turn need {int((wanted == c).sum())}")
        index.append(int(positions[c][taken[c]]))
        taken[c] += 1
    return images[torch.tensor(index)], wanted, names
