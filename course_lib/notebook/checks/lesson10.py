"""Exercises of 10_next_scale: one residual step of the multi-scale quantizer, the block-causal mask, and the
teacher-forcing inputs of the next scales."""
from __future__ import annotations

import torch

from course_lib.generators.var import block_causal_mask, next_scale_inputs
from course_lib.notebook.exercises import Case, Exercise, register
from course_lib.tokenizers.multiscale import MultiScaleConfig, MultiScaleQuantizer, Phi, residual_step

LESSON = "10_next_scale"


def _random_phi(conv: torch.nn.Conv2d, g: torch.Generator) -> torch.nn.Conv2d:
    """phi with weights drawn from g (not the default init): a forgotten phi changes the answer."""
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * 0.2)
        conv.bias.copy_(torch.randn(conv.bias.shape, generator=g) * 0.1)
    return conv


def _step_cases(g: torch.Generator) -> list[Case]:
    # the coarsest scale, a middle one that does not divide the grid, and the last (no resizing at all)
    cases = []
    for b, c, size, side, k in [(3, 4, 8, 1, 16), (2, 3, 8, 3, 32), (2, 4, 8, 4, 16), (4, 2, 6, 6, 8)]:
        residual, f = torch.randn(b, c, size, size, generator=g), torch.randn(b, c, size, size, generator=g)
        codebook = torch.randn(k, c, generator=g)
        cases.append(Case((residual, f, codebook, side, _random_phi(Phi(c, 0.5), g))))
    return cases


def _mask_cases(g: torch.Generator) -> list[Case]:
    drawn = sorted(set(int(s) for s in torch.randint(1, 7, (3,), generator=g).tolist()))
    return [Case(((1, 2, 3, 4, 6, 8),)), Case(((1, 2),)), Case(((2, 3, 5),)), Case((tuple(drawn),))]


def _quantizer(dim: int, scales: tuple[int, ...], k: int, g: torch.Generator) -> MultiScaleQuantizer:
    quantizer = MultiScaleQuantizer(dim, MultiScaleConfig(k, scales, phis=2, restart_after=0))
    with torch.no_grad():
        quantizer.codebook.copy_(torch.randn(k, dim, generator=g))
    for phi in quantizer.phis:
        _random_phi(phi, g)
    return quantizer


def _inputs_cases(g: torch.Generator) -> list[Case]:
    cases = []
    for b, dim, scales, k in [(2, 4, (1, 2, 3, 4, 6, 8), 32), (3, 2, (1, 2, 4), 8), (1, 3, (2, 3, 5), 16)]:
        grids = [torch.randint(k, (b, s, s), generator=g) for s in scales]
        cases.append(Case((_quantizer(dim, scales, k, g), grids)))
    return cases


register(Exercise(
    name="residual_step", lesson=LESSON, reference=residual_step, make_cases=_step_cases,
    outputs=("codes", "f", "residual"),
    hint="look up codes for the residual seen at this scale's size (an average over each cell, not a sample "
         "of it), then bring the looked-up vectors back to the full grid the smooth way the library does and "
         "let phi refine them; that one refined map is what the reconstruction gains and what the residual "
         "loses",
))
register(Exercise(
    name="block_causal_mask", lesson=LESSON, reference=block_causal_mask, make_cases=_mask_cases,
    outputs="mask",
    hint="rows are the positions that look (queries), columns the positions looked at (keys). Give every "
         "position of the joined sequence the index of its scale first; a position may look at another when "
         "that one's scale is coarser or the same, whatever their order inside a scale",
))
register(Exercise(
    name="next_scale_inputs", lesson=LESSON, reference=next_scale_inputs, make_cases=_inputs_cases,
    arguments=("quantizer", "grids"), outputs="input of the scale after scale {i}",
    hint="the input of a scale is what the model already knows: the running reconstruction, the sum of the "
         "contributions of all the scales before it (not only the last one), brought to that scale's size "
         "by averaging over cells. The first scale has no such input and the last reconstruction is no "
         "one's input",
))
