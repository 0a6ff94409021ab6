"""Train a GPT on a tokenizer's token grids, and measure it: test NLL, and the yardstick on its samples.

    python -m course_lib.train gpt --tokenizer vq-f8-shapes --data shapes --label shape,colour --steps 2000 \\
        --out runs/gpt-shapes.pt

The tokenizer (a shipped name or a checkpoint path) encodes the dataset once (cached in
``data/tokens/``, :mod:`course_lib.datasets.tokens`); the GPT (:mod:`course_lib.generators.gpt`)
trains on the grids with :func:`course_lib.engine.training.train`. The checkpoint's metadata records
the tokenizer, the class names (for ``python -m course_lib.sample --list-classes``) and the test NLL
in bits per token and per image; with a yardstick classifier, also the class accuracy and the
classifier-feature Frechet distance of samples, beside the floor and the ceiling.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from course_lib.datasets.tokens import TokenSet, encode_dataset
from course_lib.engine.checkpoints import check_metadata, load_checkpoint, load_model, read_metadata, update_metadata
from course_lib.engine.seeding import seed_everything
from course_lib.engine.training import TrainConfig, TrainResult, train
from course_lib.evaluation.yardstick import Yardstick
from course_lib.generators.codec import nll_bits
from course_lib.generators.gpt import GPT, build_gpt
from course_lib.paths import CHECKPOINT_DIR
from course_lib.tools.train_classifier import images_in_turn, labelled_images

EVAL_GRIDS = 256  # periodic evaluation during training: test NLL on this many grids
SAMPLES = 1024  # the yardstick scores this many samples (classes in turn)


def resolve_checkpoint(name_or_path: str | Path) -> Path:
    """A shipped checkpoint's name (``vq-f4-shapes``) or a path to a ``.pt`` file -> the path."""
    path = Path(name_or_path)
    if path.suffix == ".pt":
        if not path.is_file():
            raise ValueError(f"no checkpoint at {path}")
        return path
    shipped = CHECKPOINT_DIR / f"{name_or_path}.pt"
    if not shipped.is_file():
        known = sorted(p.stem for p in CHECKPOINT_DIR.glob("*.pt"))
        raise ValueError(f"{name_or_path!r} is neither a .pt file nor a shipped checkpoint; shipped: {known}")
    return shipped



RUN_IDENTITY = ("preset", "overrides", "data", "label", "tokenizer", "train_images")  # a resumed run must match


def run_metadata(kind: str, preset: str, overrides: dict, data: str, label, tokenizer_path: Path,
                 class_names: list[str], train_images: int, seed: int, **extra) -> dict:
    """A generator run's metadata: what it is, what it was trained on (the tokenizer by its shipped name
    where it is shipped), its classes and seed, and any ``extra`` entries of its kind."""
    shipped = tokenizer_path.parent == CHECKPOINT_DIR
    return {"kind": kind, "preset": preset, "overrides": overrides, "data": data, "label": label,
            "tokenizer": str(tokenizer_path.stem if shipped else tokenizer_path), "class_names": class_names,
            "train_images": train_images, **extra, "seed": seed}


def check_resume(out: str | Path | None, resume: bool, metadata: dict, identity: tuple[str, ...] = RUN_IDENTITY) -> None:
    """Refuse to resume the run saved at ``out`` when any ``identity`` entry of its metadata differs."""
    if resume and out is not None and Path(out).is_file():
        check_metadata(load_checkpoint(out)["metadata"], {k: metadata[k] for k in identity}, out)

def token_sets(tokenizer, data: str, label, n_train: int | None, n_test: int) -> tuple[TokenSet, TokenSet]:
    return (encode_dataset(tokenizer, data, "train", label, n_train),
            encode_dataset(tokenizer, data, "test", label, n_test))


