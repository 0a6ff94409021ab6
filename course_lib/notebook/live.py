"""The shipped checkpoint, or a short live run into a temp folder, and say which: one helper for every notebook.

Slow-to-train models ship small checkpoints (``make checkpoints``); a notebook loads them when they
are there and otherwise trains a short stand-in live, into a temporary folder (never into ``data/``),
and says so, as the UvA tutorials' "load if present, else train" and DiT's ``find_model`` do.
:class:`LiveRuns` caches a notebook's short live runs so that each configuration trains once.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable

from torch import nn

from course_lib.engine.checkpoints import find_checkpoint, load_model, read_metadata
from course_lib.engine.seeding import seed_everything
from course_lib.engine.training import TrainConfig, TrainResult, train
from course_lib.paths import CHECKPOINT_DIR
from course_lib.tokenizers.losses import TokenizerLoss
from course_lib.tokenizers.tokenizer import build_tokenizer


def shipped_or_live(name: str, train_fn: Callable[[], nn.Module], device=None,
                    folder: Path = CHECKPOINT_DIR) -> tuple[nn.Module, str]:
    """``(model, "shipped")`` from ``folder/NAME.pt`` when it exists, else ``(train_fn(), "live")``; prints which."""
    path = find_checkpoint(name, folder)
    if path is not None:
        metadata = read_metadata(path)
        recorded = (metadata.get("test_metrics") or {}).get("psnr")
        print(f"loaded shipped {path.name}: {metadata.get('steps', '?')} training steps on "
              f"{metadata.get('train_images', '?')} {metadata.get('data', '')} images"
              + (f"\n  test PSNR recorded at training time {recorded:.2f} dB" if recorded else ""))
        return load_model(path, device), "shipped"
    print(f"NOTE: {name}.pt is not in {folder}\n  (`make checkpoints` makes it): training a short stand-in live instead")
    return train_fn().eval(), "live"


class LiveRuns:
    """Short live runs of tokenizer presets on one training set; each configuration trains once (seed 0).

    Checkpoints go to a temporary folder, so a live run never writes into ``data/``.
    """

    def __init__(self, images, steps: int, warmup: int, batch_size: int = 32, lesson: str = "course"):
        self.images, self.folder = images, Path(tempfile.mkdtemp(prefix=f"{lesson}-"))
        self.config = TrainConfig(steps=steps, batch_size=batch_size, warmup=warmup, seed=0)
        self.runs: dict[str, tuple[nn.Module, TrainResult]] = {}

    def run(self, preset: str, **overrides) -> tuple[nn.Module, TrainResult]:
        """The tokenizer ``preset`` (with ``overrides``) after the short run, and the run itself."""
        seed_everything(0)  # the same initial weights whatever ran before
        model = build_tokenizer(preset, **overrides)
        key = repr(model.config)
        if key not in self.runs:
            result = train(model, self.images, self.config, loss_fn=TokenizerLoss(),
                           checkpoint=self.folder / f"run{len(self.runs)}.pt", progress=False)
            print(f"  trained {preset} {overrides or ''} for {result.steps} steps in {result.seconds:.0f} s")
            self.runs[key] = (model.to("cpu"), result)
        return self.runs[key]

    def shipped_or_live(self, preset: str, data: str) -> tuple[nn.Module, str]:
        """The shipped ``PRESET-DATA`` checkpoint, else this object's short run of ``preset``."""
        return shipped_or_live(f"{preset}-{data}", lambda: self.run(preset)[0])
