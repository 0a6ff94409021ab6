"""Checkpoint recipes: how each shipped checkpoint in ``data/checkpoints/`` is made, for any kind of model.

A recipe names its kind (which builder trains it), its preset and data, the optimization, and the
shipped checkpoints it builds on (``needs``): a generator recipe needs the tokenizer whose tokens it
models. ``make checkpoints`` makes them in dependency order (:func:`build_order`). A later lesson adds
its models as new recipes and, for a new kind, its trainer in ``TRAINERS`` and a builder in ``BUILDERS``.

This is the tools' registry: the command lines find every trainer here (``TRAINERS``), and no other
module of ``tools/`` imports another.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from course_lib.datasets.images import load_images
from course_lib.engine.checkpoints import load_model, read_metadata, resolve_checkpoint, update_metadata
from course_lib.engine.runs import train_config
from course_lib.engine.training import TrainConfig, TrainResult
from course_lib.evaluation.perceptual_eval import perceptual_report
from course_lib.evaluation.yardstick import Yardstick
from course_lib.generators.drawing import draw
from course_lib.paths import CHECKPOINT_DIR
from course_lib.tokenizers.perceptual import FeatureDistance, feature_net_train_config, train_feature_net
from course_lib.tokenizers.vqgan_loss import VQGANLoss, VQGANLossConfig
from course_lib.tools.train_classifier import train_classifier
from course_lib.tools.train_flow import train_flow
from course_lib.tools.train_gpt import train_gpt
from course_lib.tools.train_maskgit import train_maskgit
from course_lib.tools.train_tokenizer import train_tokenizer
from course_lib.tools.train_var import train_var

SAMPLES = 1024  # a generator's yardstick scores this many samples (classes in turn)


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
    loss: dict = field(default_factory=dict)  # "vqgan": the fields of VQGANLossConfig


def _tokenizer(preset: str, data: str, steps: int, batch_size: int, **options) -> Recipe:
    # the recipes' tokenizers: lr 2e-3 and 200 warm-up steps (the command line's defaults are 1e-3 and 100)
    return Recipe("tokenizer", preset, data, train_config("tokenizer", steps, batch_size, lr=2e-3, warmup=200), **options)


def _classifier(data: str, label, steps: int = 1200) -> Recipe:
    return Recipe("classifier", "classifier-small", data, train_config("classifier", steps, 64, warmup=200), label=label)


def _generator(kind: str, preset: str, data: str, needs: tuple[str, ...], steps: int, batch_size: int,
               warmup: int, **options) -> Recipe:
    """A generator of ``kind`` on the tokens or latents of ``needs[0]`` (a tokenizer), scored by ``needs[1]``
    (a classifier) if given."""
    return Recipe(kind, preset, data, train_config(kind, steps, batch_size, warmup=warmup), needs=needs, **options)


def _gpt(data: str, needs: tuple[str, ...], steps: int, batch_size: int, **options) -> Recipe:
    return _generator("gpt", "gpt-small", data, needs, steps, batch_size, 100, **options)


def _maskgit(data: str, needs: tuple[str, ...], steps: int, batch_size: int, **options) -> Recipe:
    return _generator("maskgit", "maskgit-small", data, needs, steps, batch_size, 100, **options)


def _flow(data: str, needs: tuple[str, ...], steps: int, batch_size: int, **options) -> Recipe:
    return _generator("flow", "dit-small", data, needs, steps, batch_size, 200, **options)


# lesson 06's fine-tune: a low learning rate and small weights. With perceptual_weight 0.02, gan_weight 0.5
# and lr 2e-4 the adaptive weight of a fresh discriminator (about 3) wrecked the reconstructions within
# 30 steps; with 0.02, 0.1 and 1e-4 the PSNR cost was 2 dB by step 600 (on the 256-crop periodic evaluation)
VQGAN_TRAIN = TrainConfig(steps=1200, batch_size=32, lr=1e-4, warmup=100, eval_every=200, checkpoint_every=100)
VQGAN_LOSS = {"perceptual_weight": 0.005, "gan_weight": 0.05, "gan_start": 200, "discriminator": "patchgan-16",
              "discriminator_seed": 0}  # D is built before the run seeds itself: its own seed makes rebuilds identical

# photos: few source photos, so the crops are augmented (+1.5 dB test PSNR); batch 32 learns more
# per second of CPU than 64 on this small model
RECIPES: dict[str, Recipe] = {
    "vq-f4-shapes": _tokenizer("vq-f4", "shapes", 1500, 64),
    "fsq-f4-shapes": _tokenizer("fsq-f4", "shapes", 1500, 64),
    "kl-f4-shapes": _tokenizer("kl-f4", "shapes", 1500, 64),
    "vq-f4-photos": _tokenizer("vq-f4", "photos", 8000, 32, n_train=16384, augment=True),
    "fsq-f4-photos": _tokenizer("fsq-f4", "photos", 8000, 32, n_train=16384, augment=True),
    "kl-f4-photos": _tokenizer("kl-f4", "photos", 8000, 32, n_train=16384, augment=True),
    # lesson 07's class-conditional GPTs model these: 4x4 grids of K = 256 (a GPT on 8x8 grids of K = 1024
    # trained for the same minutes drew shapes of the right colour but only 60% of the right shape)
    "vq-f8-shapes": _tokenizer("vq-f8", "shapes", 1500, 64, overrides={"codebook_size": 256}),
    "vq-f8-glyphs": _tokenizer("vq-f8", "glyphs", 1500, 64, overrides={"in_channels": 1, "codebook_size": 256}),  # grey
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
    # lesson 08: MaskGITs on the same tokens, data and yardstick as the GPTs, scored at 8 parallel steps.
    # shapes: 4000 steps drew the right class 83% of the time (cfg 2), 10000 steps 90%; temperature 0.7 is
    # the MaskGIT's fidelity knob as top-k 10 is the GPT's (93.0% and distance 2.48 against 90.3% and 3.0 at 1.0)
    "maskgit-shapes": _maskgit("shapes", ("vq-f8-shapes", "classifier-shapes"), 10000, 64, label=("shape", "colour"),
                               n_train=32768, sampling={"steps": 8, "cfg": 2.0, "temperature": 0.7}),
    # digits: 97.3% at temperature 1, 98.2% (distance 0.88 against 1.11) at 0.7
    "maskgit-digits": _maskgit("digits", ("vq-f8-glyphs", "classifier-digits"), 4000, 64, label="char",
                               sampling={"steps": 8, "cfg": 2.0, "temperature": 0.7}),
    # lesson 09: a DiT on kl-f4-shapes' 4x8x8 latents, depth 3 (3.9 MB; dit-small's depth 4 weighs 5.1 MB),
    # logit-normal times (train_flow's default); 16 Euler steps with guidance 2 drew the asked class 99.5% of
    # the time (1,024 samples), in 12 minutes of one thread
    "flow-shapes": _flow("shapes", ("kl-f4-shapes", "classifier-shapes"), 12000, 64, label=("shape", "colour"),
                         n_train=32768, overrides={"depth": 3}, sampling={"steps": 16, "method": "euler", "cfg": 2.0}),
    # digits: the same DiT on a grey KL tokenizer of glyphs (as vq-f8-glyphs is for the digits GPT)
    "kl-f4-glyphs": _tokenizer("kl-f4", "glyphs", 1500, 64, overrides={"in_channels": 1}),  # grey
    "flow-digits": _flow("digits", ("kl-f4-glyphs", "classifier-digits"), 12000, 64, label="char",
                         overrides={"depth": 3}, sampling={"steps": 16, "method": "euler", "cfg": 2.0}),
    # lesson 10: VAR's multi-scale residual tokenizer on the same 8x8 latent grid as vq-f4-shapes
    "msvq-f4-shapes": _tokenizer("msvq-f4", "shapes", 1500, 64),
    # lesson 10: the three token families on the same dataset, the same 8x8 latent grid, the same width and
    # depth (the "small" size) and the same 2,400 steps of batch 64, each scored with its lesson's sampling
    # settings. VAR reads 130 positions per pyramid to the others' 64, so its run takes about twice as long
    "var-shapes": _generator("var", "var-small", "shapes", ("msvq-f4-shapes", "classifier-shapes"), 2400, 64, 100,
                             label=("shape", "colour"), n_train=32768, sampling={"cfg": 2.0, "top_k": 10}),
    "gpt-f4-shapes": _gpt("shapes", ("vq-f4-shapes", "classifier-shapes"), 2400, 64, label=("shape", "colour"),
                          n_train=32768, sampling={"cfg": 2.0, "top_k": 10}),
    "maskgit-f4-shapes": _maskgit("shapes", ("vq-f4-shapes", "classifier-shapes"), 2400, 64,
                                  label=("shape", "colour"), n_train=32768,
                                  sampling={"steps": 8, "cfg": 2.0, "temperature": 0.7}),
    # lesson 06's perceptual distance: a small network that tells a crop's rotation and source photo
    "feature-net-photos": Recipe("feature-net", "photos-32", "photos", feature_net_train_config(2500, 64)),
    # lesson 06: the photo VQ tokenizer fine-tuned with perceptual + adversarial losses, same bits per image
    "vqgan-f4-photos": Recipe("vqgan", "vq-f4", "photos", VQGAN_TRAIN, needs=("vq-f4-photos", "feature-net-photos"),
                              n_train=16384, augment=True, loss=VQGAN_LOSS),
}


def _make_tokenizer(recipe: Recipe, run: Path, progress: bool) -> TrainResult:
    _, result, _ = train_tokenizer(recipe.preset, recipe.data, recipe.train, run, recipe.overrides, recipe.n_train,
                                   recipe.n_test, recipe.augment, resume=True, progress=progress)
    return result


def _make_classifier(recipe: Recipe, run: Path, progress: bool) -> TrainResult:
    _, result, _ = train_classifier(recipe.preset, recipe.data, recipe.label, recipe.train, run, recipe.n_train,
                                    recipe.n_test, resume=True, progress=progress)
    return result


def _generator_builder(train_fn: Callable) -> Callable[[Recipe, Path, bool], TrainResult]:
    """The builder of a generator kind: ``train_fn`` (train_gpt, train_maskgit or train_flow) on the tokens or
    latents of ``needs[0]``, then, given a classifier as ``needs[1]``, the yardstick on samples drawn with the
    recipe's sampling settings: class accuracy and distance beside the floor and the ceiling."""
    def make(recipe: Recipe, run: Path, progress: bool) -> TrainResult:
        _, result, _ = train_fn(recipe.preset, recipe.needs[0], recipe.data, recipe.train, run, recipe.label,
                                recipe.overrides, n_train=recipe.n_train, n_test=recipe.n_test, resume=True,
                                progress=progress)
        if len(recipe.needs) > 1:
            record_sample_metrics(run, recipe.needs[1], recipe.sampling)
        return result
    return make


