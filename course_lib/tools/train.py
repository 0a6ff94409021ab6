"""Train a tokenizer (on any dataset of the course or a folder of your images), or a generator: a GPT or a
MaskGIT on its tokens, a flow-matching DiT on a KL tokenizer's latents.

    python -m course_lib.train tokenizer --preset vq-f4 --data shapes --steps 2000 --out runs/vq-f4.pt
    python -m course_lib.train tokenizer --preset fsq-f4 --data folder:~/pictures --steps 5000 \\
        --out runs/fsq.pt --set widths=(32,64,96)
    python -m course_lib.train tokenizer ... --out runs/vq-f4.pt --resume   # continue an interrupted run
    torchrun --nproc_per_node=4 -m course_lib.train tokenizer ...   # data-parallel, --batch-size is global
    python -m course_lib.train gpt --tokenizer vq-f8-shapes --data shapes --label shape,colour \\
        --steps 2000 --out runs/gpt-shapes.pt                                # class-conditional GPT
    python -m course_lib.train maskgit --tokenizer vq-f8-shapes --data shapes --label shape,colour \\
        --steps 4000 --out runs/maskgit-shapes.pt                            # the same tokens, MaskGIT
    python -m course_lib.train flow --tokenizer kl-f4-shapes --data shapes --label shape,colour \\
        --steps 12000 --set depth=3 --n-train 32768 --out runs/flow-shapes.pt   # a DiT on KL latents

Images are resized and converted to the preset's size and channels. The checkpoint holds the weights,
the config, the training state (for ``--resume``) and metadata with the test metrics; evaluate it with
``python -m course_lib.evaluate``. Training itself is :func:`course_lib.engine.training.train`; a GPT's run
is :mod:`course_lib.tools.train_gpt`, a MaskGIT's :mod:`course_lib.tools.train_maskgit`, a flow model's
:mod:`course_lib.tools.train_flow`.
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

import torch  # noqa: E402

from course_lib.datasets import DatasetUnavailable
from course_lib.datasets.augment import augment_images
from course_lib.datasets.images import load_images
from course_lib.engine import distributed
from course_lib.engine.checkpoints import (CheckpointError, check_metadata, load_checkpoint, load_model,
                                          update_metadata)
from course_lib.engine.seeding import seed_everything
from course_lib.engine.training import Accelerate, TrainConfig, TrainingDiverged, TrainResult, train
from course_lib.evaluation.reconstruction import evaluate_tokenizer
from course_lib.generators.dit import dit_presets
from course_lib.generators.flow import TIME_SAMPLINGS
from course_lib.generators.gpt import gpt_presets
from course_lib.generators.maskgit import maskgit_presets
from course_lib.tools.train_flow import train_flow
from course_lib.tools.train_gpt import train_gpt
from course_lib.tools.train_maskgit import train_maskgit
from course_lib.tokenizers.losses import TokenizerLoss
from course_lib.tokenizers.tokenizer import Tokenizer, build_tokenizer, tokenizer_presets

EVAL_IMAGES = 256  # periodic evaluation during training: PSNR and usage on this many test images


def train_tokenizer(preset: str, data: str, config: TrainConfig, out: str | Path | None = None,
                    overrides: dict | None = None, n_train: int | None = None, n_test: int = 1024,
                    augment: bool = False, resume: bool = False, progress: bool = True,
                    device: str | None = None, accelerate: Accelerate | None = None, loss_fn=None,
                    init: str | Path | None = None, metadata: dict | None = None,
                    ) -> tuple[Tokenizer, TrainResult, dict | None]:
    """Build ``preset`` (with ``overrides``), train it on ``data``, and evaluate it on the test split.

    ``augment`` trains on :func:`augment_images` variants of the training images. ``loss_fn``
    (default ``TokenizerLoss()``) may be a loss object with a second player (lesson 06's
    ``VQGANLoss``); ``init`` starts from the weights of a checkpoint of the same configuration (a
    fine-tune); ``metadata`` adds or replaces entries of the checkpoint's metadata.

    Returns the model, the run, and the test metrics (None for a folder too small to have a test split);
    with ``out`` the checkpoint's metadata records preset, overrides, data, seed and the test metrics.
    """
    overrides = dict(overrides or {})
    seed_everything(config.seed)
    # channels-last convolutions are faster in oneDNN (CPU) and cuDNN; weights load into either layout
    model = build_tokenizer(preset, **overrides).to(memory_format=torch.channels_last)
    if init is not None:
        _load_init(model, init)
    channels, size = model.config.autoencoder.in_channels, model.config.image_size
    train_images = load_images(data, "train", channels, size, n_train)
    if augment:
        train_images = augment_images(train_images, seed=config.seed)
    test_images = _test_images(data, channels, size, n_test)
    metadata = {"kind": "tokenizer", "preset": preset, "overrides": overrides, "data": data,
                "train_images": len(train_images), "augment": augment, "seed": config.seed, **(metadata or {})}
    if resume and out is not None and Path(out).is_file():
        # every identity entry must match, a fine-tune's loss config and starting checkpoint included
        check_metadata(load_checkpoint(out)["metadata"], metadata, out)
    eval_fn = None if test_images is None else _periodic_eval(test_images[:EVAL_IMAGES])
    result = train(model, train_images, config, loss_fn=loss_fn or TokenizerLoss(), eval_fn=eval_fn,
                   checkpoint=out, resume=resume, metadata=metadata, device=device, progress=progress,
                   accelerate=accelerate)
    if not distributed.setup(device).is_main:  # under torchrun, rank 0 evaluates and writes
        return model, result, None
    metrics = None if test_images is None else evaluate_tokenizer(model, test_images)
    if out is not None:
        test_set = None if test_images is None else {"data": data, "split": "test", "n": len(test_images)}
        update_metadata(out, test_metrics=metrics, test_set=test_set)
    return model, result, metrics


def _load_init(model: Tokenizer, init: str | Path) -> None:
    start = load_model(init)
    if start.config != model.config:
        raise ValueError(f"cannot start from {init}: it holds a {start.config}, this run trains a {model.config}")
    model.load_state_dict(start.state_dict())  # copies into the channels-last tensors


def _test_images(data: str, channels: int, size: int, n: int) -> torch.Tensor | None:
    try:
        return load_images(data, "test", channels, size, n)
    except ValueError:
        if data.startswith("folder:"):  # fewer than 10 files: every 10th file is a test image
            return None
        raise


def _periodic_eval(images: torch.Tensor):
    def eval_fn(model) -> dict:
        metrics = evaluate_tokenizer(model, images, with_ssim=False)
        return {k: metrics[k] for k in ("psnr", "usage") if metrics[k] is not None}
    return eval_fn


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
    commands = parser.add_subparsers(dest="command", required=True, metavar="{tokenizer,gpt,maskgit,flow}")
    p = commands.add_parser("tokenizer", help="train an image tokenizer")
    p.add_argument("--preset", required=True, choices=sorted(tokenizer_presets), metavar="PRESET",
                   help=f"one of {', '.join(sorted(tokenizer_presets))}")
    p.add_argument("--data", required=True, help="shapes, photos, glyphs, digits, mnist, fashion_mnist, cifar10 or folder:PATH")
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--out", required=True, type=Path, help="checkpoint to write (.pt)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=None, help="default: min(100, steps // 10)")
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


def _generator_parser(commands, name: str, help: str, preset: str, presets: dict, what: str, tokenizer: str,
                      lr: float = 2e-3, weight_decay: float = 0.05) -> argparse.ArgumentParser:
    """A generator's subcommand: the tokenizer and data it learns from, its preset and the optimization."""
    p = commands.add_parser(name, help=help)
    p.add_argument("--tokenizer", required=True, help=f"{tokenizer}: shipped name or .pt path")
    p.add_argument("--data", required=True, help="the dataset to encode: shapes, photos, glyphs, digits, ...")
    p.add_argument("--label", default=None, help="condition on this label (several: shape,colour); default: none")
    p.add_argument("--preset", default=preset, choices=sorted(presets))
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--out", required=True, type=Path, help="checkpoint to write (.pt)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=lr)
    p.add_argument("--weight-decay", type=float, default=weight_decay)
    p.add_argument("--warmup", type=int, default=None, help="default: min(200, steps // 10)")
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
    p = _generator_parser(commands, "flow", "train a DiT by flow matching on a KL tokenizer's latents", "dit-small",
                          dit_presets, "a DiT preset field", "a KL tokenizer (kl-f4-shapes)", lr=1e-3, weight_decay=0.0)
    p.add_argument("--time-sampling", default="logit-normal", choices=TIME_SAMPLINGS)


