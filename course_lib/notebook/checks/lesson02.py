"""Exercises of 02_autoencoders: the reconstruction loss and PSNR."""
from __future__ import annotations

import torch

from course_lib.notebook.exercises import Case, Exercise, register
from course_lib.tokenizers.losses import reconstruction_loss
from course_lib.evaluation.metrics import psnr

LESSON = "02_autoencoders"


def _pairs(g: torch.Generator) -> list[Case]:
    cases = []
    for shape, noise in [((2, 1, 4, 4), 0.1), ((3, 3, 8, 8), 0.05), ((4, 3, 6, 5), 0.3)]:
        images = torch.rand(*shape, generator=g)
        # errors differ per image, so pooling the batch before the log gives a different answer
        scale = noise * torch.linspace(0.2, 1.0, shape[0])[:, None, None, None]
        reconstruction = (images + scale * torch.randn(*shape, generator=g)).clamp(0, 1)
        cases.append(Case((reconstruction, images)))
    return cases


register(Exercise(
    name="reconstruction_loss", lesson=LESSON, reference=reconstruction_loss, make_cases=_pairs,
    outputs="loss",
    hint="the mean (not the sum) of the squared differences, over every element of the batch: one number",
))
register(Exercise(
    name="psnr", lesson=LESSON, reference=psnr, make_cases=_pairs,
    arguments=("reconstruction", "images"), outputs="psnr per image",
    hint="one value per image, in decibels: the mean squared error over each image's channels and pixels, "
         "against the peak value 1 of images in [0, 1], on a base-10 logarithmic scale (10 dB per factor of 10 "
         "in the MSE)",
))
