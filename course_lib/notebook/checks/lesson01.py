"""Exercises of 01_patch_tokenization: patchify / unpatchify and nearest-centroid assignment."""
from __future__ import annotations

import torch

from course_lib.notebook.exercises import Case, Exercise, register
from course_lib.tokenizers.kmeans import nearest_centroid
from course_lib.tokenizers.patches import patchify, unpatchify

LESSON = "01_patch_tokenization"
_SHAPES = [(1, 1, 4, 4, 2), (2, 3, 8, 8, 4), (2, 3, 8, 12, 4), (1, 3, 6, 9, 3)]  # (B, C, H, W, p)


def _patchify_cases(g: torch.Generator) -> list[Case]:
    return [Case((torch.rand(b, c, h, w, generator=g), p))
            for b, c, h, w, p in _SHAPES]


def _unpatchify_cases(g: torch.Generator) -> list[Case]:
    cases = []
    for b, c, h, w, p in _SHAPES:
        patches = torch.rand(b, (h // p) * (w // p), p * p * c, generator=g)
        cases.append(Case((patches, p, h, w)))
    return cases


def _nearest_cases(g: torch.Generator) -> list[Case]:
    cases = []
    for n, k, d in [(5, 3, 2), (40, 16, 12), (100, 64, 48)]:
        x = torch.randn(n, d, generator=g)
        # centroids of very different norms: a dot-product shortcut picks the wrong one
        centroids = torch.randn(k, d, generator=g) * torch.rand(k, 1, generator=g) * 3
        cases.append(Case((x, centroids)))
    return cases


register(Exercise(
    name="patchify", lesson=LESSON, reference=patchify, make_cases=_patchify_cases,
    outputs="patches",
    hint="see the image as a grid of p x p squares: name the grid axes and the axes inside a square "
         "separately (einops can split height into two axes), then flatten each square; patches go in "
         "raster order, and inside a patch rows, then columns, then channels",
))
register(Exercise(
    name="unpatchify", lesson=LESSON, reference=unpatchify, make_cases=_unpatchify_cases,
    outputs="images",
    hint="swap the two sides of patchify's pattern; einops also needs the number of patches down the image "
         "(the number across follows from it)",
))
register(Exercise(
    name="nearest_centroid", lesson=LESSON, reference=nearest_centroid, make_cases=_nearest_cases,
    outputs="indices",
    hint="the nearest centroid is the one at the smallest Euclidean distance, one index per row of x; the "
         "largest dot product is not the nearest centroid when centroids differ in length",
))
