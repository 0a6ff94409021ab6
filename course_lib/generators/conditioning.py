"""Class conditioning shared by every generator: class ids to embedding rows, "no class", class dropout.

Paper: Classifier-Free Diffusion Guidance (Ho & Salimans, 2022), https://arxiv.org/abs/2207.12598 --
one model learns the conditional and the unconditional distribution when its class is replaced by
"no class" with a small probability during training; guidance then mixes the two at sampling time.

A class id is an int in [0, num_classes) or ``NO_CLASS`` (-1). Every model keeps one embedding row
per class and one "no class" row after them, at its own place in its table: the GPT's classes follow
its K image tokens, MaskGIT's follow its K tokens and ``[MASK]``, the DiT's start at row 0. That layout
is the ``offset`` of :class:`ClassRows`; it is what the shipped checkpoints were trained with.

Shapes: B batch.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

NO_CLASS = -1  # the class id meaning "no class": unconditional rows for class dropout and guidance


@dataclass(frozen=True)
class ClassRows:
    """Class ids (B,) -> embedding rows (B,): class c -> offset + c, "no class" -> offset + num_classes."""

    num_classes: int
    offset: int = 0
    family: str = "model"  # for messages: "GPT", "MaskGIT", "DiT"

    def null(self, n: int, device=None) -> torch.Tensor:
        """The "no class" row, n times (n,)."""
        return torch.full((n,), self.offset + self.num_classes, dtype=torch.long, device=device)

    def __call__(self, classes: torch.Tensor | int | list | None, n: int, device=None) -> torch.Tensor:
        """Rows (n,) of ``classes``: None (no class for all), one int for all, or (n,) ids with ``NO_CLASS`` allowed."""
        if classes is None:
            return self.null(n, device)
        ids = class_ids(classes, n, self.num_classes, self.family, device)  # (n,)
        return torch.where(ids == NO_CLASS, self.offset + self.num_classes, ids + self.offset)


def class_ids(classes: torch.Tensor | int | list, n: int, num_classes: int, family: str = "model",
              device=None) -> torch.Tensor:
    """``classes`` as n checked class ids (n,) in [0, num_classes) or ``NO_CLASS``."""
    ids = torch.as_tensor(classes, dtype=torch.long, device=device)
    ids = ids.expand(n) if ids.ndim == 0 else ids
    if ids.shape != (n,):
        raise ValueError(f"expected one class per sample, shape ({n},), got {tuple(ids.shape)}")
    given = ids[ids != NO_CLASS]
    if num_classes == 0 and given.numel():
        raise ValueError(f"this {family} is unconditional (num_classes=0); pass classes=None")
    if given.numel() and (given.min() < 0 or given.max() >= num_classes):
        raise ValueError(f"classes must lie in [0, {num_classes}) or be NO_CLASS ({NO_CLASS}), got values in "
                         f"[{int(ids.min())}, {int(ids.max())}]")
    return ids


def check_class_dropout(class_dropout: float) -> None:
    if not 0.0 <= class_dropout < 1.0:
        raise ValueError(f"class_dropout must be in [0, 1), got {class_dropout!r}")


def drop_classes(classes: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each class id (B,) replaced by ``NO_CLASS`` with probability p, so one model also learns the
    unconditional distribution (one uniform draw per row, from ``generator``)."""
    check_class_dropout(p)
    drop = torch.rand(classes.shape, generator=generator, device=classes.device) < p  # (B,)
    return torch.where(drop, torch.full_like(classes, NO_CLASS), classes)
