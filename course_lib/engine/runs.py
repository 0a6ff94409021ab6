"""One run skeleton for every trainer of the course: what is the same in every run is written once here.

nanoGPT's ``train.py`` reads a config and calls the model and the loop; here a trainer (a tokenizer, the
feature network, a classifier, a GPT, a MaskGIT, a flow model, ...) supplies only what differs, as a
:class:`Trainer`: the model, its training data, its loss, a periodic evaluation, a test metric and what
the run is (its metadata). :func:`run_trainer` does the rest, the same way for every kind:

1. seed everything from the config's seed, *then* let the trainer build its data and model (so the
   initial weights follow the seed);
2. the run's metadata: its kind, the trainer's entries and the seed;
3. the one resume check: a run continued from ``out`` must match every entry of that metadata;
4. the loop, :func:`course_lib.engine.training.train` (checkpoints, resume, progress bar);
5. the test metric on the main process, recorded with the test set in the checkpoint's metadata.

``TRAIN_DEFAULTS`` is the one place for each kind's optimization defaults (:func:`train_config`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from torch import nn

from course_lib.engine import distributed
from course_lib.engine.accelerate import Accelerate
from course_lib.engine.checkpoints import check_metadata, load_checkpoint, shipped_name, update_metadata
from course_lib.engine.seeding import seed_everything
from course_lib.engine.training import TrainConfig, TrainResult, train

# kind -> learning rate, weight decay, and the longest warm-up (warm-up is min(this, steps // 10))
TRAIN_DEFAULTS: dict[str, dict] = {
    "tokenizer": {"lr": 1e-3, "weight_decay": 0.0, "warmup": 100},
    "classifier": {"lr": 2e-3, "weight_decay": 0.0, "warmup": 200},
    "gpt": {"lr": 2e-3, "weight_decay": 0.05, "warmup": 200},
    "maskgit": {"lr": 2e-3, "weight_decay": 0.05, "warmup": 200},
    "var": {"lr": 2e-3, "weight_decay": 0.05, "warmup": 200},
    "flow": {"lr": 1e-3, "weight_decay": 0.0, "warmup": 200},
}


def train_config(kind: str, steps: int, batch_size: int = 64, **changes) -> TrainConfig:
    """The optimization of a ``kind`` run of ``steps`` steps: the kind's defaults, an evaluation every
    fifth and a checkpoint every tenth of the run; ``changes`` replace any field."""
    if kind not in TRAIN_DEFAULTS:
        raise ValueError(f"no training defaults for kind {kind!r}; known: {sorted(TRAIN_DEFAULTS)}")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    defaults = TRAIN_DEFAULTS[kind]
    fields = {"lr": defaults["lr"], "weight_decay": defaults["weight_decay"],
              "warmup": min(defaults["warmup"], steps // 10), "eval_every": max(1, steps // 5),
              "checkpoint_every": max(1, steps // 10)}
    return TrainConfig(steps=steps, batch_size=batch_size, **{**fields, **changes})


@dataclass
class Trainer:
    """What differs between kinds of runs. ``data`` is what :func:`train` takes (tensors or an ImageSet);
    ``test(model) -> {name: value}`` runs once at the end on ``test_set`` (described for the metadata)."""

    model: nn.Module
    data: Any
    metadata: dict  # what the run is, beyond kind and seed: every entry must match to resume
    test: Callable[[nn.Module], dict | None]
    test_set: dict | None = None
    loss_fn: Callable | None = None  # None: the model's forward returns its loss
    eval_fn: Callable[[nn.Module], dict] | None = None
    recorded: dict = field(default_factory=dict)  # entries written beside the test metrics (not the run's identity)


def generator_metadata(preset: str, overrides: dict, data: str, label, tokenizer_path: Path, class_names: list[str],
                       train_images: int, **extra) -> dict:
    """What a generator's run is: its preset, the data and label it learns, the tokenizer whose tokens or
    latents it models (by shipped name where shipped), its classes, and any ``extra`` entries of its kind."""
    return {"preset": preset, "overrides": overrides, "data": data, "label": label,
            "tokenizer": shipped_name(tokenizer_path), "class_names": class_names, "train_images": train_images,
            **extra}


def run_trainer(kind: str, setup: Callable[[], Trainer], config: TrainConfig, out: str | Path | None = None,
                resume: bool = False, progress: bool = True, device: str | None = None,
                accelerate: Accelerate | None = None) -> tuple[nn.Module, TrainResult, dict | None]:
    """Seed, build (``setup()``), check a resume, train, test and record: the model (in eval mode, on the
    device it trained on), the run, and the test metrics (None on ranks other than the main one)."""
    seed_everything(config.seed)
    trainer = setup()
    metadata = {"kind": kind, **trainer.metadata, "seed": config.seed}
    check_resume(out, resume, metadata)
    result = train(trainer.model, trainer.data, config, loss_fn=trainer.loss_fn, eval_fn=trainer.eval_fn,
                   checkpoint=out, resume=resume, metadata=metadata, device=device, progress=progress,
                   accelerate=accelerate)
    if not distributed.setup(device).is_main:  # under torchrun, rank 0 tests and writes
        return trainer.model, result, None
    metrics = trainer.test(trainer.model)
    if out is not None:
        update_metadata(out, test_metrics=metrics, test_set=trainer.test_set, **trainer.recorded)
    return trainer.model, result, metrics


def check_resume(out: str | Path | None, resume: bool, metadata: dict) -> None:
    """Refuse to continue the run saved at ``out`` when any entry of ``metadata`` differs from its own."""
    if resume and out is not None and Path(out).is_file():
        check_metadata(load_checkpoint(out)["metadata"], metadata, out)
