"""A PatchGAN discriminator and the VQGAN adversarial recipe: hinge losses, adaptive weight, warm-up.

Papers: Image-to-Image Translation with Conditional Adversarial Networks (pix2pix; Isola, Zhu, Zhou,
Efros, 2017), https://arxiv.org/abs/1611.07004 -- the PatchGAN: a fully convolutional discriminator
whose output is a grid of real / fake logits, one per overlapping image patch.
Taming Transformers for High-Resolution Image Synthesis (VQGAN; Esser, Rombach, Ommer, 2021),
https://arxiv.org/abs/2012.09841 -- eq. (7): the adversarial term's weight
lambda = ||grad_GL[L_rec]|| / (||grad_GL[L_GAN]|| + delta), gradients taken at the decoder's last
layer GL; hinge losses and a discriminator that starts after a number of steps, as in
taming/modules/losses/vqperceptual.py (https://github.com/CompVis/taming-transformers).

Images are float (B, C, H, W) in [0, 1], the course's range; the discriminator maps them to [-1, 1].
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

NORMS = ("batch", "none")


@dataclass
class DiscriminatorConfig:
    """pix2pix's NLayerDiscriminator: ``n_layers`` stride-2 convolutions (widths double, capped at
    ``width * max_multiplier``), one stride-1 convolution, then a 1-channel stride-1 convolution."""

    in_channels: int = 3
    width: int = 64
    n_layers: int = 1
    max_multiplier: int = 8
    norm: str = "batch"

    def __post_init__(self):
        if self.in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 (grey) or 3 (RGB), got {self.in_channels!r}")
        if self.width < 1 or self.n_layers < 1 or self.max_multiplier < 1:
            raise ValueError(f"need width, n_layers and max_multiplier >= 1, got {self.width}, "
                             f"{self.n_layers}, {self.max_multiplier}")
        if self.norm not in NORMS:
            raise ValueError(f"unknown norm {self.norm!r}; choose one of {list(NORMS)}")

    @property
    def min_image_size(self) -> int:
        """The smallest image side that still leaves one output logit."""
        return 3 * 2 ** self.n_layers

    @property
    def patch_size(self) -> int:
        """The side of the image window one logit sees (its receptive field): 16, 34, 70 for 1, 2, 3 layers."""
        size = 1 + 3 + 3  # the two stride-1 4x4 convolutions
        for _ in range(self.n_layers):
            size = (size - 1) * 2 + 4
        return size


discriminator_presets: dict[str, DiscriminatorConfig] = {
    "patchgan-16": DiscriminatorConfig(),  # the default: pix2pix's 16x16 patches, 32x32 -> 14x14 logits
    "patchgan-34": DiscriminatorConfig(n_layers=2),  # 32x32 -> 6x6 logits, each seeing most of the image
    "patchgan-70": DiscriminatorConfig(n_layers=3),  # pix2pix / taming's 70x70 patches, for 256x256 images
}




class PatchDiscriminator(nn.Module):
    """Images (B, C, H, W) in [0, 1] -> real / fake logits (B, 1, h, w), one per image patch."""

    def __init__(self, config: DiscriminatorConfig):
        super().__init__()
        self.config = config
        c = config
        widths = [c.width * min(2 ** i, c.max_multiplier) for i in range(c.n_layers + 1)]
        # no normalization on the first layer, as in pix2pix
        layers = [nn.Conv2d(c.in_channels, widths[0], 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        for i in range(1, c.n_layers + 1):
            stride = 2 if i < c.n_layers else 1
            layers += [nn.Conv2d(widths[i - 1], widths[i], 4, stride=stride, padding=1, bias=c.norm == "none"),
                       _norm(c.norm, widths[i]), nn.LeakyReLU(0.2)]
        layers.append(nn.Conv2d(widths[-1], 1, 4, stride=1, padding=1))
        self.layers = nn.Sequential(*layers)
        self.apply(_init_weights)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        c = self.config
        if images.ndim != 4 or images.shape[1] != c.in_channels:
            raise ValueError(f"expected images of shape (B, {c.in_channels}, H, W), got {tuple(images.shape)}")
        if min(images.shape[-2:]) < c.min_image_size:
            raise ValueError(f"a {c.n_layers}-layer PatchGAN needs images of at least {c.min_image_size}x"
                             f"{c.min_image_size}, got {tuple(images.shape[-2:])}")
        return self.layers(images * 2 - 1)  # (B, 1, h, w)


def _norm(kind: str, channels: int) -> nn.Module:
    return nn.BatchNorm2d(channels) if kind == "batch" else nn.Identity()


def _init_weights(module: nn.Module) -> None:
    # taming's weights_init: N(0, 0.02) conv weights, N(1, 0.02) norm scales, zero norm shifts; it
    # leaves the conv biases (first and last layer) at PyTorch's uniform default, here they start at 0
    if isinstance(module, nn.Conv2d):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


# ----- losses -----

def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """The discriminator's hinge loss: 0.5 * (mean(relu(1 - D(x))) + mean(relu(1 + D(x_hat)))), a scalar.

    Zero once real logits are >= 1 and fake ones <= -1: a confident discriminator stops pushing.
    """
    _check_logits(logits_real, "logits_real")
    _check_logits(logits_fake, "logits_fake")
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def hinge_g_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """The generator's side: -mean(D(x_hat)), a scalar; lower when the discriminator calls fakes real."""
    _check_logits(logits_fake, "logits_fake")
    return -logits_fake.mean()


