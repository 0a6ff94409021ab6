"""Patch tokenization: cut images into p x p patches and back, and what sequence length costs.

An Image is Worth 16x16 Words: Transformers for Image Recognition at Scale
(Dosovitskiy et al., https://arxiv.org/abs/2010.11929).
"""
from __future__ import annotations

import torch
from einops import rearrange


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, N, D) with N = (H/p)(W/p) patches in raster order and D = p*p*C."""
    _check_patch_size(images, patch_size)
    p = patch_size
    return rearrange(images, "b c (h p1) (w p2) -> b (h w) (p1 p2 c)", p1=p, p2=p)  # (B, N, D)


def unpatchify(patches: torch.Tensor, patch_size: int, height: int, width: int) -> torch.Tensor:
    """(B, N, D) -> (B, C, H, W): the inverse of :func:`patchify`."""
    if patches.ndim != 3:
        raise ValueError(f"expected patches of shape (B, N, D), got {tuple(patches.shape)}")
    p = patch_size
    if height % p or width % p or patches.shape[1] != (height // p) * (width // p):
        raise ValueError(f"{patches.shape[1]} patches of size {p} cannot tile a {height}x{width} image")
    if patches.shape[2] % (p * p):
        raise ValueError(f"patch dimension {patches.shape[2]} is not a multiple of p*p = {p * p}")
    return rearrange(patches, "b (h w) (p1 p2 c) -> b c (h p1) (w p2)", h=height // p, p1=p, p2=p)  # (B, C, H, W)


def sequence_length(height: int, width: int, patch_size: int = 1) -> int:
    """Tokens for an image of ``height`` x ``width`` cut into ``patch_size`` patches (1 = one token per pixel)."""
    if height % patch_size or width % patch_size:
        raise ValueError(f"patch size {patch_size} does not divide {height}x{width}")
    return (height // patch_size) * (width // patch_size)


def attention_cost(tokens: int, dim: int = 768) -> dict[str, float]:
    """Self-attention cost of one layer: entries of the N x N score matrix and multiply-adds (2 N^2 D)."""
    return {"score_entries": float(tokens) ** 2, "flops": 2.0 * float(tokens) ** 2 * dim}


def _check_patch_size(images: torch.Tensor, patch_size: int) -> None:
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise ValueError(f"expected images of shape (B, C, H, W), got {tuple(getattr(images, 'shape', ()))}")
    if not isinstance(patch_size, int) or patch_size < 1:
        raise ValueError(f"patch_size must be a positive int, got {patch_size!r}")
    if images.shape[2] % patch_size or images.shape[3] % patch_size:
        raise ValueError(f"patch size {patch_size} does not divide the image size {tuple(images.shape[2:])}")
