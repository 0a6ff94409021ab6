"""Exercises of 08_maskgit: the schedule's mask count after a decoding step, and one step's re-masking."""
from __future__ import annotations

import torch

from course_lib.generators.mask_schedule import masked_after
from course_lib.generators.maskgit import remask
from course_lib.notebook.exercises import Case, Exercise, register

LESSON = "08_maskgit"
RATIO_SCHEDULES = ("cosine", "linear", "square", "sqrt")  # the exercise leaves out "constant"


def mask_count(step: int, steps: int, n: int, masked_now: int, schedule: str) -> int:
    """The exercise's signature of :func:`course_lib.generators.mask_schedule.masked_after` (ints only)."""
    return int(masked_after(step, steps, n, masked_now, schedule))


def _count_cases(g: torch.Generator) -> list[Case]:
    # whole decodings (the run function chains masked_now); two edge cases where each clamp matters:
    # sqrt with steps = n needs "one per remaining step", cosine with 64 tokens in 32 steps "one per step now"
    cases = [Case((16, 16, "sqrt")), Case((64, 32, "cosine"))]
    for schedule in RATIO_SCHEDULES:  # the others drawn, so that a grader's seed gives cases never seen
        n = int(torch.randint(8, 260, (1,), generator=g))
        steps = int(torch.randint(2, min(n, 32) + 1, (1,), generator=g))
        cases.append(Case((n, steps, schedule)))
    return cases


def _run_counts(fn, case: Case) -> list[int]:
    """The counts after every step of one decoding of n tokens, each step given the count before it."""
    n, steps, schedule = case.args
    counts, masked = [], n
    for step in range(steps):
        masked = int(fn(step, steps, n, masked, schedule))
        counts.append(masked)
    return counts


def _remask_cases(g: torch.Generator) -> list[Case]:
    cases = []
    for b, n, mask_id in [(3, 16, 256), (4, 16, 10), (2, 64, 1024), (5, 9, 7)]:
        sampled = torch.randint(mask_id, (b, n), generator=g)
        confidence = -torch.rand(b, n, generator=g) * 5  # log-probabilities (+ noise): the known ones too
        is_masked = torch.rand(b, n, generator=g) < 0.7
        is_masked[:, 0] = True  # every row has a masked position
        masked_now = is_masked.sum(1)  # (B,)
        keep = (torch.rand(b, generator=g) * masked_now).long()  # (B,) in [0, masked_now)
        cases.append(Case((sampled, confidence, is_masked, keep, mask_id)))
    return cases


register(Exercise(
    name="mask_count", lesson=LESSON, reference=mask_count, make_cases=_count_cases, run=_run_counts,
    arguments=("n", "steps", "schedule"), outputs="masked count after step={i}",
    hint="the check runs whole decodings, each step given the count your function returned for the step "
         "before. The schedule gives the fraction still masked at a progress; after this step, this step "
         "counts as done (the last step ends at full progress). Round that count down, then two limits: one "
         "masked token left for every step still to come, and at least one token revealed in this step; "
         "never below zero",
))
register(Exercise(
    name="remask", lesson=LESSON, reference=remask, make_cases=_remask_cases, outputs="remasked tokens",
    hint="only positions still masked compete: a known token is never masked again, whatever its confidence. "
         "In each row, that row's keep_masked least confident masked positions go back to mask_id and every "
         "other position keeps its sample; you need each position's rank within its row, not only the order "
         "of the row",
))
