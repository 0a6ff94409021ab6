"""Train a tokenizer (on any dataset of the course or a folder of your images), or a generator: a GPT or a
MaskGIT on its tokens, VAR on a multi-scale tokenizer's pyramids, a flow-matching DiT on a KL tokenizer's
latents.

    python -m course_lib.train tokenizer --preset vq-f4 --data shapes --steps 2000 --out runs/vq-f4.pt
    python -m course_lib.train tokenizer --preset fsq-f4 --data folder:~/pictures --steps 5000 \\
        --out runs/fsq.pt --set widths=(32,64,96)
    python -m course_lib.train tokenizer ... --out runs/vq-f4.pt --resume   # continue an interrupted run
    torchrun --nproc_per_node=4 -m course_lib.train tokenizer ...   # data-parallel, --batch-size is global
    python -m course_lib.train gpt --tokenizer vq-f8-shapes --data shapes --label shape,colour \\
        --steps 2000 --out runs/gpt-shapes.pt                                # class-conditional GPT
    python -m course_lib.train maskgit --tokenizer vq-f8-shapes --data shapes --label shape,colour \\
        --steps 4000 --out runs/maskgit-shapes.pt                            # the same tokens, MaskGIT
    python -m course_lib.train var --tokenizer runs/msvq-f4-shapes.pt --data shapes --label shape,colour \\
        --steps 3000 --out runs/var-shapes.pt                    # next-scale prediction on a multi-scale tokenizer
    python -m course_lib.train flow --tokenizer kl-f4-shapes --data shapes --label shape,colour \\
        --steps 12000 --set depth=3 --n-train 32768 --out runs/flow-shapes.pt   # a DiT on KL latents

Images are resized and converted to the preset's size and channels. The checkpoint holds the weights,
the config, the training state (for ``--resume``) and metadata with the test metrics; evaluate it with
``python -m course_lib.evaluate``. Each kind's trainer is found in the recipe registry
(``course_lib.tools.recipes.TRAINERS``); every run is :func:`course_lib.engine.runs.run_trainer`, and each
kind's optimization defaults are ``course_lib.engine.runs.TRAIN_DEFAULTS``.
"""
from __future__ import annotations

import argparse
import ast
import os
import sys
from pathlib import Path

# on a busy machine, OpenMP threads that spin while waiting take the cores the other threads need
# (6x slower measured on 2 shared cores). On an idle 2-core machine passive waiting costs about 30%
# with two threads and nothing with one (make_checkpoints --jobs). Must precede `import torch`.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from course_lib.datasets import DatasetUnavailable  # noqa: E402
from course_lib.engine import distributed  # noqa: E402
from course_lib.engine.commands import run_command  # noqa: E402
from course_lib.engine.runs import TRAIN_DEFAULTS, train_config  # noqa: E402
from course_lib.engine.training import Accelerate, TrainingDiverged  # noqa: E402
from course_lib.generators.dit import dit_presets  # noqa: E402
from course_lib.generators.flow import TIME_SAMPLINGS  # noqa: E402
from course_lib.generators.gpt import gpt_presets  # noqa: E402
from course_lib.generators.maskgit import maskgit_presets  # noqa: E402
from course_lib.generators.var import var_presets  # noqa: E402
from course_lib.tokenizers.tokenizer import tokenizer_presets  # noqa: E402
from course_lib.tools.recipes import TRAINERS  # noqa: E402


def parse_overrides(items: list[str]) -> dict:
    """``["codebook_size=512", "widths=(32,64,64)"]`` -> {"codebook_size": 512, "widths": (32, 64, 64)}."""
    overrides = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set takes KEY=VALUE, got {item!r}")
        try:
            overrides[key.strip()] = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError):
            overrides[key.strip()] = text.strip()  # a bare word is a string: distance=cosine
    return overrides


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m course_lib.train", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="{tokenizer,gpt,maskgit,var,flow}")
    p = commands.add_parser("tokenizer", help="train an image tokenizer")
    p.add_argument("--preset", required=True, choices=sorted(tokenizer_presets), metavar="PRESET",
                   help=f"one of {', '.join(sorted(tokenizer_presets))}")
    p.add_argument("--data", required=True, help="shapes, photos, glyphs, digits, mnist, fashion_mnist, cifar10 or folder:PATH")
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--out", required=True, type=Path, help="checkpoint to write (.pt)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=TRAIN_DEFAULTS["tokenizer"]["lr"])
    p.add_argument("--warmup", type=int, default=None,
                   help=f"default: min({TRAIN_DEFAULTS['tokenizer']['warmup']}, steps // 10)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-every", type=int, default=None, help="default: steps // 10")
    p.add_argument("--n-train", type=int, default=None, help="cap on training images (built-in sets: 8192)")
    p.add_argument("--n-test", type=int, default=1024)
    p.add_argument("--augment", action="store_true", help="random flips, quarter turns and colour-channel orders")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a preset field")
    p.add_argument("--resume", action="store_true", help="continue the run saved at --out")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--device", default=None, help="cpu, cuda or mps (default: best available)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (pays off on long gpu runs)")
    p.add_argument("--no-bf16", action="store_true", help="train in float32 on cuda too (default: bf16 autocast)")
    _generator_parsers(commands)
    return parser.parse_args(argv)


