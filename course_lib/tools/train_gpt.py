"""Train a GPT on a tokenizer's token grids, and measure it: test NLL in bits per token and per image.

    python -m course_lib.train gpt --tokenizer vq-f8-shapes --data shapes --label shape,colour --steps 2000 \\
        --out runs/gpt-shapes.pt

The tokenizer (a shipped name or a checkpoint path) encodes the dataset once (cached in
``data/tokens/``); the GPT (:mod:`course_lib.generators.gpt`) trains on the grids through
:func:`course_lib.generators.runs.train_generator`. The checkpoint's metadata records the tokenizer, the
class names (for ``python -m course_lib.sample --list-classes``) and the test NLL; a recipe with a
yardstick classifier adds the scores of samples (``Yardstick.measure``).
"""
from __future__ import annotations

import torch

from course_lib.datasets.tokens import TokenSet
from course_lib.generators.codec import nll_bits
from course_lib.generators.gpt import GPT, build_gpt
from course_lib.generators.runs import token_grid_trainer


def bits_per_token(model: GPT, tokens: TokenSet, batch_size: int = 256) -> float:
    """Mean test NLL in bits per token (teacher forcing)."""
    conditional = model.config.num_classes > 0
    bits = [nll_bits(model, t, c if conditional else None)
            for t, c in zip(tokens.tokens.split(batch_size), tokens.classes.split(batch_size))]
    return float(torch.cat(bits).mean()) / model.config.num_tokens


def _measure(model: GPT, tokens: TokenSet) -> dict:
    per_token = bits_per_token(model, tokens)
    return {"bits_per_token": per_token, "bits_per_image": per_token * model.config.num_tokens}


train_gpt = token_grid_trainer("gpt", build_gpt, _measure)
