"""Exercises of 05_continuous_latents: the reparameterization trick and the diagonal-Gaussian KL."""
from __future__ import annotations

import torch

from course_lib.notebook.exercises import Case, Exercise, register
from course_lib.tokenizers.kl import gaussian_kl, reparameterize

LESSON = "05_continuous_latents"
_SHAPES = [(2, 1, 2, 2), (3, 4, 4, 4), (2, 8, 3, 5)]


def _moments(g: torch.Generator, shape) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(*shape, generator=g), torch.randn(*shape, generator=g) * 1.5  # logvar far from 0


def _reparameterize_cases(g: torch.Generator) -> list[Case]:
    return [Case((*_moments(g, s), torch.randn(*s, generator=g))) for s in _SHAPES]


def _kl_cases(g: torch.Generator) -> list[Case]:
    return [Case(_moments(g, s)) for s in _SHAPES]


register(Exercise(
    name="reparameterize", lesson=LESSON, reference=reparameterize, make_cases=_reparameterize_cases,
    outputs="sample",
    hint="logvar is the log of the variance, so the standard deviation is its exponential at half strength; "
         "the sample is the mean plus the noise scaled by that standard deviation",
))
register(Exercise(
    name="gaussian_kl", lesson=LESSON, reference=gaussian_kl, make_cases=_kl_cases,
    outputs="kl",
    hint="the closed-form KL divergence of each latent element's Gaussian from the standard normal, summed "
         "over the latent's channels and positions, then averaged over the batch",
))
