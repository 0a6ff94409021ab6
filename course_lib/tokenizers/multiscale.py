"""Multi-scale residual vector quantization: one codebook quantizes the residual, coarse scale to fine.

Paper: Visual Autoregressive Modeling: Scalable Image Generation via Next-Scale Prediction (VAR,
Tian et al., 2024), https://arxiv.org/abs/2404.02905, algorithm 1, as in the reference's
``VectorQuantizer2`` (https://github.com/FoundationVision/VAR/blob/main/models/quant.py). For each
scale k of ``scales`` (the last one is the latent grid's side):

1. area-downsample the residual r to k x k and look up the nearest code of the one shared codebook;
2. upsample those codes back to the latent grid (bicubic) and refine them with phi,
   ``phi(h) = (1 - ratio) h + ratio conv3x3(h)`` (VAR's ``Phi``; the ratio is 0.5);
3. add the result to the running reconstruction f and subtract it from the residual r.

The codebook and the phi convolutions learn from the loss, averaged over the scales: at each scale the
running reconstruction f is pulled towards the latent z (codebook term) and z towards it (commitment
term, weight beta), as VAR's ``mean_vq_loss`` does; z_q = f with straight-through gradients to z.

Coarse-scale collapse, which people reproducing VAR's tokenizer report (VAR never released its tokenizer
training code): scale 1 looks up one vector per image, the finest scale 64, so codes drift to where the
fine residuals are. Codes unused for ``restart_after`` steps restart at residual vectors of the batch
(Jukebox, https://arxiv.org/abs/2005.00341), each scale getting an equal share of them
(``restart_from="scales"``); drawn from all looked-up vectors alike, scale 1 gets 1/130 of them.
Measured on ``shapes`` (msvq-f4, 300 steps of batch 64, 512 test images), the perplexity of the scale-1
codes: 2.9 without restarts, 1.6 with restarts drawn alike, 13.3 with each scale's share (the finer
scales' perplexities and the PSNR, 26.5 dB, about the same in all three).

Why a quantizer kind of the course's :class:`~course_lib.tokenizers.tokenizer.Tokenizer` (``"msvq"``)
and not a model class of its own: the tokenizer carries one tensor of tokens per image, and a token
pyramid is one tensor when its scales are joined in order, (B, L) with L = sum of k^2 (130 for scales
1, 2, 3, 4, 6, 8), which is also the sequence the next-scale transformer reads (VAR's ``idx_Bl``
concatenated). So the shared encoder, decoder, loss and training loop (``train tokenizer --preset
msvq-f4``), the checkpoints and ``evaluate_tokenizer`` work unchanged; :func:`split_scales` and
:func:`join_scales` convert between (B, L) and the list of grids (B, k, k), and
:meth:`MultiScaleQuantizer.encode_scales` / :meth:`~MultiScaleQuantizer.decode_scales` work on the list.

Shapes: z (B, C, H, W) with H = W = scales[-1]; L tokens of all scales; K codebook size.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from course_lib.engine.distributed import all_gather_cat, all_reduce_sum_, broadcast_
from course_lib.tokenizers.quantizer import QuantizerOutput, usage_stats
from course_lib.tokenizers.vq import nearest_code

RESTARTS = ("scales", "vectors")
COMMITMENTS = ("scales", "last")


@dataclass
class MultiScaleConfig:
    """The scales (coarse to fine, the last one the latent grid's side), the shared codebook, phi, the losses."""

    codebook_size: int = 1024
    scales: tuple[int, ...] = (1, 2, 3, 4, 6, 8)
    phis: int = 4  # phi convolutions shared across the scales (VAR's default "partially shared" 4)
    phi_ratio: float = 0.5  # phi(h) = (1 - ratio) h + ratio conv3x3(h); 0: no refinement
    beta: float = 0.25  # commitment weight
    restart_after: int = 50  # restart codes unused for this many training steps (0: never)
    restart_from: str = "scales"  # "scales": every scale an equal share of the restarts; "vectors": any looked-up vector
    commitment: str = "scales"  # z is pulled towards every scale's running reconstruction (VAR's), or the "last" only
    normalize: bool = False  # quantize z / (its RMS over channels) at each position: z keeps a fixed scale

    def __post_init__(self):
        self.scales = tuple(self.scales)
        if self.commitment not in COMMITMENTS:
            raise ValueError(f"unknown commitment {self.commitment!r}; choose one of {list(COMMITMENTS)}")
        if self.restart_from not in RESTARTS:
            raise ValueError(f"unknown restart_from {self.restart_from!r}; choose one of {list(RESTARTS)}")
        if not self.scales or not all(isinstance(k, int) and k > 0 for k in self.scales) \
                or list(self.scales) != sorted(set(self.scales)):
            raise ValueError(f"scales must be increasing positive ints, coarse to fine, got {self.scales!r}")
        if self.codebook_size < 2 or self.phis < 1:
            raise ValueError(f"expected codebook_size >= 2 and phis >= 1, got {self.codebook_size}, {self.phis}")
        if not 0.0 <= self.phi_ratio <= 1.0 or self.restart_after < 0:
            raise ValueError(f"expected 0 <= phi_ratio <= 1 and restart_after >= 0, got {self.phi_ratio}, "
                             f"{self.restart_after}")

    @property
    def num_tokens(self) -> int:
        """L: the tokens of all scales together."""
        return sum(k * k for k in self.scales)


# ----- the token pyramid as one sequence and as a list of grids -----

def split_scales(tokens: torch.Tensor, scales: tuple[int, ...]) -> list[torch.Tensor]:
    """Tokens (B, L) in scale order -> one grid (B, k, k) per scale."""
    lengths = [k * k for k in scales]
    if tokens.ndim != 2 or tokens.shape[1] != sum(lengths):
        raise ValueError(f"expected tokens of shape (B, {sum(lengths)}) for scales {tuple(scales)}, "
                         f"got {tuple(tokens.shape)}")
    return [rearrange(part, "b (h w) -> b h w", h=k) for part, k in zip(tokens.split(lengths, dim=1), scales)]


def join_scales(grids: list[torch.Tensor]) -> torch.Tensor:
    """One grid (B, k, k) per scale -> tokens (B, L) in scale order (each grid in raster order)."""
    return torch.cat([rearrange(g, "b h w -> b (h w)") for g in grids], dim=1)


def scale_statistics(tokens: torch.Tensor, scales: tuple[int, ...], codebook_size: int) -> dict[str, float]:
    """Usage and perplexity of each scale's codes in tokens (N, L): ``usage_1``, ``perplexity_1``, ... (by the
    scale's side). A collapsed coarse scale shows as a perplexity far below its number of distinct images."""
    stats = {}
    for k, grid in zip(scales, split_scales(tokens, scales)):
        for name, value in usage_stats(grid, codebook_size).items():
            stats[f"{name}_{k}"] = value
    return stats


def phi_index(scale_index: int, num_scales: int, phis: int) -> int:
    """Which of the ``phis`` shared convolutions refines scale ``scale_index``: the nearest tick to its
    place in [0, 1] (VAR's ``PhiPartiallyShared``)."""
    place = scale_index / (num_scales - 1) if num_scales > 1 else 0.0
    margin = 1 / 3 / phis if phis == 4 else 1 / 2 / phis
    ticks = torch.linspace(margin, 1 - margin, phis) if phis > 1 else torch.tensor([0.5])
    return int((ticks - place).abs().argmin())


def resize(x: torch.Tensor, side: int, mode: str) -> torch.Tensor:
    """x (B, C, h, w) -> (B, C, side, side); unchanged when already that size."""
    return x if x.shape[-1] == side and x.shape[-2] == side else F.interpolate(x, size=(side, side), mode=mode)


def residual_step(residual: torch.Tensor, f: torch.Tensor, codebook: torch.Tensor, side: int,
                  phi: nn.Module) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One scale of VAR's algorithm 1: the residual (B, C, H, W), the running reconstruction f (B, C, H, W), the
    codebook (K, C) -> (the codes at side x side (B, k, k), f plus what they add, the residual minus it)."""
    small = resize(residual, side, "area")  # 1. (B, C, k, k): the residual at this scale
    grid = nearest_code(rearrange(small, "b c h w -> b h w c"), codebook.detach())  # (B, k, k)
    codes = rearrange(F.embedding(grid, codebook), "b h w c -> b c h w")  # (B, C, k, k)
    h = phi(resize(codes, residual.shape[-1], "bicubic"))  # 2. back to (B, C, H, W), refined by phi
    return grid, f + h, residual - h.detach()  # 3. running reconstruction and what is left


class Phi(nn.Conv2d):
    """h (B, C, H, W) -> (1 - ratio) h + ratio conv3x3(h): a small correction of the upsampled codes."""

    def __init__(self, dim: int, ratio: float):
        super().__init__(dim, dim, kernel_size=3, padding=1)
        self.ratio = ratio

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h * (1 - self.ratio) + super().forward(h) * self.ratio


class MultiScaleQuantizer(nn.Module):
    """z (B, dim, H, W) -> the running reconstruction after every scale; tokens (B, L) of all scales."""

    def __init__(self, dim: int, config: MultiScaleConfig | None = None):
        super().__init__()
        config = config or MultiScaleConfig()
        self.config, self.dim, self.codebook_size, self.scales = config, dim, config.codebook_size, config.scales
        k = config.codebook_size
        self.codebook = nn.Parameter(torch.empty(k, dim).uniform_(-1.0 / k, 1.0 / k))  # taming's init
        self.phis = nn.ModuleList(Phi(dim, config.phi_ratio) for _ in range(config.phis))
        self.register_buffer("unused_steps", torch.zeros(k, dtype=torch.long))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, scales={self.scales}, codebook_size={self.codebook_size}"

    @property
    def bits_per_token(self) -> float:
        return math.log2(self.codebook_size)

    @property
    def tokens_shape(self) -> tuple[int]:
        """One image's tokens: (L,), every scale's grid in raster order, coarse to fine."""
        return (self.config.num_tokens,)

    def phi(self, scale_index: int) -> nn.Module:
        if self.config.phi_ratio == 0:
            return nn.Identity()
        return self.phis[phi_index(scale_index, len(self.scales), self.config.phis)]

    # ----- one scale -----

    def contribution(self, grid: torch.Tensor, scale_index: int) -> torch.Tensor:
        """The codes of one scale, grid (B, k, k) -> what they add to the reconstruction (B, dim, H, W)."""
        h = rearrange(F.embedding(grid, self.codebook), "b h w c -> b c h w")  # (B, dim, k, k)
        return self.phi(scale_index)(resize(h, self.scales[-1], "bicubic"))  # (B, dim, H, W)

    # ----- the whole pyramid -----

    def _check_latents(self, z: torch.Tensor) -> None:
        side = self.scales[-1]
        if z.ndim != 4 or tuple(z.shape[1:]) != (self.dim, side, side) or not z.is_floating_point():
            raise ValueError(f"expected float latents of shape (B, {self.dim}, {side}, {side}) (the last scale is "
                             f"the latent grid), got {z.dtype} {tuple(z.shape)}")

    def _pyramid(self, z: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        """Algorithm 1 of VAR: (grids (B, k, k), running reconstructions f (B, dim, H, W), and the residual
        each scale quantized (B, dim, H, W)), one per scale."""
        self._check_latents(z)
        residual, f = z.detach(), torch.zeros_like(z)
        grids, reconstructions, residuals = [], [], []
        for i in range(len(self.scales)):
            residuals.append(residual)
            grid, f, residual = residual_step(residual, f, self.codebook, self.scales[i], self.phi(i))
            grids.append(grid), reconstructions.append(f)
        return grids, reconstructions, residuals

    def normalized(self, z: torch.Tensor) -> torch.Tensor:
        """What the pyramid quantizes: z, or z over its RMS across channels at each position (``normalize``)."""
        return z * torch.rsqrt(z.pow(2).mean(1, keepdim=True) + 1e-6) if self.config.normalize else z

    @torch.no_grad()
    def encode_scales(self, z: torch.Tensor) -> list[torch.Tensor]:
        """z (B, dim, H, W) -> one index grid (B, k, k) per scale."""
        return self._pyramid(self.normalized(z))[0]

    @torch.no_grad()
    def residual_norms(self, z: torch.Tensor) -> list[float]:
        """The root-mean-square of the residual before each scale and after the last: len(scales) + 1 values."""
        z = self.normalized(z)
        _, reconstructions, residuals = self._pyramid(z)
        return [r.pow(2).mean().sqrt().item() for r in residuals] + [(z - reconstructions[-1]).pow(2).mean().sqrt().item()]

    def _check_grids(self, grids: list[torch.Tensor]) -> None:
        shapes = [tuple(g.shape[1:]) for g in grids]
        if len(grids) != len(self.scales) or shapes != [(k, k) for k in self.scales] \
                or any(g.dtype != torch.long or g.shape[0] != grids[0].shape[0] for g in grids):
            raise ValueError(f"expected one long grid (B, k, k) per scale {self.scales}, got "
                             f"{[(str(g.dtype), tuple(g.shape)) for g in grids]}")
        for g in grids:
            if g.numel() and (g.min() < 0 or g.max() >= self.codebook_size):
                raise ValueError(f"indices must lie in [0, {self.codebook_size}), got [{g.min().item()}, {g.max().item()}]")

    def reconstructions(self, grids: list[torch.Tensor]) -> list[torch.Tensor]:
        """One grid (B, k, k) per scale -> the running reconstruction (B, dim, H, W) after each scale."""
        self._check_grids(grids)
        f, out = 0, []
        for i, grid in enumerate(grids):
            f = f + self.contribution(grid, i)
            out.append(f)
        return out

    def decode_scales(self, grids: list[torch.Tensor]) -> torch.Tensor:
        """One grid (B, k, k) per scale -> z_q (B, dim, H, W), the sum of every scale's contribution."""
        return self.reconstructions(grids)[-1]

    def encode(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, dim, H, W) -> tokens (B, L), the scales joined coarse to fine."""
        return join_scales(self.encode_scales(z))

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens (B, L) -> z_q (B, dim, H, W)."""
        if tokens.dtype != torch.long:
            raise ValueError(f"expected long tokens of shape (B, {self.config.num_tokens}), got {tokens.dtype}")
        return self.decode_scales(split_scales(tokens, self.scales))

    # ----- training -----

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        z = self.normalized(z)
        grids, reconstructions, residuals = self._pyramid(z)
        if self.training:
            self._track_usage(grids)
            self._restart_dead_codes(residuals)
        # VAR's mean_vq_loss: every scale's running reconstruction against z, averaged over the scales
        codebook = torch.stack([F.mse_loss(f, z.detach()) for f in reconstructions]).mean()
        committed = reconstructions if self.config.commitment == "scales" else reconstructions[-1:]
        commitment = torch.stack([F.mse_loss(z, f.detach()) for f in committed]).mean() * self.config.beta
        z_q = z + (reconstructions[-1] - z).detach()  # straight-through: forward f, gradient to z unchanged
        tokens = join_scales(grids)  # (B, L)
        return QuantizerOutput(z_q, tokens, {"commitment": commitment, "codebook": codebook},
                               {**usage_stats(tokens, self.codebook_size),
                                **scale_statistics(tokens, self.scales, self.codebook_size)})

    @torch.no_grad()
    def _track_usage(self, grids: list[torch.Tensor]) -> None:
        counts = sum(torch.bincount(g.flatten(), minlength=self.codebook_size) for g in grids)  # (K,)
        used = all_reduce_sum_(counts) > 0  # (K,) on any rank
        self.unused_steps.add_(1).masked_fill_(used, 0)

    @torch.no_grad()
    def _restart_dead_codes(self, residuals: list[torch.Tensor]) -> None:
        """Codes unused for ``restart_after`` steps jump to residual vectors this batch quantized, at any scale."""
        if self.config.restart_after == 0:
            return
        dead = self.unused_steps >= self.config.restart_after  # (K,)
        num_dead = int(dead.sum())
        if num_dead == 0:
            return
        looked_up = [rearrange(resize(r, k, "area"), "b c h w -> (b h w) c") for r, k in zip(residuals, self.scales)]
        vectors = all_gather_cat(torch.cat(looked_up))  # (N, dim): what each scale looked up
        if self.config.restart_from == "scales":  # the coarse scales' few vectors get as many codes as the finest
            counts = torch.tensor([len(v) for v in looked_up], device=vectors.device)
            weights = (1.0 / counts).repeat_interleave(counts).repeat(len(vectors) // counts.sum())  # (N,)
            chosen = torch.multinomial(weights, num_dead, replacement=True)
        else:
            chosen = torch.randint(vectors.shape[0], (num_dead,), device=vectors.device)
        samples = broadcast_(vectors[chosen])
        self.codebook.data[dead] = samples
        self.unused_steps.masked_fill_(dead, 0)
