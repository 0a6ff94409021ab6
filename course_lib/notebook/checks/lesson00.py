"""Exercises of 00_welcome: image value ranges and layouts."""
from __future__ import annotations

import torch

from course_lib.notebook.exercises import Case, Exercise, register

LESSON = "00_welcome"


def uint8_to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 pixels (N, H, W, C) in 0..255 -> float32 (N, C, H, W) in [0, 1], the course convention."""
    return images.permute(0, 3, 1, 2).float() / 255  # (N, C, H, W)


def _cases(g: torch.Generator) -> list[Case]:
    cases = []
    for n, h, w, c in [(1, 4, 4, 3), (2, 5, 3, 1), (3, 8, 6, 3)]:
        images = torch.randint(0, 256, (n, h, w, c), generator=g, dtype=torch.uint8)
        images[0, 0, 0, 0], images[-1, -1, -1, -1] = 0, 255  # both ends of the range appear
        cases.append(Case((images,)))
    return cases


register(Exercise(
    name="uint8_to_float", lesson=LESSON, reference=uint8_to_float, make_cases=_cases,
    outputs="images",
    hint="three changes: the channel axis moves from last to second place (a reorder of axes, not a reshape), "
         "the values become floats, and they are scaled so that 255 maps to exactly 1.0",
))
