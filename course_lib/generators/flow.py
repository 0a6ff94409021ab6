"""Flow matching with the straight (rectified) path from data to noise: the loss, guidance and ODE samplers.

Papers: Flow Straight and Fast: Learning to Generate and Transfer Data with Rectified Flow (Liu et al.,
2022), https://arxiv.org/abs/2209.03003; Flow Matching for Generative Modeling (Lipman et al., 2022),
https://arxiv.org/abs/2210.02747; SiT: Exploring Flow and Diffusion-based Generative Models with
Scalable Interpolant Transformers (Ma et al., 2024), https://arxiv.org/abs/2401.08740; the logit-normal
time distribution of Scaling Rectified Flow Transformers (SD3, Esser et al., 2024),
https://arxiv.org/abs/2403.03206.

The convention, used everywhere in the course: t = 0 is data, t = 1 is noise,

    x_t = (1 - t) * x_0 + t * noise,      v = dx_t / dt = noise - x_0,

so the velocity target is the same at every t along one straight path. A model ``v(x_t, t, classes)``
learns E[noise - x_0 | x_t] by regression; sampling integrates dx/dt = v from t = 1 (pure noise) down to
t = 0 with Euler or Heun steps.

Classes: None (unconditional), or a long tensor (B,) of class indices where ``NO_CLASS`` (-1) marks a
row as unconditional; class dropout during training and CFG at sampling use that "no class" row.

Shapes: B batch; x is any (B, ...) tensor: latents (B, C, h, w) for the DiT, points (B, 2) for the toy;
t is (B,) in [0, 1]; T steps.
"""
from __future__ import annotations

from typing import Callable

import torch

from course_lib.generators.conditioning import NO_CLASS, drop_classes

TIME_SAMPLINGS = ("uniform", "logit-normal")
METHODS = ("euler", "heun")

VelocityModel = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]


# ----- the references the lesson re-derives -----