def run_generator(args: argparse.Namespace) -> str:
    """Train the generator of ``args.command`` (gpt, maskgit or flow); a line saying what was saved."""
    eval_every = max(1, args.steps // 5)
    config = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                         warmup=args.warmup if args.warmup is not None else min(200, args.steps // 10),
                         seed=args.seed, eval_every=eval_every, checkpoint_every=eval_every)
    label = tuple(args.label.split(",")) if args.label and "," in args.label else args.label
    common = (args.preset, args.tokenizer, args.data, config, args.out, label, parse_overrides(args.set),
              args.n_train, args.n_test)
    trainer, options, summary = {
        "gpt": (train_gpt, {}, lambda m: f"{m['bits_per_token']:.3f} bits per token ({m['bits_per_image']:.0f} per image)"),
        "maskgit": (train_maskgit, {}, lambda m: f"{m['bits_per_masked_token']:.3f} bits per masked token"),
        "flow": (train_flow, {"time_sampling": args.time_sampling} if args.command == "flow" else {},
                 lambda m: f"flow loss {m['flow_loss']:.4f}"),
    }[args.command]
    _, result, metrics = trainer(*common, **options, resume=args.resume, device=args.device)
    return f"saved {args.out}: {result.steps} steps in {result.seconds:.0f} s, test {summary(metrics)}"


def run(args: argparse.Namespace) -> str:
    if args.out.exists() and not (args.resume or args.overwrite):
        raise ValueError(f"{args.out} exists; pass --resume to continue that run or --overwrite to replace it")
    if args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}")
    if args.command in ("gpt", "maskgit", "flow"):
        return run_generator(args)
    eval_every = args.eval_every if args.eval_every is not None else max(1, args.steps // 10)
    config = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                         warmup=args.warmup if args.warmup is not None else min(100, args.steps // 10),
                         eval_every=eval_every, checkpoint_every=eval_every)
    model, result, metrics = train_tokenizer(args.preset, args.data, config, args.out, parse_overrides(args.set),
                                             args.n_train, args.n_test, args.augment, args.resume,
                                             device=args.device,
                                             accelerate=Accelerate(bf16=not args.no_bf16, compile=args.compile))
    summary = f"saved {args.out}: {result.steps} steps in {result.seconds:.0f} s"
    if metrics:
        summary += ", test " + ", ".join(f"{k} {metrics[k]:.4g}" for k in ("psnr", "ssim", "usage") if metrics[k] is not None)
    return summary


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        summary = run(args)
        if distributed.setup(args.device).is_main:
            print(summary)
    except (ValueError, DatasetUnavailable, CheckpointError, TrainingDiverged, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted; continue with the same command plus --resume", file=sys.stderr)
        return 130
    finally:
        distributed.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
