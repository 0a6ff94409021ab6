"""Exercises of 07_autoregressive: the shifted next-token loss, one sampling step, the CFG logits."""
from __future__ import annotations

import torch

from course_lib.generators.sampling import cfg_logits, next_token_loss, sample_step as _sample_step
from course_lib.notebook.exercises import Case, Exercise, register

LESSON = "07_autoregressive"


def sample_step(logits: torch.Tensor, temperature: float, top_k: int | None, generator: torch.Generator) -> torch.Tensor:
    """The exercise's signature of :func:`course_lib.generators.sampling.sample_step` (no top-p)."""
    return _sample_step(logits, temperature=temperature, top_k=top_k, generator=generator)


def _loss_cases(g: torch.Generator) -> list[Case]:
    cases = []
    for b, n, k in [(2, 5, 7), (3, 9, 16), (4, 17, 32)]:
        logits = torch.randn(b, n, k, generator=g) * 2
        sequence = torch.randint(k, (b, n), generator=g)
        cases.append(Case((logits, sequence)))
    return cases


def _step_cases(g: torch.Generator) -> list[Case]:
    cases = []
    for b, k, temperature, top_k in [(64, 16, 1.0, None), (64, 16, 0.5, 4), (128, 50, 2.0, 10), (64, 8, 1.0, 1)]:
        logits = torch.randn(b, k, generator=g) * 3
        seed = int(torch.randint(2**31, (1,), generator=g))
        cases.append(Case((logits, temperature, top_k), {"seed": seed}))
    return cases


def _run_step(fn, case: Case):
    # the same fresh generator for the reference and the student: the draws must then agree exactly
    return fn(*case.args, generator=torch.Generator().manual_seed(case.kwargs["seed"]))


def _cfg_cases(g: torch.Generator) -> list[Case]:
    return [Case((torch.randn(b, k, generator=g), torch.randn(b, k, generator=g), scale))
            for b, k, scale in [(2, 8, 3.0), (4, 16, 1.5), (3, 5, 0.0)]]


register(Exercise(
    name="next_token_loss", lesson=LESSON, reference=next_token_loss, make_cases=_loss_cases, outputs="loss",
    hint="each position's logits guess the token that comes next, so the targets are the sequence shifted "
         "by one: the last position has nothing left to predict and the first token is never predicted. "
         "One cross-entropy, averaged over every predicted position of every sequence",
))
register(Exercise(
    name="sample_step", lesson=LESSON, reference=sample_step, make_cases=_step_cases, run=_run_step,
    outputs="sampled token ids",
    hint="the temperature rescales the logits (below 1 sharper, above 1 flatter); top-k gives every token "
         "outside a row's k largest logits probability zero (no top_k: keep them all); then one draw per row "
         "from the resulting distribution, with the generator you are given, as an index into the vocabulary",
))
register(Exercise(
    name="cfg_logits", lesson=LESSON, reference=cfg_logits, make_cases=_cfg_cases, outputs="guided logits",
    hint="start from the unconditional logits and move scale times the step from unconditional to "
         "conditional: scale 0 gives the unconditional logits back, scale 1 the conditional ones",
))
