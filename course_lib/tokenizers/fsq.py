"""Finite scalar quantization (FSQ): round each latent channel to a few levels; the codebook is implicit.

Paper: Finite Scalar Quantization: VQ-VAE Made Simple (Mentzer, Minnen, Agustsson, Tschannen, 2023),
https://arxiv.org/abs/2309.15505 -- bound each of the d channels, round it to one of L_i integer
levels with a straight-through estimator; the codebook is the grid of all combinations, of size
prod(L_i), so there is nothing to learn, nothing to collapse and no auxiliary loss.

The bound is vector-quantize-pytorch's variant of the paper's reference code (appendix A.1): the
same half-level offset that makes an even number of levels come out right, but tanh's range is
widened by (1 + eps) with an exact atanh shift, where the paper narrows it by (1 - eps) with a tan
shift (tan and atanh agree to third order, so both keep z = 0 near 0). Both move the ends of the
range (L - 1) * eps / 2 of a level; from L = 1/eps + 1 on (1001 at eps = 1e-3) that is half a level,
where the paper's narrowing loses the outer levels and this widening rounds the extremes one level
past the grid. ``check_levels`` refuses such levels (with a small allowance for float32 rounding).
Codes are normalized to [-1, 1]; an index is the codes' digits read as a mixed-radix number whose
first channel is the least significant digit.
Shapes: z (B, C, H, W) in the module, (..., d) with d = len(levels) in the functions.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn

from course_lib.tokenizers.quantizer import QuantizerOutput, usage_stats


@dataclass
class FSQConfig:
    """FSQ settings: levels per channel (codebook size = their product)."""

    levels: tuple[int, ...] = (8, 5, 5, 5)  # the paper's 1000-code setting (table 1: K = 2**10 -> [8, 5, 5, 5])
    eps: float = 1e-3  # keeps tanh's range a hair wider than the outer levels so they are reached

    def __post_init__(self):
        self.levels = tuple(self.levels)  # lists come back from json / checkpoints
        check_levels(self.levels, self.eps)


def _max_levels(eps: float) -> int:
    # the largest L with (L - 1) * eps / 2 + L * 2**-22 < 1 / 2, i.e. L < (1 + eps) / (eps + 2**-21)
    return math.ceil((1 + eps) / (eps + 2**-21)) - 1


def check_levels(levels, eps: float = 1e-3) -> None:
    """Refuse levels that do not make a grid of prod(levels) codes that ``bound`` stays inside."""
    levels = tuple(levels)
    if not levels or any(not isinstance(lv, int) or lv < 2 for lv in levels):
        raise ValueError(f"levels must be a non-empty list of ints >= 2, got {levels}")
    if math.prod(levels) >= 2**62:
        raise ValueError(f"codebook size prod(levels) = {math.prod(levels)} does not fit an int64 index")
    if not eps >= 1e-6:  # a smaller eps vanishes from float32's 1 + eps, and at L = 2 atanh(0.5 / half_l) is inf
        raise ValueError(f"eps must be at least 1e-6 (it widens tanh's range so the outer levels are reached), "
                         f"got {eps!r}")
    for lv in levels:
        # the (1 + eps) stretch past the outer level plus float32 rounding (4 ulps of L / 2) must stay
        # under half a level, or an extreme z rounds to a level past the grid: an index out of range
        if (lv - 1) * eps / 2 + lv * 2**-22 >= 0.5:
            largest_eps = (1 - lv * 2**-21) / (lv - 1)
            instead = (f"or an eps below {largest_eps:.4g} for L = {lv}" if largest_eps > 1e-6
                       else f"L = {lv} is past what float32 can bound at any eps")
            raise ValueError(
                f"level {lv} is too many for eps = {eps}: bound() stretches tanh's range "
                f"(L - 1) * eps / 2 = {(lv - 1) * eps / 2:.4g} of a level past the outer levels, and from "
                f"half a level on an extreme z rounds past the grid (an index outside [0, prod(levels))); "
                f"use levels of at most {_max_levels(eps)} at this eps, {instead}")


def _as_tensor(levels, like: torch.Tensor) -> torch.Tensor:
    levels = torch.as_tensor(levels, device=like.device)
    if levels.ndim != 1:
        raise ValueError(f"expected levels as a 1-D list, got shape {tuple(levels.shape)}")
    return levels


def _check_last_dim(x: torch.Tensor, levels: torch.Tensor, name: str) -> None:
    if x.shape[-1] != len(levels):
        raise ValueError(f"expected {name} of shape (..., {len(levels)}) for levels {levels.int().tolist()}, "
                         f"got {tuple(x.shape)}")


def bound(z: torch.Tensor, levels, eps: float = 1e-3) -> torch.Tensor:
    """Squash z (..., d) so that rounding channel i gives exactly levels[i] integer values.

    Odd L: values in (-(L-1)/2, (L-1)/2), rounded to {-(L-1)/2, ..., (L-1)/2}.
    Even L: a symmetric range would round to only L-1 values, so the range is shifted down by half a
    level, giving {-L/2, ..., L/2 - 1}; the shift atanh(offset / half_l) keeps z = 0 mapped to 0.
    eps widens the range a hair past the outer levels; ``check_levels`` refuses levels it would
    push past the grid.
    """
    levels = _as_tensor(levels, z)
    _check_last_dim(z, levels, "z")
    check_levels(levels.tolist(), eps)
    levels = levels.to(z.dtype)
    half_l = (levels - 1) * (1 + eps) / 2
    offset = torch.where(levels % 2 == 0, 0.5, 0.0)
    shift = torch.atanh(offset / half_l)
    return torch.tanh(z + shift) * half_l - offset


def round_ste(z: torch.Tensor) -> torch.Tensor:
    """Round to the nearest integer; the gradient passes straight through."""
    return z + (z.round() - z).detach()


def _half_width(levels: torch.Tensor) -> torch.Tensor:
    return levels // 2  # integer codes / half_width lie in [-1, 1]


def quantize(z: torch.Tensor, levels, eps: float = 1e-3) -> torch.Tensor:
    """z (..., d) -> codes (..., d) on the FSQ grid, normalized to [-1, 1], straight-through gradients."""
    levels = _as_tensor(levels, z)
    return round_ste(bound(z, levels, eps)) / _half_width(levels).to(z.dtype)


def _basis(levels: torch.Tensor) -> torch.Tensor:
    # mixed radix: digit i is worth prod(levels[:i]), i.e. cumprod([1] + levels[:-1])
    return torch.cumprod(torch.cat([levels.new_ones(1), levels[:-1]]), dim=0)


def codes_to_indices(codes: torch.Tensor, levels) -> torch.Tensor:
    """Normalized codes (..., d) -> indices (...) in [0, prod(levels))."""
    levels = _as_tensor(levels, codes).long()
    _check_last_dim(codes, levels, "codes")
    half_width = _half_width(levels)
    digits = (codes * half_width + half_width).round().long()  # (..., d), digit i in [0, L_i)
    return (digits * _basis(levels)).sum(-1)


def indices_to_codes(indices: torch.Tensor, levels) -> torch.Tensor:
    """Indices (...) -> normalized codes (..., d); the inverse of ``codes_to_indices``."""
    levels = _as_tensor(levels, indices).long()
    if indices.dtype != torch.long:
        raise ValueError(f"expected long indices, got {indices.dtype}")
    size = int(levels.prod())
    if indices.numel() and (indices.min() < 0 or indices.max() >= size):
        raise ValueError(f"indices must lie in [0, {size}) for levels {levels.tolist()}, "
                         f"got [{indices.min().item()}, {indices.max().item()}]")
    digits = (indices.unsqueeze(-1) // _basis(levels)) % levels  # (..., d)
    half_width = _half_width(levels)
    return (digits - half_width).float() / half_width


class FSQ(nn.Module):
    """z (B, dim, H, W) -> FSQ codes. When dim != len(levels), 1x1 linear maps go in and out."""

    def __init__(self, dim: int, config: FSQConfig | None = None):
        super().__init__()
        self.config = config or FSQConfig()
        self.dim, d = dim, len(self.config.levels)
        self.project_in = nn.Linear(dim, d) if dim != d else nn.Identity()
        self.project_out = nn.Linear(d, dim) if dim != d else nn.Identity()
        self.register_buffer("levels", torch.tensor(self.config.levels), persistent=False)
        self.codebook_size = math.prod(self.config.levels)

    @property
    def bits_per_token(self) -> float:
        return math.log2(self.codebook_size)

    @property
    def codebook(self) -> torch.Tensor:
        """The implicit codebook (K, d): every code on the grid, row k has index k."""
        return indices_to_codes(torch.arange(self.codebook_size, device=self.levels.device), self.levels)

    def _codes(self, z: torch.Tensor) -> torch.Tensor:
        if z.ndim != 4 or z.shape[1] != self.dim:
            raise ValueError(f"expected z of shape (B, {self.dim}, H, W), got {tuple(z.shape)}")
        z = self.project_in(rearrange(z, "b c h w -> b h w c"))  # (B, H, W, d)
        return quantize(z, self.levels, self.config.eps)

    def encode(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, dim, H, W) -> indices (B, H, W)."""
        return codes_to_indices(self._codes(z), self.levels)

    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        """indices (B, H, W) -> z_q (B, dim, H, W)."""
        if indices.ndim != 3:
            raise ValueError(f"expected indices of shape (B, H, W), got {tuple(indices.shape)}")
        codes = indices_to_codes(indices, self.levels)  # (B, H, W, d)
        return rearrange(self.project_out(codes), "b h w c -> b c h w")

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        codes = self._codes(z)  # (B, H, W, d)
        indices = codes_to_indices(codes, self.levels)  # (B, H, W)
        z_q = rearrange(self.project_out(codes), "b h w c -> b c h w")
        return QuantizerOutput(z_q, indices, {}, usage_stats(indices, self.codebook_size))
