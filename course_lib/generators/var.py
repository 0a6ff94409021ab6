"""VAR: next-scale prediction, a transformer that draws a whole token grid per pass, coarse to fine.

Paper: Visual Autoregressive Modeling: Scalable Image Generation via Next-Scale Prediction (VAR,
Tian et al., 2024), https://arxiv.org/abs/2404.02905, as in the reference's ``models/var.py``
(https://github.com/FoundationVision/VAR/blob/main/models/var.py). The tokens are the pyramid of a
multi-scale residual tokenizer (:mod:`course_lib.tokenizers.multiscale`), scales joined coarse to fine,
(B, L). The transformer reads the sequence with a *block-causal* mask (:func:`block_causal_mask`: a
token sees every token of the coarser scales and of its own scale) and predicts all tokens of scale k
at once from:

- at the first scale: the class token (VAR's ``sos``; ``ClassRows`` with "no class" for class dropout);
- at scale k > 1: the running reconstruction after scale k-1, area-downsampled to scale k's size
  (:func:`next_scale_inputs`, VAR's ``idxBl_to_var_input``), projected to the width;
- plus a level (scale) embedding and a learned embedding per position.

Sampling runs one pass per scale with a KV cache across the scales; classifier-free guidance grows
with the scale (:func:`guidance_scales`): VAR's ``t = cfg * si / (S - 1)``, logits ``(1 + t) cond - t
uncond``, is here a guidance scale ramped from 1 (none) at the first scale to ``cfg`` at the last.

Differences from the reference, for a small CPU model: the class enters as a token only (no adaLN
conditioning), so the three token generators of the course share one transformer core and compare at
equal width and depth; the model keeps a frozen copy of its tokenizer's codebook and phi convolutions
(``quantizer``, in its ``state_dict``), so a checkpoint samples on its own.

Shapes: B batch, L tokens of all scales, k a scale's side, D width, K codebook size, C latent channels.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from course_lib.generators import configs, drawing
from course_lib.generators.conditioning import ClassRows, check_class_dropout, class_ids, drop_classes
from course_lib.generators.sampling import cfg_logits, sample_step
from course_lib.generators.transformer import Transformer, TransformerConfig, init_weights
from course_lib.tokenizers.multiscale import MultiScaleConfig, MultiScaleQuantizer, join_scales, resize, split_scales

GUIDANCE = ("ramp", "constant")


@dataclass
class VARConfig:
    """The tokenizer's pyramid (codebook, scales, latent channels, phi), the classes and the transformer's size."""

    FAMILY = "VAR"

    codebook_size: int = 1024
    scales: tuple[int, ...] = (1, 2, 3, 4, 6, 8)
    latent_channels: int = 16
    phis: int = 4
    phi_ratio: float = 0.5
    num_classes: int = 0  # 0: unconditional
    class_dropout: float = 0.1  # probability of training on "no class" (for CFG)
    width: int = 128
    depth: int = 4
    heads: int = 4
    dropout: float = 0.0

    def __post_init__(self):
        self.scales = tuple(self.scales)
        if self.num_classes < 0 or self.latent_channels < 1:
            raise ValueError(f"expected num_classes >= 0 and latent_channels >= 1, got {self.num_classes}, "
                             f"{self.latent_channels}")
        check_class_dropout(self.class_dropout)
        self.quantizer_config(), self.transformer_config()  # validate

    @property
    def num_tokens(self) -> int:
        return sum(k * k for k in self.scales)

    def quantizer_config(self) -> MultiScaleConfig:
        return MultiScaleConfig(self.codebook_size, self.scales, self.phis, self.phi_ratio, restart_after=0)

    def transformer_config(self) -> TransformerConfig:
        return TransformerConfig(width=self.width, depth=self.depth, heads=self.heads, max_len=self.num_tokens,
                                 mask="block", positions="none", dropout=self.dropout)


# the same sizes as gpt_presets and maskgit_presets; the pyramid comes from the tokenizer: build_var("var-small", ...)
var_presets: dict[str, VARConfig] = configs.sized_presets(VARConfig, "var")


def build_var(preset_or_config: str | VARConfig, tokenizer=None, **overrides) -> "VAR":
    """A VAR from a preset name (``var_presets``) or a config, with fields replaced by ``overrides``; given an
    ``msvq`` tokenizer, its pyramid (codebook, scales, latent channels, phi) and its codebook and phi weights."""
    if tokenizer is not None:
        if getattr(tokenizer, "kind", None) != "msvq":
            raise ValueError(f"a VAR models a multi-scale ('msvq') tokenizer's pyramid, got a "
                             f"{getattr(tokenizer, 'kind', type(tokenizer).__name__)!r} tokenizer")
        q = tokenizer.quantizer.config
        overrides = {"codebook_size": q.codebook_size, "scales": q.scales, "phis": q.phis, "phi_ratio": q.phi_ratio,
                     "latent_channels": tokenizer.quantizer.dim, **overrides}
    model = VAR(configs.from_preset(var_presets, preset_or_config, overrides, "VAR"))
    if tokenizer is not None:
        model.load_quantizer(tokenizer.quantizer)
    return model


# ----- the pieces students re-derive in notebook 10 -----

def scale_levels(scales: tuple[int, ...]) -> torch.Tensor:
    """The scale index of every position of the joined sequence (L,): 0 for the first scale's k^2 tokens, ..."""
    return torch.cat([torch.full((k * k,), i, dtype=torch.long) for i, k in enumerate(scales)])


