"""The image tokenizer: encoder -> bottleneck -> decoder, with named presets.

Paper: Taming Transformers for High-Resolution Image Synthesis (Esser, Rombach, Ommer, 2021),
https://arxiv.org/abs/2012.09841 -- an image becomes an (h, w) grid of tokens, h = H / f. The
bottleneck (the lecture's "regularizer") is one ``kind``:

- "ae"  plain autoencoder, continuous latents (B, C, h, w) (``autoencoder.py``)
- "vq"  vector quantization, indices (B, h, w) (``vq.py``)
- "fsq" finite scalar quantization, indices (B, h, w) (``fsq.py``)
- "lfq" lookup-free quantization, indices (B, h, w) (``lfq.py``)
- "kl"  KL-regularized continuous latents (B, C, h, w) (``kl.py``)
- "msvq" multi-scale residual VQ (VAR), the token pyramid of all scales joined, (B, L) (``multiscale.py``)

Images are float (B, C, H, W) in [0, 1]; the networks work on [-1, 1] inside, and reconstructions
come back on the [0, 1] scale *unclamped* (clamp before display or metrics if you need to).

The public face, which notebooks and tools use (never ``.encoder`` / ``.quantizer`` / ``.decoder``):
``encode`` / ``decode`` (images <-> tokens), and for continuous latents before and after the
bottleneck ``encode_latents`` (images -> z) / ``decode_latents`` (z_q -> images), joined for discrete
kinds by ``latents_to_tokens`` (z -> indices) and ``tokens_to_latents`` (indices -> z_q).
``forward`` returns the bottleneck's own weighted loss terms; the training loss that adds the
reconstruction term (and, in lesson 06, perceptual and adversarial terms) is an object of its own,
``course_lib.tokenizers.losses.TokenizerLoss``.
"""
from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field, fields, replace

import torch
from torch import nn

from course_lib.engine.accelerate import full_precision
from course_lib.tokenizers.autoencoder import AutoencoderConfig, Decoder, Encoder
from course_lib.tokenizers.fsq import FSQ, FSQConfig
from course_lib.tokenizers.kl import DiagonalGaussian, KLConfig
from course_lib.tokenizers.lfq import LFQ, LFQConfig
from course_lib.tokenizers.multiscale import MultiScaleConfig, MultiScaleQuantizer
from course_lib.tokenizers.vq import VectorQuantizer, VQConfig, naive_vq_config

BOTTLENECKS = {"ae": None, "vq": VQConfig, "fsq": FSQConfig, "lfq": LFQConfig, "kl": KLConfig,
               "msvq": MultiScaleConfig}
DISCRETE_KINDS = ("vq", "fsq", "lfq", "msvq")
QUANTIZERS = {"vq": VectorQuantizer, "fsq": FSQ, "lfq": LFQ, "msvq": MultiScaleQuantizer}
RANGE_TOLERANCE = 1e-3  # resizing can overshoot [0, 1] by rounding noise


@dataclass
class TokenizerConfig:
    """What to build: the kind, the image size, the encoder / decoder and the bottleneck settings."""

    kind: str = "vq"
    image_size: int = 32
    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    bottleneck: VQConfig | FSQConfig | LFQConfig | KLConfig | MultiScaleConfig | None = None  # None: kind's defaults

    def __post_init__(self):
        if self.kind not in BOTTLENECKS:
            raise ValueError(f"unknown tokenizer kind {self.kind!r}; choose one of {list(BOTTLENECKS)}")
        expected = BOTTLENECKS[self.kind]
        if self.bottleneck is None and expected is not None:
            self.bottleneck = expected()
        if (expected is None) != (self.bottleneck is None) or (expected and not isinstance(self.bottleneck, expected)):
            raise ValueError(f"a {self.kind!r} tokenizer needs bottleneck="
                             f"{expected.__name__ if expected else None}, got {type(self.bottleneck).__name__}")
        f = self.autoencoder.downsample
        if self.image_size < f or self.image_size % f:
            raise ValueError(f"image_size must be a positive multiple of downsample={f}, got {self.image_size!r}")
        if self.kind == "msvq" and self.bottleneck.scales[-1] != self.image_size // f:
            raise ValueError(f"the last scale must be the latent grid's side {self.image_size // f}, "
                             f"got scales {self.bottleneck.scales}")


def _config(kind: str, downsample: int, latent_channels: int, bottleneck=None) -> TokenizerConfig:
    # preset scale: 32x32 RGB; little compute at full resolution, where convolutions cost most on CPU
    widths = {2: (16, 64), 4: (16, 32, 64), 8: (16, 32, 64, 64)}[downsample]
    res_blocks = (0,) + (1,) * (len(widths) - 1)
    autoencoder = AutoencoderConfig(3, downsample, widths, latent_channels, res_blocks)
    return TokenizerConfig(kind, 32, autoencoder, bottleneck)


