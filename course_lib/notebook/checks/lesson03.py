"""Exercises of 03_vector_quantization: nearest code, straight-through estimator, VQ loss."""
from __future__ import annotations

import torch

from course_lib.notebook.exercises import Case, Exercise, register
from course_lib.tokenizers.vq import nearest_code, straight_through, vq_loss

LESSON = "03_vector_quantization"


def _nearest_cases(g: torch.Generator) -> list[Case]:
    cases = []
    for z_shape, k in [((6, 2), 4), ((2, 3, 3, 8), 16), ((50, 16), 64)]:
        d = z_shape[-1]
        z = torch.randn(*z_shape, generator=g)
        codebook = torch.randn(k, d, generator=g) * torch.rand(k, 1, generator=g) * 3  # codes of unequal norms
        cases.append(Case((z, codebook)))
    return cases


def _pair_cases(g: torch.Generator) -> list[Case]:
    cases = []
    for shape in [(3, 2), (2, 4, 3, 3), (5, 8)]:
        z, z_q = torch.randn(*shape, generator=g), torch.randn(*shape, generator=g)
        upstream = torch.randn(*shape, generator=g)  # the gradient arriving from the decoder
        cases.append(Case((z, z_q), {"_upstream": upstream}))
    return cases


def _run_straight_through(fn, case: Case):
    z, z_q = (t.clone().requires_grad_(True) for t in case.args)
    out = fn(z, z_q)
    (out * case.kwargs["_upstream"]).sum().backward()
    return {"value": out.detach(), "grad z": _grad(z), "grad z_q": _grad(z_q)}


def _vq_loss_cases(g: torch.Generator) -> list[Case]:
    return [Case(c.args, {"beta": beta})
            for c, beta in zip(_pair_cases(g), (0.25, 0.5, 1.0))]


def _run_vq_loss(fn, case: Case):
    z, z_q = (t.clone().requires_grad_(True) for t in case.args)
    codebook_loss, commitment_loss = fn(z, z_q, case.kwargs["beta"])
    result = {"codebook loss": codebook_loss.detach(), "commitment loss": commitment_loss.detach()}
    for name, loss in (("codebook loss", codebook_loss), ("commitment loss", commitment_loss)):
        z.grad = z_q.grad = None
        loss.backward(retain_graph=True)
        result[f"grad of {name} wrt z"], result[f"grad of {name} wrt z_q"] = _grad(z), _grad(z_q)
    return result


def _grad(t: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(t) if t.grad is None else t.grad.clone()


register(Exercise(
    name="nearest_code", lesson=LESSON, reference=nearest_code, make_cases=_nearest_cases,
    outputs="indices",
    hint="every vector of z, whatever its leading axes, looks for the code at the smallest Euclidean distance; "
         "expanding the squared distance compares all vectors with all codes in one matrix product, and the "
         "indices keep the shape of z without its last axis",
))
register(Exercise(
    name="straight_through", lesson=LESSON, reference=straight_through, make_cases=_pair_cases,
    run=_run_straight_through,
    hint="the value going forward is z_q, while the gradient reaches z unchanged, as if quantization were the "
         "identity; z_q itself gets no gradient from this path (stop the gradient of a difference)",
))
register(Exercise(
    name="vq_loss", lesson=LESSON, reference=vq_loss, make_cases=_vq_loss_cases, run=_run_vq_loss,
    hint="two mean squared errors between z and z_q, each with the gradient stopped on one side: the codebook "
         "loss moves only the codes, the commitment loss only the encoder, and beta weighs the commitment term",
))
