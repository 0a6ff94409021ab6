"""Exercises of 06_perceptual_adversarial: the hinge losses, VQGAN's adaptive weight, the perceptual distance."""
from __future__ import annotations

import torch

from course_lib.notebook.exercises import Case, Exercise, register
from course_lib.tokenizers.discriminator import adaptive_weight as _adaptive_weight, hinge_d_loss, hinge_g_loss
from course_lib.tokenizers.perceptual import perceptual_distance

LESSON = "06_perceptual_adversarial"


def hinge_losses(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference: (discriminator's hinge loss, generator's hinge loss)."""
    return hinge_d_loss(logits_real, logits_fake), hinge_g_loss(logits_fake)


def adaptive_weight(rec_loss: torch.Tensor, gan_loss: torch.Tensor, last_layer: torch.Tensor,
                    delta: float = 1e-4) -> torch.Tensor:
    """The exercise's signature of :func:`course_lib.tokenizers.discriminator.adaptive_weight`: no clamp.

    The library clamps the weight at ``max_weight`` (1e4), which the exercise does not teach; the
    case with a tiny GAN gradient can pass it, depending on the seed.
    """
    return _adaptive_weight(rec_loss, gan_loss, last_layer, delta, max_weight=float("inf"))


def _hinge_cases(g: torch.Generator) -> list[Case]:
    cases = []
    for shape, scale in [((4, 1, 3, 3), 0.5), ((2, 1, 6, 6), 2.0), ((8, 1, 1, 1), 1.5)]:
        # logits on both sides of the hinges at +-1, with real and fake batches of different sizes
        real = torch.randn(*shape, generator=g) * scale + 0.5
        fake = torch.randn(shape[0] + 1, *shape[1:], generator=g) * scale - 0.3
        cases.append(Case((real, fake)))
    return cases


def _adaptive_cases(g: torch.Generator) -> list[Case]:
    cases = []
    for (batch, width, out), gan_scale in [((6, 5, 3), 1.0), ((4, 8, 2), 1e-3), ((10, 3, 4), 30.0)]:
        parts = {"inputs": torch.randn(batch, width, generator=g), "weight": torch.randn(out, width, generator=g),
                 "before": torch.randn(width, width, generator=g) / width ** 0.5,
                 "targets": torch.randn(batch, out, generator=g), "critic": torch.randn(out, generator=g) * gan_scale}
        cases.append(Case((), parts, label=f"rec_loss and gan_loss of a two-layer decoder, "
                                           f"last_layer=tensor {(out, width)}, GAN gradient scaled by {gan_scale:g}"))
    return cases


def _run_adaptive(fn, case: Case):
    # a small "decoder": hidden = inputs @ before; reconstruction = hidden @ last_layer^T
    p = case.kwargs
    before, last_layer = p["before"].clone().requires_grad_(True), p["weight"].clone().requires_grad_(True)
    reconstruction = (p["inputs"] @ before) @ last_layer.T  # (B, out)
    rec_loss = ((reconstruction - p["targets"]) ** 2).mean()
    gan_loss = -(torch.tanh(reconstruction) @ p["critic"]).mean()
    weight = fn(rec_loss, gan_loss, last_layer)
    return {"weight": torch.as_tensor(weight).detach().float(),
            "carries no gradient": not (isinstance(weight, torch.Tensor) and weight.requires_grad)}


def _feature_cases(g: torch.Generator) -> list[Case]:
    cases = []
    for shapes in [[(2, 3, 4, 4)], [(3, 4, 8, 8), (3, 6, 4, 4)], [(2, 8, 6, 6), (2, 16, 3, 3), (2, 5, 1, 1)]]:
        # unequal norms per position, so that forgetting the normalization shows
        fx = [torch.randn(*s, generator=g) * torch.rand(s[0], 1, *s[2:], generator=g) * 4 for s in shapes]
        fy = [f + torch.randn(f.shape, generator=g) for f in fx]
        cases.append(Case((fx, fy)))
    return cases


register(Exercise(
    name="hinge_losses", lesson=LESSON, reference=hinge_losses, make_cases=_hinge_cases,
    outputs=("discriminator loss", "generator loss"),
    hint="the discriminator pays only for real logits below +1 and fake logits above -1 (a hinge on each, "
         "averaged over its own batch, the two halved together); the generator simply wants the fake logits high",
))
register(Exercise(
    name="adaptive_weight", lesson=LESSON, reference=adaptive_weight, make_cases=_adaptive_cases, run=_run_adaptive,
    hint="weigh the two losses by how hard each pulls on the decoder's last layer: the size (norm) of each "
         "loss's gradient with respect to that layer's weight, reconstruction over GAN, kept finite by delta "
         "when the GAN gradient vanishes. Both gradients come from one graph, so the first must not free it; "
         "the result is a number to multiply by, through which no gradient flows",
))
register(Exercise(
    name="perceptual_distance", lesson=LESSON, reference=perceptual_distance, make_cases=_feature_cases,
    outputs="distance per image",
    hint="only the direction of each position's feature vector counts, so give it unit length across the "
         "channels first; the distance is then summed over channels and layers and averaged over the positions "
         "of a layer: one number per image",
))
