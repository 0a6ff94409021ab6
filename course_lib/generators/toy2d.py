"""Flow matching in 2D, for intuition first: toy distributions, a tiny velocity MLP and its training loop.

Paper: Flow Straight and Fast (rectified flow, Liu et al., 2022), https://arxiv.org/abs/2209.03003,
whose Figure 1 draws exactly this: points of a 2D distribution joined to Gaussian noise by straight
lines, and the learned field that curves them into non-crossing paths.

Also here: the exact velocity field that carries N(0, I) to N(mean, diag(std^2)), against which the
samplers of ``flow`` can be checked without training anything.

Shapes: B points, 2 coordinates; t (B,) in [0, 1]; classes (B,) with ``NO_CLASS`` for "no class".
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from course_lib.generators.conditioning import ClassRows
from course_lib.generators.flow import flow_loss

TOY_DATASETS = ("moons", "checkerboard")


# ----- data -----

def two_moons(n: int, generator: torch.Generator | None = None,
              noise: float = 0.08) -> tuple[torch.Tensor, torch.Tensor]:
    """n points (n, 2) on two interleaved half circles, roughly centred with unit spread, and their moon (n,)."""
    labels = torch.randint(0, 2, (n,), generator=generator)  # (n,)
    angle = math.pi * torch.rand(n, generator=generator)  # (n,)
    upper = torch.stack([angle.cos(), angle.sin()], dim=1)  # (n, 2)
    lower = torch.stack([1 - angle.cos(), 0.5 - angle.sin()], dim=1)
    points = torch.where(labels[:, None] == 0, upper, lower) + noise * torch.randn(n, 2, generator=generator)
    return (points - torch.tensor([0.5, 0.25])) / 0.75, labels


def checkerboard(n: int, generator: torch.Generator | None = None,
                 squares: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """n points (n, 2) uniform on the dark squares of a squares x squares board on [-2, 2]^2, and their half (n,):
    0 left of x = 0, 1 right of it."""
    if squares < 2 or squares % 2:
        raise ValueError(f"a checkerboard needs an even number of squares a side, at least 2, got {squares}")
    rows = torch.randint(0, squares, (n,), generator=generator)  # (n,)
    cols = 2 * torch.randint(0, squares // 2, (n,), generator=generator) + rows % 2  # dark: row + column even
    cells = torch.stack([cols, rows], dim=1).float()  # (n, 2) as (x, y)
    points = -2.0 + (4.0 / squares) * (cells + torch.rand(n, 2, generator=generator))
    return points, (cols >= squares // 2).long()


def toy_dataset(name: str, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Points (n, 2) and labels (n,) of a named toy distribution (``TOY_DATASETS``)."""
    if name not in TOY_DATASETS:
        raise ValueError(f"unknown toy dataset {name!r}; choose one of {list(TOY_DATASETS)}")
    return two_moons(n, generator) if name == "moons" else checkerboard(n, generator)


def gaussian_velocity(mean: torch.Tensor, std: torch.Tensor):
    """The exact field v(x, t) = E[noise - x_0 | x_t = x] for x_0 ~ N(mean, diag(std^2)), noise ~ N(0, I).

    x_t is Gaussian with mean (1 - t) mean and variance (1 - t)^2 std^2 + t^2, and noise - x_0 is jointly
    Gaussian with it: v = -mean + (t - (1 - t) std^2) / var_t * (x - (1 - t) mean). Its flow carries
    noise z at t = 1 to mean + std * z at t = 0, exactly.
    """
    mean, std = torch.as_tensor(mean, dtype=torch.float32), torch.as_tensor(std, dtype=torch.float32)

    def velocity(x: torch.Tensor, t: torch.Tensor, classes=None) -> torch.Tensor:
        t = t[:, None]  # (B, 1)
        var = (1 - t) ** 2 * std ** 2 + t ** 2  # (B, 2)
        return -mean + (t - (1 - t) * std ** 2) / var * (x - (1 - t) * mean)

    return velocity


# ----- the model -----

@dataclass
class ToyConfig:
    """Hidden width and depth of the MLP, the number of classes (0: unconditional) and of time frequencies."""

    hidden: int = 128
    depth: int = 3
    num_classes: int = 0
    frequencies: int = 8

    def __post_init__(self):
        if min(self.hidden, self.depth, self.frequencies) < 1 or self.num_classes < 0:
            raise ValueError(f"expected positive hidden, depth, frequencies and num_classes >= 0, got {self}")




class ToyVelocity(nn.Module):
    """v(x, t, classes): points (B, 2), times (B,), classes (B,) or None -> velocities (B, 2)."""

    def __init__(self, config: ToyConfig):
        super().__init__()
        self.config = config
        inputs = 2 + 2 * config.frequencies + config.hidden
        self.class_embed = nn.Embedding(config.num_classes + 1, config.hidden)  # the last row: "no class"
        layers, width = [], inputs
        for _ in range(config.depth):
            layers += [nn.Linear(width, config.hidden), nn.SiLU()]
            width = config.hidden
        self.mlp = nn.Sequential(*layers, nn.Linear(width, 2))

    def forward(self, x: torch.Tensor, t: torch.Tensor, classes=None) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != 2 or t.shape != (x.shape[0],):
            raise ValueError(f"expected points (B, 2) and times (B,), got {tuple(x.shape)} and {tuple(t.shape)}")
        angles = t[:, None] * math.pi * 2.0 ** torch.arange(self.config.frequencies, device=x.device)  # (B, F)
        rows = ClassRows(self.config.num_classes, family="toy model")(classes, len(x), x.device)  # (B,)
        features = [x, angles.sin(), angles.cos(), self.class_embed(rows)]
        return self.mlp(torch.cat(features, dim=1))  # (B, 2)


def train_toy(model: ToyVelocity, points: torch.Tensor, labels: torch.Tensor | None = None, steps: int = 1000,
              batch: int = 256, lr: float = 3e-3, class_dropout: float = 0.1,
              generator: torch.Generator | None = None) -> list[float]:
    """Train the toy field by flow matching with Adam; returns the loss of every step."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    losses = []
    for _ in range(steps):
        rows = torch.randint(0, points.shape[0], (batch,), generator=generator)  # (batch,)
        classes = None if labels is None else labels[rows]
        loss = flow_loss(model, points[rows], classes, class_dropout=class_dropout, generator=generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    return losses
