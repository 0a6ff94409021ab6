"""Train a MaskGIT on a tokenizer's token grids, and measure it: bits per masked token.

    python -m course_lib.train maskgit --tokenizer vq-f8-shapes --data shapes --label shape,colour --steps 4000 \\
        --out runs/maskgit-shapes.pt

The tokenizer encodes the dataset once (cached in ``data/tokens/``), the MaskGIT
(:mod:`course_lib.generators.maskgit`) trains on the grids through
:func:`course_lib.generators.runs.train_generator`, and the checkpoint's metadata records the
tokenizer, the class names and the test loss in bits per masked token (masks drawn through the
schedule from a fixed seed, so the number is comparable between runs; it is not the GPT's bits per
token: a masked model has no exact likelihood).
"""
from __future__ import annotations

import math

import torch

from course_lib.datasets.tokens import TokenSet
from course_lib.generators.maskgit import MaskGIT, build_maskgit
from course_lib.generators.runs import token_grid_trainer


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


train_maskgit = token_grid_trainer("maskgit", build_maskgit,
                                   lambda model, tokens: {"bits_per_masked_token": masked_bits(model, tokens)})
