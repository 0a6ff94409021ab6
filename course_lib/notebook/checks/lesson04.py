"""Exercises of 04_fsq: bound and round with a straight-through estimator, codes <-> indices."""
from __future__ import annotations

import torch

from course_lib.notebook.exercises import Case, Exercise, register
from course_lib.tokenizers.fsq import codes_to_indices, indices_to_codes, quantize

LESSON = "04_fsq"
_LEVELS = [[3], [8, 5, 5, 5], [7, 5, 5, 5, 5], [4, 6, 3]]  # odd and even levels both appear


def _quantize_cases(g: torch.Generator) -> list[Case]:
    cases = []
    for levels in _LEVELS:
        z = torch.randn(5, len(levels), generator=g) * 2
        cases.append(Case((z, levels), {"_upstream": torch.randn(5, len(levels), generator=g)}))
    return cases


def _run_quantize(fn, case: Case):
    z = case.args[0].clone().requires_grad_(True)
    codes = fn(z, case.args[1])
    (codes * case.kwargs["_upstream"]).sum().backward()
    return {"codes": codes.detach(), "grad z": torch.zeros_like(z) if z.grad is None else z.grad}


def _index_cases(g: torch.Generator) -> list[Case]:
    cases = []
    for levels in _LEVELS:
        size = int(torch.tensor(levels).prod())
        indices = torch.randint(size, (2, 6), generator=g)
        cases.append(Case((indices_to_codes(indices, levels), levels)))
    return cases


def _code_cases(g: torch.Generator) -> list[Case]:
    cases = []
    for levels in _LEVELS:
        size = int(torch.tensor(levels).prod())
        indices = torch.cat([torch.tensor([0, size - 1]), torch.randint(size, (10,), generator=g)])
        cases.append(Case((indices, levels)))
    return cases


register(Exercise(
    name="fsq_quantize", lesson=LESSON, reference=quantize, make_cases=_quantize_cases, run=_run_quantize,
    hint="bound each channel to its own number of levels with a tanh (an even number of levels needs a "
         "half-step offset so that the grid is symmetric), round to the nearest level with a straight-through "
         "gradient, and rescale so that the codes lie in [-1, 1]",
))
register(Exercise(
    name="codes_to_indices", lesson=LESSON, reference=codes_to_indices, make_cases=_index_cases,
    outputs="indices",
    hint="each channel's code, shifted and scaled, is an integer digit from zero to its level count minus one; "
         "the index reads the digits as one number whose base changes per channel, the first channel the least "
         "significant",
))
register(Exercise(
    name="indices_to_codes", lesson=LESSON, reference=indices_to_codes, make_cases=_code_cases,
    outputs="codes",
    hint="undo codes_to_indices: peel off one digit per channel (the remainder by that channel's level count, "
         "then divide down), then shift and scale each digit back to a float code in [-1, 1]",
))
