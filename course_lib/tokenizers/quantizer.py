"""What every discrete bottleneck returns, and how much of its codebook a batch of indices uses.

Codebook usage and perplexity say how much of a codebook a tokenizer really uses (a collapsed VQ uses
a few codes); perplexity exp(H) is the number of equally likely codes with the same entropy H, as in
the VQ-VAE-2 / Jukebox codebook diagnostics (Razavi et al. 2019, https://arxiv.org/abs/1906.00446).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class QuantizerOutput:
    """A VQ / FSQ / LFQ forward pass: straight-through z_q, the indices, weighted losses, batch statistics."""

    z_q: torch.Tensor  # (B, C, H, W); gradients reach z through the straight-through estimator
    indices: torch.Tensor  # (B, H, W) long
    losses: dict[str, torch.Tensor]  # weighted auxiliary terms (VQ: commitment, codebook; LFQ: entropy)
    stats: dict[str, float]  # "usage", "perplexity" of this batch (and LFQ's entropies)


def code_histogram(indices: torch.Tensor, codebook_size: int) -> torch.Tensor:
    """How often each code occurs: indices of any shape with values in [0, K) -> counts (K,)."""
    if codebook_size < 1:
        raise ValueError(f"codebook_size must be >= 1, got {codebook_size}")
    if indices.is_floating_point() or indices.is_complex():
        raise ValueError(f"expected integer code indices, got dtype {indices.dtype}")
    flat = indices.reshape(-1).long()
    if flat.numel() == 0:
        raise ValueError("expected at least one code index, got an empty tensor")
    if flat.min() < 0 or flat.max() >= codebook_size:
        raise ValueError(f"indices must lie in [0, {codebook_size}), got values in "
                         f"[{flat.min().item()}, {flat.max().item()}]")
    return torch.bincount(flat, minlength=codebook_size)  # (K,)


def codebook_usage(indices: torch.Tensor, codebook_size: int) -> float:
    """Fraction of the K codes used at least once by ``indices`` (a whole evaluation set's codes)."""
    return (code_histogram(indices, codebook_size) > 0).float().mean().item()


def perplexity(indices: torch.Tensor, codebook_size: int) -> float:
    """exp(entropy) of the code histogram: 1 when one code is used, K when all are used equally."""
    probs = code_histogram(indices, codebook_size).double()
    probs = probs / probs.sum()
    entropy = -(probs * probs.clamp(min=1e-30).log()).sum()  # nats; 0 log 0 = 0
    return entropy.exp().item()


def usage_stats(indices: torch.Tensor, codebook_size: int) -> dict[str, float]:
    """Usage and perplexity of one batch's indices, as a quantizer's forward reports them."""
    return {"usage": codebook_usage(indices, codebook_size), "perplexity": perplexity(indices, codebook_size)}
