"""A perceptual distance that works offline: LPIPS's recipe over a small network the course trains itself.

Paper: The Unreasonable Effectiveness of Deep Features as a Perceptual Metric (Zhang, Isola, Efros,
Shechtman, Wang, 2018), https://arxiv.org/abs/1801.03924 -- eq. (1): take features from several
layers, unit-normalize each position's feature vector over channels, square the differences, weight
the channels (optional), average over positions and sum over layers.

LPIPS runs that recipe on an ImageNet AlexNet / VGG whose 233-528 MB weights no package ships, with
channel weights calibrated on human judgments. Here the features come from ``FeatureNet``, a small
convolutional network trained on photo crops with labels the data gives for free: which of the 4
rotations a crop was turned by (Unsupervised Representation Learning by Predicting Image Rotations,
Gidaris, Singh, Komodakis, 2018, https://arxiv.org/abs/1803.07728) and which source photograph it
came from. So this is a *feature distance*, not LPIPS: its layers are not calibrated on human
judgments. ``course_lib/tokenizers/lpips_real.py`` runs real LPIPS when torchvision's weight file
is present.

What the shipped network learned (its checkpoint metadata has the numbers): the source photo and,
on fresh crops of the six training photos, the rotation; on new photographs its rotation guesses
are at or below chance (27.5% at the tokenizers' zoom, 17.7% zoomed out; chance 25%), six photos
being too few to learn "which way is up" in general. Its features still make a useful distance:
at equal MSE it puts a one-pixel shift about 4x closer than a blur or JPEG blocks, where an
untrained copy of the network barely tells them apart.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from course_lib.datasets.imageset import ImageSet
from course_lib.datasets.photos import make_photo_crops, photo_names
from course_lib.engine.checkpoints import load_model
from course_lib.engine.runs import Trainer, run_trainer
from course_lib.engine.training import TrainConfig, TrainResult
from course_lib.paths import CHECKPOINT_DIR

FEATURE_NET_CHECKPOINT = CHECKPOINT_DIR / "feature-net-photos.pt"
NUM_ROTATIONS = 4
ZOOMS = (64, 128, 256)  # shorter sides the photos are resized to before cropping
EPS = 1e-10  # as lpips.normalize_tensor


@dataclass
class FeatureNetConfig:
    """Stage i works at 1 / 2**i of the image size with widths[i] channels; every stage is one feature layer."""

    in_channels: int = 3
    widths: tuple[int, ...] = (16, 32, 64, 128)
    convs_per_stage: int = 2
    num_sources: int = len(photo_names("train"))  # classes of the source-photo head

    def __post_init__(self):
        self.widths = tuple(self.widths)  # lists come back from json / checkpoints
        if self.in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 (grey) or 3 (RGB), got {self.in_channels!r}")
        if not self.widths or any(not isinstance(w, int) or w < 1 for w in self.widths):
            raise ValueError(f"widths must be a non-empty tuple of positive ints, got {self.widths}")
        if self.convs_per_stage < 1 or self.num_sources < 2:
            raise ValueError(f"need convs_per_stage >= 1 and num_sources >= 2, "
                             f"got {self.convs_per_stage}, {self.num_sources}")


feature_net_presets: dict[str, FeatureNetConfig] = {
    "photos-32": FeatureNetConfig(),  # the shipped network: 4 layers at 32, 16, 8, 4 pixels
    "tiny": FeatureNetConfig(widths=(8, 16), convs_per_stage=1),  # for tests
}




class FeatureNet(nn.Module):
    """Conv stages (3x3 conv, BatchNorm, ReLU; 2x2 max-pool between stages) and two classifier heads."""

    def __init__(self, config: FeatureNetConfig):
        super().__init__()
        self.config = config
        self.stages = nn.ModuleList()
        channels = config.in_channels
        for i, width in enumerate(config.widths):
            layers = [nn.MaxPool2d(2)] if i > 0 else []
            for _ in range(config.convs_per_stage):
                layers += [nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
                channels = width
            self.stages.append(nn.Sequential(*layers))
        self.rotation_head = nn.Linear(channels, NUM_ROTATIONS)
        self.source_head = nn.Linear(channels, config.num_sources)

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Images (B, C, H, W) in [0, 1] -> one map per stage, [(B, widths[i], H / 2**i, W / 2**i), ...]."""
        expected = self.config.in_channels
        if images.ndim != 4 or images.shape[1] != expected:
            raise ValueError(f"expected images of shape (B, {expected}, H, W), got {tuple(images.shape)}")
        side = 2 ** (len(self.config.widths) - 1)
        if images.shape[-1] < side or images.shape[-2] < side:
            raise ValueError(f"images must be at least {side}x{side} for {len(self.config.widths)} stages, "
                             f"got {tuple(images.shape[-2:])}")
        h, maps = images * 2 - 1, []  # the network sees [-1, 1]
        for stage in self.stages:
            h = stage(h)
            maps.append(h)
        return maps

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (B, C, H, W) -> rotation logits (B, 4), source-photo logits (B, num_sources)."""
        pooled = self.features(images)[-1].mean(dim=(2, 3))  # (B, C)
        return self.rotation_head(pooled), self.source_head(pooled)


# ----- the distance -----

def unit_normalize(features: torch.Tensor) -> torch.Tensor:
    """Each position's feature vector scaled to unit length: (B, C, H, W) -> (B, C, H, W)."""
    norm = features.pow(2).sum(dim=1, keepdim=True).sqrt()  # (B, 1, H, W)
    return features / (norm + EPS)


