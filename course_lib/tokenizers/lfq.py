"""Lookup-free quantization (LFQ): each latent channel becomes one bit, sign(z) in {-1, +1}.

Paper: Language Model Beats Diffusion -- Tokenizer is Key to Visual Generation (Yu et al., 2023,
MAGVIT-v2), https://arxiv.org/abs/2310.05737 -- section 3.1: the codebook is the implicit set
{-1, +1}^d, so the "lookup" is a sign; the index is the bits read as a binary number; an entropy
penalty (eq. 5) makes each token confident and the whole batch spread over the codebook:

    L_entropy = E[H(q(z))] - gamma * H(E[q(z)]),   q(z)_k = softmax_k(-||z - c_k||^2 / temperature)

Here the expectation over the 2**d implicit codes is computed exactly, so d is kept small (<= 12).
Bits follow the FSQ convention of ``fsq.py``: channel i is worth 2**i (the first channel is the least
significant bit). Shapes: z (B, C, H, W) in the module, (..., d) in the functions, K = 2**d.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from course_lib.tokenizers.quantizer import QuantizerOutput, usage_stats

MAX_BITS = 12  # the exact entropy needs a (N, 2**d) matrix


@dataclass
class LFQConfig:
    """LFQ settings. The entropy terms follow vector-quantize-pytorch's ``LFQ`` defaults
    (entropy_loss_weight 0.1, diversity_gamma 1, inv_temperature 100); the commitment weight does not:
    0.25 is VQ-VAE's beta (``vq.py``), where vector-quantize-pytorch's default is 0 (0.25 before
    late 2024)."""

    bits: int = 10  # d channels -> K = 2**d codes
    beta: float = 0.25  # commitment weight (VQ-VAE's beta; vector-quantize-pytorch's LFQ default: 0)
    entropy_weight: float = 0.1
    diversity_weight: float = 1.0  # gamma in eq. 5: weight of the batch (codebook) entropy
    temperature: float = 0.01  # 1 / inv_temperature

    def __post_init__(self):
        if not 1 <= self.bits <= MAX_BITS:
            raise ValueError(f"bits must be in [1, {MAX_BITS}] (the entropy is exact over 2**bits codes), "
                             f"got {self.bits!r}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature!r}")


def binarize(z: torch.Tensor) -> torch.Tensor:
    """sign(z) in {-1, +1} (zero goes to -1), with a straight-through gradient."""
    codes = torch.where(z > 0, 1.0, -1.0).to(z.dtype)
    return z + (codes - z).detach()


def _powers(bits: int, device) -> torch.Tensor:
    return 2 ** torch.arange(bits, device=device)  # (d,): 1, 2, 4, ...


def bits_to_indices(codes: torch.Tensor) -> torch.Tensor:
    """Codes (..., d) in {-1, +1} -> indices (...) in [0, 2**d)."""
    return ((codes > 0).long() * _powers(codes.shape[-1], codes.device)).sum(-1)


def indices_to_bits(indices: torch.Tensor, bits: int) -> torch.Tensor:
    """Indices (...) -> codes (..., d) in {-1, +1}; the inverse of ``bits_to_indices``."""
    if indices.dtype != torch.long:
        raise ValueError(f"expected long indices, got {indices.dtype}")
    if indices.numel() and (indices.min() < 0 or indices.max() >= 2**bits):
        raise ValueError(f"indices must lie in [0, {2**bits}) for {bits} bits, "
                         f"got [{indices.min().item()}, {indices.max().item()}]")
    set_bits = (indices.unsqueeze(-1) // _powers(bits, indices.device)) % 2  # (..., d) in {0, 1}
    return set_bits.float() * 2 - 1


def entropy_terms(z: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean per-token entropy, entropy of the mean distribution) of q(z) over all 2**d codes, in nats."""
    bits = z.shape[-1]
    codebook = indices_to_bits(torch.arange(2**bits, device=z.device), bits).to(z.dtype)  # (K, d)
    z = rearrange(z, "... d -> (...) d")  # (N, d)
    # -||z - c||^2 = 2 z.c - ||z||^2 - d, and the last two do not depend on the code: softmax drops them
    logits = 2 * z @ codebook.T / temperature  # (N, K)
    log_probs = F.log_softmax(logits, dim=-1)
    per_token = -(log_probs.exp() * log_probs).sum(-1).mean()
    mean_probs = log_probs.exp().mean(0)  # (K,)
    batch = -(mean_probs * torch.log(mean_probs.clamp(min=1e-12))).sum()
    return per_token, batch


class LFQ(nn.Module):
    """z (B, dim, H, W) -> binary codes. When dim != bits, linear maps go in and out."""

    def __init__(self, dim: int, config: LFQConfig | None = None):
        super().__init__()
        self.config = config or LFQConfig()
        self.dim, d = dim, self.config.bits
        self.project_in = nn.Linear(dim, d) if dim != d else nn.Identity()
        self.project_out = nn.Linear(d, dim) if dim != d else nn.Identity()
        self.codebook_size = 2**d

    @property
    def bits_per_token(self) -> float:
        return float(self.config.bits)

    def _project(self, z: torch.Tensor) -> torch.Tensor:
        if z.ndim != 4 or z.shape[1] != self.dim:
            raise ValueError(f"expected z of shape (B, {self.dim}, H, W), got {tuple(z.shape)}")
        return self.project_in(rearrange(z, "b c h w -> b h w c"))  # (B, H, W, d)

    def encode(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, dim, H, W) -> indices (B, H, W)."""
        return bits_to_indices(self._project(z))

    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        """indices (B, H, W) -> z_q (B, dim, H, W)."""
        if indices.ndim != 3:
            raise ValueError(f"expected indices of shape (B, H, W), got {tuple(indices.shape)}")
        codes = indices_to_bits(indices, self.config.bits)  # (B, H, W, d)
        return rearrange(self.project_out(codes), "b h w c -> b c h w")

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        cfg = self.config
        z_e = self._project(z)  # (B, H, W, d)
        codes = binarize(z_e)
        indices = bits_to_indices(codes)  # (B, H, W)
        per_token, batch = entropy_terms(z_e, cfg.temperature)
        losses = {"commitment": cfg.beta * F.mse_loss(z_e, codes.detach()),
                  "entropy": cfg.entropy_weight * (per_token - cfg.diversity_weight * batch)}
        stats = {**usage_stats(indices, self.codebook_size),
                 "token_entropy": per_token.item(), "batch_entropy": batch.item()}
        z_q = rearrange(self.project_out(codes), "b h w c -> b c h w")
        return QuantizerOutput(z_q, indices, losses, stats)
