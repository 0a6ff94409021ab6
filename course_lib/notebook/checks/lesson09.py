"""Exercises of 09_flow_matching: the straight-path interpolant and its velocity, one Euler step, CFG on the velocity."""
from __future__ import annotations

import torch

from course_lib.generators.flow import cfg_velocity, euler_step, interpolant
from course_lib.notebook.exercises import Case, Exercise, register

LESSON = "09_flow_matching"


def _interpolant_cases(g: torch.Generator) -> list[Case]:
    # times spread over [0, 1] (never all one value), on points (B, 2) and on latents (B, C, h, w)
    cases = []
    for shape in [(5, 2), (4, 4, 8, 8), (3, 1, 2, 6)]:
        data, noise = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
        t = torch.rand(shape[0], generator=g)
        t[0] = 0.05  # near the data end, where a swapped convention is far off
        cases.append(Case((data, noise, t)))
    return cases


def _euler_cases(g: torch.Generator) -> list[Case]:
    cases = []
    for shape, t, t_next in [((6, 2), 1.0, 0.75), ((3, 4, 8, 8), 0.5, 0.4375), ((2, 3, 4, 4), 0.25, 0.0)]:
        x, velocity = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
        cases.append(Case((x, velocity, t, t_next)))
    return cases


def _cfg_cases(g: torch.Generator) -> list[Case]:
    return [Case((torch.randn(shape, generator=g), torch.randn(shape, generator=g), scale))
            for shape, scale in [((2, 4, 8, 8), 3.0), ((5, 2), 1.5), ((3, 4, 2, 2), 0.0)]]


register(Exercise(
    name="interpolant", lesson=LESSON, reference=interpolant, make_cases=_interpolant_cases,
    outputs=("x_t", "velocity"),
    hint="t = 0 is the data end and t = 1 the noise end; x_t runs along the straight line between the two "
         "at constant speed, and the velocity is the derivative of x_t with respect to t (the same for every "
         "t). t holds one time per example, shape (B,): give it singleton axes so that it lines up with data "
         "of any shape",
))
register(Exercise(
    name="euler_step", lesson=LESSON, reference=euler_step, make_cases=_euler_cases, outputs="x at t_next",
    hint="follow the velocity for the time that passes from t to t_next, a signed amount: negative when "
         "sampling runs from the noise (t = 1) towards the data (t = 0)",
))
register(Exercise(
    name="cfg_velocity", lesson=LESSON, reference=cfg_velocity, make_cases=_cfg_cases, outputs="guided velocity",
    hint="start from the unconditional velocity and move scale times the step from unconditional to "
         "conditional: scale 0 gives the unconditional velocity back, scale 1 the conditional one",
))
