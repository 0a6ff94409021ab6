"""Exercises of 10_next_scale: one residual step of the multi-scale quantizer, the block-causal mask, and the
teacher-forcing inputs of the next scales."""
from __future__ import annotations

import torch

from course_lib.generators.var import block_causal_mask, next_scale_inputs
from course_lib.notebook.exercises import Case, Exercise, register
from course_lib.tokenizers.multiscale import MultiScaleConfig, MultiScaleQuantizer, Phi, residual_step

LESSON = "10_next_scale"


# the cases travel to the grader's sandbox as plain data (tensors, numbers, lists): a module is sent as its
# weights and settings, and ``run`` builds it before calling the function


def _phi_weights(c: int, g: torch.Generator) -> dict:
    """phi's weights drawn from g (not the default init, so that a forgotten phi changes the answer)."""
    return {"weight": torch.randn(c, c, 3, 3, generator=g) * 0.2, "bias": torch.randn(c, generator=g) * 0.1,
            "ratio": 0.5}


def _phi(weights: dict) -> Phi:
    phi = Phi(weights["weight"].shape[0], weights["ratio"])
    phi.load_state_dict({"weight": weights["weight"], "bias": weights["bias"]})
    return phi


def _step_cases(g: torch.Generator) -> list[Case]:
    # the coarsest scale, a middle one that does not divide the grid, and the last (no resizing at all)
    cases = []
    for b, c, size, side, k in [(3, 4, 8, 1, 16), (2, 3, 8, 3, 32), (2, 4, 8, 4, 16), (4, 2, 6, 6, 8)]:
        residual, f = torch.randn(b, c, size, size, generator=g), torch.randn(b, c, size, size, generator=g)
        codebook = torch.randn(k, c, generator=g)
        label = (f"residual=tensor {(b, c, size, size)}, f=tensor {(b, c, size, size)}, codebook=tensor {(k, c)}, "
                 f"side={side}, phi=Phi(3x3 convolution on {c} channels, ratio 0.5)")
        cases.append(Case((residual, f, codebook, side, _phi_weights(c, g)), label=label))
    return cases


def _run_step(fn, case: Case):
    residual, f, codebook, side, phi = case.args
    return fn(residual, f, codebook, side, _phi(phi))


def _mask_cases(g: torch.Generator) -> list[Case]:
    drawn = sorted(set(int(s) for s in torch.randint(1, 7, (3,), generator=g).tolist()))
    return [Case(((1, 2, 3, 4, 6, 8),)), Case(((1, 2),)), Case(((2, 3, 5),)), Case((tuple(drawn),))]


def _quantizer_weights(dim: int, scales: tuple[int, ...], k: int, g: torch.Generator) -> dict:
    phis = [_phi_weights(dim, g) for _ in range(2)]
    return {"dim": dim, "scales": list(scales), "codebook": torch.randn(k, dim, generator=g), "phis": phis}


def _quantizer(weights: dict) -> MultiScaleQuantizer:
    codebook, scales = weights["codebook"], tuple(weights["scales"])
    quantizer = MultiScaleQuantizer(weights["dim"], MultiScaleConfig(len(codebook), scales, phis=2, restart_after=0))
    with torch.no_grad():
        quantizer.codebook.copy_(codebook)
    for phi, phi_weights in zip(quantizer.phis, weights["phis"]):
        phi.load_state_dict({"weight": phi_weights["weight"], "bias": phi_weights["bias"]})
    return quantizer


def _inputs_cases(g: torch.Generator) -> list[Case]:
    cases = []
    for b, dim, scales, k in [(2, 4, (1, 2, 3, 4, 6, 8), 32), (3, 2, (1, 2, 4), 8), (1, 3, (2, 3, 5), 16)]:
        grids = [torch.randint(k, (b, s, s), generator=g) for s in scales]
        label = (f"quantizer=MultiScaleQuantizer(dim={dim}, scales={scales}, codebook_size={k}), "
                 f"grids=[{', '.join(f'tensor {(b, s, s)}' for s in scales)}]")
        cases.append(Case((_quantizer_weights(dim, scales, k, g), grids), label=label))
    return cases


def _run_inputs(fn, case: Case):
    weights, grids = case.args
    return fn(_quantizer(weights), grids)


register(Exercise(
    name="residual_step", lesson=LESSON, reference=residual_step, make_cases=_step_cases, run=_run_step,
    arguments=("residual", "f", "codebook", "side", "phi"), outputs=("codes", "f", "residual"),
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
    run=_run_inputs, arguments=("quantizer", "grids"), outputs="input of the scale after scale {i}",
    hint="the input of a scale is what the model already knows: the running reconstruction, the sum of the "
         "contributions of all the scales before it (not only the last one), brought to that scale's size "
         "by averaging over cells. The first scale has no such input and the last reconstruction is no "
         "one's input",
))
