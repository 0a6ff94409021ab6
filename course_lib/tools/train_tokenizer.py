"""Train a tokenizer on any dataset of the course or a folder of images, and measure it on the test split.

    python -m course_lib.train tokenizer --preset vq-f4 --data shapes --steps 2000 --out runs/vq-f4.pt

The images are converted to the preset's size and channels; the run is
:func:`course_lib.engine.runs.run_trainer` with the tokenizer's loss (or a loss object with a second
player, lesson 06's ``VQGANLoss``), and the test metrics are PSNR, SSIM, codebook usage and bits.
"""
from __future__ import annotations

from pathlib import Path

import torch

from course_lib.datasets.augment import augment_images
from course_lib.datasets.images import load_images
from course_lib.engine.checkpoints import load_model
from course_lib.engine.runs import Trainer, run_trainer
from course_lib.engine.training import Accelerate, TrainConfig, TrainResult
from course_lib.evaluation.reconstruction import evaluate_tokenizer
from course_lib.tokenizers.losses import TokenizerLoss
from course_lib.tokenizers.tokenizer import Tokenizer, build_tokenizer

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

    def setup() -> Trainer:
        # channels-last convolutions are faster in oneDNN (CPU) and cuDNN; weights load into either layout
        model = build_tokenizer(preset, **overrides).to(memory_format=torch.channels_last)
        if init is not None:
            _load_init(model, init)
        channels, size = model.config.autoencoder.in_channels, model.config.image_size
        train_images = load_images(data, "train", channels, size, n_train)
        if augment:
            train_images = augment_images(train_images, seed=config.seed)
        test_images = _test_images(data, channels, size, n_test)
        return Trainer(model, train_images,
                       {"preset": preset, "overrides": overrides, "data": data, "train_images": len(train_images),
                        "augment": augment, **(metadata or {})},
                       test=lambda m: None if test_images is None else evaluate_tokenizer(m, test_images),
                       test_set=None if test_images is None else {"data": data, "split": "test", "n": len(test_images)},
                       loss_fn=loss_fn or TokenizerLoss(),
                       eval_fn=None if test_images is None else _periodic_eval(test_images[:EVAL_IMAGES]))
    return run_trainer((metadata or {}).get("kind", "tokenizer"), setup, config, out, resume, progress, device,
                       accelerate)


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
