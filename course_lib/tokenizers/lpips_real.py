"""Real LPIPS, only where torchvision's ImageNet backbone weights are already on this machine.

Paper: The Unreasonable Effectiveness of Deep Features as a Perceptual Metric (Zhang, Isola, Efros,
Shechtman, Wang, 2018), https://arxiv.org/abs/1801.03924 -- the ``lpips`` package ships only the
linear heads calibrated on human judgments (a few KB); the backbone is torchvision's AlexNet or VGG16,
a 233-528 MB download. This module never downloads and never runs a random backbone: it reads the
weight file from the torch hub cache (``torch.hub.get_dir()/checkpoints``) or raises at once with
one line on how to get it. ``course_lib/tokenizers/perceptual.py`` is the offline feature distance.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

# backbone -> (torchvision's file name, how to fetch it on a machine with network)
BACKBONES = {
    "alex": ("alexnet-owt-7be5be79.pth", "torchvision.models.alexnet(weights='IMAGENET1K_V1')"),
    "vgg": ("vgg16-397923af.pth", "torchvision.models.vgg16(weights='IMAGENET1K_V1')"),
}


class LPIPSWeightsMissing(FileNotFoundError):
    """torchvision's backbone weight file is not in the torch hub cache."""


def backbone_weights_path(net: str = "alex") -> Path:
    """Where torchvision keeps the backbone's weights: ``torch.hub.get_dir()/checkpoints/<file>``."""
    _check_net(net)
    return Path(torch.hub.get_dir()) / "checkpoints" / BACKBONES[net][0]


def has_lpips_weights(net: str = "alex") -> bool:
    """True when real LPIPS with backbone ``net`` can run here without a download."""
    return backbone_weights_path(net).is_file()


def _check_net(net: str) -> None:
    if net not in BACKBONES:
        raise ValueError(f"unknown LPIPS backbone {net!r}; choose one of {sorted(BACKBONES)}")


class RealLPIPS(nn.Module):
    """LPIPS v0.1 with its calibrated heads and torchvision's ImageNet backbone: (B, 3, H, W) twice -> (B,).

    Images are in [0, 1], the course's range. ``description`` says which backbone file ran.
    """

    def __init__(self, net: str = "alex"):
        super().__init__()
        path = backbone_weights_path(net)
        if not path.is_file():
            file, fetch = BACKBONES[net]
            raise LPIPSWeightsMissing(
                f"real LPIPS ({net}) needs torchvision's {file} in {path.parent}; on a machine with network run "
                f"python -c \"import torchvision; {fetch}\" and copy the file there (or set TORCH_HOME)")
        import lpips  # imported here: only this path needs it
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torchvision's `pretrained=` deprecation, inside lpips
            # pnet_rand=True builds the backbone without torchvision's download; its weights come next
            self.lpips = lpips.LPIPS(net=net, version="0.1", pnet_rand=True, verbose=False)
        _load_backbone(self.lpips.net, path, net)
        self.lpips.eval().requires_grad_(False)
        self.net, self.description = net, f"LPIPS v0.1, {net} backbone from {path}"

    def train(self, mode: bool = True) -> "RealLPIPS":
        super().train(mode)
        self.lpips.eval()  # dropout in the heads stays off
        return self

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.shape != y.shape or x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected two RGB image batches of shape (B, 3, H, W), got {tuple(x.shape)} "
                             f"and {tuple(y.shape)}")
        return self.lpips(x, y, normalize=True).flatten()  # (B,); normalize: [0, 1] -> [-1, 1]


def _load_backbone(trunk: nn.Module, path: Path, net: str) -> None:
    """Copy torchvision's ``features.<i>.*`` tensors into lpips's slices, whose children keep index i."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    features = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
    expected = {f"{name}.{key}" for slice_ in trunk.children() for name, child in slice_.named_children()
                for key in child.state_dict()}
    missing = sorted(expected - set(features))
    if missing:
        raise ValueError(f"{path} is not torchvision's {net} weight file: no features.{missing[0]} "
                         f"(and {len(missing) - 1} more); delete it and fetch it again")
    for slice_ in trunk.children():
        for name, child in slice_.named_children():
            child_state = {k: features[f"{name}.{k}"] for k in child.state_dict()}
            child.load_state_dict(child_state)
