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

Shapes: N images, D feature dim.
"""
from __future__ import annotations

import torch

from course_lib.evaluation.classifier import Classifier, predict


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
