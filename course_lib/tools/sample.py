"""Draw samples from a generator checkpoint: a grid PNG, one PNG per sample, and the sampling time.

    python -m course_lib.sample gpt-shapes --n 64 --class circle-red --out grid.png --save-dir samples/ --seed 0
    python -m course_lib.sample gpt-digits --list-classes
    python -m course_lib.sample runs/gpt.pt --n 16 --cfg 3 --temperature 0.9 --top-k 100
    python -m course_lib.sample maskgit-shapes --n 64 --steps 4 --cfg 2
    python -m course_lib.sample flow-shapes --n 64 --steps 8 --method heun --cfg 2 --out grid.png

CKPT is a shipped name (``data/checkpoints/NAME.pt``) or a ``.pt`` path. ``--class`` takes a class
name or index (default: the classes in turn); ``--cfg`` and ``--steps`` exist where the model has
them (a GPT has guidance but no step count: it always takes one step per token; a flow model has
steps, guidance and ``--method`` euler or heun, but no temperature). Settings not given
default to those the checkpoint's scores were measured with (its ``sample_metrics``). The checkpoint
names its tokenizer, which draws the images: from token grids (discrete tokenizers) or from continuous
latents (KL, lesson 09). A new generator kind adds its sampler to ``SAMPLERS``. In Python, ``draw``
samples any generator checkpoint by name and times it.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from einops import rearrange
from PIL import Image

from course_lib.engine.checkpoints import CheckpointError, load_model, read_metadata
from course_lib.engine.runtime import pick_device
from course_lib.tools.train_gpt import resolve_checkpoint


def parse_class(text: str | None, names: list[str]) -> int | None:
    """A class name or index -> its index; None stays None (classes in turn)."""
    if text is None:
        return None
    if not names:
        raise ValueError(f"this generator is unconditional; it takes no --class (got {text!r})")
    if text in names:
        return names.index(text)
    if text.lstrip("-").isdigit() and 0 <= int(text) < len(names):
        return int(text)
    raise ValueError(f"unknown class {text!r}; choose a name or an index 0..{len(names) - 1}: {', '.join(names)}")


def sample_gpt(model, args: argparse.Namespace, classes: torch.Tensor | None, generator: torch.Generator,
               defaults: dict) -> torch.Tensor:
    if getattr(args, "method", None) is not None:
        raise ValueError(f"a GPT draws token by token; it has no --method (got {args.method!r})")
    if args.steps is not None:
        raise ValueError(f"a GPT takes one step per token ({model.config.num_tokens} steps); it has no --steps")
    settings = {**defaults, **{k: v for k, v in _given(args).items() if v is not None}}
    if classes is None:
        settings.pop("cfg", None)  # guidance needs a class
    return model.sample(args.n, classes, generator=generator, **settings)


def _given(args: argparse.Namespace) -> dict:
    return {"temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p, "cfg": args.cfg}


def sample_maskgit(model, args: argparse.Namespace, classes: torch.Tensor | None, generator: torch.Generator,
                   defaults: dict) -> torch.Tensor:
    """MaskGIT: ``--steps`` parallel decoding steps, ``--cfg``, ``--temperature``; no top-k / top-p."""
    unused = [flag for flag, value in (("--top-k", args.top_k), ("--top-p", args.top_p)) if value is not None]
    if unused:
        raise ValueError(f"a MaskGIT samples with --steps, --cfg and --temperature; it has no {' or '.join(unused)}")
    given = {"steps": args.steps, "cfg": args.cfg, "temperature": args.temperature}
    settings = {**defaults, **{k: v for k, v in given.items() if v is not None}}
    if classes is None:
        settings.pop("cfg", None)  # guidance needs a class
    return model.sample(args.n, classes, generator=generator, **settings)


# generator kind (metadata "kind") -> sampler(model, args, classes, generator, the recipe's sampling) -> grids
SAMPLERS: dict[str, Callable] = {"gpt": sample_gpt, "maskgit": sample_maskgit}


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, C, H, W) in [0, 1] -> (B, H, W, C) uint8."""
    return (rearrange(images.clamp(0, 1), "b c h w -> b h w c") * 255).round().byte().numpy()


