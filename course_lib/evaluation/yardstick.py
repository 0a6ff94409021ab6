"""A yardstick for sample quality: class accuracy and a Frechet distance in a small classifier's features.

Papers: GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash Equilibrium (Heusel et
al., 2017), https://arxiv.org/abs/1706.08500 -- the Frechet distance between two Gaussians fitted to
network features, d^2 = |mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)); and Classification
Accuracy Score (Ravuri & Vinyals, 2019), https://arxiv.org/abs/1905.10887 -- does a class-conditional
sample look like its class?

Ours is measured in the penultimate features of :mod:`course_lib.evaluation.classifier`, trained on
the dataset itself, so it is a *classifier-feature Frechet distance*: its numbers mean nothing next
to published FID values. A score alone says little, so it always comes with two references:

- the floor: real test images against real train images (what a perfect generator would score),
- the ceiling: the tokenizer's own reconstructions of the test images (the best a generator of that
  tokenizer's tokens can reach: it can only produce what the decoder draws).

:meth:`Yardstick.for_dataset` binds one to a labelled course dataset: its reference features come from
the training images, its floor and ceiling from test images whose classes come in turn (the proportions
in which class-conditional samples are drawn), and :meth:`Yardstick.sample_and_score` draws samples from
any generator (a function ``(classes, generator) -> grids or latents``), decodes them through the
tokenizer and scores them: the one path from a generator to its numbers, for the recipes, the command
line and the notebooks.

Shapes: N images, D feature dim.
"""
from __future__ import annotations

import time
from typing import Callable

import torch

from course_lib.datasets.labelled import images_in_turn, labelled_images
from course_lib.evaluation.classifier import Classifier, predict
from course_lib.generators.drawing import to_images

