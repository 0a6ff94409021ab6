"""A small image classifier per labelled course dataset: the yardstick's eyes.

Paper: the idea of judging generated images by a classifier's decisions and features comes from
Improved Techniques for Training GANs (Inception Score, Salimans et al., 2016),
https://arxiv.org/abs/1606.03498, and GANs Trained by a Two Time-Scale Update Rule Converge to a
Local Nash Equilibrium (Heusel et al., 2017), https://arxiv.org/abs/1706.08500 (a Frechet distance
in a network's penultimate features). Their network was trained on ImageNet; ours is trained on the
very dataset the generator learns, small enough to ship and to train in a minute or two.

Architecture: three stages of a strided and a plain 3x3 convolution (32 -> 16 -> 8 -> 4 pixels), global average pooling to
``features`` numbers (the penultimate features), one linear layer to the class logits.

Shapes: B batch, C channels, H W height width, D feature dim.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from course_lib.generators.configs import from_preset


@dataclass
class ClassifierConfig:
    in_channels: int = 3
    num_classes: int = 10
    widths: tuple[int, ...] = (32, 64, 128)
    features: int = 128  # D: the penultimate features the Frechet distance is measured in
    class_names: tuple[str, ...] = ()

    def __post_init__(self):
        self.widths, self.class_names = tuple(self.widths), tuple(self.class_names)
        if self.in_channels not in (1, 3) or self.num_classes < 2 or not self.widths or self.features < 1:
            raise ValueError(f"expected in_channels 1 or 3, num_classes >= 2, widths and features >= 1; got "
                             f"{self.in_channels}, {self.num_classes}, {self.widths}, {self.features}")
        if self.class_names and len(self.class_names) != self.num_classes:
            raise ValueError(f"expected {self.num_classes} class names, got {len(self.class_names)}")


classifier_presets: dict[str, ClassifierConfig] = {
    "classifier-small": ClassifierConfig(),  # 0.3 M parameters, 1.2 MB
}




def build_classifier(preset_or_config: str | ClassifierConfig, **overrides) -> "Classifier":
    """A classifier from a preset name (``classifier_presets``) or a config, with fields replaced by ``overrides``."""
    return Classifier(from_preset(classifier_presets, preset_or_config, overrides, "classifier"))


def _block(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1), nn.GroupNorm(8, c_out), nn.GELU())


class Classifier(nn.Module):
    """Images (B, C, H, W) in [0, 1] -> class logits (B, num_classes); ``features`` gives (B, D)."""

    def __init__(self, config: ClassifierConfig):
        super().__init__()
        self.config = config
        layers, c_in = [], config.in_channels
        for width in config.widths:  # each halves the side: 32 -> 16 -> 8 -> 4
            layers += [_block(c_in, width, 2), _block(width, width, 1)]
            c_in = width
        self.body = nn.Sequential(*layers)
        self.project = nn.Linear(c_in, config.features)
        self.head = nn.Linear(config.features, config.num_classes)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The penultimate features (B, D)."""
        if images.ndim != 4 or images.shape[1] != self.config.in_channels:
            raise ValueError(f"expected images of shape (B, {self.config.in_channels}, H, W), got {tuple(images.shape)}")
        x = self.body(images * 2 - 1)  # (B, C', H/8, W/8)
        return F.gelu(self.project(x.mean(dim=(2, 3))))  # (B, D)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))  # (B, num_classes)


def classification_loss(model: Classifier, batch: tuple[torch.Tensor, torch.Tensor]):
    """Cross-entropy of a batch (images, classes), and the batch accuracy as a log."""
    images, classes = batch
    logits = model(images)  # (B, num_classes)
    accuracy = (logits.argmax(-1) == classes).float().mean()
    return F.cross_entropy(logits, classes), {"accuracy": accuracy.detach()}


@torch.no_grad()
def predict(model: Classifier, images: torch.Tensor, batch_size: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """Predicted classes (N,) and penultimate features (N, D) of images (N, C, H, W), in batches."""
    model.eval()
    device = model.head.weight.device
    classes, features = [], []
    for batch in images.split(batch_size):
        f = model.features(batch.to(device))  # (b, D)
        features.append(f.cpu())
        classes.append(model.head(f).argmax(-1).cpu())
    return torch.cat(classes), torch.cat(features)