def save_grid(images: torch.Tensor, path: Path, ncols: int | None = None, pad: int = 2) -> Path:
    """All images in one PNG, ``ncols`` per row (default: a square), ``pad`` black pixels between."""
    b, c, h, w = images.shape
    ncols = ncols or math.ceil(math.sqrt(b))
    nrows = math.ceil(b / ncols)
    canvas = torch.zeros(c, nrows * (h + pad) + pad, ncols * (w + pad) + pad)
    for i, image in enumerate(images):
        top, left = pad + (i // ncols) * (h + pad), pad + (i % ncols) * (w + pad)
        canvas[:, top:top + h, left:left + w] = image.clamp(0, 1)
    return _save_png(to_uint8(canvas[None])[0], path)


def _save_png(array: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(path)
    return path


# ----- lesson 09: flow models, and draw() for any generator -----

def sample_flow(model, args: argparse.Namespace, classes: torch.Tensor | None, generator: torch.Generator,
                defaults: dict) -> torch.Tensor:
    """A flow model (lesson 09): steps, method (euler / heun) and guidance; raw latents (n, C, h, w)."""
    given = {"temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p}
    wrong = sorted(k for k, v in given.items() if v is not None)
    if wrong:
        raise ValueError(f"a flow model integrates an ODE; it has no {', '.join('--' + k.replace('_', '-') for k in wrong)}"
                         f" (it takes --steps, --method and --cfg)")
    chosen = {"steps": args.steps, "method": getattr(args, "method", None), "cfg": args.cfg}
    settings = {**defaults, **{k: v for k, v in chosen.items() if v is not None}}
    if classes is None:
        settings.pop("cfg", None)  # guidance needs a class
    return model.sample(args.n, classes, generator=generator, **settings)


SAMPLERS["flow"] = sample_flow  # continuous latents, decoded by a KL tokenizer


def decode(tokenizer, out: torch.Tensor) -> torch.Tensor:
    """A sampler's output -> images (n, C, H, W) in [0, 1]: token grids (n, h, w) through a discrete
    tokenizer, continuous latents (n, C, h, w) through ``decode_latents``."""
    with torch.no_grad():
        images = tokenizer.decode(out) if tokenizer.is_discrete else tokenizer.decode_latents(out)
    return images.clamp(0, 1).cpu()


SETTINGS = ("steps", "cfg", "method", "temperature", "top_k", "top_p")  # what draw() passes on to a sampler


def draw(checkpoint: str | Path, n: int = 64, classes=None, seed: int = 0, device: str | None = None,
         **settings) -> tuple[torch.Tensor, float]:
    """``n`` images (n, C, H, W) in [0, 1] from a generator checkpoint (shipped name or path) and the seconds
    its sampler took (decoding not included). classes: None (the classes in turn), a class name or index for
    all, or one class per image; settings (``SETTINGS``) default to the checkpoint's recipe, as on the
    command line. The same seed draws the same images."""
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise ValueError(f"unknown sampling settings {unknown}; known: {list(SETTINGS)}")
    path = resolve_checkpoint(checkpoint)
    metadata = read_metadata(path)
    kind, names = metadata.get("kind"), list(metadata.get("class_names") or [])
    if kind not in SAMPLERS:
        raise ValueError(f"{path} holds a {kind!r} model; sample from a generator: one of {list(SAMPLERS)}")
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"--n must be >= 1, got {n}")
    device = pick_device(device)
    model, tokenizer = load_model(path, device), load_model(resolve_checkpoint(metadata["tokenizer"]), device)
    classes = _classes(classes, names, n)
    args = argparse.Namespace(n=n, **{k: settings.get(k) for k in SETTINGS})
    generator = torch.Generator(device).manual_seed(seed)
    recipe = (metadata.get("sample_metrics") or {}).get("sampling") or {}  # how the shipped scores were drawn
    began = time.perf_counter()
    out = SAMPLERS[kind](model, args, None if classes is None else classes.to(device), generator, dict(recipe))
    seconds = time.perf_counter() - began
    return decode(tokenizer, out), seconds


def _classes(classes, names: list[str], n: int) -> torch.Tensor | None:
    """None -> the classes in turn (None for an unconditional model); a name or index -> all; else one per image."""
    if classes is None:
        return torch.arange(n) % len(names) if names else None
    if isinstance(classes, (str, int)):
        return torch.full((n,), parse_class(str(classes), names))
    classes = torch.as_tensor(classes, dtype=torch.long)
    if classes.shape != (n,) or not names or classes.min() < 0 or classes.max() >= len(names):
        raise ValueError(f"expected {n} class indices in [0, {len(names)}), got {tuple(classes.shape)}")
    return classes


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m course_lib.sample", description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", help="a generator: shipped name (gpt-shapes) or .pt path")
    parser.add_argument("--n", type=int, default=64, help="number of samples")
    parser.add_argument("--class", dest="cls", default=None, help="class name or index (default: classes in turn)")
    parser.add_argument("--list-classes", action="store_true", help="print the class names, one per line, and exit")
    parser.add_argument("--out", type=Path, default=None, help="grid PNG to write")
    parser.add_argument("--save-dir", type=Path, default=None, help="folder for one PNG per sample")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cfg", type=float, default=None, help="guidance scale (1 = none; default: the recipe's)")
    parser.add_argument("--steps", type=int, default=None, help="sampling steps, for generators that have them")
    parser.add_argument("--method", choices=("euler", "heun"), default=None,
                        help="flow models: the ODE sampler (default: the recipe's)")
    parser.add_argument("--temperature", type=float, default=None, help="default: the recipe's, else 1")
    parser.add_argument("--top-k", type=int, default=None, help="default: the recipe's, else none")
    parser.add_argument("--top-p", type=float, default=None, help="default: the recipe's, else none")
    parser.add_argument("--device", default=None, help="cpu, cuda or mps (default: best available)")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> dict:
    path = resolve_checkpoint(args.checkpoint)
    metadata = read_metadata(path)
    names = list(metadata.get("class_names") or [])
    if args.list_classes:
        return {"classes": names}
    index = parse_class(args.cls, names)
    settings = {k: getattr(args, k) for k in SETTINGS if getattr(args, k) is not None}
    images, seconds = draw(path, args.n, index, args.seed, args.device, **settings)  # (n, C, H, W)
    classes = _classes(index, names, args.n)
    written = _write(images, classes, names, args)
    return {"checkpoint": str(path), "n": args.n, "sampling_seconds": round(seconds, 3),
            "device": str(pick_device(args.device)), "written": written}


def _write(images: torch.Tensor, classes, names: list[str], args: argparse.Namespace) -> list[str]:
    written = []
    if args.out is not None:
        written.append(str(save_grid(images, args.out)))
    if args.save_dir is not None:
        for i, image in enumerate(to_uint8(images)):
            label = f"-{names[int(classes[i])]}" if classes is not None else ""
            written.append(str(_save_png(image, args.save_dir / f"sample{i:04d}{label}.png")))
    return written


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        result = run(args)
    except (ValueError, CheckpointError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if args.list_classes:
        print("\n".join(result["classes"]))
        return 0
    print(f"sampled {result['n']} in {result['sampling_seconds']:.2f} s on {result['device']}", file=sys.stderr)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
