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
        cases.append(Case((z, levels), {"_upstream": torch.randn(5, len(levels), generator=g)},
                          label=f"z {(5, len(levels))}, levels={levels}"))
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
        cases.append(Case((indices_to_codes(indices, levels), levels), label=f"codes {(2, 6, len(levels))}, levels={levels}"))
    return cases


def _code_cases(g: torch.Generator) -> list[Case]:
    cases = []
    for levels in _LEVELS:
        size = int(torch.tensor(levels).prod())
        indices = torch.cat([torch.tensor([0, size - 1]), torch.randint(size, (10,), generator=g)])
        cases.append(Case((indices, levels), label=f"indices {(12,)}, levels={levels}"))
    return cases


register(Exercise(
    name="fsq_quantize", lesson=LESSON, reference=quantize, make_cases=_quantize_cases, run=_run_quantize,
    hint="half_l = (L - 1) * (1 + 1e-3) / 2, offset = 0.5 for even L else 0, shift = atanh(offset / half_l); "
         "bounded = tanh(z + shift) * half_l - offset; round with z + (z.round() - z).detach(); divide by L // 2",
))
register(Exercise(
    name="codes_to_indices", lesson=LESSON, reference=codes_to_indices, make_cases=_index_cases,
    hint="digits = codes * (L // 2) + L // 2 are integers in [0, L); index = sum(digit_i * prod(levels[:i]))",
))
register(Exercise(
    name="indices_to_codes", lesson=LESSON, reference=indices_to_codes, make_cases=_code_cases,
    hint="digit_i = (index // prod(levels[:i])) % levels[i]; codes = (digit - L // 2) / (L // 2) as floats",
))