def _fixed_vq() -> VQConfig:
    return VQConfig(codebook_size=1024, update="ema", init="kmeans", restart_after=50)


tokenizer_presets: dict[str, TokenizerConfig] = {
    "ae-f2": _config("ae", 2, 4),
    "ae-f4": _config("ae", 4, 4),
    "ae-f8": _config("ae", 8, 4),
    "vq-f2": _config("vq", 2, 16, _fixed_vq()),
    "vq-f4": _config("vq", 4, 16, _fixed_vq()),
    "vq-f8": _config("vq", 8, 16, _fixed_vq()),
    "vq-naive-f4": _config("vq", 4, 16, naive_vq_config(1024)),  # collapses: notebook 03's demo
    "fsq-f4": _config("fsq", 4, 4, FSQConfig(levels=(8, 5, 5, 5))),  # K = 1000
    "lfq-f4": _config("lfq", 4, 10, LFQConfig(bits=10)),  # K = 1024
    "kl-f4": _config("kl", 4, 4, KLConfig()),  # 8x8x4 = 256 numbers per image
    "kl-f8": _config("kl", 8, 16, KLConfig()),  # 4x4x16 = 256 numbers per image
    # L = 130 tokens, VAR's pyramid. The latent normalized at each position and restarts after 20 idle steps keep
    # the 1x1 scale alive: on shapes (1,500 steps) its test perplexity was 12.3 with VAR's loss as it is, 23.0
    # with the normalized latent, 29.4 with both (PSNR 32.4, 34.5 and 34.2 dB)
    "msvq-f4": _config("msvq", 4, 16, MultiScaleConfig(1024, (1, 2, 3, 4, 6, 8), restart_after=20, normalize=True)),
}


# ----- configs <-> plain dicts (for checkpoints, json, weights_only loading) -----

def config_to_dict(config: TokenizerConfig) -> dict:
    """A plain dict of str / int / float / tuple / None, nested one level."""
    return asdict(config)


def _from_dict(cls, data: dict, where: str):
    if not isinstance(data, dict):
        raise ValueError(f"expected a dict for {where}, got {type(data).__name__}")
    known = [f.name for f in fields(cls)]
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValueError(f"unknown {where} fields {unknown}; known: {known}")
    return cls(**data)


def config_from_dict(data: dict) -> TokenizerConfig:
    """Inverse of ``config_to_dict``; missing fields take their defaults, unknown ones raise."""
    if not isinstance(data, dict):
        raise ValueError(f"expected a dict for the tokenizer config, got {type(data).__name__}")
    data = dict(data)
    kind = data.get("kind", TokenizerConfig.kind)
    if kind not in BOTTLENECKS:
        raise ValueError(f"unknown tokenizer kind {kind!r}; choose one of {list(BOTTLENECKS)}")
    if "autoencoder" in data:
        data["autoencoder"] = _from_dict(AutoencoderConfig, data["autoencoder"], "autoencoder")
    if data.get("bottleneck") is not None:
        if BOTTLENECKS[kind] is None:
            raise ValueError(f"a {kind!r} tokenizer has no bottleneck settings, got {data['bottleneck']}")
        data["bottleneck"] = _from_dict(BOTTLENECKS[kind], data["bottleneck"], f"{kind} bottleneck")
    return _from_dict(TokenizerConfig, data, "tokenizer config")


def apply_overrides(config: TokenizerConfig, **overrides) -> TokenizerConfig:
    """A copy of config with fields replaced by name, wherever they live (top level, autoencoder, bottleneck)."""
    if "kind" in overrides:
        raise ValueError("kind cannot be overridden; start from a preset of the kind you want: "
                         f"{sorted(tokenizer_presets)}")
    groups = {"top": [f.name for f in fields(TokenizerConfig) if f.name != "kind"],
              "autoencoder": [f.name for f in fields(AutoencoderConfig)],
              "bottleneck": [f.name for f in fields(config.bottleneck)] if config.bottleneck else []}
    routed = {group: {k: v for k, v in overrides.items() if k in names} for group, names in groups.items()}
    unknown = sorted(set(overrides) - {k for names in groups.values() for k in names})
    if unknown:
        raise ValueError(f"unknown settings {unknown} for a {config.kind!r} tokenizer; known: {groups}")
    autoencoder = replace(routed["top"].pop("autoencoder", config.autoencoder), **routed["autoencoder"])
    bottleneck = routed["top"].pop("bottleneck", config.bottleneck)
    if routed["bottleneck"]:
        bottleneck = replace(bottleneck, **routed["bottleneck"])
    return replace(config, autoencoder=autoencoder, bottleneck=copy.deepcopy(bottleneck), **routed["top"])


