"""The student's function in the signature of a library function that gives the same answer.

Copied into the sandbox beside ``runner.py``: a stub of a library function (``sandbox.EQUIVALENTS``,
``sandbox.REFERENCE_ADAPTERS``), called by the notebook outside grading, runs the student's function
through the adapter of its name. No adapter computes a graded answer itself: each calls the
student's function, or raises.
"""
from __future__ import annotations

from typing import Any, Callable


class ReferenceAbsent(RuntimeError):
    """A library function that would need what the exercise does not teach, absent while grading."""


def _codes_from_centroids(f: Callable) -> Callable:
    return lambda z, codebook: f(z.reshape(-1, z.shape[-1]), codebook).reshape(z.shape[:-1])  # (..., D) -> (...)


def _masked_after(f: Callable) -> Callable:
    def masked_after(step: int, steps: int, unknown: Any, masked_now: Any, schedule: str = "cosine") -> Any:
        import torch

        now = torch.as_tensor(masked_now)
        total = torch.as_tensor(unknown).expand_as(now)
        count = _constant if schedule == "constant" else f  # the exercise leaves "constant" out
        counts = [int(count(step, steps, int(u), int(m), schedule)) for u, m in zip(total.flatten().tolist(),
                                                                                      now.flatten().tolist())]
        return torch.tensor(counts, dtype=torch.long).reshape(now.shape)

    return masked_after


def _constant(step: int, steps: int, n: int, masked_now: int, schedule: str) -> int:
    """The "constant" schedule, which no exercise grades: n // steps revealed per step, the rest first."""
    target = n - (step + 1) * (n // steps) - min(n % steps, step + 1)
    return max(min(max(target, steps - 1 - step), masked_now - 1), 0)


def _default_eps(f: Callable) -> Callable:
    def quantize(z: Any, levels: Any, eps: float = 1e-3) -> Any:
        if eps != 1e-3:
            raise ReferenceAbsent(f"quantize with eps={eps} is absent while grading (the exercise has eps=1e-3)")
        return f(z, levels)

    return quantize


def _library_sample_step(f: Callable) -> Callable:
    def sample_step(logits: Any, temperature: float = 1.0, top_k: Any = None, top_p: Any = None,
                    generator: Any = None) -> Any:
        if top_p is not None:
            raise ReferenceAbsent("top_p sampling is absent while grading (the exercise has no top_p)")
        return f(logits, temperature, top_k, generator)

    return sample_step


def _unit_weights(f: Callable) -> Callable:
    def perceptual_distance(features_x: Any, features_y: Any, weights: Any = None) -> Any:
        if weights is not None:
            raise ReferenceAbsent("learned channel weights are absent while grading (the exercise has unit weights)")
        return f(features_x, features_y)

    return perceptual_distance


def _absent(f: Callable) -> Callable:
    raise ReferenceAbsent("this course_lib helper of a graded exercise is absent while grading")


ADAPTERS: dict[str, Callable[[Callable], Callable]] = {
    "same": lambda f: f, "absent": _absent, "codes_from_centroids": _codes_from_centroids,
    "mse_from_psnr": lambda f: lambda x, y: 10 ** (-f(x, y) / 10),  # psnr = 10 log10(1 / mse) on [0, 1] images
    "d_side": lambda f: lambda logits_real, logits_fake: f(logits_real, logits_fake)[0],
    "g_side": lambda f: lambda logits_fake: f(logits_fake, logits_fake)[1],  # the generator's side reads fakes only
    "masked_after": _masked_after, "library_sample_step": _library_sample_step, "unit_weights": _unit_weights,
    "default_eps": _default_eps,
    "clamped": lambda f: lambda rec_loss, gan_loss, last_layer, delta=1e-4, max_weight=1e4: f(
        rec_loss, gan_loss, last_layer, delta).clamp(0.0, max_weight),  # the library's weight is clamped
}
