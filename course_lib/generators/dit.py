"""A diffusion transformer (DiT) on continuous latents: the velocity model of flow matching.

Paper: Scalable Diffusion Models with Transformers (DiT, Peebles & Xie, 2022),
https://arxiv.org/abs/2212.09748, used as a velocity model as in SiT (https://arxiv.org/abs/2401.08740).

1. patchify: latents (B, C, h, w) -> N = (h/p)(w/p) tokens of p*p*C values, a linear map to width D;
2. positions: fixed 2D sin-cos (DiT's table, its row and column halves swapped) or learned, one per
   patch;
3. the condition: a timestep embedding plus a class embedding (with a "no class" row for CFG), the
   adaLN-Zero input of every block of the shared transformer (full mask);
4. a final adaLN-modulated norm and a zero-initialized linear layer, so a fresh DiT outputs zero;
5. unpatchify back to (B, C, h, w): the velocity.

The velocity lives in normalized latent space: unit variance, since the noise is N(0, I). The DiT keeps
the ``LatentNormalizer`` of lesson 05 (identity until fitted, saved with the checkpoint): ``loss`` takes
the tokenizer's raw latents and normalizes them, ``sample`` returns raw latents ready to decode.
Classes: None, or (B,) ints in [0, num_classes) with ``NO_CLASS`` (-1) for "no class" (see ``conditioning``).

Shapes: B batch, C latent channels, h w latent grid, p patch, N tokens, D width.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn

from course_lib.generators import configs, drawing, flow
from course_lib.generators.conditioning import ClassRows, check_class_dropout
from course_lib.generators.transformer import Transformer, TransformerConfig, init_weights
from course_lib.tokenizers.kl import LatentNormalizer

DIT_POSITIONS = ("sinusoidal", "learned")


@dataclass
class DiTConfig:
    """The latent grid (from the tokenizer), the patch size, the classes, and the transformer's size."""

    channels: int = 4
    grid: tuple[int, int] = (8, 8)
    patch: int = 2
    num_classes: int = 0  # 0: unconditional
    class_dropout: float = 0.1  # probability of training on "no class" (for CFG); flow_loss applies it
    width: int = 128
    depth: int = 4
    heads: int = 4
    positions: str = "sinusoidal"  # "sinusoidal" (fixed, DiT's halves swapped) or "learned"
    dropout: float = 0.0

    def __post_init__(self):
        self.grid = configs.check_grid(self.grid)
        if not isinstance(self.patch, int) or self.patch < 1 or any(s % self.patch for s in self.grid):
            raise ValueError(f"patch must be a positive int dividing the grid {self.grid}, got {self.patch!r}")
        if self.channels < 1 or self.num_classes < 0:
            raise ValueError(f"expected channels >= 1 and num_classes >= 0, got {self.channels} and {self.num_classes}")
        check_class_dropout(self.class_dropout)
        if self.positions not in DIT_POSITIONS:
            raise ValueError(f"unknown DiT positions {self.positions!r}; choose one of {list(DIT_POSITIONS)}")
        self.transformer_config()  # validates width / heads / dropout

    @property
    def num_tokens(self) -> int:
        return (self.grid[0] // self.patch) * (self.grid[1] // self.patch)

    def transformer_config(self) -> TransformerConfig:
        return TransformerConfig(width=self.width, depth=self.depth, heads=self.heads, max_len=self.num_tokens,
                                 mask="full", positions="learned" if self.positions == "learned" else "none",
                                 cond_dim=self.width, dropout=self.dropout)


# latent grid, channels and classes come from the tokenizer and dataset: build_dit("dit-small", grid=..., ...)
# measured on 8x8 latents, C=4, patch 2 (16 tokens), batch 64, one CPU thread: training steps/s, parameters,
# float32 file size (adaLN's modulation, 6 D^2 per block, is a third of the weights): dit-tiny 27 steps/s,
# 0.18 M, 0.7 MB; dit-small 6 steps/s, 1.3 M, 5.1 MB; dit-base 3 steps/s, 5.0 M, 20 MB
dit_presets: dict[str, DiTConfig] = configs.sized_presets(DiTConfig, "dit")


def build_dit(preset_or_config: str | DiTConfig, **overrides) -> "DiT":
    """A DiT from a preset name (``dit_presets``) or a config, with fields replaced by ``overrides``."""
    return DiT(configs.from_preset(dit_presets, preset_or_config, overrides, "DiT"))


# ----- embeddings -----

def timestep_features(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features (B, dim) of times t (B,) in [0, 1], scaled by 1000 as DiT's integer timesteps."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = 1000.0 * t.float()[:, None] * freqs[None]  # (B, dim/2)
    return torch.cat([angles.cos(), angles.sin()], dim=-1)  # (B, dim)


def sincos_positions_2d(width: int, rows: int, cols: int) -> torch.Tensor:
    """Fixed 2D positions (rows*cols, width): the first half of the features encodes the row, the second
    the column, each as [sin, cos] at width/4 frequencies (MAE, DiT).

    DiT's ``get_2d_sincos_pos_embed`` (from MAE) puts the column in the first half (its meshgrid takes w
    first) and takes square grids only: this is its table with the two halves swapped, which a model
    learns with equally; on a square grid it is DiT's table of the transposed grid.
    """
    if width % 4:
        raise ValueError(f"2D sin-cos positions need a width divisible by 4, got {width}")
    quarter = width // 4
    freqs = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)  # (D/4,)
    r, c = torch.meshgrid(torch.arange(rows, dtype=torch.float64), torch.arange(cols, dtype=torch.float64),
                          indexing="ij")
    features = [torch.outer(pos.flatten(), freqs) for pos in (r, c)]  # (N, D/4) each
    table = torch.cat([f(a) for a in features for f in (torch.sin, torch.cos)], dim=-1)  # (N, D)
    return table.float()


class DiT(nn.Module):
    """Latents (B, C, h, w), times (B,), classes -> velocities (B, C, h, w)."""

    frequency_dim = 256  # DiT's TimestepEmbedder width before its MLP

    def __init__(self, config: DiTConfig):
        super().__init__()
        self.config = config
        c, p = config, config.patch
        self.patch_embed = nn.Linear(p * p * c.channels, c.width)
        self.time_mlp = nn.Sequential(nn.Linear(self.frequency_dim, c.width), nn.SiLU(), nn.Linear(c.width, c.width))
        self.class_embed = nn.Embedding(c.num_classes + 1, c.width)  # the last row: "no class"
        self.class_rows = ClassRows(c.num_classes, offset=0, family="DiT")
        if c.positions == "sinusoidal":
            rows, cols = c.grid[0] // p, c.grid[1] // p
            self.register_buffer("position", sincos_positions_2d(c.width, rows, cols), persistent=False)
        self.transformer = Transformer(c.transformer_config())
        self.head = nn.Linear(c.width, p * p * c.channels)
        self.normalizer = LatentNormalizer()  # identity until fitted: fit_normalizer(latents)
        for module in (self.patch_embed, self.time_mlp, self.class_embed):
            module.apply(init_weights)
        nn.init.zeros_(self.head.weight)  # adaLN-Zero's last step: a fresh DiT predicts zero velocity
        nn.init.zeros_(self.head.bias)

    def condition(self, t: torch.Tensor, classes, n: int) -> torch.Tensor:
        """The adaLN condition (B, D): timestep embedding + class embedding."""
        t = torch.as_tensor(t, dtype=torch.float32, device=self.head.weight.device)
        t = t.expand(n) if t.ndim == 0 else t
        if t.shape != (n,) or t.min() < 0 or t.max() > 1:
            raise ValueError(f"expected times of shape ({n},) in [0, 1], got shape {tuple(t.shape)}"
                             + (f" in [{t.min().item():.3g}, {t.max().item():.3g}]" if t.numel() else ""))
        return self.time_mlp(timestep_features(t, self.frequency_dim)) + self.class_embed(self.class_rows(classes, n, self.head.weight.device))

    def forward(self, latents: torch.Tensor, t: torch.Tensor, classes=None) -> torch.Tensor:
        """The velocity (B, C, h, w) at latents x_t (B, C, h, w), times t (B,) in [0, 1], classes (B,) or None."""
        c, p = self.config, self.config.patch
        if latents.ndim != 4 or tuple(latents.shape[1:]) != (c.channels, *c.grid) or latents.shape[0] == 0:
            raise ValueError(f"expected latents of shape (B, {c.channels}, {c.grid[0]}, {c.grid[1]}), "
                             f"got {tuple(latents.shape)}")
        cond = self.condition(t, classes, latents.shape[0])  # (B, D)
        # 1. patchify
        tokens = rearrange(latents, "b c (h p1) (w p2) -> b (h w) (p1 p2 c)", p1=p, p2=p)  # (B, N, p*p*C)
        x = self.patch_embed(tokens)  # (B, N, D)
        # 2. fixed positions (learned ones are added by the transformer)
        if c.positions == "sinusoidal":
            x = x + self.position
        # 3. blocks with adaLN-Zero, 4. the modulated final norm and the zero head
        out = self.head(self.transformer(x, cond))  # (B, N, p*p*C)
        # 5. unpatchify
        return rearrange(out, "b (h w) (p1 p2 c) -> b c (h p1) (w p2)", h=c.grid[0] // p, p1=p, p2=p)

    # ----- training and sampling on raw latents -----

    def fit_normalizer(self, latents: torch.Tensor, per_channel: bool = False) -> LatentNormalizer:
        """Fit the latent scale (and shift) on a batch of the tokenizer's latents (B, C, h, w); kept in checkpoints."""
        self.normalizer = LatentNormalizer.fit(latents, per_channel).to(self.head.weight.device)
        return self.normalizer

    def loss(self, latents: torch.Tensor, classes=None, time_sampling: str = "uniform",
             generator: torch.Generator | None = None) -> torch.Tensor:
        """The flow-matching loss on raw latents (B, C, h, w), normalized first, with the config's class dropout."""
        if classes is not None:
            classes = torch.as_tensor(classes, dtype=torch.long, device=latents.device)
        dropout = self.config.class_dropout if self.training and classes is not None else 0.0
        return flow.flow_loss(self, self.normalizer.normalize(latents), classes, time_sampling, dropout, generator)

    @torch.no_grad()
    def sample(self, n: int, classes=None, steps: int = 16, method: str = "euler", cfg: float = 1.0,
               generator: torch.Generator | None = None, trajectory: bool = False):
        """n raw latents (n, C, h, w) for the tokenizer's ``decode_latents``, from noise drawn with ``generator``.

        classes: None, one int for all, or (n,) ints; cfg: the guidance scale (1: none). trajectory=True also
        returns every state (T+1, n, C, h, w), denormalized too.
        """
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive int, got {n!r}")
        was_training = self.training
        self.eval()
        try:
            shape = (n, self.config.channels, *self.config.grid)
            out = flow.sample(self, shape, classes, steps, method, cfg, generator, self.head.weight.device, trajectory)
        finally:
            self.train(was_training)
        if trajectory:
            return self.normalizer.denormalize(out[0]), self.normalizer.denormalize(out[1])
        return self.normalizer.denormalize(out)




@torch.no_grad()
def flow_test_loss(model: DiT, latents: torch.Tensor, classes: torch.Tensor | None, time_sampling: str,
                   seed: int = 0, batch_size: int = 256) -> float:
    """The flow-matching loss on held-out raw latents (N, C, h, w), with fixed times and noise (``seed``):
    comparable across runs."""
    device = model.head.weight.device
    generator = torch.Generator(device).manual_seed(seed)
    losses = []
    for i in range(0, len(latents), batch_size):
        batch = latents[i:i + batch_size].to(device)
        c = None if classes is None else classes[i:i + batch_size].to(device)
        losses.append(float(model.loss(batch, c, time_sampling, generator)) * len(batch))
    return sum(losses) / len(latents)


drawing.register(DiT, "flow", ("steps", "method", "cfg"), "a flow model integrates an ODE from noise to latents")
