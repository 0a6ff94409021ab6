"""Train VAR (next-scale prediction) on a multi-scale tokenizer's token pyramids, and measure it: test NLL in
bits per token, per image and per scale.

    python -m course_lib.train tokenizer --preset msvq-f4 --data shapes --steps 1500 --out runs/msvq-f4-shapes.pt
    python -m course_lib.train var --tokenizer runs/msvq-f4-shapes.pt --data shapes --label shape,colour \\
        --steps 3000 --out runs/var-shapes.pt

The tokenizer (a shipped name or a checkpoint path, of kind ``msvq``) encodes the dataset once (cached in
``data/tokens/``, one (L,) sequence per image, its scales joined); VAR (:mod:`course_lib.generators.var`)
takes the tokenizer's pyramid and a frozen copy of its codebook and phi convolutions, and trains through
:func:`course_lib.generators.runs.train_generator`.
"""
from __future__ import annotations

from pathlib import Path

from course_lib.datasets.tokens import TokenSet
from course_lib.engine.training import TrainConfig, TrainResult
from course_lib.generators.runs import TrainingSets, train_generator
from course_lib.generators.var import VAR, bits_per_scale, build_var


def _measure(model: VAR, tokens: TokenSet) -> dict:
    per_scale = bits_per_scale(model, tokens)
    sizes = [k * k for k in model.config.scales]
    per_image = sum(b * n for b, n in zip(per_scale, sizes))
    by_scale = {f"bits_per_token_{k}": bits for k, bits in zip(model.config.scales, per_scale)}  # by the side
    return {"bits_per_token": per_image / sum(sizes), "bits_per_image": per_image, **by_scale}


def train_var(preset: str, tokenizer: str | Path, data: str, config: TrainConfig, out: str | Path | None = None,
              label=None, overrides: dict | None = None, **options) -> tuple[VAR, TrainResult, dict]:
    """Train VAR ``preset`` on ``tokenizer``'s pyramids of ``data`` (class-conditional on ``label`` if given);
    ``options`` as :func:`train_generator`'s (n_train, n_test, resume, progress, device)."""
    def build(sets: TrainingSets) -> VAR:
        return build_var(preset, sets.tokenizer, num_classes=sets.train.num_classes, **(overrides or {}))
    return train_generator("var", build, _measure, preset, tokenizer, data, config, out, label, overrides, **options)
