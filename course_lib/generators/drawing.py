"""Sampling as a library call: ``draw(model, n, classes, settings)`` for every kind of generator.

LlamaGen's ``generate.py`` is library code that its sample scripts call; here the command line
(``python -m course_lib.sample``), the checkpoint recipes and the notebooks share :func:`draw` and
:func:`draw_checkpoint`. Each generator module registers its model class with the settings its
``sample`` takes (:func:`register`), so a new kind of generator adds a line in its own module, not a
branch here. Settings are a plain dict; a setting the kind does not have is refused with the ones it
has. What a generator draws becomes images through its tokenizer (:func:`to_images`): token grids
(B, h, w) through a discrete tokenizer, continuous latents (B, C, h, w) through a KL one.

Shapes: B samples, C channels, H W image size, h w the token or latent grid.
"""
from __future__ import annotations

import importlib
import pkgutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from course_lib.engine.checkpoints import load_model, read_metadata, resolve_checkpoint
from course_lib.engine.runtime import pick_device


@dataclass(frozen=True)
class SamplerKind:
    """A generator kind: the name its checkpoints carry (metadata ``kind``), the settings of its ``sample``,
    and one phrase on how it draws (for messages)."""

    kind: str
    settings: tuple[str, ...]
    how: str


KINDS: dict[str, SamplerKind] = {}  # metadata kind -> its sampler
_BY_CLASS: dict[type, SamplerKind] = {}


def register(model_class: type, kind: str, settings: tuple[str, ...], how: str) -> None:
    """Called by a generator module for its model class: ``model.sample(n, classes, generator=, **settings)``."""
    entry = SamplerKind(kind, tuple(settings), how)
    KINDS[kind], _BY_CLASS[model_class] = entry, entry


def known_kinds() -> list[str]:
    """Every registered generator kind (each module of ``course_lib.generators`` imported once)."""
    package = importlib.import_module("course_lib.generators")
    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{module.name}")
    return sorted(KINDS)


def kind_of(model: nn.Module) -> SamplerKind:
    """The registered sampler of ``model``'s class, or a ValueError naming the generators there are."""
    for cls in type(model).__mro__:
        if cls in _BY_CLASS:
            return _BY_CLASS[cls]
    raise ValueError(f"a {type(model).__name__} is not a generator; sample from one of {known_kinds()}")


def check_settings(kind: SamplerKind, settings: dict) -> None:
    """Refuse the settings ``kind`` does not have, in one line that names the ones it has."""
    wrong = sorted(set(settings) - set(kind.settings))
    if wrong:
        flags = " or ".join("--" + k.replace("_", "-") for k in wrong)
        takes = ", ".join("--" + k.replace("_", "-") for k in kind.settings)
        raise ValueError(f"{kind.how}; it has no {flags} (it takes {takes}); unknown sampling settings {wrong}")


@torch.no_grad()
def draw(model: nn.Module, n: int, classes: torch.Tensor | None = None, settings: dict | None = None,
         generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` samples of ``model`` (token grids (n, h, w) or latents (n, C, h, w)) for ``classes`` (None or (n,)),
    with ``settings`` (a dict of the kind's sampling settings); guidance is dropped when there is no class."""
    kind = kind_of(model)
    settings = {k: v for k, v in (settings or {}).items() if v is not None}
    check_settings(kind, settings)
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be >= 1, got {n!r}")
    if classes is None:
        settings.pop("cfg", None)  # guidance needs a class
    return model.sample(n, classes, generator=generator, **settings)


@torch.no_grad()
def to_images(tokenizer, out: torch.Tensor) -> torch.Tensor:
    """What a generator drew -> images (n, C, H, W) in [0, 1] on the cpu: token grids (n, h, w) through a
    discrete tokenizer, continuous latents (n, C, h, w) through a continuous one."""
    tokenizer.eval()
    return tokenizer.decode(out).clamp(0, 1).cpu()


def recorded_settings(metadata: dict) -> dict:
    """The sampling settings a generator checkpoint's scores were measured with (its ``sample_metrics``)."""
    return dict((metadata.get("sample_metrics") or {}).get("sampling") or {})


def parse_class(text: str | int | None, names: list[str]) -> int | None:
    """A class name or index -> its index; None stays None (classes in turn)."""
    if text is None:
        return None
    if not names:
        raise ValueError(f"this generator is unconditional; it takes no class (got {text!r})")
    text = str(text)
    if text in names:
        return names.index(text)
    if text.lstrip("-").isdigit() and 0 <= int(text) < len(names):
        return int(text)
    raise ValueError(f"unknown class {text!r}; choose a name or an index 0..{len(names) - 1}: {', '.join(names)}")


def classes_for(classes, names: list[str], n: int) -> torch.Tensor | None:
    """None -> the classes in turn (None for an unconditional model); a name or index -> all; else one per image."""
    if classes is None:
        return torch.arange(n) % len(names) if names else None
    if isinstance(classes, (str, int)):
        return torch.full((n,), parse_class(classes, names))
    classes = torch.as_tensor(classes, dtype=torch.long)
    if classes.shape != (n,) or not names or classes.min() < 0 or classes.max() >= len(names):
        raise ValueError(f"expected {n} class indices in [0, {len(names)}), got {tuple(classes.shape)}")
    return classes


def draw_checkpoint(checkpoint: str | Path, n: int = 64, classes=None, seed: int = 0, device: str | None = None,
                    settings: dict | None = None) -> tuple[torch.Tensor, float]:
    """``n`` images (n, C, H, W) in [0, 1] from a generator checkpoint (shipped name or path), and the seconds its
    sampler took (decoding not included). classes: None (the classes in turn), a class name or index for all,
    or one class per image; settings default to those the checkpoint's scores were measured with. The same
    seed draws the same images."""
    path = resolve_checkpoint(checkpoint)
    metadata = read_metadata(path)
    if metadata.get("kind") not in known_kinds():
        raise ValueError(f"{path} holds a {metadata.get('kind')!r} model; sample from a generator checkpoint: "
                         f"one of the kinds {known_kinds()} (python -m course_lib.sample gpt-shapes)")
    device = pick_device(device)
    model = load_model(path, device)
    tokenizer = load_model(resolve_checkpoint(metadata["tokenizer"]), device)
    wanted = classes_for(classes, list(metadata.get("class_names") or []), n) if isinstance(n, int) else None
    check_settings(KINDS[metadata["kind"]], {k: v for k, v in (settings or {}).items() if v is not None})
    chosen = {**recorded_settings(metadata), **{k: v for k, v in (settings or {}).items() if v is not None}}
    generator = torch.Generator(device).manual_seed(seed)
    began = time.perf_counter()
    out = draw(model, n, None if wanted is None else wanted.to(device), chosen, generator)
    return to_images(tokenizer, out), time.perf_counter() - began