def interpolant(data: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x_t = (1 - t) data + t noise and the velocity target noise - data; t (B,) broadcasts over the rest."""
    if data.shape != noise.shape:
        raise ValueError(f"data and noise must have the same shape, got {tuple(data.shape)} and {tuple(noise.shape)}")
    t = _per_sample(t, data)  # (B, 1, ..., 1)
    return (1 - t) * data + t * noise, noise - data


def euler_step(x: torch.Tensor, velocity: torch.Tensor, t: float, t_next: float) -> torch.Tensor:
    """One Euler step of dx/dt = v from t to t_next (t_next < t when sampling: towards the data)."""
    return x + (t_next - t) * velocity


def cfg_velocity(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance on the velocity: uncond + scale * (cond - uncond); 1: conditional, 0: unconditional."""
    if cond.shape != uncond.shape:
        raise ValueError(f"cond and uncond velocities must have the same shape, got {tuple(cond.shape)} "
                         f"and {tuple(uncond.shape)}")
    return uncond + scale * (cond - uncond)


# ----- training -----

def sample_times(n: int, sampling: str = "uniform", generator: torch.Generator | None = None,
                 device=None, mean: float = 0.0, std: float = 1.0) -> torch.Tensor:
    """n times (n,) in [0, 1]: uniform, or logit-normal t = sigmoid(mean + std * N(0, 1)) (SD3, eq. 19).

    logit-normal puts more training on the middle times, where predicting the velocity is hardest.
    """
    if sampling not in TIME_SAMPLINGS:
        raise ValueError(f"unknown time sampling {sampling!r}; choose one of {list(TIME_SAMPLINGS)}")
    if sampling == "uniform":
        return torch.rand(n, generator=generator, device=device)
    if std <= 0:
        raise ValueError(f"the logit-normal std must be positive, got {std!r}")
    return torch.sigmoid(mean + std * torch.randn(n, generator=generator, device=device))


def flow_loss(model: VelocityModel, data: torch.Tensor, classes: torch.Tensor | None = None,
              time_sampling: str = "uniform", class_dropout: float = 0.0,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """The flow-matching loss: mean squared error between v(x_t, t, classes) and noise - data.

    1. draw t (uniform or logit-normal) and noise N(0, I), one per sample (Lipman et al., eq. 23);
    2. build x_t and the target on the straight path (Liu et al., eq. 1);
    3. drop classes with probability ``class_dropout`` for CFG;
    4. regress the model's velocity on the target.
    Latents should have unit variance first (``LatentNormalizer`` of lesson 05): the noise is N(0, I).
    """
    if data.ndim < 2 or data.shape[0] == 0:
        raise ValueError(f"expected a batch of data (B, ...), got {tuple(data.shape)}")
    # 1. times and noise
    t = sample_times(data.shape[0], time_sampling, generator, data.device)  # (B,)
    noise = torch.randn(data.shape, generator=generator, device=data.device, dtype=data.dtype)
    # 2. the point on the path and its velocity
    x_t, target = interpolant(data, noise, t)
    # 3. class dropout
    if classes is not None and class_dropout > 0:
        classes = drop_classes(classes, class_dropout, generator)
    # 4. regression
    return torch.mean((model(x_t, t, classes) - target) ** 2)


# ----- sampling -----

def time_grid(steps: int) -> torch.Tensor:
    """steps + 1 times (T+1,) from 1 (noise) down to 0 (data), equally spaced."""
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    return torch.linspace(1.0, 0.0, steps + 1)


def guided_velocity(model: VelocityModel, x: torch.Tensor, t: float, classes: torch.Tensor | None,
                    cfg: float = 1.0) -> torch.Tensor:
    """The model's velocity at x (B, ...) and time t; with cfg != 1 one batch of 2B: conditional, then "no class"."""
    times = torch.full((x.shape[0],), float(t), device=x.device)  # (B,)
    if cfg == 1.0:
        return model(x, times, classes)
    if classes is None:
        raise ValueError(f"cfg={cfg} guides towards a class: pass classes, or use cfg=1.0")
    both = torch.cat([classes, torch.full_like(classes, NO_CLASS)])  # (2B,)
    cond, uncond = model(torch.cat([x, x]), torch.cat([times, times]), both).chunk(2)  # (B, ...) each
    return cfg_velocity(cond, uncond, cfg)


@torch.no_grad()
def integrate(model: VelocityModel, noise: torch.Tensor, classes: torch.Tensor | None = None, steps: int = 16,
              method: str = "euler", cfg: float = 1.0, trajectory: bool = False):
    """Carry noise (B, ...) at t = 1 to samples at t = 0 along dx/dt = v; deterministic given the noise.

    euler: x <- x + (t' - t) v(x, t), one model call per step. heun (second order, as in EDM's
    Algorithm 1, https://arxiv.org/abs/2206.00364): an Euler guess x', then the step with the mean of
    v(x, t) and v(x', t'), two calls per step. trajectory=True also returns every state (T+1, B, ...).
    """
    if method not in METHODS:
        raise ValueError(f"unknown sampler {method!r}; choose one of {list(METHODS)}")
    times = time_grid(steps).tolist()
    x, states = noise, [noise]
    for t, t_next in zip(times[:-1], times[1:]):
        velocity = guided_velocity(model, x, t, classes, cfg)
        guess = euler_step(x, velocity, t, t_next)
        if method == "heun":
            corrected = guided_velocity(model, guess, t_next, classes, cfg)
            guess = euler_step(x, (velocity + corrected) / 2, t, t_next)
        x = guess
        states.append(x)
    return (x, torch.stack(states)) if trajectory else x


def sample(model: VelocityModel, shape: tuple, classes: torch.Tensor | None = None, steps: int = 16,
           method: str = "euler", cfg: float = 1.0, generator: torch.Generator | None = None,
           device=None, trajectory: bool = False):
    """Samples of ``shape`` (B, ...) from noise drawn with ``generator``: the same seed, the same samples."""
    if classes is not None:
        classes = torch.as_tensor(classes, dtype=torch.long, device=device)
        classes = classes.expand(shape[0]) if classes.ndim == 0 else classes
        if classes.shape != (shape[0],):
            raise ValueError(f"expected one class per sample, shape ({shape[0]},), got {tuple(classes.shape)}")
    noise = torch.randn(shape, generator=generator, device=device)  # (B, ...) at t = 1
    return integrate(model, noise, classes, steps, method, cfg, trajectory)


def _per_sample(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """t (B,) or a number, shaped (B, 1, ..., 1) to broadcast over x (B, ...)."""
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    t = t.expand(x.shape[0]) if t.ndim == 0 else t
    if t.shape != (x.shape[0],):
        raise ValueError(f"expected one time per sample, shape ({x.shape[0]},), got {tuple(t.shape)}")
    return t.reshape(-1, *([1] * (x.ndim - 1)))