def sample_metrics(model, tokenizer, classifier, data: str, label, sampling: dict, n: int = SAMPLES,
                   seed: int = 0) -> dict:
    """The yardstick on ``n`` samples of a generator drawn with ``sampling`` (classes in turn), beside its
    floor and ceiling: what a generator checkpoint's ``sample_metrics`` holds."""
    yardstick = Yardstick.for_dataset(classifier, data, label)
    return yardstick.measure(lambda c, g: draw(model, len(c), c, sampling, g), tokenizer, n, sampling, seed)


def record_sample_metrics(path: str | Path, classifier: str | Path, sampling: dict) -> dict:
    """Measure the generator at ``path`` with the yardstick of ``classifier`` and record it as ``sample_metrics``."""
    metadata = read_metadata(path)
    metrics = sample_metrics(load_model(path), load_model(resolve_checkpoint(metadata["tokenizer"])),
                             load_model(resolve_checkpoint(classifier)), metadata["data"], metadata["label"], sampling)
    update_metadata(path, sample_metrics=metrics)
    return metrics


def _make_feature_net(recipe: Recipe, run: Path, progress: bool) -> TrainResult:
    _, result, _ = train_feature_net(recipe.preset, recipe.train, checkpoint=run, resume=True, progress=progress)
    return result