@dataclass
class TokenizerOutput:
    reconstruction: torch.Tensor  # (B, C, H, W) on the [0, 1] scale, unclamped
    tokens: torch.Tensor  # what encode() gives: indices (B, h, w) or latents (B, C, h, w)
    losses: dict[str, torch.Tensor]  # the bottleneck's weighted terms (VQ: commitment ...; KL: kl)
    stats: dict[str, float]  # "usage", "perplexity" (discrete); "kl" in nats per image (kl)


class Tokenizer(nn.Module):
    """Images (B, C, H, W) in [0, 1] <-> tokens; see the module docstring for the kinds."""

    def __init__(self, config: TokenizerConfig):
        super().__init__()
        self.config = config
        latent = config.autoencoder.latent_channels
        # the kl encoder outputs a mean and a log-variance per latent channel
        self.encoder = Encoder(config.autoencoder, out_channels=2 * latent if config.kind == "kl" else latent)
        self.decoder = Decoder(config.autoencoder)
        self.quantizer = QUANTIZERS[config.kind](latent, config.bottleneck) if self.is_discrete else None

    # ----- what the tokens look like -----

    @property
    def kind(self) -> str:
        return self.config.kind

    @property
    def is_discrete(self) -> bool:
        return self.config.kind in DISCRETE_KINDS

    @property
    def tokens_shape(self) -> tuple[int, ...]:
        """Shape of one image's tokens: (h, w) indices, or (C, h, w) continuous latents."""
        side = self.config.image_size // self.config.autoencoder.downsample
        if self.kind == "msvq":
            return self.quantizer.tokens_shape  # (L,): all scales joined
        return (side, side) if self.is_discrete else (self.config.autoencoder.latent_channels, side, side)

    @property
    def codebook_size(self) -> int:
        self._require_discrete("codebook_size")
        return self.quantizer.codebook_size

    @property
    def bits_per_token(self) -> float:
        """log2(K); round up for a fixed-length code."""
        self._require_discrete("bits_per_token")
        return math.log2(self.codebook_size)

    @property
    def bits_per_image(self) -> float:
        return self.bits_per_token * math.prod(self.tokens_shape)

    def _require_discrete(self, what: str) -> None:
        if not self.is_discrete:
            raise ValueError(f"{what} is defined for discrete tokenizers {list(DISCRETE_KINDS)}; this one is "
                             f"{self.kind!r} with continuous latents of shape {self.tokens_shape}")

    # ----- input checks -----

    def _check_images(self, images: torch.Tensor) -> None:
        c, s = self.config.autoencoder.in_channels, self.config.image_size
        if not isinstance(images, torch.Tensor) or not images.is_floating_point() or images.ndim != 4 \
                or tuple(images.shape[1:]) != (c, s, s):
            got = f"{images.dtype} {tuple(images.shape)}" if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"expected float images of shape (B, {c}, {s}, {s}), got {got}")
        low, high = images.min().item(), images.max().item()
        if low < -RANGE_TOLERANCE or high > 1 + RANGE_TOLERANCE:
            raise ValueError(f"expected images with values in [0, 1], got values in [{low:.3g}, {high:.3g}]"
                             + (" (0-255 images? divide by 255)" if high > 2 else ""))

    def _check_tokens(self, tokens: torch.Tensor) -> None:
        expected = self.tokens_shape
        ok_dtype = tokens.dtype == torch.long if self.is_discrete else tokens.is_floating_point()
        if not ok_dtype or tuple(tokens.shape[1:]) != expected or tokens.ndim != len(expected) + 1:
            want = "long indices" if self.is_discrete else "float latents"
            raise ValueError(f"expected {want} of shape (B, {', '.join(map(str, expected))}), "
                             f"got {tokens.dtype} {tuple(tokens.shape)}")

    # ----- encode / decode / forward -----

    def posterior(self, images: torch.Tensor) -> DiagonalGaussian:
        """The KL tokenizer's q(z | images), to sample latents from."""
        if self.kind != "kl":
            raise ValueError(f"posterior() needs a 'kl' tokenizer, this one is {self.kind!r}")
        self._check_images(images)
        return DiagonalGaussian.from_moments(self.encoder(images * 2 - 1))

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) -> indices (B, h, w), or latents (B, C, h, w) (kl: the posterior mean)."""
        z = self.encode_latents(images)  # (B, C, h, w)
        return self.quantizer.encode(z) if self.is_discrete else z

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Indices (B, h, w) or latents (B, C, h, w) -> images (B, C, H, W), [0, 1] scale, unclamped."""
        self._check_tokens(tokens)
        z_q = self.quantizer.decode(tokens) if self.is_discrete else tokens  # (B, C, h, w)
        return self.decode_latents(z_q)

    def encode_latents(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) -> the continuous latents z (B, C, h, w) that enter the bottleneck
        (kl: the posterior mean)."""
        if self.kind == "kl":
            return self.posterior(images).mode()
        self._check_images(images)
        return self.encoder(images * 2 - 1)

    def decode_latents(self, z_q: torch.Tensor) -> torch.Tensor:
        """What the decoder reads, (B, C, h, w) (z_q of any kind, or any point between) -> images
        (B, C, H, W) on the [0, 1] scale, unclamped."""
        latent = self.config.autoencoder.latent_channels
        if z_q.ndim != 4 or z_q.shape[1] != latent or not z_q.is_floating_point():
            raise ValueError(f"expected float latents of shape (B, {latent}, h, w), got {z_q.dtype} {tuple(z_q.shape)}")
        return (self.decoder(z_q) + 1) / 2

    def decoder_last_layer(self) -> torch.Tensor:
        """The weight of the decoder's last convolution (C, widths[0], 3, 3): where VQGAN's adaptive
        weight compares the gradients of the reconstruction and adversarial losses."""
        return self.decoder.layers[-1].weight

    def latents_to_tokens(self, z: torch.Tensor) -> torch.Tensor:
        """Discrete kinds: latents (B, C, h, w), anywhere in latent space -> the nearest indices (B, h, w)."""
        self._require_discrete("latents_to_tokens")
        return self.quantizer.encode(z)

    def tokens_to_latents(self, tokens: torch.Tensor) -> torch.Tensor:
        """Discrete kinds: indices (B, h, w) -> the quantized latents z_q (B, C, h, w) the decoder reads."""
        self._require_discrete("tokens_to_latents")
        self._check_tokens(tokens)
        return self.quantizer.decode(tokens)

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None) -> TokenizerOutput:
        """Reconstruction, the bottleneck's loss terms and statistics; kl samples its latent in training mode."""
        self._check_images(images)
        z = self.encoder(images * 2 - 1)  # (B, C, h, w), or (B, 2C, h, w) for kl
        # the bottleneck stays in float32 under bf16 autocast: bf16 keeps 8 mantissa bits, too few for
        # nearest-code distances (||z||^2 - 2 z.e + ||e||^2 cancels), rounding to levels and exp(logvar)
        with full_precision(z.device.type):
            z_q, tokens, losses, stats = self._bottleneck(z.float(), generator)
        reconstruction = (self.decoder(z_q) + 1) / 2
        return TokenizerOutput(reconstruction, tokens, losses, stats)

    def _bottleneck(self, z: torch.Tensor, generator: torch.Generator | None) -> tuple:
        """z (B, C, h, w) -> (z_q, tokens, losses, stats) of the training forward."""
        losses, stats = {}, {}
        if self.is_discrete:
            out = self.quantizer(z)
            z_q, tokens, losses, stats = out.z_q, out.indices, dict(out.losses), dict(out.stats)
        elif self.kind == "kl":
            posterior = DiagonalGaussian.from_moments(z)
            z_q = posterior.sample(generator) if self.training else posterior.mode()
            tokens, kl = posterior.mode(), posterior.kl()
            losses["kl"] = self.config.bottleneck.kl_weight * kl
            stats["kl"] = kl.item()
        else:
            z_q = tokens = z
        return z_q, tokens, losses, stats


def build_tokenizer(preset_or_config: str | TokenizerConfig | dict, **overrides) -> Tokenizer:
    """A tokenizer from a preset name, a config or a config dict, with fields overridden by name.

    ``build_tokenizer("vq-f4", codebook_size=512, distance="cosine", widths=(32, 64, 64))``
    """
    if isinstance(preset_or_config, str):
        if preset_or_config not in tokenizer_presets:
            raise ValueError(f"unknown tokenizer preset {preset_or_config!r}; "
                             f"choose one of {sorted(tokenizer_presets)}")
        config = tokenizer_presets[preset_or_config]
    elif isinstance(preset_or_config, dict):
        config = config_from_dict(preset_or_config)
    elif isinstance(preset_or_config, TokenizerConfig):
        config = preset_or_config
    else:
        raise ValueError(f"expected a preset name, a TokenizerConfig or a config dict, "
                         f"got {type(preset_or_config).__name__}")
    return Tokenizer(apply_overrides(copy.deepcopy(config), **overrides))
