"""Vector quantization: replace each encoder output by its nearest codebook vector.

Paper: Neural Discrete Representation Learning (van den Oord, Vinyals, Kavukcuoglu, 2017),
https://arxiv.org/abs/1711.00937 -- nearest-code lookup, straight-through estimator, codebook and
commitment losses (eq. 3), EMA codebook updates (appendix A.1).

The fixes for codebook collapse that notebook 03 switches on one by one:
- EMA updates with Laplace-smoothed counts, as in the Sonnet reference implementation
  (https://github.com/google-deepmind/sonnet, ``VectorQuantizerEMA``);
- k-means initialization from encoder outputs (lesson 01's ``kmeans``) and restarting dead codes
  from encoder outputs:
  Robust Training of Vector Quantized Bottleneck Models (Lancucki et al., 2020),
  https://arxiv.org/abs/2005.08520 (also Jukebox, https://arxiv.org/abs/2005.00341);
- l2-normalized (cosine) codes and a low-dimensional lookup space: Vector-quantized Image Modeling
  with Improved VQGAN (Yu et al., 2021), https://arxiv.org/abs/2110.04627.

Data-parallel training (torchrun): every rank's EMA statistics and code usage are summed over the
ranks, and k-means init and restarts draw from the gathered batch on rank 0 and broadcast their
choice, so all ranks keep one codebook, the one a single process with the global batch would keep.

Shapes: z (B, C, H, W) from the encoder; inside, N = B*H*W vectors of D = code_dim features and a
codebook of K rows.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from course_lib.engine.distributed import all_gather_cat, all_reduce_sum_, broadcast_
from course_lib.tokenizers.kmeans import kmeans
from course_lib.tokenizers.quantizer import QuantizerOutput, usage_stats

DISTANCES = ("l2", "cosine")
UPDATES = ("ema", "loss")
INITS = ("kmeans", "uniform")


@dataclass
class VQConfig:
    """Vector quantizer settings; the defaults are the fixed VQ, ``naive_vq_config()`` the collapsing one."""

    codebook_size: int = 1024
    code_dim: int | None = None  # low-dim lookup: project z to code_dim before the lookup (None: no projection)
    distance: str = "l2"  # "l2" | "cosine" (l2-normalized z and codes)
    update: str = "ema"  # "ema" (moving averages) | "loss" (codebook loss + optimizer)
    init: str = "kmeans"  # "kmeans" (first training batch) | "uniform" (taming: U(-1/K, 1/K))
    beta: float = 0.25  # commitment weight
    decay: float = 0.99  # EMA decay
    restart_after: int = 0  # restart codes unused for this many training steps (0: never)
    kmeans_iters: int = 10
    eps: float = 1e-5  # Laplace smoothing of the EMA counts

    def __post_init__(self):
        for name, value, known in (("distance", self.distance, DISTANCES), ("update", self.update, UPDATES),
                                   ("init", self.init, INITS)):
            if value not in known:
                raise ValueError(f"unknown {name} {value!r}; choose one of {list(known)}")
        if self.codebook_size < 2:
            raise ValueError(f"codebook_size must be >= 2, got {self.codebook_size!r}")
        if self.code_dim is not None and self.code_dim < 1:
            raise ValueError(f"code_dim must be None or >= 1, got {self.code_dim!r}")
        if not 0.0 <= self.decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {self.decay!r}")
        if self.restart_after < 0:
            raise ValueError(f"restart_after must be >= 0 (0 disables restarts), got {self.restart_after!r}")


def naive_vq_config(codebook_size: int = 1024) -> VQConfig:
    """The textbook VQ-VAE setup that collapses: codebook loss, uniform init, no restarts."""
    return VQConfig(codebook_size=codebook_size, update="loss", init="uniform", restart_after=0)


# ----- the pure functions students re-derive in notebook 03 -----

def nearest_code(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Index of the nearest codebook row (squared l2) for every vector: z (..., D), codebook (K, D) -> (...)."""
    if z.shape[-1] != codebook.shape[-1] or codebook.ndim != 2:
        raise ValueError(f"expected z (..., D) and codebook (K, D) with the same D, "
                         f"got z {tuple(z.shape)} and codebook {tuple(codebook.shape)}")
    with torch.no_grad():
        flat = rearrange(z, "... d -> (...) d")  # (N, D)
        # ||z - e||^2 = ||z||^2 - 2 z.e + ||e||^2: one matmul, never a (N, K, D) difference tensor
        distances = torch.addmm(codebook.pow(2).sum(-1), flat, codebook.T, alpha=-2)  # (N, K)
        distances += flat.pow(2).sum(-1, keepdim=True)  # same for every code: kept so the values are distances
        return distances.argmin(-1).reshape(z.shape[:-1])