def bits_per_token(model: GPT, tokens: TokenSet, batch_size: int = 256) -> float:
    """Mean test NLL in bits per token (teacher forcing)."""
    conditional = model.config.num_classes > 0
    bits = [nll_bits(model, t, c if conditional else None)
            for t, c in zip(tokens.tokens.split(batch_size), tokens.classes.split(batch_size))]
    return float(torch.cat(bits).mean()) / model.config.num_tokens


def train_gpt(preset: str, tokenizer: str | Path, data: str, config: TrainConfig, out: str | Path | None = None,
              label=None, overrides: dict | None = None, n_train: int | None = None, n_test: int = 1024,
              resume: bool = False, progress: bool = True, device: str | None = None) -> tuple[GPT, TrainResult, dict]:
    """Train ``preset`` on ``tokenizer``'s grids of ``data`` (class-conditional on ``label`` if given)."""
    overrides = dict(overrides or {})
    seed_everything(config.seed)
    tokenizer_path = resolve_checkpoint(tokenizer)
    train_set, test_set = token_sets(load_model(tokenizer_path), data, label, n_train, n_test)
    model = build_gpt(preset, codebook_size=_codebook_size(tokenizer_path), grid=train_set.grid,
                      num_classes=train_set.num_classes, **overrides)
    metadata = run_metadata("gpt", preset, overrides, data, label, tokenizer_path, train_set.class_names,
                            len(train_set), config.seed)
    check_resume(out, resume, metadata)
    batch = (train_set.tokens, train_set.classes) if train_set.num_classes else train_set.tokens
    eval_set = TokenSet(data, "test", test_set.tokens[:EVAL_GRIDS], test_set.classes[:EVAL_GRIDS], test_set.class_names)
    result = train(model, batch, config, eval_fn=lambda m: {"bits_per_token": bits_per_token(m, eval_set)},
                   checkpoint=out, resume=resume, metadata=metadata, device=device, progress=progress)
    per_token = bits_per_token(model, test_set)
    metrics = {"bits_per_token": per_token, "bits_per_image": per_token * model.config.num_tokens}
    if out is not None:
        update_metadata(out, test_metrics=metrics, test_set={"data": data, "split": "test", "n": len(test_set)})
    return model.cpu(), result, metrics


def _codebook_size(tokenizer_path: Path) -> int:
    return load_model(tokenizer_path).codebook_size


def sample_metrics(gpt: GPT, tokenizer, classifier, data: str, label, sampling: dict, n: int = SAMPLES,
                   seed: int = 0) -> dict:
    """The yardstick on ``n`` class-conditional samples (classes in turn), beside its floor and ceiling."""
    train_images, _, _ = labelled_images(data, "train", label, 4096)
    test_images, test_classes, _ = images_in_turn(data, "test", label, n)  # the samples' class proportions
    yardstick = Yardstick(classifier, train_images)
    classes = torch.arange(n) % gpt.config.num_classes  # (n,)
    generator = torch.Generator(gpt.head.weight.device).manual_seed(seed)
    began = time.perf_counter()
    grids = torch.cat([gpt.sample(len(c), c, generator=generator, **sampling) for c in classes.split(256)])
    seconds = time.perf_counter() - began
    with torch.no_grad():
        images = torch.cat([tokenizer.decode(g).clamp(0, 1) for g in grids.split(256)])
    return {"sampling": sampling, "n": n, "seconds": round(seconds, 2), "samples": yardstick.score(images, classes),
            **yardstick.references(test_images, test_classes, tokenizer), "chance": yardstick.chance}


def record_sample_metrics(path: str | Path, tokenizer: str | Path, classifier: str | Path, sampling: dict) -> dict:
    """Measure the GPT at ``path`` with the yardstick and record it in its metadata as ``sample_metrics``."""
    metadata = read_metadata(path)
    metrics = sample_metrics(load_model(path), load_model(resolve_checkpoint(tokenizer)),
                             load_model(resolve_checkpoint(classifier)), metadata["data"], metadata["label"], sampling)
    update_metadata(path, sample_metrics=metrics)
    return metrics