def block_causal_mask(scales: tuple[int, ...]) -> torch.Tensor:
    """(L, L) booleans, True where query i may attend to key j: j's scale is coarser than i's or the same."""
    levels = torch.cat([torch.full((k * k,), i) for i, k in enumerate(scales)])  # (L,): each position's scale
    return levels[:, None] >= levels[None, :]


def scale_bounds(scales: tuple[int, ...]) -> list[tuple[int, int]]:
    """Where each scale's tokens sit in the joined sequence: [(begin, end), ...]."""
    ends = torch.tensor([k * k for k in scales]).cumsum(0).tolist()
    return [(end - k * k, end) for k, end in zip(scales, ends)]


def next_scale_inputs(quantizer: MultiScaleQuantizer, grids: list[torch.Tensor]) -> list[torch.Tensor]:
    """Teacher forcing: for each scale k after the first, the running reconstruction after scale k-1
    area-downsampled to k's size, (B, C, k, k). ``grids`` holds at least the scales before the last."""
    scales, f, inputs = quantizer.scales, 0, []
    for i in range(len(scales) - 1):
        f = f + quantizer.contribution(grids[i], i)  # (B, C, H, W) after scale i
        inputs.append(resize(f, scales[i + 1], "area"))  # (B, C, k, k) of the next scale
    return inputs


def guidance_scales(cfg: float, num_scales: int, guidance: str = "ramp") -> list[float]:
    """The guidance scale of each scale: "ramp" grows linearly from 1 (none) at the first to ``cfg`` at the
    last (VAR's ``t = cfg * si / (S - 1)``), "constant" is ``cfg`` at every scale."""
    if guidance not in GUIDANCE:
        raise ValueError(f"unknown guidance {guidance!r}; choose one of {list(GUIDANCE)}")
    if guidance == "constant" or num_scales == 1:
        return [float(cfg)] * num_scales
    return [1.0 + (cfg - 1.0) * i / (num_scales - 1) for i in range(num_scales)]


