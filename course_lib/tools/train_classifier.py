"""Train the yardstick's classifier on a labelled course dataset (a recipe of ``make checkpoints``).

    python -m course_lib.tools.make_checkpoints --only classifier-shapes

The classifier learns the classes a class-conditional generator is asked for (``label``: one label
or several combined, as in :func:`course_lib.datasets.tokens.class_label`); its test accuracy is
recorded in the checkpoint's metadata beside the class names.
"""
from __future__ import annotations

from pathlib import Path

import torch

from course_lib.datasets import load_dataset
from course_lib.datasets.tokens import class_label
from course_lib.engine.checkpoints import update_metadata
from course_lib.engine.seeding import seed_everything
from course_lib.engine.training import TrainConfig, TrainResult, train
from course_lib.evaluation.classifier import Classifier, build_classifier, classification_loss, predict


def labelled_images(data: str, split: str, label, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Images (N, C, H, W), classes (N,) and the class names of a course dataset."""
    images = load_dataset(data, split, n=n)
    classes, names = class_label(images, label)
    return images.images, classes, names



def images_in_turn(data: str, split: str, label, n: int, pool: int = 4) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """``n`` real images whose classes come in turn (0, 1, ..., C - 1, 0, ...), the proportions in which
    class-conditional samples are drawn: the yardstick's floor and ceiling are measured on these, since
    the Frechet distance also notices how often each class appears. Picked in order from the first
    ``pool * n`` images of the split."""
    images, classes, names = labelled_images(data, split, label, pool * n)
    wanted = torch.arange(n) % len(names)  # (n,)
    index, taken = [], [0] * len(names)
    positions = [(classes == c).nonzero()[:, 0] for c in range(len(names))]
    for c in wanted.tolist():
        if taken[c] == len(positions[c]):
            raise ValueError(f"{data} {split} has only {len(positions[c])} images of class {names[c]!r} among its "
                             f"first {len(images)}; {n} images in turn need {int((wanted == c).sum())}")
        index.append(int(positions[c][taken[c]]))
        taken[c] += 1
    return images[torch.tensor(index)], wanted, names

def train_classifier(preset: str, data: str, label, config: TrainConfig, out: str | Path | None = None,
                     n_train: int | None = None, n_test: int = 1024, resume: bool = False,
                     progress: bool = True) -> tuple[Classifier, TrainResult, dict]:
    """Train ``preset`` to tell the classes of ``label`` apart on ``data``; returns the model, the run and
    the test metrics (accuracy)."""
    seed_everything(config.seed)
    images, classes, names = labelled_images(data, "train", label, n_train)
    model = build_classifier(preset, in_channels=images.shape[1], num_classes=len(names), class_names=tuple(names))
    test_images, test_classes, _ = labelled_images(data, "test", label, n_test)

    def eval_fn(m) -> dict:
        return {"accuracy": float((predict(m, test_images[:512])[0] == test_classes[:512]).float().mean())}
    metadata = {"kind": "classifier", "preset": preset, "data": data, "label": label, "class_names": names,
                "train_images": len(images), "seed": config.seed}
    result = train(model, (images, classes), config, loss_fn=classification_loss, eval_fn=eval_fn, checkpoint=out,
                   resume=resume, metadata=metadata, device="cpu", progress=progress)
    accuracy = float((predict(model, test_images)[0] == test_classes).float().mean())
    metrics = {"accuracy": accuracy, "chance": 1 / len(names)}
    if out is not None:
        update_metadata(out, test_metrics=metrics, test_set={"data": data, "split": "test", "n": len(test_images)})
    return model, result, metrics