def _generator_parser(commands, name: str, help: str, preset: str, presets: dict, what: str,
                      tokenizer: str) -> argparse.ArgumentParser:
    """A generator's subcommand: the tokenizer and data it learns from, its preset and the optimization."""
    p = commands.add_parser(name, help=help)
    p.add_argument("--tokenizer", required=True, help=f"{tokenizer}: shipped name or .pt path")
    p.add_argument("--data", required=True, help="the dataset to encode: shapes, photos, glyphs, digits, ...")
    p.add_argument("--label", default=None, help="condition on this label (several: shape,colour); default: none")
    p.add_argument("--preset", default=preset, choices=sorted(presets))
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--out", required=True, type=Path, help="checkpoint to write (.pt)")
    p.add_argument("--batch-size", type=int, default=64)
    defaults = TRAIN_DEFAULTS[name]
    p.add_argument("--lr", type=float, default=defaults["lr"])
    p.add_argument("--weight-decay", type=float, default=defaults["weight_decay"])
    p.add_argument("--warmup", type=int, default=None, help=f"default: min({defaults['warmup']}, steps // 10)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-train", type=int, default=None)
    p.add_argument("--n-test", type=int, default=1024)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=f"override {what}")
    p.add_argument("--resume", action="store_true", help="continue the run saved at --out")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--device", default=None, help="cpu, cuda or mps (default: best available)")
    return p


def _generator_parsers(commands) -> None:
    _generator_parser(commands, "gpt", "train a GPT on a tokenizer's token grids", "gpt-small", gpt_presets,
                      "a GPT preset field", "a discrete tokenizer (vq-f8-shapes)")
    _generator_parser(commands, "maskgit", "train a MaskGIT on a tokenizer's token grids", "maskgit-small",
                      maskgit_presets, "a MaskGIT preset field", "a discrete tokenizer (vq-f8-shapes)")
    _generator_parser(commands, "var", "train VAR (next-scale prediction) on a multi-scale tokenizer's pyramids",
                      "var-small", var_presets, "a VAR preset field", "a multi-scale tokenizer (msvq-f4-shapes)")
    p = _generator_parser(commands, "flow", "train a DiT by flow matching on a KL tokenizer's latents", "dit-small",
                          dit_presets, "a DiT preset field", "a KL tokenizer (kl-f4-shapes)")
    p.add_argument("--time-sampling", default="logit-normal", choices=TIME_SAMPLINGS)


SUMMARIES = {  # kind -> its test metrics in words
    "gpt": lambda m: f"{m['bits_per_token']:.3f} bits per token ({m['bits_per_image']:.0f} per image)",
    "maskgit": lambda m: f"{m['bits_per_masked_token']:.3f} bits per masked token",
    "var": lambda m: f"{m['bits_per_token']:.3f} bits per token ({m['bits_per_image']:.0f} per image)",
    "flow": lambda m: f"flow loss {m['flow_loss']:.4f}",
}


def run_generator(args: argparse.Namespace) -> str:
    """Train the generator of ``args.command`` (gpt, maskgit, var or flow); a line saying what was saved."""
    every = max(1, args.steps // 5)
    changes = {"warmup": args.warmup} if args.warmup is not None else {}
    config = train_config(args.command, args.steps, args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                          seed=args.seed, eval_every=every, checkpoint_every=every, **changes)
    label = tuple(args.label.split(",")) if args.label and "," in args.label else args.label
    options = {"time_sampling": args.time_sampling} if args.command == "flow" else {}
    _, result, metrics = TRAINERS[args.command](args.preset, args.tokenizer, args.data, config, args.out, label,
                                                parse_overrides(args.set), n_train=args.n_train, n_test=args.n_test,
                                                resume=args.resume, device=args.device, **options)
    return f"saved {args.out}: {result.steps} steps in {result.seconds:.0f} s, test {SUMMARIES[args.command](metrics)}"


def run(args: argparse.Namespace) -> str:
    if args.out.exists() and not (args.resume or args.overwrite):
        raise ValueError(f"{args.out} exists; pass --resume to continue that run or --overwrite to replace it")
    if args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}")
    if args.command in ("gpt", "maskgit", "var", "flow"):
        return run_generator(args)
    every = args.eval_every if args.eval_every is not None else max(1, args.steps // 10)
    changes = {"warmup": args.warmup} if args.warmup is not None else {}
    config = train_config("tokenizer", args.steps, args.batch_size, lr=args.lr, seed=args.seed, eval_every=every,
                          checkpoint_every=every, **changes)
    _, result, metrics = TRAINERS["tokenizer"](args.preset, args.data, config, args.out, parse_overrides(args.set),
                                               args.n_train, args.n_test, args.augment, args.resume,
                                               device=args.device,
                                               accelerate=Accelerate(bf16=not args.no_bf16, compile=args.compile))
    summary = f"saved {args.out}: {result.steps} steps in {result.seconds:.0f} s"
    if metrics:
        summary += ", test " + ", ".join(f"{k} {metrics[k]:.4g}" for k in ("psnr", "ssim", "usage") if metrics[k] is not None)
    return summary


def main(argv=None) -> int:
    args = parse_args(argv)

    def work() -> None:
        summary = run(args)
        if distributed.setup(args.device).is_main:
            print(summary)
    try:
        return run_command(work, (DatasetUnavailable, TrainingDiverged))
    except KeyboardInterrupt:
        print("\ninterrupted; continue with the same command plus --resume", file=sys.stderr)
        return 130
    finally:
        distributed.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
