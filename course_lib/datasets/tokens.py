"""Token datasets: a course dataset encoded once by a tokenizer, cached as token grids with class labels.

Paper: Taming Transformers for High-Resolution Image Synthesis (Esser et al., 2021),
https://arxiv.org/abs/2012.09841 -- the second stage trains on the first stage's token grids, so
the images are encoded once, not at every step of the generator.

Generators of lessons 07-09 train on :class:`TokenSet` s (a discrete tokenizer's grids) or
:class:`LatentSet` s (a continuous tokenizer's latents, the posterior means of a KL tokenizer). The
tokenizer is any object with ``encode(images)``, ``is_discrete``, a ``config`` with ``image_size`` and
``autoencoder.in_channels``, and a ``state_dict`` (its weights key the cache, so a retrained tokenizer
never reads stale tokens). Both sets convert the images to the tokenizer's channels and size the same
way and share one cache key; the cache lives in ``data/tokens/`` (git-ignored).

A class is one label (``"char"``) or several combined (``("shape", "colour")`` -> 24 classes named
``"circle-red"``, ...): :func:`class_label`.

Shapes: N images, h w the token grid, C latent channels.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from course_lib.paths import data_dir

from . import load_dataset
from .images import _SIZED, convert_images

FORMAT = "course_lib.tokens/1"
LATENT_FORMAT = "course_lib.latents/2"


class _Classes:
    """What a token set and a latent set share: one class per item, and the class names."""

    classes: torch.Tensor
    class_names: list[str]

    def _check_classes(self, what: str) -> None:
        if self.classes.shape != (len(self),):
            raise ValueError(f"expected one class per {what}, ({len(self)},), got {tuple(self.classes.shape)}")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


@dataclass
class TokenSet(_Classes):
    """Token grids (N, h, w) int64, or token sequences (N, L) (a multi-scale tokenizer's pyramid, its scales
    joined), with the class of each item (N,) and the class names."""

    name: str
    split: str
    tokens: torch.Tensor
    classes: torch.Tensor
    class_names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.tokens.ndim not in (2, 3) or self.tokens.dtype != torch.long:
            raise ValueError(f"expected token grids (N, h, w) or sequences (N, L) of int64, got {tuple(self.tokens.shape)} {self.tokens.dtype}")
        self._check_classes("grid")

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def grid(self) -> tuple[int, ...]:
        """(h, w), or (L,) for sequences."""
        return tuple(self.tokens.shape[1:])


@dataclass
class LatentSet(_Classes):
    """Continuous latents (N, C, h, w) float32 with the class of each (N,) and the class names."""

    name: str
    split: str
    latents: torch.Tensor
    classes: torch.Tensor
    class_names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.latents.ndim != 4 or not self.latents.is_floating_point():
            raise ValueError(f"expected latents (N, C, h, w) of floats, got {tuple(self.latents.shape)} {self.latents.dtype}")
        self._check_classes("latent")

    def __len__(self) -> int:
        return len(self.latents)


def class_label(images, keys: str | tuple[str, ...] | None) -> tuple[torch.Tensor, list[str]]:
    """The class of each item of an ImageSet (N,) and the class names, from one label or several combined.

    Several labels combine in mixed radix, the first one most significant: ("shape", "colour") gives
    class shape * 6 + colour, named "circle-red". None: no classes (all zeros, no names).
    """
    if keys is None:
        return torch.zeros(len(images), dtype=torch.long), []
    keys = (keys,) if isinstance(keys, str) else tuple(keys)
    classes, names = torch.zeros(len(images), dtype=torch.long), [""]
    for key in keys:
        values, options = images.label(key), images.classes[key]
        classes = classes * len(options) + values
        names = [f"{a}-{b}" if a else b for a in names for b in options]
    return classes, names


def encode_dataset(tokenizer, data: str, split: str, label: str | tuple[str, ...] | None = None,
                   n: int | None = None, seed: int = 0, cache: bool = True, batch_size: int = 256) -> TokenSet:
    """``data``'s ``split`` encoded by a discrete ``tokenizer`` into a :class:`TokenSet`, read from the cache
    when this tokenizer (same weights) has encoded these arguments before."""
    if not getattr(tokenizer, "is_discrete", True):
        raise ValueError(f"token grids need a discrete tokenizer (vq, fsq, lfq), got a {tokenizer.kind!r} one; "
                         f"encode_latents gives a continuous tokenizer's latents")
    path = cache_path(tokenizer, data, split, label, n, seed)
    if cache and path.is_file():
        return _load(path)
    pixels, classes, names = _pixels(tokenizer, data, split, label, n, seed)  # (N, C, S, S)
    tokens = _encode(tokenizer, pixels, batch_size).long()  # (N, h, w), or (N, L) for a multi-scale tokenizer
    if tokens.ndim not in (2, 3):
        raise ValueError(f"expected the tokenizer to encode images into grids (B, h, w) or sequences (B, L), got "
                         f"{tuple(tokens.shape)}"
                         f"; only a discrete tokenizer (vq, fsq, lfq) makes token datasets")
    result = TokenSet(data, split, tokens, classes, names)
    if cache:
        _save(path, FORMAT, tokens=tokens, classes=classes, class_names=names, name=data, split=split)
    return result


def encode_latents(tokenizer, data: str, split: str, label: str | tuple[str, ...] | None = None,
                   n: int | None = None, seed: int = 0, cache: bool = True, batch_size: int = 256) -> LatentSet:
    """``data``'s ``split`` encoded by a continuous (``kl``) ``tokenizer`` into a :class:`LatentSet` of its
    latents (the posterior means), cached as :func:`encode_dataset`'s grids are."""
    if getattr(tokenizer, "is_discrete", False):
        raise ValueError(f"flow matching needs continuous latents: a 'kl' tokenizer, got a {tokenizer.kind!r} one")
    path = cache_path(tokenizer, data, split, label, n, seed, what="latents")
    if cache and path.is_file():
        payload = _read(path, LATENT_FORMAT)
        return LatentSet(payload["name"], payload["split"], payload["latents"], payload["classes"], payload["class_names"])
    pixels, classes, names = _pixels(tokenizer, data, split, label, n, seed)  # (N, C, S, S)
    latents = _encode(tokenizer, pixels, batch_size)  # (N, C, h, w)
    result = LatentSet(data, split, latents, classes, names)
    if cache:
        _save(path, LATENT_FORMAT, latents=latents, classes=classes, class_names=names, name=data, split=split)
    return result


