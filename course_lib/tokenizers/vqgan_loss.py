"""The VQGAN training objective as one loss object: reconstruction + bottleneck + perceptual + adversarial.

Paper: Taming Transformers for High-Resolution Image Synthesis (VQGAN; Esser, Rombach, Ommer, 2021),
https://arxiv.org/abs/2012.09841 -- eq. (5)-(7), as taming/modules/losses/vqperceptual.py
(``VQLPIPSWithDiscriminator``) computes them:

    L_G = L_rec + L_bottleneck + w_p * d(x_hat, x) + w_GAN * lambda * hinge_g(D(x_hat))     (after gan_start)
    L_D = hinge_d(D(x), D(x_hat))                                                          (after gan_start)

with ``d`` a perceptual distance (here the course's offline feature distance, or real LPIPS where its
weights exist) and ``lambda = ||grad L_nll|| / (||grad L_GAN|| + delta)`` at the decoder's last layer,
``L_nll = L_rec + w_p * d``. The PatchGAN ``D`` lives inside this object, so the training loop sees
a second player (:mod:`course_lib.engine.training`): after every step of the tokenizer it minimizes
:meth:`VQGANLoss.second_loss` over ``D``'s parameters. A step counter kept as a buffer makes the
warm-up survive an exact resume.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from course_lib.tokenizers.discriminator import (PatchDiscriminator, adaptive_weight, discriminator_presets,
                                                 gan_warmup_weight, hinge_d_loss, hinge_g_loss)
from course_lib.tokenizers.losses import TokenizerLoss


@dataclass(frozen=True)
class VQGANLossConfig:
    """Weights of the added terms and when the game starts (steps counted by the loss object itself)."""

    perceptual_weight: float = 1.0
    gan_weight: float = 0.1  # w_GAN, multiplied by the adaptive lambda
    gan_start: int = 0  # steps of reconstruction + perceptual only before D and the generator's GAN term start
    discriminator: str = "patchgan-16"  # a preset of course_lib.tokenizers.discriminator
    adaptive: bool = True  # False: lambda = 1 (the plain weighted GAN term)
    delta: float = 1e-4
    max_adaptive_weight: float = 1e4
    reconstruction: str = "l2"  # "l2" or "l1"
    discriminator_seed: int | None = None  # seeds D's initial weights (None: drawn from the global generator)

    def __post_init__(self):
        if self.perceptual_weight < 0 or self.gan_weight < 0:
            raise ValueError(f"weights must be >= 0, got perceptual_weight={self.perceptual_weight}, "
                             f"gan_weight={self.gan_weight}")
        if not isinstance(self.gan_start, int) or self.gan_start < 0:
            raise ValueError(f"gan_start must be a non-negative int, got {self.gan_start!r}")
        if self.discriminator not in discriminator_presets:
            raise ValueError(f"unknown discriminator preset {self.discriminator!r}; "
                             f"choose one of {sorted(discriminator_presets)}")
        seed = self.discriminator_seed
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or seed < 0):
            raise ValueError(f"discriminator_seed must be a non-negative int or None, got {seed!r}")

    def to_dict(self) -> dict:
        return asdict(self)


def _build_discriminator(config: VQGANLossConfig, in_channels: int) -> PatchDiscriminator:
    """The preset's PatchGAN; with a ``discriminator_seed`` its initial weights come from that seed
    alone (a private generator state, so a rebuild is bit-identical and the global stream is untouched)."""
    preset = discriminator_presets[config.discriminator]
    d_config = type(preset)(**{**asdict(preset), "in_channels": in_channels})
    if config.discriminator_seed is None:
        return PatchDiscriminator(d_config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.discriminator_seed)
        return PatchDiscriminator(d_config)


class VQGANLoss(TokenizerLoss):
    """``loss_fn(tokenizer, images) -> (total, logs)`` with a PatchGAN discriminator as second player.

    ``distance(x_hat, x) -> (B,)`` is a frozen perceptual distance (``FeatureDistance`` or
    ``RealLPIPS``). The tokenizer must expose ``decoder_last_layer()`` (the weight the adaptive
    weight is measured at). Logs: every term, ``adaptive_weight`` and the unweighted ``g_hinge`` once
    the game runs, the tokenizer's statistics, and from :meth:`second_loss` the discriminator's loss
    and mean logits.
    """

    def __init__(self, distance: nn.Module, config: VQGANLossConfig | None = None, in_channels: int = 3):
        config = config or VQGANLossConfig()
        super().__init__(config.reconstruction)
        self.config = config
        self.distance = distance.requires_grad_(False)
        self.discriminator = _build_discriminator(config, in_channels)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))  # training steps taken (both players)
        self._fakes: torch.Tensor | None = None  # the last training batch's reconstructions, for D

    def gan_factor(self) -> float:
        """w_GAN from ``gan_start`` on, 0 before (taming's ``adopt_weight``)."""
        return gan_warmup_weight(int(self.step), self.config.gan_start, self.config.gan_weight)

    def terms(self, tokenizer: nn.Module, images: torch.Tensor) -> tuple[dict[str, torch.Tensor], object]:
        terms, out = super().terms(tokenizer, images)
        reconstruction = out.reconstruction  # (B, C, H, W)
        if self.config.perceptual_weight > 0:
            terms["perceptual"] = self.config.perceptual_weight * self.distance(reconstruction, images).mean()
        if self.training and torch.is_grad_enabled():
            self._fakes = reconstruction.detach()
        factor = self.gan_factor()
        if factor > 0 and self.training and torch.is_grad_enabled():
            g_loss = hinge_g_loss(self.discriminator(reconstruction))
            weight = torch.ones(())
            if self.config.adaptive:
                nll = terms["recon"] + terms.get("perceptual", 0.0)
                weight = adaptive_weight(nll, g_loss, tokenizer.decoder_last_layer(), self.config.delta,
                                         self.config.max_adaptive_weight)
            terms["gan"] = factor * weight * g_loss
            out.stats["adaptive_weight"], out.stats["g_hinge"] = weight.item(), g_loss.item()
        return terms, out

    def second_loss(self, tokenizer: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, dict] | None:
        """The discriminator's hinge loss on this batch and its reconstructions; None during the warm-up.

        Call it after ``forward`` on the same batch (the training loop does): it reuses that pass's
        reconstructions rather than running the tokenizer again, which would update a VQ codebook twice.
        Counts one step either way.
        """
        fakes, self._fakes = self._fakes, None
        if fakes is None or fakes.shape != images.shape:
            raise ValueError(f"second_loss needs the reconstructions of a training-mode forward on the same batch "
                             f"{tuple(images.shape)}; got {None if fakes is None else tuple(fakes.shape)}")
        playing = self.gan_factor() > 0
        self.step += 1
        if not playing:
            return None
        logits_real, logits_fake = self.discriminator(images.detach()), self.discriminator(fakes)
        d_loss = hinge_d_loss(logits_real, logits_fake)
        return d_loss, {"d_loss": d_loss.detach(), "logits_real": logits_real.detach().mean(),
                        "logits_fake": logits_fake.detach().mean()}
