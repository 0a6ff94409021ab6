"""Continuous latents with a KL regularizer: the encoder outputs a diagonal Gaussian per latent.

Paper: Auto-Encoding Variational Bayes (Kingma, Welling, 2013), https://arxiv.org/abs/1312.6114 --
the reparameterization trick (section 2.4) and the closed-form KL to N(0, I) (appendix B).
Used with a tiny KL weight as the "KL-f4 / KL-f8" autoencoders of High-Resolution Image Synthesis
with Latent Diffusion Models (Rombach et al., 2022), https://arxiv.org/abs/2112.10752, whose
appendix G also gives the latent scale factor (1 / std of the latents) that ``LatentNormalizer``
computes before a diffusion model sees the latents.

Shapes: moments (B, 2C, H, W) from the encoder = mean and log-variance (B, C, H, W) each.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

LOGVAR_RANGE = (-30.0, 20.0)  # as in latent-diffusion's DiagonalGaussianDistribution


@dataclass
class KLConfig:
    """KL bottleneck settings."""

    kl_weight: float = 1e-6  # latent diffusion's weight: latents stay close to a plain autoencoder's

    def __post_init__(self):
        if self.kl_weight < 0:
            raise ValueError(f"kl_weight must be >= 0, got {self.kl_weight!r}")


def reparameterize(mean: torch.Tensor, logvar: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """A sample mean + std * noise with std = exp(logvar / 2); noise ~ N(0, I) has the shape of mean."""
    return mean + torch.exp(0.5 * logvar) * noise


def gaussian_kl(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)), summed over C H W, averaged over the batch (VAE appendix B)."""
    if mean.shape != logvar.shape or mean.ndim < 2:
        raise ValueError(f"expected mean and logvar of the same shape (B, ...), "
                         f"got {tuple(mean.shape)} and {tuple(logvar.shape)}")
    per_element = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar)
    return per_element.flatten(1).sum(1).mean()


class DiagonalGaussian:
    """The posterior q(z | x) = N(mean, diag(exp(logvar))); logvar is clamped to LOGVAR_RANGE."""

    def __init__(self, mean: torch.Tensor, logvar: torch.Tensor):
        if mean.shape != logvar.shape:
            raise ValueError(f"mean and logvar must have the same shape, got {tuple(mean.shape)} "
                             f"and {tuple(logvar.shape)}")
        self.mean = mean
        # clamping keeps exp(logvar) finite early in training
        self.logvar = logvar.clamp(*LOGVAR_RANGE)

    @classmethod
    def from_moments(cls, moments: torch.Tensor) -> "DiagonalGaussian":
        """Split encoder output (B, 2C, H, W) into mean and logvar (B, C, H, W) each."""
        if moments.ndim != 4 or moments.shape[1] % 2:
            raise ValueError(f"expected moments of shape (B, 2C, H, W), got {tuple(moments.shape)}")
        mean, logvar = moments.chunk(2, dim=1)
        return cls(mean, logvar)

    @property
    def std(self) -> torch.Tensor:
        return torch.exp(0.5 * self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """A reparameterized sample; pass a generator for reproducible noise."""
        # the noise is drawn where the generator lives (a CPU generator works for CUDA latents too)
        device = generator.device if generator is not None else self.mean.device
        noise = torch.randn(self.mean.shape, generator=generator, device=device, dtype=self.mean.dtype)
        noise = noise.to(self.mean.device)
        return reparameterize(self.mean, self.logvar, noise)

    def mode(self) -> torch.Tensor:
        return self.mean

    def kl(self) -> torch.Tensor:
        return gaussian_kl(self.mean, self.logvar)


class LatentNormalizer(nn.Module):
    """normalize(z) = (z - shift) * scale, with scale = 1 / std so a diffusion model sees unit-variance latents.

    Forgetting this step is a classic pitfall: latents with std far from 1 break a noise schedule made for
    unit variance; Stable Diffusion's 0.18215 is this scale (https://github.com/huggingface/diffusers/issues/437).
    """

    def __init__(self, scale: float | torch.Tensor = 1.0, shift: float | torch.Tensor = 0.0):
        super().__init__()
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32).clone())
        self.register_buffer("shift", torch.as_tensor(shift, dtype=torch.float32).clone())

    @classmethod
    def fit(cls, latents: torch.Tensor, per_channel: bool = False) -> "LatentNormalizer":
        """Scale and shift from a batch of latents (B, C, H, W): global (one number each) or per channel."""
        if latents.ndim != 4 or latents.shape[0] * latents.shape[2] * latents.shape[3] < 2:
            raise ValueError(f"expected a batch of latents (B, C, H, W) with more than one value per channel, "
                             f"got {tuple(latents.shape)}")
        latents = latents.detach().float()
        dims = (0, 2, 3) if per_channel else (0, 1, 2, 3)
        shift = latents.mean(dim=dims, keepdim=per_channel)  # (1, C, 1, 1) or ()
        std = latents.std(dim=dims, keepdim=per_channel)
        return cls(scale=1.0 / std.clamp(min=1e-8), shift=shift)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # a per-channel state has (1, C, 1, 1) buffers: take the stored shapes before copying
        for name in ("scale", "shift"):
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def normalize(self, latents: torch.Tensor) -> torch.Tensor:
        return (latents - self.shift) * self.scale

    def denormalize(self, latents: torch.Tensor) -> torch.Tensor:
        return latents / self.scale + self.shift

    def extra_repr(self) -> str:
        if self.scale.ndim == 0:
            return f"scale={self.scale.item():.4f}, shift={self.shift.item():.4f}"
        return f"per-channel, {self.scale.numel()} channels"
