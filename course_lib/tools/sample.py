"""Draw samples from a generator checkpoint: a grid PNG, one PNG per sample, and the sampling time.

    python -m course_lib.sample gpt-shapes --n 64 --class circle-red --out grid.png --save-dir samples/ --seed 0
    python -m course_lib.sample gpt-digits --list-classes
    python -m course_lib.sample runs/gpt.pt --n 16 --cfg 3 --temperature 0.9 --top-k 100
    python -m course_lib.sample maskgit-shapes --n 64 --steps 4 --cfg 2
    python -m course_lib.sample flow-shapes --n 64 --steps 8 --method heun --cfg 2 --out grid.png

CKPT is a shipped name (``data/checkpoints/NAME.pt``) or a ``.pt`` path. ``--class`` takes a class
name or index (default: the classes in turn). Each kind of generator has its own settings (a GPT:
temperature, top-k, top-p, guidance; a MaskGIT: steps, temperature, guidance; a flow model: steps,
method, guidance); a setting the model lacks is refused. Settings not given default to those the
checkpoint's scores were measured with (its ``sample_metrics``). The checkpoint names its tokenizer,
which draws the images. Parse -> :func:`course_lib.generators.drawing.draw_checkpoint` -> write.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from course_lib.engine.checkpoints import read_metadata, resolve_checkpoint
from course_lib.engine.commands import run_command
from course_lib.engine.png import save_grid, save_png, to_uint8
from course_lib.engine.runtime import pick_device
from course_lib.generators.drawing import classes_for, draw_checkpoint, known_kinds, parse_class

SETTINGS = ("steps", "cfg", "guidance", "method", "temperature", "top_k", "top_p")  # the flags that are sampling settings


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
    parser.add_argument("--guidance", choices=("ramp", "constant"), default=None,
                        help="VAR: guidance ramped with the scale (default) or constant")
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
    if metadata.get("kind") not in known_kinds():
        raise ValueError(f"{path} holds a {metadata.get('kind')!r} model; sample from a generator checkpoint "
                         f"(kinds {known_kinds()}), e.g. python -m course_lib.sample gpt-shapes")
    names = list(metadata.get("class_names") or [])
    if args.list_classes:
        return {"classes": names}
    index = parse_class(args.cls, names)
    settings = {k: getattr(args, k) for k in SETTINGS if getattr(args, k) is not None}
    images, seconds = draw_checkpoint(path, args.n, index, args.seed, args.device, settings)  # (n, C, H, W)
    written = write_samples(images, classes_for(index, names, args.n), names, args.out, args.save_dir)
    return {"checkpoint": str(path), "n": args.n, "sampling_seconds": round(seconds, 3),
            "device": str(pick_device(args.device)), "written": written}


def write_samples(images, classes, names: list[str], grid: Path | None, folder: Path | None) -> list[str]:
    """The grid PNG and one PNG per sample (named with its class), as asked; the paths written."""
    written = [str(save_grid(images, grid))] if grid is not None else []
    if folder is not None:
        for i, image in enumerate(to_uint8(images)):
            label = f"-{names[int(classes[i])]}" if classes is not None else ""
            written.append(str(save_png(image, folder / f"sample{i:04d}{label}.png")))
    return written


def main(argv=None) -> int:
    args = parse_args(argv)

    def work() -> None:
        result = run(args)
        if args.list_classes:
            print("\n".join(result["classes"]))
            return
        print(f"sampled {result['n']} in {result['sampling_seconds']:.2f} s on {result['device']}", file=sys.stderr)
        print(json.dumps(result))
    return run_command(work)


if __name__ == "__main__":
    sys.exit(main())
