"""The convolutional encoder and decoder that every tokenizer in the course is built on.

Paper: Taming Transformers for High-Resolution Image Synthesis (Esser, Rombach, Ommer, 2021),
https://arxiv.org/abs/2012.09841 -- the VQGAN encoder / decoder: residual blocks with GroupNorm and
SiLU, stride-2 convolutions going down, nearest-neighbour upsampling + convolution coming back. The
latent-diffusion autoencoders reuse the same layout: High-Resolution Image Synthesis with Latent
Diffusion Models (Rombach et al., 2022), https://arxiv.org/abs/2112.10752.

Scaled down for 32x32 images: ``widths`` holds one channel count per resolution level, from full
resolution down to the latent grid, so ``downsample=4`` needs three widths, e.g. ``(32, 64, 64)``;
``res_blocks`` says how many residual blocks each level gets (one int for all levels, or one per
level). Full-resolution blocks cost the most compute on CPU, so the presets keep them few.
The networks see images on the [-1, 1] scale; mapping from and to [0, 1] is the tokenizer's job.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

DOWNSAMPLE_FACTORS = (2, 4, 8)


@dataclass
class AutoencoderConfig:
    """Encoder / decoder shape: level i works at 1 / 2**i of the image size with widths[i] channels
    and res_blocks[i] residual blocks."""

    in_channels: int = 3
    downsample: int = 4
    widths: tuple[int, ...] = (16, 32, 64)  # the f=4 presets' encoder / decoder
    latent_channels: int = 16
    res_blocks: int | tuple[int, ...] = (0, 1, 1)

    def __post_init__(self):
        self.widths = tuple(self.widths)  # lists come back from json / checkpoints
        if self.in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 (grey) or 3 (RGB), got {self.in_channels!r}")
        if self.downsample not in DOWNSAMPLE_FACTORS:
            raise ValueError(f"downsample must be one of {DOWNSAMPLE_FACTORS}, got {self.downsample!r}")
        if len(self.widths) != self.num_levels:
            raise ValueError(
                f"downsample={self.downsample} needs {self.num_levels} widths (one per resolution level, "
                f"log2({self.downsample}) + 1), got {len(self.widths)}: {self.widths}")
        if any(not isinstance(w, int) or w < 1 for w in self.widths):
            raise ValueError(f"widths must be positive ints, got {self.widths}")
        if self.latent_channels < 1:
            raise ValueError(f"latent_channels must be >= 1, got {self.latent_channels!r}")
        if isinstance(self.res_blocks, int):
            self.res_blocks = (self.res_blocks,) * self.num_levels
        self.res_blocks = tuple(self.res_blocks)
        if len(self.res_blocks) != self.num_levels or any(n < 0 for n in self.res_blocks):
            raise ValueError(f"res_blocks must be one int >= 0 or {self.num_levels} of them (one per level), "
                             f"got {self.res_blocks}")

    @property
    def num_levels(self) -> int:
        """Resolution levels: the full-size one plus one per stride-2 step."""
        return int(math.log2(self.downsample)) + 1


def group_norm(channels: int) -> nn.GroupNorm:
    # up to 32 groups as in VQGAN, each of at least 16 channels; the gcd keeps any width legal.
    # 16 -> 1 group, 32 -> 2, 64 -> 4, 512 -> 32. One-channel groups (instance norm) would remove each
    # image's colour statistics, which the decoder then cannot restore (2-3 dB lower PSNR on photos)
    return nn.GroupNorm(math.gcd(channels, 32, max(1, channels // 16)), channels, eps=1e-6)


class ResBlock(nn.Module):
    """x + conv(silu(norm(conv(silu(norm(x)))))), channels unchanged."""

    def __init__(self, channels: int):
        super().__init__()
        self.block = nn.Sequential(
            group_norm(channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
            group_norm(channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class Downsample(nn.Sequential):
    """Halve H and W with a stride-2 convolution: (B, C_in, H, W) -> (B, C_out, H/2, W/2)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1))


class Upsample(nn.Sequential):
    """Double H and W: nearest-neighbour copy, then a 3x3 convolution (no checkerboard artefacts)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(nn.Upsample(scale_factor=2, mode="nearest"),
                         nn.Conv2d(in_channels, out_channels, 3, padding=1))


def _res_blocks(channels: int, count: int) -> list[nn.Module]:
    return [ResBlock(channels) for _ in range(count)]


class Encoder(nn.Module):
    """Images (B, C, H, W) on [-1, 1] -> latents (B, out_channels, H/f, W/f), f = config.downsample.

    ``out_channels`` defaults to ``config.latent_channels``; the KL tokenizer asks for twice that
    (a mean and a log-variance per latent channel).
    """

    def __init__(self, config: AutoencoderConfig, out_channels: int | None = None):
        super().__init__()
        widths, blocks = config.widths, config.res_blocks
        layers: list[nn.Module] = [nn.Conv2d(config.in_channels, widths[0], 3, padding=1)]
        for level in range(config.num_levels - 1):
            layers += _res_blocks(widths[level], blocks[level])
            layers += [Downsample(widths[level], widths[level + 1])]
        layers += _res_blocks(widths[-1], blocks[-1])
        layers += [group_norm(widths[-1]), nn.SiLU(),
                   nn.Conv2d(widths[-1], out_channels or config.latent_channels, 1)]
        self.layers = nn.Sequential(*layers)
        self.config = config

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.layers(images)  # (B, C_latent, H/f, W/f)


class Decoder(nn.Module):
    """Latents (B, latent_channels, h, w) -> images (B, C, h*f, w*f) on the [-1, 1] scale, unclamped."""

    def __init__(self, config: AutoencoderConfig):
        super().__init__()
        widths, blocks = config.widths, config.res_blocks
        layers: list[nn.Module] = [nn.Conv2d(config.latent_channels, widths[-1], 3, padding=1)]
        layers += _res_blocks(widths[-1], blocks[-1])
        for level in reversed(range(config.num_levels - 1)):
            layers += [Upsample(widths[level + 1], widths[level])]
            layers += _res_blocks(widths[level], blocks[level])
        layers += [group_norm(widths[0]), nn.SiLU(), nn.Conv2d(widths[0], config.in_channels, 3, padding=1)]
        self.layers = nn.Sequential(*layers)
        self.config = config

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.layers(latents)  # (B, C_image, h*f, w*f)


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