class VAR(nn.Module):
    """Class token and next-scale inputs -> block-causal transformer -> logits over the K codes at every position."""

    def __init__(self, config: VARConfig):
        super().__init__()
        self.config = config
        c, scales = config, config.scales
        self.quantizer = MultiScaleQuantizer(c.latent_channels, c.quantizer_config()).requires_grad_(False)
        self.class_rows = ClassRows(c.num_classes, offset=0, family="VAR")
        self.class_embedding = nn.Embedding(c.num_classes + 1, c.width)  # classes, then "no class"
        self.start = nn.Parameter(torch.zeros(scales[0] ** 2, c.width))  # VAR's pos_start
        self.input_projection = nn.Linear(c.latent_channels, c.width)  # VAR's word_embed
        self.level = nn.Embedding(len(scales), c.width)
        self.position = nn.Parameter(torch.zeros(c.num_tokens, c.width))
        self.transformer = Transformer(c.transformer_config())
        self.head = nn.Linear(c.width, c.codebook_size)
        self.register_buffer("levels", scale_levels(scales), persistent=False)
        self.register_buffer("mask", block_causal_mask(scales), persistent=False)
        for module in (self.class_embedding, self.input_projection, self.level, self.head):
            module.apply(init_weights)
        nn.init.normal_(self.start, std=0.02), nn.init.normal_(self.position, std=0.02)

    def load_quantizer(self, quantizer: MultiScaleQuantizer) -> None:
        """Copy the tokenizer's codebook and phi convolutions (the pyramid must be the same)."""
        mine, theirs = self.quantizer.config, quantizer.config
        same = (mine.codebook_size, mine.scales, mine.phis, mine.phi_ratio, self.quantizer.dim) == \
            (theirs.codebook_size, theirs.scales, theirs.phis, theirs.phi_ratio, quantizer.dim)
        if not same:
            raise ValueError(f"this VAR models {mine} on {self.quantizer.dim} channels, the tokenizer has "
                             f"{theirs} on {quantizer.dim}")
        self.quantizer.load_state_dict(quantizer.state_dict())

    # ----- the sequence -----

    def _check_tokens(self, tokens: torch.Tensor) -> None:
        c = self.config
        if tokens.ndim != 2 or tokens.shape[1] != c.num_tokens or tokens.shape[0] == 0:
            raise ValueError(f"expected tokens of shape (B, {c.num_tokens}) (scales {c.scales} joined), "
                             f"got {tuple(tokens.shape)}")
        if tokens.dtype.is_floating_point or tokens.min() < 0 or tokens.max() >= c.codebook_size:
            raise ValueError(f"expected integer tokens in [0, {c.codebook_size}), got {tokens.dtype} "
                             f"in [{tokens.min().item()}, {tokens.max().item()}]")

    def first_inputs(self, rows: torch.Tensor) -> torch.Tensor:
        """Class rows (B,) -> the first scale's input vectors (B, k0^2, D)."""
        begin, end = 0, self.config.scales[0] ** 2
        return self.class_embedding(rows)[:, None] + self.start + self._where(begin, end)

    def scale_inputs(self, small: torch.Tensor, scale_index: int) -> torch.Tensor:
        """A next-scale input (B, C, k, k) -> input vectors (B, k^2, D) at that scale's positions."""
        begin, end = scale_bounds(self.config.scales)[scale_index]
        return self.input_projection(rearrange(small, "b c h w -> b (h w) c")) + self._where(begin, end)

    def _where(self, begin: int, end: int) -> torch.Tensor:
        return self.level(self.levels[begin:end]) + self.position[begin:end]  # (end - begin, D)

    def logits(self, tokens: torch.Tensor, classes=None, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher-forced logits (B, L, K): the positions of scale k predict its tokens from the coarser scales."""
        self._check_tokens(tokens)
        tokens = tokens.long().to(self.head.weight.device)
        rows = self.class_rows(classes, tokens.shape[0], tokens.device) if rows is None else rows
        grids = split_scales(tokens, self.config.scales)
        with torch.no_grad():
            inputs = next_scale_inputs(self.quantizer, grids)
        x = torch.cat([self.first_inputs(rows)] + [self.scale_inputs(s, i + 1) for i, s in enumerate(inputs)], 1)
        return self.head(self.transformer(x, attn_mask=self.mask))  # (B, L, K)

    def forward(self, tokens: torch.Tensor, classes=None, generator: torch.Generator | None = None) -> torch.Tensor:
        """The mean cross-entropy (nats per token) over every scale of tokens (B, L) given classes (B,) or None;
        in training mode each class becomes "no class" with probability ``class_dropout``."""
        self._check_tokens(tokens)
        b = tokens.shape[0]
        rows = self.class_rows(classes, b, self.head.weight.device)  # (B,)
        if self.training and classes is not None and self.config.class_dropout > 0:
            ids = class_ids(classes, b, self.config.num_classes, "VAR", rows.device)  # (B,)
            rows = self.class_rows(drop_classes(ids, self.config.class_dropout, generator), b)
        logits = self.logits(tokens, rows=rows)  # (B, L, K)
        return F.cross_entropy(rearrange(logits, "b l k -> (b l) k"), tokens.flatten().to(logits.device))

    # ----- sampling -----

    @torch.no_grad()
    def sample(self, n: int, classes=None, temperature: float = 1.0, top_k: int | None = None,
               top_p: float | None = None, cfg: float = 1.0, guidance: str = "ramp",
               generator: torch.Generator | None = None, use_cache: bool = True) -> torch.Tensor:
        """n token pyramids (n, L), one pass per scale, coarse to fine.

        classes: None (unconditional), one int for all, or (n,) ints. cfg: the guidance scale at the last
        scale (1: none; needs classes), reached by a "ramp" from 1 at the first scale or held "constant".
        use_cache=False re-runs the whole sequence each scale (the slow reference).
        """
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive int, got {n!r}")
        weights = guidance_scales(cfg, len(self.config.scales), guidance)
        guided = cfg != 1.0
        if guided and classes is None:
            raise ValueError(f"cfg={cfg} guides towards a class: pass classes, or use cfg=1.0")
        was_training = self.training
        self.eval()
        try:
            return self._sample(n, classes, weights if guided else None,
                                dict(temperature=temperature, top_k=top_k, top_p=top_p, generator=generator), use_cache)
        finally:
            self.train(was_training)

    def _sample(self, n: int, classes, weights: list[float] | None, step_args: dict, use_cache: bool) -> torch.Tensor:
        c, device = self.config, self.head.weight.device
        # 1. the class rows; with guidance a second half of "no class" rows
        rows = self.class_rows(classes, n, device)  # (n,)
        if weights is not None:
            rows = torch.cat([rows, self.class_rows(None, n, device)])  # (2n,)
        x, seen, grids = self.first_inputs(rows), [], []
        f = torch.zeros(n, c.latent_channels, c.scales[-1], c.scales[-1], device=device)
        cache = self.transformer.new_cache() if use_cache else None
        for i, (k, (begin, end)) in enumerate(zip(c.scales, scale_bounds(c.scales))):
            # 2. one pass: this scale's positions, seeing the cached coarser scales (or all of them again)
            if use_cache:
                hidden = self.transformer(x, cache=cache, attn_mask=self.mask[begin:end, :end])  # (B', k^2, D)
            else:
                seen.append(x)
                hidden = self.transformer(torch.cat(seen, 1), attn_mask=self.mask[:end, :end])[:, begin:end]
            logits = self.head(hidden)  # (B', k^2, K)
            if weights is not None:
                cond, uncond = logits.chunk(2)  # (n, k^2, K) each
                logits = cond if weights[i] == 1.0 else cfg_logits(cond, uncond, weights[i])
            # 3. draw every token of the scale at once, and add its codes to the reconstruction
            grid = rearrange(sample_step(rearrange(logits, "b n k -> (b n) k"), **step_args), "(b h w) -> b h w",
                             b=n, h=k)  # (n, k, k)
            grids.append(grid)
            f = f + self.quantizer.contribution(grid, i)  # (n, C, H, W)
            if i + 1 < len(c.scales):  # 4. the next scale reads the reconstruction at its size
                x = self.scale_inputs(resize(f, c.scales[i + 1], "area"), i + 1)
                x = x.repeat(2, 1, 1) if weights is not None else x  # (B', k'^2, D)
        return join_scales(grids)  # (n, L)


@torch.no_grad()
def bits_per_scale(model: VAR, tokens, batch_size: int = 256) -> list[float]:
    """Mean teacher-forced NLL in bits per token of each scale, coarse to fine, on a TokenSet of pyramids."""
    model.eval()
    conditional = model.config.num_classes > 0
    device = model.head.weight.device
    nats = []
    for t, c in zip(tokens.tokens.split(batch_size), tokens.classes.split(batch_size)):
        logits = model.logits(t, c if conditional else None)  # (B, L, K)
        loss = F.cross_entropy(rearrange(logits, "b l k -> b k l"), t.to(device), reduction="none")  # (B, L)
        nats.append(loss)
    per_position = torch.cat(nats).mean(0)  # (L,)
    return [per_position[begin:end].mean().item() / math.log(2) for begin, end in scale_bounds(model.config.scales)]


drawing.register(VAR, "var", ("temperature", "top_k", "top_p", "cfg", "guidance"),
                 "a VAR draws one whole scale per pass, coarse to fine")
