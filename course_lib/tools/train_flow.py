"""Train a DiT by flow matching on a KL tokenizer's continuous latents, and measure its test flow loss.

    python -m course_lib.train flow --tokenizer kl-f4-shapes --data shapes --label shape,colour --steps 12000 \\
        --set depth=3 --n-train 32768 --out runs/flow-shapes.pt

The tokenizer (a shipped name or a checkpoint path, kind "kl") encodes the dataset once into latents
(the posterior means, cached in ``data/tokens/``); the DiT (:mod:`course_lib.generators.dit`) fits its
``LatentNormalizer`` on them (lesson 05's scale factor) and trains on them with the flow-matching loss
(:mod:`course_lib.generators.flow`) through :func:`course_lib.generators.runs.train_generator`. The
checkpoint's metadata records the tokenizer, the class names, the time sampling, the latent scale and
the test flow loss (fixed times and noise).
"""
from __future__ import annotations

from pathlib import Path

from course_lib.engine.training import TrainConfig, TrainResult
from course_lib.generators.dit import DiT, build_dit, flow_test_loss
from course_lib.generators.runs import TrainingSets, train_generator

EVAL_LATENTS = 512  # periodic evaluation during training: the test flow loss on this many latents


def train_flow(preset: str, tokenizer: str | Path, data: str, config: TrainConfig, out: str | Path | None = None,
               label=None, overrides: dict | None = None, time_sampling: str = "logit-normal",
               **options) -> tuple[DiT, TrainResult, dict]:
    """Train DiT ``preset`` on ``tokenizer``'s latents of ``data`` (class-conditional on ``label`` if given);
    ``options`` as :func:`train_generator`'s (n_train, n_test, resume, progress, device)."""
    def build(sets: TrainingSets) -> DiT:
        if sets.tokenizer.is_discrete:
            raise ValueError(f"flow matching needs continuous latents: a 'kl' tokenizer, got a "
                             f"{sets.tokenizer.kind!r} one (--tokenizer kl-f4-shapes)")
        latents = sets.train.latents  # (N, C, h, w)
        model = build_dit(preset, channels=latents.shape[1], grid=tuple(latents.shape[2:]),
                          num_classes=sets.train.num_classes, **(overrides or {}))
        model.fit_normalizer(latents)  # lesson 05's scale factor: unit-variance latents for N(0, I) noise
        return model

    def measure(model: DiT, test) -> dict:
        classes = test.classes if test.num_classes else None
        return {"flow_loss": flow_test_loss(model, test.latents, classes, time_sampling)}

    def loss(model: DiT, batch):
        latents, classes = batch if isinstance(batch, (tuple, list)) else (batch, None)
        return model.loss(latents, classes, time_sampling)

    return train_generator("flow", build, measure, preset, tokenizer, data, config, out, label, overrides,
                           loss_fn=loss, eval_items=EVAL_LATENTS, **options,
                           extra=lambda m: {"time_sampling": time_sampling, "latent_scale": float(m.normalizer.scale)})
