"""Reconstruction losses of a bottleneck autoencoder.

L2 (mean squared error) is the maximum-likelihood loss under Gaussian pixel noise and the loss PSNR
measures; L1 blurs a little less. Both average over every element, so the loss does not change scale
with the image size or the batch size. Perceptual and adversarial terms come in lesson 06.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

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
