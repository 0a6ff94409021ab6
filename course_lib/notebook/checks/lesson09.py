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
        cases.append(Case((data, noise, t), label=f"data, noise {shape}, t ({shape[0]},)"))
    return cases


def _euler_cases(g: torch.Generator) -> list[Case]:
    cases = []
    for shape, t, t_next in [((6, 2), 1.0, 0.75), ((3, 4, 8, 8), 0.5, 0.4375), ((2, 3, 4, 4), 0.25, 0.0)]:
        x, velocity = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
        cases.append(Case((x, velocity, t, t_next), label=f"x, velocity {shape}, t {t} -> t_next {t_next}"))
    return cases


def _cfg_cases(g: torch.Generator) -> list[Case]:
    return [Case((torch.randn(shape, generator=g), torch.randn(shape, generator=g), scale),
                 label=f"cond, uncond {shape}, scale {scale}")
            for shape, scale in [((2, 4, 8, 8), 3.0), ((5, 2), 1.5), ((3, 4, 2, 2), 0.0)]]


register(Exercise(
    name="interpolant", lesson=LESSON, reference=interpolant, make_cases=_interpolant_cases,
    hint="t = 0 is data and t = 1 is noise: x_t = (1 - t) data + t noise; the velocity d x_t / dt is noise - data. "
         "Reshape t (B,) to (B, 1, ..., 1) so it broadcasts over any data shape",
))
register(Exercise(
    name="euler_step", lesson=LESSON, reference=euler_step, make_cases=_euler_cases,
    hint="x moves by the velocity times the change in time, t_next - t (negative when sampling towards the data)",
))
register(Exercise(
    name="cfg_velocity", lesson=LESSON, reference=cfg_velocity, make_cases=_cfg_cases,
    hint="start from the unconditional velocity and move scale times the step from unconditional to conditional",
))
