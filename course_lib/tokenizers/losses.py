"""The training losses of a tokenizer, as objects outside its ``forward``.

L2 (mean squared error) is the maximum-likelihood loss under Gaussian pixel noise and the loss PSNR
measures; L1 blurs a little less. Both average over every element, so the loss does not change scale
with the image size or the batch size.

:class:`TokenizerLoss` is what the training loop minimizes: the reconstruction term plus the
bottleneck's own weighted terms (VQ commitment / codebook, LFQ entropy, KL). Lesson 06 extends it with
perceptual and adversarial terms by composing modules, in the way taming-transformers'
``VQLPIPSWithDiscriminator`` wraps a VQ model without touching its ``forward``
(Esser et al. 2021, https://arxiv.org/abs/2012.09841).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

KINDS = ("l2", "l1")


def reconstruction_loss(reconstruction: torch.Tensor, images: torch.Tensor, kind: str = "l2") -> torch.Tensor:
    """Scalar mean of the squared (``l2``) or absolute (``l1``) error over every element."""
    if reconstruction.shape != images.shape:
        raise ValueError(f"expected reconstruction and images of the same shape, "
                         f"got {tuple(reconstruction.shape)} and {tuple(images.shape)}")
    if kind == "l2":
        return F.mse_loss(reconstruction, images)
    if kind == "l1":
        return F.l1_loss(reconstruction, images)
    raise ValueError(f"unknown loss kind {kind!r}; choose one of {KINDS}")


class TokenizerLoss(nn.Module):
    """``loss_fn(tokenizer, images) -> (total, logs)`` for :func:`course_lib.engine.training.train`.

    total = reconstruction_loss(kind) + the bottleneck's weighted terms. ``logs`` holds each term
    ("recon", "commitment", "kl", ...) and the tokenizer's batch statistics (usage, perplexity).
    """

    def __init__(self, kind: str = "l2"):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"unknown loss kind {kind!r}; choose one of {KINDS}")
        self.kind = kind

    def terms(self, tokenizer: nn.Module, images: torch.Tensor) -> tuple[dict[str, torch.Tensor], object]:
        """Every weighted term of this loss, and the tokenizer's output (for subclasses that add terms)."""
        out = tokenizer(images)
        return {"recon": reconstruction_loss(out.reconstruction, images, self.kind), **out.losses}, out

    def forward(self, tokenizer: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, dict]:
        terms, out = self.terms(tokenizer, images)
        return sum(terms.values()), {**terms, **out.stats}
