"""A generator's run: the tokens or latents it learns, and the one trainer skeleton every generator kind shares.

Every generator of the course learns a tokenizer's view of a labelled dataset: a discrete tokenizer's
token grids (the GPT, MaskGIT) or a continuous tokenizer's latents (the DiT). :func:`training_sets`
encodes both splits once (cached, :mod:`course_lib.datasets.tokens`); :func:`train_generator` is the
whole run of a generator kind, on :func:`course_lib.engine.runs.run_trainer`. A kind supplies only
how to build its model from the sets and how to measure it on a test set: ``tools/train_gpt.py`` is a
dozen lines.

Shapes: N items, h w the token or latent grid, C latent channels.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from torch import nn

from course_lib.datasets.tokens import LatentSet, TokenSet, encode_dataset, encode_latents
from course_lib.engine.checkpoints import load_model, resolve_checkpoint
from course_lib.engine.runs import Trainer, generator_metadata, run_trainer
from course_lib.engine.training import TrainConfig, TrainResult

EVAL_ITEMS = 256  # periodic evaluation during training: the test metric on this many test items


@dataclass
class TrainingSets:
    """A tokenizer (and its checkpoint path) and its view of a dataset's train and test splits."""

    tokenizer_path: Path
    tokenizer: nn.Module
    train: TokenSet | LatentSet
    test: TokenSet | LatentSet

    @property
    def batch(self):
        """What the loop trains on: (values, classes) for a conditional model, else the values."""
        values = self.train.tokens if isinstance(self.train, TokenSet) else self.train.latents
        return (values, self.train.classes) if self.train.num_classes else values

    def head(self, n: int) -> TokenSet | LatentSet:
        """The first ``n`` test items (the periodic evaluation's set)."""
        t = self.test
        values = t.tokens[:n] if isinstance(t, TokenSet) else t.latents[:n]
        return type(t)(t.name, t.split, values, t.classes[:n], t.class_names)


def training_sets(tokenizer: str | Path, data: str, label, n_train: int | None, n_test: int) -> TrainingSets:
    """``tokenizer`` (shipped name or path) loaded once; its grids (discrete) or latents (continuous) of both splits."""
    path = resolve_checkpoint(tokenizer)
    model = load_model(path)
    encode = encode_dataset if model.is_discrete else encode_latents
    return TrainingSets(path, model, encode(model, data, "train", label, n_train),
                        encode(model, data, "test", label, n_test))


def train_generator(kind: str, build: Callable[[TrainingSets], nn.Module],
                    measure: Callable[[nn.Module, TokenSet | LatentSet], dict], preset: str, tokenizer: str | Path,
                    data: str, config: TrainConfig, out: str | Path | None = None, label=None,
                    overrides: dict | None = None, n_train: int | None = None, n_test: int = 1024,
                    resume: bool = False, progress: bool = True, device: str | None = None, loss_fn=None,
                    extra: Callable[[nn.Module], dict] = lambda model: {},
                    eval_items: int = EVAL_ITEMS) -> tuple[nn.Module, TrainResult, dict]:
    """Train the ``kind`` model ``build(sets)`` on ``tokenizer``'s view of ``data`` (class-conditional on
    ``label`` if given); ``measure(model, test_set)`` is its test metric (also run periodically on the first
    ``eval_items`` test items); ``extra(model)`` adds metadata entries of the kind. Returns the model on the cpu."""
    overrides = dict(overrides or {})

    def setup() -> Trainer:
        sets = training_sets(tokenizer, data, label, n_train, n_test)
        model, first = build(sets), sets.head(eval_items)
        metadata = generator_metadata(preset, overrides, data, label, sets.tokenizer_path, sets.train.class_names,
                                      len(sets.train), **extra(model))
        return Trainer(model, sets.batch, metadata, test=lambda m: measure(m, sets.test),
                       test_set={"data": data, "split": "test", "n": len(sets.test)}, loss_fn=loss_fn,
                       eval_fn=lambda m: measure(m, first))
    model, result, metrics = run_trainer(kind, setup, config, out, resume, progress, device)
    return model.cpu(), result, metrics


def token_grid_trainer(kind: str, build_model: Callable[..., nn.Module],
                       measure: Callable[[nn.Module, TokenSet], dict]) -> Callable:
    """The trainer of a generator on token grids: ``build_model(preset, codebook_size=, grid=, num_classes=,
    **overrides)`` sized by the tokenizer and the dataset, then :func:`train_generator`."""
    def trainer(preset: str, tokenizer: str | Path, data: str, config: TrainConfig, out: str | Path | None = None,
                label=None, overrides: dict | None = None, **options) -> tuple[nn.Module, TrainResult, dict]:
        def build(sets: TrainingSets) -> nn.Module:
            return build_model(preset, codebook_size=sets.tokenizer.codebook_size, grid=sets.train.grid,
                               num_classes=sets.train.num_classes, **(overrides or {}))
        return train_generator(kind, build, measure, preset, tokenizer, data, config, out, label, overrides, **options)
    trainer.__doc__ = (f"Train {kind} ``preset`` on ``tokenizer``'s grids of ``data`` (class-conditional on ``label`` "
                       f"if given); ``options`` as :func:`train_generator`'s (n_train, n_test, resume, progress, device).")
    return trainer
