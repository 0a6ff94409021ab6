"""Checkpoint recipes: how each shipped checkpoint in ``data/checkpoints/`` is made, for any kind of model.

A recipe names its kind (which builder trains it), its preset and data, the optimization, and the
shipped checkpoints it builds on (``needs``): a generator recipe needs the tokenizer whose tokens it
models. ``make checkpoints`` makes them in dependency order (:func:`build_order`). A later lesson adds
its models as new recipes and, for a new kind, a builder in ``BUILDERS``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from course_lib.engine.training import TrainConfig, TrainResult
from course_lib.tools.train import train_tokenizer
from course_lib.tools.train_classifier import train_classifier
from course_lib.tools.train_gpt import record_sample_metrics, train_gpt


@dataclass(frozen=True)
class Recipe:
    """One shipped checkpoint: kind, preset (+ overrides), data, optimization, dataset sizes, dependencies."""

    kind: str  # which builder makes it: one of BUILDERS
    preset: str
    data: str
    train: TrainConfig
    needs: tuple[str, ...] = ()  # recipes whose shipped checkpoints this one builds on
    overrides: dict = field(default_factory=dict)
    n_train: int | None = None  # None: the dataset's default (8192 for built-in sets)
    n_test: int = 1024
    augment: bool = False
    label: str | tuple[str, ...] | None = None  # classifiers and conditional generators: the classes
    sampling: dict = field(default_factory=dict)  # generators: how the yardstick's samples are drawn


def _steps(steps: int, batch_size: int, lr: float = 2e-3) -> TrainConfig:
    return TrainConfig(steps=steps, batch_size=batch_size, lr=lr, warmup=200, eval_every=steps // 5,
                       checkpoint_every=steps // 10)


def _tokenizer(preset: str, data: str, train: TrainConfig, **options) -> Recipe:
    return Recipe("tokenizer", preset, data, train, **options)


def _classifier(data: str, label, steps: int = 1200) -> Recipe:
    return Recipe("classifier", "classifier-small", data, _steps(steps, 64), label=label)


def _gpt(data: str, needs: tuple[str, ...], steps: int, batch_size: int, **options) -> Recipe:
    """A GPT on the tokens of ``needs[0]`` (a tokenizer), scored by ``needs[1]`` (a classifier) if given."""
    train = TrainConfig(steps=steps, batch_size=batch_size, lr=2e-3, warmup=100, weight_decay=0.05,
                        eval_every=steps // 5, checkpoint_every=steps // 10)
    return Recipe("gpt", "gpt-small", data, train, needs=needs, **options)


# photos: few source photos, so the crops are augmented (+1.5 dB test PSNR); batch 32 learns more
# per second of CPU than 64 on this small model
RECIPES: dict[str, Recipe] = {
    "vq-f4-shapes": _tokenizer("vq-f4", "shapes", _steps(1500, 64)),
    "fsq-f4-shapes": _tokenizer("fsq-f4", "shapes", _steps(1500, 64)),
    "kl-f4-shapes": _tokenizer("kl-f4", "shapes", _steps(1500, 64)),
    "vq-f4-photos": _tokenizer("vq-f4", "photos", _steps(8000, 32), n_train=16384, augment=True),
    "fsq-f4-photos": _tokenizer("fsq-f4", "photos", _steps(8000, 32), n_train=16384, augment=True),
    "kl-f4-photos": _tokenizer("kl-f4", "photos", _steps(8000, 32), n_train=16384, augment=True),
    # lesson 07's class-conditional GPTs model these: 4x4 grids of K = 256 (a GPT on 8x8 grids of K = 1024
    # trained for the same minutes drew shapes of the right colour but only 60% of the right shape)
    "vq-f8-shapes": _tokenizer("vq-f8", "shapes", _steps(1500, 64), overrides={"codebook_size": 256}),
    "vq-f8-glyphs": _tokenizer("vq-f8", "glyphs", _steps(1500, 64), overrides={"in_channels": 1, "codebook_size": 256}),  # grey
    # the yardstick of lesson 07's samples: the classes its conditional GPTs are asked for
    "classifier-shapes": _classifier("shapes", ("shape", "colour")),
    "classifier-digits": _classifier("digits", "char"),
    # lesson 07: class-conditional GPTs (scored with the sampling settings given) and the photo compressor's prior
    # shapes: 8192 training grids overfit (train 1.6, test 2.4 bits per token) and samples drew the
    # right class 75% of the time; a generated dataset can simply be larger
    "gpt-shapes": _gpt("shapes", ("vq-f8-shapes", "classifier-shapes"), 2000, 64, label=("shape", "colour"),
                       n_train=32768, sampling={"cfg": 2.0, "top_k": 10}),
    # digits: guidance 2 draws the right digit 96% of the time in notebook 07's sweep, 3 over-guides (92%)
    "gpt-digits": _gpt("digits", ("vq-f8-glyphs", "classifier-digits"), 2000, 64, label="char", sampling={"cfg": 2.0}),
    "gpt-photos": _gpt("photos", ("vq-f4-photos",), 1000, 32, n_train=16384),
}


def _make_tokenizer(recipe: Recipe, run: Path, progress: bool) -> TrainResult:
    _, result, _ = train_tokenizer(recipe.preset, recipe.data, recipe.train, run, recipe.overrides, recipe.n_train,
                                   recipe.n_test, recipe.augment, resume=True, progress=progress)
    return result


def _make_classifier(recipe: Recipe, run: Path, progress: bool) -> TrainResult:
    _, result, _ = train_classifier(recipe.preset, recipe.data, recipe.label, recipe.train, run, recipe.n_train,
                                    recipe.n_test, resume=True, progress=progress)
    return result


def _make_gpt(recipe: Recipe, run: Path, progress: bool) -> TrainResult:
    _, result, _ = train_gpt(recipe.preset, recipe.needs[0], recipe.data, recipe.train, run, recipe.label,
                             recipe.overrides, recipe.n_train, recipe.n_test, resume=True, progress=progress)
    if len(recipe.needs) > 1:  # the yardstick: class accuracy and distance of samples, floor and ceiling
        record_sample_metrics(run, recipe.needs[0], recipe.needs[1], recipe.sampling)
    return result


# kind -> builder(recipe, run_path, progress): trains (resuming the run at run_path) and writes it there
BUILDERS: dict[str, Callable[[Recipe, Path, bool], TrainResult]] = {"tokenizer": _make_tokenizer, "classifier": _make_classifier, "gpt": _make_gpt}


def build_order(names: list[str], recipes: dict[str, Recipe] = RECIPES) -> list[str]:
    """``names`` and everything they need, each after what it needs (a depth-first topological order)."""
    order, visiting = [], set()

    def visit(name: str, wanted_by: str | None) -> None:
        if name not in recipes:
            by = f" (needed by {wanted_by})" if wanted_by else ""
            raise ValueError(f"unknown recipe {name!r}{by}; known: {list(recipes)}")
        if name in order:
            return
        if name in visiting:
            raise ValueError(f"recipes depend on each other in a cycle through {name!r}")
        visiting.add(name)
        for needed in recipes[name].needs:
            visit(needed, name)
        visiting.discard(name)
        order.append(name)

    for name in names:
        visit(name, None)
    return order


def depth(name: str, recipes: dict[str, Recipe] = RECIPES) -> int:
    """0 for a recipe that needs nothing, else 1 + the depth of its deepest need: recipes of one depth can
    be made side by side."""
    return max((1 + depth(n, recipes) for n in recipes[name].needs), default=0)