Sampler = Callable[[torch.Tensor, torch.Generator], torch.Tensor]  # (classes (B,), generator) -> grids or latents


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Frechet distance between Gaussians fitted to features a (N, D) and b (M, D), in float64."""
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"expected two feature sets (N, D) and (M, D) with N, M >= 2, got "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")
    a, b = a.double(), b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)  # (D,)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)  # (D, D)
    # Tr (S_a S_b)^(1/2) = sum of sqrt(eigenvalues of S_a^(1/2) S_b S_a^(1/2)), a symmetric matrix
    root_a = _sqrtm(cov_a)
    middle = torch.linalg.eigvalsh(root_a @ cov_b @ root_a).clamp(min=0).sqrt().sum()
    distance = (mu_a - mu_b).square().sum() + cov_a.trace() + cov_b.trace() - 2 * middle
    return float(distance.clamp(min=0))


def _sqrtm(matrix: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(matrix)  # symmetric positive semi-definite
    return vectors @ torch.diag(values.clamp(min=0).sqrt()) @ vectors.T


class Yardstick:
    """A trained classifier and the real training images' features: scores sets of images."""

    def __init__(self, classifier: Classifier, train_images: torch.Tensor):
        self.classifier = classifier.eval()
        self.class_names = list(classifier.config.class_names)
        self.reference = predict(classifier, train_images)[1]  # (N, D) real train features
        self.data, self.label = None, None  # set by for_dataset

    @classmethod
    def for_dataset(cls, classifier: Classifier, data: str, label, n_reference: int = 4096) -> "Yardstick":
        """The yardstick of a labelled course dataset: reference features of its first ``n_reference`` train images."""
        train_images, _, names = labelled_images(data, "train", label, n_reference)
        if list(classifier.config.class_names) and names != list(classifier.config.class_names):
            raise ValueError(f"the classifier tells {len(classifier.config.class_names)} classes apart, {data}'s "
                             f"label {label!r} has {len(names)}: give the classifier trained on that label")
        yardstick = cls(classifier, train_images)
        yardstick.data, yardstick.label = data, label
        return yardstick

    def score(self, images: torch.Tensor, classes: torch.Tensor | None = None) -> dict:
        """``frechet_distance`` to the real train images, and (given the intended classes (N,))
        ``class_accuracy``: the fraction the classifier puts in the class they were made for."""
        predicted, features = predict(self.classifier, images)
        result = {"frechet_distance": frechet_distance(features, self.reference), "n": len(images)}
        if classes is not None:
            classes = torch.as_tensor(classes).cpu()
            if classes.shape != (len(images),):
                raise ValueError(f"expected one intended class per image, ({len(images)},), got {tuple(classes.shape)}")
            result["class_accuracy"] = float((predicted == classes).float().mean())
        return result

    def references(self, test_images: torch.Tensor, test_classes: torch.Tensor, tokenizer=None) -> dict:
        """The floor (real test images) and, with a tokenizer, the ceiling (its reconstructions of them)."""
        result = {"floor": self.score(test_images, test_classes)}
        if tokenizer is not None:
            result["ceiling"] = self.score(reconstruct(tokenizer, test_images), test_classes)
        return result

    def references_in_turn(self, n: int, tokenizer=None) -> dict:
        """The floor and (with a tokenizer) the ceiling on ``n`` test images of the dataset, classes in turn."""
        if self.data is None:
            raise ValueError("references_in_turn needs a dataset: build the yardstick with Yardstick.for_dataset")
        test_images, test_classes, _ = images_in_turn(self.data, "test", self.label, n)
        return self.references(test_images, test_classes, tokenizer)

    @torch.no_grad()
    def sample_and_score(self, sampler: Sampler, tokenizer, n: int, seed: int = 0, batch_size: int = 256,
                         device: str | torch.device = "cpu") -> tuple[dict, torch.Tensor, float]:
        """``n`` samples with the classes in turn, drawn in batches from one generator seeded ``seed``, decoded by
        ``tokenizer`` and scored; returns the scores, the images (n, C, H, W) and the seconds of sampling alone."""
        classes = torch.arange(n) % len(self.class_names)  # (n,)
        generator = torch.Generator(device).manual_seed(seed)
        began = time.perf_counter()
        drawn = [sampler(c.to(device), generator) for c in classes.split(batch_size)]
        seconds = time.perf_counter() - began
        images = torch.cat([to_images(tokenizer, out) for out in drawn])  # (n, C, H, W)
        return self.score(images, classes), images, seconds

    def measure(self, sampler: Sampler, tokenizer, n: int, sampling: dict, seed: int = 0,
                device: str | torch.device = "cpu") -> dict:
        """A generator's record: the scores of ``n`` samples drawn with ``sampling``, the sampling seconds,
        and the floor and ceiling on as many test images in turn (what a checkpoint's ``sample_metrics`` holds)."""
        scores, _, seconds = self.sample_and_score(sampler, tokenizer, n, seed, device=device)
        return {"sampling": sampling, "n": n, "seconds": round(seconds, 2), "samples": scores,
                **self.references_in_turn(n, tokenizer), "chance": self.chance}

    @property
    def chance(self) -> float:
        return 1 / self.classifier.config.num_classes


@torch.no_grad()
def reconstruct(tokenizer, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """decode(encode(images)) in [0, 1], through the tokenizer's public face."""
    tokenizer.eval()
    device = next(tokenizer.parameters()).device
    out = [tokenizer.decode(tokenizer.encode(b.to(device))).clamp(0, 1).cpu() for b in images.split(batch_size)]
    return torch.cat(out)


def report(scores: dict, references: dict, chance: float | None = None) -> str:
    """One readable line per row: a generator's scores beside the floor and the ceiling."""
    rows = {"samples": scores, **references}
    lines = []
    for name, row in rows.items():
        accuracy = f"class accuracy {row['class_accuracy']:6.1%}  " if "class_accuracy" in row else ""
        lines.append(f"{name:8s} {accuracy}Frechet distance (classifier features) {row['frechet_distance']:8.3f}")
    if chance is not None:
        lines.append(f"(chance accuracy {chance:.1%})")
    return "\n".join(lines)
