"""Train the small tokenizers that later lessons load, into ``data/checkpoints/`` (``make checkpoints``).

    python -m course_lib.make_checkpoints                 # every recipe whose file is missing
    python -m course_lib.make_checkpoints --only vq-f4-photos --force
    python -m course_lib.make_checkpoints --list

Each recipe trains on 2 CPU cores in well under 20 minutes. Runs write their resumable state to
``data/runs/`` (git-ignored), so an interrupted ``make checkpoints`` continues where it stopped; the
shipped file keeps only weights + metadata (preset, overrides, data, steps, seed, test metrics on
the held-out split, training time, code version) and stays under 5 MB.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from dataclasses import dataclass, field

import torch

from .checkpoints import CHECKPOINT_DIR, ROOT, CheckpointError, export_weights, read_metadata, update_metadata
from .train import train_tokenizer
from .training import TrainConfig, TrainingDiverged

RUN_DIR = ROOT / "data" / "runs"
MAX_BYTES = 5 * 2**20


@dataclass(frozen=True)
class Recipe:
    """One shipped checkpoint: preset (+ overrides), data, optimization, and dataset sizes."""

    preset: str
    data: str
    train: TrainConfig
    overrides: dict = field(default_factory=dict)
    n_train: int | None = None  # None: the dataset's default (8192 for built-in sets)
    n_test: int = 1024


def _steps(steps: int, lr: float = 2e-3, batch_size: int = 64) -> TrainConfig:
    return TrainConfig(steps=steps, batch_size=batch_size, lr=lr, warmup=min(200, steps // 10),
                       eval_every=steps // 5, checkpoint_every=steps // 10)


# shapes are simple: a few minutes each; photos need more steps and more crops to reach >= 29 dB
RECIPES: dict[str, Recipe] = {
    "vq-f4-shapes": Recipe("vq-f4", "shapes", _steps(1500)),
    "fsq-f4-shapes": Recipe("fsq-f4", "shapes", _steps(1500)),
    "kl-f4-shapes": Recipe("kl-f4", "shapes", _steps(1500)),
    "vq-f4-photos": Recipe("vq-f4", "photos", _steps(5000), n_train=16384),
    "fsq-f4-photos": Recipe("fsq-f4", "photos", _steps(5000), n_train=16384),
    "kl-f4-photos": Recipe("kl-f4", "photos", _steps(5000), n_train=16384),
}


def make(name: str, force: bool = False, progress: bool = True) -> dict:
    """Train recipe ``name`` (resuming its run if one was interrupted) and ship its checkpoint."""
    recipe, out, run = RECIPES[name], CHECKPOINT_DIR / f"{name}.pt", RUN_DIR / f"{name}.pt"
    if force:
        run.unlink(missing_ok=True)
    began = time.perf_counter()
    _, result, metrics = train_tokenizer(recipe.preset, recipe.data, recipe.train, run, recipe.overrides,
                                         recipe.n_train, recipe.n_test, resume=True, progress=progress)
    seconds = time.perf_counter() - began
    update_metadata(run, recipe=name, train_seconds=round(seconds, 1), machine=_machine(),
                    resumed=result.steps < recipe.train.steps)
    export_weights(run, out)
    size = out.stat().st_size
    if size > MAX_BYTES:
        raise ValueError(f"{out} is {size / 2**20:.1f} MB, over the {MAX_BYTES / 2**20:.0f} MB limit")
    return read_metadata(out)


def _machine() -> dict:
    return {"cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__}


def summary_line(name: str) -> str:
    path = CHECKPOINT_DIR / f"{name}.pt"
    if not path.is_file():
        return f"{name:16s} (not made yet)"
    metadata, size = read_metadata(path), path.stat().st_size / 2**20
    metrics = metadata.get("test_metrics") or {}
    parts = [f"{k} {metrics[k]:.4g}" for k in ("psnr", "ssim", "usage", "perplexity") if metrics.get(k) is not None]
    return f"{name:16s} {size:4.1f} MB  {metadata.get('train_seconds', 0):6.0f} s  " + ", ".join(parts)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m course_lib.make_checkpoints", description=__doc__.split("\n")[0])
    parser.add_argument("--only", action="append", default=[], metavar="NAME",
                        help=f"make only these (repeat or comma-separate): {', '.join(RECIPES)}")
    parser.add_argument("--force", action="store_true", help="retrain even when the checkpoint exists")
    parser.add_argument("--list", action="store_true", help="list the recipes and what is shipped")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    names = [n.strip() for item in args.only for n in item.split(",") if n.strip()] or list(RECIPES)
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        print(f"error: unknown checkpoint(s) {unknown}; choose from {list(RECIPES)}", file=sys.stderr)
        return 1
    if args.list:
        print("\n".join(summary_line(n) for n in RECIPES))
        return 0
    for name in names:
        if (CHECKPOINT_DIR / f"{name}.pt").is_file() and not args.force:
            print(f"{name}: already shipped (use --force to retrain)")
            continue
        print(f"{name}: training", flush=True)
        try:
            make(name, args.force)
        except (ValueError, CheckpointError, TrainingDiverged) as error:
            print(f"error: {name}: {error}", file=sys.stderr)
            return 1
        print(summary_line(name), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
