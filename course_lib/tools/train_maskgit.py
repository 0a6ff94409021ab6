"""Train a MaskGIT on a tokenizer's token grids, and measure it: masked-token NLL, and the yardstick on its samples.

    python -m course_lib.train maskgit --tokenizer vq-f8-shapes --data shapes --label shape,colour --steps 4000 \\
        --out runs/maskgit-shapes.pt

Mirrors :mod:`course_lib.tools.train_gpt`: the tokenizer encodes the dataset once (cached in
``data/tokens/``), the MaskGIT (:mod:`course_lib.generators.maskgit`) trains on the grids with
:func:`course_lib.engine.training.train`, and the checkpoint's metadata records the tokenizer, the
class names and the test loss in bits per masked token (masks drawn through the schedule from a fixed
seed, so the number is comparable between runs; it is not the GPT's bits per token: a masked model
has no exact likelihood). With a yardstick classifier, ``record_sample_metrics`` of train_gpt (it
serves any generator with ``sample``) adds the class accuracy and distance of samples.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch

from course_lib.datasets.tokens import TokenSet
from course_lib.engine.checkpoints import load_model, update_metadata
from course_lib.engine.seeding import seed_everything
from course_lib.engine.training import TrainConfig, TrainResult, train
from course_lib.generators.maskgit import MaskGIT, build_maskgit
from course_lib.tools.train_gpt import (EVAL_GRIDS, check_resume, record_sample_metrics, resolve_checkpoint,
                                       run_metadata, token_sets)

__all__ = ["masked_bits", "record_sample_metrics", "train_maskgit"]


@torch.no_grad()
def masked_bits(model: MaskGIT, tokens: TokenSet, batch_size: int = 256, seed: int = 0) -> float:
    """Mean test cross-entropy in bits per masked token, masks drawn through the schedule from ``seed``."""
    was_training = model.training
    model.eval()
    device = model.head.weight.device
    generator = torch.Generator(device).manual_seed(seed)
    conditional = model.config.num_classes > 0
    total, count = 0.0, 0
    for t, c in zip(tokens.tokens.split(batch_size), tokens.classes.split(batch_size)):
        total += float(model(t.to(device), c.to(device) if conditional else None, generator=generator)) * len(t)
        count += len(t)
    model.train(was_training)
    return total / count / math.log(2)


def train_maskgit(preset: str, tokenizer: str | Path, data: str, config: TrainConfig, out: str | Path | None = None,
                  label=None, overrides: dict | None = None, n_train: int | None = None, n_test: int = 1024,
                  resume: bool = False, progress: bool = True,
                  device: str | None = None) -> tuple[MaskGIT, TrainResult, dict]:
    """Train ``preset`` on ``tokenizer``'s grids of ``data`` (class-conditional on ``label`` if given)."""
    overrides = dict(overrides or {})
    seed_everything(config.seed)
    tokenizer_path = resolve_checkpoint(tokenizer)
    codec = load_model(tokenizer_path)
    train_set, test_set = token_sets(codec, data, label, n_train, n_test)
    model = build_maskgit(preset, codebook_size=codec.codebook_size, grid=train_set.grid,
                          num_classes=train_set.num_classes, **overrides)
    metadata = run_metadata("maskgit", preset, overrides, data, label, tokenizer_path, train_set.class_names,
                            len(train_set), config.seed)
    check_resume(out, resume, metadata)
    batch = (train_set.tokens, train_set.classes) if train_set.num_classes else train_set.tokens
    eval_set = TokenSet(data, "test", test_set.tokens[:EVAL_GRIDS], test_set.classes[:EVAL_GRIDS], test_set.class_names)
    result = train(model, batch, config, eval_fn=lambda m: {"bits_per_masked_token": masked_bits(m, eval_set)},
                   checkpoint=out, resume=resume, metadata=metadata, device=device, progress=progress)
    metrics = {"bits_per_masked_token": masked_bits(model, test_set)}
    if out is not None:
        update_metadata(out, test_metrics=metrics, test_set={"data": data, "split": "test", "n": len(test_set)})
    return model.cpu(), result, metrics