def _pixels(tokenizer, data: str, split: str, label, n: int | None, seed: int):
    """The images (N, C, S, S) at the tokenizer's channels and size, their classes (N,) and the class names."""
    config = tokenizer.config
    channels, size = config.autoencoder.in_channels, config.image_size
    sized = data in _SIZED or data.startswith("folder:")  # others come at their native size
    images = load_dataset(data, split, n=n, seed=seed, size=size if sized else None)
    classes, names = class_label(images, label)
    return convert_images(images.images, channels, size), classes, names


@torch.no_grad()
def _encode(tokenizer, pixels: torch.Tensor, batch_size: int) -> torch.Tensor:
    was_training = getattr(tokenizer, "training", False)
    tokenizer.eval()
    try:
        device = next(tokenizer.parameters()).device
        out = [tokenizer.encode(batch.to(device)).cpu() for batch in pixels.split(batch_size)]
    finally:
        tokenizer.train(was_training)
    return torch.cat(out)


def fingerprint(tokenizer) -> str:
    """A hash of the tokenizer's config and weights: the cache key's half that names the tokenizer."""
    digest = hashlib.sha256(repr(tokenizer.config).encode())
    for name, value in tokenizer.state_dict().items():
        digest.update(name.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def cache_path(tokenizer, data: str, split: str, label, n: int | None, seed: int, what: str = "tokens") -> Path:
    """Where the tokens (or ``what="latents"``) of these arguments live: ``data/tokens/[latents-]DATA-SPLIT-...-HASH.pt``."""
    label_text = "none" if label is None else "+".join((label,) if isinstance(label, str) else label)
    safe = "".join(ch if ch.isalnum() else "_" for ch in data)
    arguments = hashlib.sha256(f"{data}|{split}|{label_text}|{n}|{seed}".encode()).hexdigest()[:8]
    prefix = "" if what == "tokens" else f"{what}-"
    return data_dir() / "tokens" / f"{prefix}{safe}-{split}-{label_text}-{arguments}-{fingerprint(tokenizer)}.pt"


def _save(path: Path, format: str, **entries) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # then rename: never half a file in the cache
    torch.save({"format": format, **entries}, temp)
    os.replace(temp, path)


def _read(path: Path, format: str) -> dict:
    payload = torch.load(path, weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != format:
        raise ValueError(f"{path} is not a cache of format {format!r}; delete it to re-encode")
    return payload


def _load(path: Path) -> TokenSet:
    payload = _read(path, FORMAT)
    return TokenSet(payload["name"], payload["split"], payload["tokens"], payload["classes"], payload["class_names"])