def straight_through(z: torch.Tensor, z_q: torch.Tensor) -> torch.Tensor:
    """Forward value z_q, gradient passed to z unchanged (d out / d z = identity)."""
    return z + (z_q - z).detach()


def vq_loss(z: torch.Tensor, z_q: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(codebook_loss, commitment_loss) of VQ-VAE eq. 3, each a mean over elements.

    codebook_loss = ||sg(z) - z_q||^2 moves the codes only; commitment_loss = beta * ||z - sg(z_q)||^2
    moves the encoder only. taming-transformers' ``legacy=True`` put beta on the codebook term instead
    (https://github.com/CompVis/taming-transformers/blob/master/taming/modules/vqvae/quantize.py).
    """
    codebook_loss = F.mse_loss(z_q, z.detach())
    commitment_loss = beta * F.mse_loss(z, z_q.detach())
    return codebook_loss, commitment_loss


class VectorQuantizer(nn.Module):
    """z (B, dim, H, W) -> nearest codes. Training-mode forwards also run the k-means init, dead-code
    restarts and EMA updates; ``encode`` / ``decode`` never change the codebook."""

    def __init__(self, dim: int, config: VQConfig | None = None):
        super().__init__()
        config = config or VQConfig()
        self.config, self.dim, self.codebook_size = config, dim, config.codebook_size
        code_dim = config.code_dim or dim
        # low-dim lookup (improved VQGAN, sec. 3.2): the lookup happens in code_dim, the decoder sees dim
        self.project_in = nn.Linear(dim, code_dim) if code_dim != dim else nn.Identity()
        self.project_out = nn.Linear(code_dim, dim) if code_dim != dim else nn.Identity()
        k = config.codebook_size
        codebook = torch.empty(k, code_dim).uniform_(-1.0 / k, 1.0 / k)
        if config.update == "ema":
            self.register_buffer("codebook", codebook)  # moved by moving averages, not by gradients
            self.register_buffer("ema_counts", torch.ones(k))
            self.register_buffer("ema_sums", codebook.clone())
        else:
            self.codebook = nn.Parameter(codebook)
        self.register_buffer("unused_steps", torch.zeros(k, dtype=torch.long))
        self.register_buffer("initialized", torch.tensor(config.init != "kmeans"))

    @property
    def bits_per_token(self) -> float:
        return math.log2(self.codebook_size)

    def lookup_codebook(self) -> torch.Tensor:
        """The codebook as the lookup sees it (K, D): unit rows for cosine codes."""
        return F.normalize(self.codebook, dim=-1) if self.config.distance == "cosine" else self.codebook

    def _to_code_space(self, z: torch.Tensor) -> torch.Tensor:
        self._check_latents(z)
        z = rearrange(z, "b c h w -> b h w c")  # (B, H, W, C)
        z = self.project_in(z)  # (B, H, W, D)
        return F.normalize(z, dim=-1) if self.config.distance == "cosine" else z

    def _check_latents(self, z: torch.Tensor) -> None:
        if z.ndim != 4 or z.shape[1] != self.dim:
            raise ValueError(f"expected z of shape (B, {self.dim}, H, W), got {tuple(z.shape)}")

    def encode(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, dim, H, W) -> indices (B, H, W)."""
        return nearest_code(self._to_code_space(z), self.lookup_codebook())

    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        """indices (B, H, W) -> z_q (B, dim, H, W)."""
        if indices.dtype != torch.long or indices.ndim != 3:
            raise ValueError(f"expected long indices of shape (B, H, W), got {indices.dtype} {tuple(indices.shape)}")
        if indices.numel() and (indices.min() < 0 or indices.max() >= self.codebook_size):
            raise ValueError(f"indices must lie in [0, {self.codebook_size}), "
                             f"got [{indices.min().item()}, {indices.max().item()}]")
        z_q = self.project_out(F.embedding(indices, self.lookup_codebook()))  # (B, H, W, C)
        return rearrange(z_q, "b h w c -> b c h w")

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        z_e = self._to_code_space(z)  # (B, H, W, D)
        flat = rearrange(z_e, "b h w d -> (b h w) d").detach()  # (N, D)
        if self.training:
            self._initialize(flat)
            self._restart_dead_codes(flat)
        codebook = self.lookup_codebook()  # (K, D)
        indices = nearest_code(z_e, codebook)  # (B, H, W)
        z_q = F.embedding(indices, codebook)  # (B, H, W, D)
        codebook_loss, commitment_loss = vq_loss(z_e, z_q, self.config.beta)
        if self.training:
            self._track_usage(indices.flatten())
            if self.config.update == "ema":
                self.ema_update(flat, indices.flatten())
        z_q = self.project_out(straight_through(z_e, z_q))  # (B, H, W, C)
        losses = {"commitment": commitment_loss}
        if self.config.update == "loss":
            losses["codebook"] = codebook_loss
        return QuantizerOutput(rearrange(z_q, "b h w c -> b c h w"), indices, losses,
                        usage_stats(indices, self.codebook_size))

    @torch.no_grad()
    def ema_update(self, z: torch.Tensor, indices: torch.Tensor) -> None:
        """Move every code to the running mean of the vectors assigned to it; z (N, D), indices (N,)."""
        decay, eps, k = self.config.decay, self.config.eps, self.codebook_size
        # 1. this batch: how many vectors chose each code, and their sum
        counts = torch.bincount(indices, minlength=k).to(z.dtype)  # (K,)
        sums = torch.zeros_like(self.ema_sums).index_add_(0, indices, z)  # (K, D)
        all_reduce_sum_(counts), all_reduce_sum_(sums)  # under torchrun: the global batch's statistics
        # 2. exponential moving averages of both (VQ-VAE appendix A.1, eqs. 6-7)
        self.ema_counts.mul_(decay).add_(counts, alpha=1 - decay)
        self.ema_sums.mul_(decay).add_(sums, alpha=1 - decay)
        # 3. laplace smoothing keeps the count of an unused code from reaching zero (no division by 0)
        total = self.ema_counts.sum()
        smoothed = (self.ema_counts + eps) / (total + k * eps) * total  # (K,)
        # 4. code = running sum / running count (eq. 8)
        self.codebook.copy_(self.ema_sums / smoothed.unsqueeze(-1))

    @torch.no_grad()
    def _initialize(self, z: torch.Tensor) -> None:
        """k-means on the first training batch of encoder outputs z (N, D) gives the starting codebook."""
        if bool(self.initialized):
            return
        k, z = self.codebook_size, all_gather_cat(z)  # (N, D) of the global batch
        if len(z) < k:  # a batch with fewer vectors than codes: draw k of them with repetition
            z = z[torch.randint(len(z), (k,), device=z.device)]
        # the seed comes from the global generator, so seed_everything makes the init reproducible
        generator = torch.Generator().manual_seed(int(torch.randint(2**62, (1,))))
        centroids = kmeans(z, k, self.config.kmeans_iters, generator)  # lesson 01's k-means, (K, D)
        if self.config.distance == "cosine":
            centroids = F.normalize(centroids, dim=-1)  # k-means ran on unit vectors; put the means back on the sphere
        broadcast_(centroids)  # ranks draw different random numbers: rank 0's codebook is everyone's
        self._set_codes(torch.ones_like(self.unused_steps, dtype=torch.bool), centroids)
        self.initialized.fill_(True)

    @torch.no_grad()
    def _track_usage(self, indices: torch.Tensor) -> None:
        used = all_reduce_sum_(torch.bincount(indices, minlength=self.codebook_size)) > 0  # (K,) on any rank
        self.unused_steps.add_(1).masked_fill_(used, 0)

    @torch.no_grad()
    def _restart_dead_codes(self, z: torch.Tensor) -> None:
        """Codes unused for ``restart_after`` steps jump to random encoder outputs of this batch."""
        if self.config.restart_after == 0:
            return
        dead = self.unused_steps >= self.config.restart_after  # (K,)
        num_dead = int(dead.sum())
        if num_dead == 0:
            return
        z = all_gather_cat(z)  # (N, D) of the global batch
        samples = broadcast_(z[torch.randint(z.shape[0], (num_dead,), device=z.device)])  # (num_dead, D)
        self._set_codes(dead, samples)
        self.unused_steps.masked_fill_(dead, 0)

    def _set_codes(self, mask: torch.Tensor, values: torch.Tensor) -> None:
        """Overwrite the codes where mask (K,) is True; EMA state restarts as one vector seen once."""
        self.codebook.data[mask] = values
        if self.config.update == "ema":
            self.ema_sums[mask] = values
            self.ema_counts[mask] = 1.0