def _make_vqgan(recipe: Recipe, run: Path, progress: bool) -> TrainResult:
    """Fine-tune the tokenizer recipe.needs names (kind "tokenizer") with ``VQGANLoss`` over the feature
    network it names (kind "feature-net"); the test metrics add the feature distance and the spectrum."""
    start = next(n for n in recipe.needs if RECIPES[n].kind == "tokenizer")
    net = next(n for n in recipe.needs if RECIPES[n].kind == "feature-net")
    distance = FeatureDistance.load(CHECKPOINT_DIR / f"{net}.pt")
    loss = VQGANLoss(distance, VQGANLossConfig(**recipe.loss))
    model, result, _ = train_tokenizer(recipe.preset, recipe.data, recipe.train, run, recipe.overrides, recipe.n_train,
                                       recipe.n_test, recipe.augment, resume=True, progress=progress, loss_fn=loss,
                                       init=CHECKPOINT_DIR / f"{start}.pt",
                                       metadata={"kind": "vqgan", "init": start, "feature_net": net, "loss": recipe.loss})
    images = load_images(recipe.data, "test", model.config.autoencoder.in_channels, model.config.image_size, recipe.n_test)
    update_metadata(run, test_metrics=perceptual_report(model, images, distance), game=game_history(result.history))
    return result


GAME_LOGS = ("d_loss", "g_hinge", "logits_real", "logits_fake", "adaptive_weight", "recon", "perceptual")


def game_history(history: list[dict]) -> list[dict]:
    """The logged rows of a VQGAN run once the discriminator plays: both players' losses, D's mean logits,
    the adaptive weight and the reconstruction terms (for the notebook's plot of the shipped game)."""
    return [{"step": row["step"], **{k: row[k] for k in GAME_LOGS if k in row}} for row in history if "d_loss" in row]


# kind -> its trainer, for the command line (python -m course_lib.train KIND)
TRAINERS: dict[str, Callable] = {"tokenizer": train_tokenizer, "classifier": train_classifier, "gpt": train_gpt,
                                 "maskgit": train_maskgit, "flow": train_flow, "var": train_var}

# kind -> builder(recipe, run_path, progress): trains (resuming the run at run_path) and writes it there
BUILDERS: dict[str, Callable[[Recipe, Path, bool], TrainResult]] = {
    "tokenizer": _make_tokenizer, "classifier": _make_classifier, "feature-net": _make_feature_net,
    "vqgan": _make_vqgan, "gpt": _generator_builder(train_gpt), "maskgit": _generator_builder(train_maskgit),
    "flow": _generator_builder(train_flow), "var": _generator_builder(train_var)}


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