def perceptual_distance(features_x: list[torch.Tensor], features_y: list[torch.Tensor],
                        weights: list[torch.Tensor] | None = None) -> torch.Tensor:
    """LPIPS eq. (1) over given feature maps: lists of (B, C_l, H_l, W_l) -> (B,).

    Per layer: unit-normalize over channels, square the difference, weight channels by
    ``weights[l]`` (C_l,) or sum them with weight 1, average over positions; then sum the layers.
    """
    _check_feature_lists(features_x, features_y, weights)
    total = 0
    for layer, (fx, fy) in enumerate(zip(features_x, features_y)):
        diff = (unit_normalize(fx) - unit_normalize(fy)) ** 2  # (B, C, H, W)
        w = torch.ones_like(diff[0, :, 0, 0]) if weights is None else weights[layer]  # (C,)
        per_position = torch.einsum("bchw,c->bhw", diff, w.to(diff))  # (B, H, W)
        total = total + per_position.mean(dim=(1, 2))  # (B,)
    return total


def _check_feature_lists(features_x, features_y, weights) -> None:
    if not isinstance(features_x, (list, tuple)) or not isinstance(features_y, (list, tuple)):
        raise ValueError(f"expected two lists of feature maps, got {type(features_x).__name__} and "
                         f"{type(features_y).__name__}")
    if len(features_x) != len(features_y) or not features_x:
        raise ValueError(f"expected two non-empty lists with one map per layer, got {len(features_x)} and "
                         f"{len(features_y)} maps")
    for layer, (fx, fy) in enumerate(zip(features_x, features_y)):
        if fx.ndim != 4 or fx.shape != fy.shape:
            raise ValueError(f"layer {layer}: expected two maps of the same shape (B, C, H, W), "
                             f"got {tuple(fx.shape)} and {tuple(fy.shape)}")
    if weights is None:
        return
    if len(weights) != len(features_x):
        raise ValueError(f"expected one weight vector per layer ({len(features_x)}), got {len(weights)}")
    for layer, (w, fx) in enumerate(zip(weights, features_x)):
        if w.shape != (fx.shape[1],) or (w < 0).any():
            raise ValueError(f"layer {layer}: expected non-negative channel weights of shape ({fx.shape[1]},), "
                             f"got shape {tuple(w.shape)}")


