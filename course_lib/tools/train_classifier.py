"""Train the yardstick's classifier on a labelled course dataset (a recipe of ``make checkpoints``).

    python -m course_lib.tools.make_checkpoints --only classifier-shapes

The classifier learns the classes a class-conditional generator is asked for (``label``: one label
or several combined, as in :func:`course_lib.datasets.tokens.class_label`); its test accuracy is
recorded in the checkpoint's metadata beside the class names.
"""
from __future__ import annotations

from pathlib import Path

from course_lib.datasets.labelled import labelled_images
from course_lib.engine.runs import Trainer, run_trainer
from course_lib.engine.training import TrainConfig, TrainResult
from course_lib.evaluation.classifier import Classifier, build_classifier, classification_loss, predict

EVAL_IMAGES = 512  # periodic evaluation during training: accuracy on this many test images


def accuracy(model: Classifier, images, classes) -> float:
    return float((predict(model, images)[0] == classes).float().mean())


def train_classifier(preset: str, data: str, label, config: TrainConfig, out: str | Path | None = None,
                     n_train: int | None = None, n_test: int = 1024, resume: bool = False,
                     progress: bool = True) -> tuple[Classifier, TrainResult, dict]:
    """Train ``preset`` to tell the classes of ``label`` apart on ``data``; returns the model, the run and
    the test metrics (accuracy)."""
    def setup() -> Trainer:
        images, classes, names = labelled_images(data, "train", label, n_train)
        model = build_classifier(preset, in_channels=images.shape[1], num_classes=len(names), class_names=tuple(names))
        test_images, test_classes, _ = labelled_images(data, "test", label, n_test)
        return Trainer(model, (images, classes),
                       {"preset": preset, "data": data, "label": label, "class_names": names, "train_images": len(images)},
                       test=lambda m: {"accuracy": accuracy(m, test_images, test_classes), "chance": 1 / len(names)},
                       test_set={"data": data, "split": "test", "n": len(test_images)}, loss_fn=classification_loss,
                       eval_fn=lambda m: {"accuracy": accuracy(m, test_images[:EVAL_IMAGES], test_classes[:EVAL_IMAGES])})
    return run_trainer("classifier", setup, config, out, resume, progress, device="cpu")