def _check_logits(logits: torch.Tensor, name: str) -> None:
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point() or logits.numel() == 0:
        got = f"dtype {logits.dtype}, shape {tuple(logits.shape)}" if isinstance(logits, torch.Tensor) \
            else type(logits).__name__
        raise ValueError(f"expected {name} as a non-empty float tensor of discriminator logits, got {got}")


def adaptive_weight(rec_loss: torch.Tensor, gan_loss: torch.Tensor, last_layer: torch.Tensor,
                    delta: float = 1e-4, max_weight: float = 1e4) -> torch.Tensor:
    """VQGAN eq. (7): ||grad L_rec|| / (||grad L_GAN|| + delta), both gradients at ``last_layer``.

    Scales the adversarial term so that its gradient at the decoder's last layer is as large as the
    reconstruction loss's; clamped to [0, max_weight] and detached (it is a weight, not a loss).
    ``rec_loss`` may be the reconstruction + perceptual loss, as in taming's ``nll_loss``.
    """
    for name, loss in (("rec_loss", rec_loss), ("gan_loss", gan_loss)):
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1 or not loss.requires_grad:
            raise ValueError(f"{name} must be a scalar tensor that requires grad (computed with autograd on, "
                             f"not under torch.no_grad()), got {_describe(loss)}")
    if not isinstance(last_layer, torch.Tensor) or not last_layer.requires_grad:
        raise ValueError(f"last_layer must be a weight tensor that requires grad (e.g. the decoder's last "
                         f"conv weight), got {_describe(last_layer)}")
    rec_grad = _grad_at(rec_loss, last_layer, "rec_loss")
    gan_grad = _grad_at(gan_loss, last_layer, "gan_loss")
    weight = rec_grad.norm() / (gan_grad.norm() + delta)
    return weight.clamp(0.0, max_weight).detach()


def _grad_at(loss: torch.Tensor, weight: torch.Tensor, name: str) -> torch.Tensor:
    (grad,) = torch.autograd.grad(loss, weight, retain_graph=True, allow_unused=True)
    if grad is None:
        raise ValueError(f"{name} does not depend on last_layer: pass the weight of the layer that produced "
                         f"the reconstruction the losses were computed on")
    return grad


def _describe(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"shape {tuple(value.shape)}, requires_grad={value.requires_grad}"
    return type(value).__name__


def gan_warmup_weight(step: int, start_step: int, weight: float = 1.0) -> float:
    """``weight`` from ``start_step`` on, 0 before: taming's ``adopt_weight`` (the discriminator waits
    until the autoencoder reconstructs reasonably, so its first lessons are not about blobs)."""
    for name, value in (("step", step), ("start_step", start_step)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    return 0.0 if step < start_step else float(weight)
