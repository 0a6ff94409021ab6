"""Train a DiT by flow matching on a KL tokenizer's continuous latents, and measure it with the yardstick.

    python -m course_lib.train flow --tokenizer kl-f4-shapes --data shapes --label shape,colour --steps 12000 \\
        --set depth=3 --n-train 32768 --out runs/flow-shapes.pt

The tokenizer (a shipped name or a checkpoint path, kind "kl") encodes the dataset once into latents
(the posterior means, cached in ``data/tokens/``); the DiT (:mod:`course_lib.generators.dit`) fits its
``LatentNormalizer`` on them (lesson 05's scale factor) and trains on them with
:func:`course_lib.engine.training.train` and the flow-matching loss (:mod:`course_lib.generators.flow`).
The checkpoint's metadata records the tokenizer, the class names, the time sampling and the test
flow loss; with a yardstick classifier, ``record_sample_metrics`` of :mod:`course_lib.tools.train_gpt`
adds the class accuracy and distance of samples drawn with the recipe's sampling settings.

Shapes: N images, C latent channels, h w the latent grid.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from course_lib.datasets.tokens import fingerprint
from course_lib.engine.checkpoints import load_model, update_metadata
from course_lib.engine.seeding import seed_everything
from course_lib.engine.training import TrainConfig, TrainResult, train
from course_lib.generators.dit import DiT, build_dit
from course_lib.paths import data_dir
from course_lib.tools.train_classifier import labelled_images
from course_lib.tools.train_gpt import RUN_IDENTITY, check_resume, resolve_checkpoint, run_metadata

EVAL_LATENTS = 512  # periodic evaluation during training: the test flow loss on this many latents
LATENT_FORMAT = "course_lib.latents/1"


def latent_set(tokenizer, data: str, split: str, label, n: int | None) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """The latents (N, C, h, w) of ``data``'s ``split`` under a KL tokenizer (posterior means), the classes (N,)
    and the class names; cached in ``data/tokens/`` under the tokenizer's weights."""
    if tokenizer.is_discrete:
        raise ValueError(f"flow matching needs continuous latents: a 'kl' tokenizer, got a {tokenizer.kind!r} one")
    label_text = "none" if label is None else "+".join((label,) if isinstance(label, str) else label)
    path = data_dir() / "tokens" / f"latents-{data}-{split}-{label_text}-{n}-{fingerprint(tokenizer)}.pt"
    if path.is_file():
        payload = torch.load(path, weights_only=True)
        if payload.get("format") == LATENT_FORMAT:
            return payload["latents"], payload["classes"], payload["class_names"]
    images, classes, names = labelled_images(data, split, label, n)
    tokenizer.eval()
    with torch.no_grad():
        latents = torch.cat([tokenizer.encode(batch) for batch in images.split(256)])  # (N, C, h, w)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # then rename: never half a file in the cache
    torch.save({"format": LATENT_FORMAT, "latents": latents, "classes": classes, "class_names": names}, temp)
    os.replace(temp, path)
    return latents, classes, names


def flow_test_loss(model: DiT, latents: torch.Tensor, classes: torch.Tensor | None, time_sampling: str,
                   seed: int = 0, batch_size: int = 256) -> float:
    """The flow-matching loss on held-out latents, with fixed times and noise (``seed``): comparable across runs."""
    generator = torch.Generator(model.head.weight.device).manual_seed(seed)
    device = model.head.weight.device
    losses = []
    with torch.no_grad():
        for i in range(0, len(latents), batch_size):
            batch = latents[i:i + batch_size].to(device)
            c = None if classes is None else classes[i:i + batch_size].to(device)
            losses.append(float(model.loss(batch, c, time_sampling, generator)) * len(batch))
    return sum(losses) / len(latents)


def train_flow(preset: str, tokenizer: str | Path, data: str, config: TrainConfig, out: str | Path | None = None,
               label=None, overrides: dict | None = None, n_train: int | None = None, n_test: int = 1024,
               time_sampling: str = "logit-normal", resume: bool = False, progress: bool = True,
               device: str | None = None) -> tuple[DiT, TrainResult, dict]:
    """Train DiT ``preset`` on ``tokenizer``'s latents of ``data`` (class-conditional on ``label`` if given)."""
    overrides = dict(overrides or {})
    seed_everything(config.seed)
    tokenizer_path = resolve_checkpoint(tokenizer)
    kl = load_model(tokenizer_path)
    train_latents, train_classes, names = latent_set(kl, data, "train", label, n_train)
    test_latents, test_classes, _ = latent_set(kl, data, "test", label, n_test)
    model = build_dit(preset, channels=train_latents.shape[1], grid=tuple(train_latents.shape[2:]),
                      num_classes=len(names), **overrides)
    model.fit_normalizer(train_latents)  # lesson 05's scale factor: unit-variance latents for N(0, I) noise
    metadata = run_metadata("flow", preset, overrides, data, label, tokenizer_path, names, len(train_latents),
                            config.seed, time_sampling=time_sampling, latent_scale=float(model.normalizer.scale))
    check_resume(out, resume, metadata, RUN_IDENTITY + ("time_sampling",))
    conditional = bool(names)
    batch = (train_latents, train_classes) if conditional else train_latents

    def loss_fn(m: DiT, b):
        latents, classes = b if conditional else (b, None)
        return m.loss(latents, classes, time_sampling)

    def eval_fn(m: DiT) -> dict:
        c = test_classes[:EVAL_LATENTS] if conditional else None
        return {"flow_loss": flow_test_loss(m, test_latents[:EVAL_LATENTS], c, time_sampling)}

    result = train(model, batch, config, loss_fn=loss_fn, eval_fn=eval_fn, checkpoint=out, resume=resume,
                   metadata=metadata, device=device, progress=progress)
    metrics = {"flow_loss": flow_test_loss(model, test_latents, test_classes if conditional else None, time_sampling)}
    if out is not None:
        update_metadata(out, test_metrics=metrics, test_set={"data": data, "split": "test", "n": len(test_latents)})
    return model.cpu(), result, metrics