class FeatureDistance(nn.Module):
    """A frozen ``FeatureNet`` as a perceptual distance: images (B, C, H, W) in [0, 1] twice -> (B,).

    Gradients flow to the images (use it as a loss) but never into the network, which stays in eval
    mode even when a parent module calls ``.train()``.
    """

    def __init__(self, network: FeatureNet, weights: list[torch.Tensor] | None = None):
        super().__init__()
        self.network = network.eval().requires_grad_(False)
        if weights is not None:
            weights = [torch.as_tensor(w, dtype=torch.float32) for w in weights]
            dummy = [torch.zeros(1, c, 1, 1) for c in network.config.widths]
            _check_feature_lists(dummy, dummy, weights)
        self.weights = None if weights is None else nn.ParameterList(
            [nn.Parameter(w, requires_grad=False) for w in weights])

    def train(self, mode: bool = True) -> "FeatureDistance":
        super().train(mode)
        self.network.eval()  # BatchNorm statistics stay frozen
        return self

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.shape != y.shape:
            raise ValueError(f"expected two image batches of the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
        weights = None if self.weights is None else list(self.weights)
        return perceptual_distance(self.network.features(x), self.network.features(y), weights)

    @classmethod
    def load(cls, path: str | Path = FEATURE_NET_CHECKPOINT, device: str | torch.device | None = None):
        """The distance over the feature network saved at ``path`` (default: the shipped one)."""
        return cls(load_model(path, device))


# ----- training on free labels -----

def rotate_batch(images: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    """Turn image i by ``turns[i]`` quarter turns counter-clockwise: (B, C, H, W), (B,) -> (B, C, H, W)."""
    out = images.clone()
    for k in range(1, NUM_ROTATIONS):
        chosen = turns == k
        out[chosen] = torch.rot90(images[chosen], k, dims=(2, 3))
    return out


@torch.no_grad()
def evaluate_feature_net(net: FeatureNet, images: torch.Tensor, sources: torch.Tensor | None = None,
                         batch_size: int = 256) -> dict:
    """Rotation accuracy over all 4 turns of ``images`` and, given ``sources`` (N,), source-photo accuracy."""
    was_training, hits_rotation, hits_source = net.training, 0, 0
    net.eval()
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size]
        for k in range(NUM_ROTATIONS):
            rotation_logits, source_logits = net(torch.rot90(batch, k, dims=(2, 3)))
            hits_rotation += (rotation_logits.argmax(1) == k).sum().item()
            if sources is not None and k == 0:
                hits_source += (source_logits.argmax(1) == sources[start:start + batch_size]).sum().item()
    net.train(was_training)
    result = {"rotation_accuracy": hits_rotation / (NUM_ROTATIONS * len(images))}
    if sources is not None:
        result["source_accuracy"] = hits_source / len(images)
    return result


def free_label_loss(net: FeatureNet, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, dict]:
    """``loss_fn`` for :func:`course_lib.engine.training.train` on ``(crops (B, 3, H, W), sources (B,))``.

    Each crop is mirrored at random and turned by a random number of quarter turns (the global torch
    generator, seeded and checkpointed by the training loop); the loss is the sum of both heads'
    cross-entropies.
    """
    images, sources = batch
    size = len(images)
    mirror = torch.rand(size, device=images.device) < 0.5  # (B,)
    images = torch.where(mirror[:, None, None, None], images.flip(3), images)
    turns = torch.randint(NUM_ROTATIONS, (size,), device=images.device)  # (B,)
    rotation_logits, source_logits = net(rotate_batch(images, turns))
    rotation, source = F.cross_entropy(rotation_logits, turns), F.cross_entropy(source_logits, sources)
    return rotation + source, {"rotation": rotation.detach(), "source": source.detach()}


def feature_net_train_config(steps: int = 2500, batch_size: int = 64, lr: float = 2e-3, seed: int = 0) -> TrainConfig:
    """The shipped network's optimization: AdamW without weight decay, 10% warm-up, cosine to lr / 10."""
    return TrainConfig(steps=steps, batch_size=batch_size, lr=lr, warmup=max(1, steps // 10), seed=seed,
                       eval_every=0, checkpoint_every=max(1, steps // 10))


def train_feature_net(config: FeatureNetConfig | str = "photos-32", train_config: TrainConfig | None = None,
                      num_crops: int = 24_000, bases: tuple[int, ...] = ZOOMS, eval_crops: int = 1024,
                      checkpoint: str | Path | None = None, resume: bool = False,
                      progress: bool = False) -> tuple[FeatureNet, TrainResult, dict]:
    """Train a ``FeatureNet`` on 32x32 photo crops to tell their rotation and source photo, through the
    course's one training loop (seeded; ``resume`` continues the run saved at ``checkpoint``).

    Crops come from the photos resized to each shorter side in ``bases``: at 64 pixels a crop shows
    much of a photo (sky above, ground below), at 256 the detail the tokenizers see. See
    ``held_out_report`` for what is measured. Returns the network (eval mode), the run and the report; with
    ``checkpoint`` the report is also in its metadata (``test_metrics``).
    """
    preset = config if isinstance(config, str) else None
    config = feature_net_presets[config] if isinstance(config, str) else config
    train_config = train_config or feature_net_train_config()

    def setup() -> Trainer:
        data = _crops_at_zooms(num_crops, bases, train_config.seed)
        return Trainer(FeatureNet(config), (data.images, data.labels["source"]),
                       {"preset": preset, "data": "photos", "train_images": len(data.images), "bases": tuple(bases)},
                       test=lambda net: held_out_report(net, eval_crops, train_config.seed),
                       test_set={"data": "photos", "split": "test", "n": eval_crops}, loss_fn=free_label_loss,
                       recorded={"threads": torch.get_num_threads()})
    net, result, report = run_trainer("feature-net", setup, train_config, checkpoint, resume, progress, device="cpu")
    return net.eval(), result, report


def _crops_at_zooms(num_crops: int, bases: tuple[int, ...], seed: int) -> ImageSet:
    if not bases or num_crops < len(bases):
        raise ValueError(f"need at least one base and one crop per base, got bases={bases}, num_crops={num_crops}")
    sets = [make_photo_crops(num_crops // len(bases), 32, "train", seed=seed + i, base=b) for i, b in enumerate(bases)]
    return ImageSet("photos", "train", torch.cat([s.images for s in sets]),
                    {"source": torch.cat([s.labels["source"] for s in sets])}, sets[0].classes)


def held_out_report(net: FeatureNet, eval_crops: int = 1024, seed: int = 0) -> dict:
    """Accuracies on crops never trained on, at the tokenizers' zoom (base 256) and at base 64.

    Test photos: new photographs, the real held-out test (rotation only: their sources are not
    classes). Fresh crops of the training photos (another seed): a weaker test, since they overlap
    regions of the training crops.
    """
    report = {}
    for base in (256, 64):
        test = make_photo_crops(eval_crops, 32, "test", seed=seed, base=base)
        fresh = make_photo_crops(eval_crops, 32, "train", seed=seed + 10_000, base=base)
        report[f"test_photos_base{base}"] = evaluate_feature_net(net, test.images)
        report[f"train_photos_fresh_crops_base{base}"] = evaluate_feature_net(net, fresh.images, fresh.labels["source"])
    return report
