"""MaskGIT: a bidirectional transformer that fills in masked token grids, a few tokens per step.

Paper: MaskGIT: Masked Generative Image Transformer (Chang et al., 2022), https://arxiv.org/abs/2202.04200,
with the decoding loop of google-research/maskgit's ``libml/parallel_decode.py``
(https://github.com/google-research/maskgit/blob/main/maskgit/libml/parallel_decode.py).
Class dropout and classifier-free guidance on the logits as in Muse (Chang et al., 2023),
https://arxiv.org/abs/2301.00704.

One vocabulary for the sequence: image tokens 0..K-1, then ``[MASK]`` = K (``model.mask_id``),
one token per class K+1..K+C, and "no class" K+C+1. A grid (B, h, w) becomes the sequence
[class, t_0, ..., t_{N-1}] (B, N+1) in raster order, read with a full (bidirectional) attention
mask; the head predicts image tokens (K logits) at the N grid positions. Grids passed to
:meth:`MaskGIT.decode_step` and ``known`` in :meth:`MaskGIT.sample` mark unknown positions with
``mask_id``.

Shapes: B batch, h w grid, N = h*w tokens, D width, K codebook size, C classes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from course_lib.generators import configs, drawing
from course_lib.generators.conditioning import ClassRows, class_ids, drop_classes
from course_lib.generators.configs import TokenGridConfig
from course_lib.generators.mask_schedule import SCHEDULES, check_schedule, check_steps, masked_after, training_mask
from course_lib.generators.sampling import cfg_logits, sample_step
from course_lib.generators.transformer import Transformer, init_weights


@dataclass
class MaskGITConfig(TokenGridConfig):
    """The token grid (from the tokenizer), the classes, the training schedule and the transformer's size:
    full (bidirectional) attention."""

    FAMILY = "MaskGIT"
    MASK = "full"

    schedule: str = "cosine"  # the mask ratio drawn per training sample

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown mask schedule {self.schedule!r}; choose one of {list(SCHEDULES)}")
        super().__post_init__()


# the same sizes as gpt_presets, so the two families compare at equal parameters;
# grid, codebook and classes come from the tokenizer and dataset: build_maskgit("maskgit-small", grid=...)
maskgit_presets: dict[str, MaskGITConfig] = configs.sized_presets(MaskGITConfig, "maskgit")


def build_maskgit(preset_or_config: str | MaskGITConfig, **overrides) -> "MaskGIT":
    """A MaskGIT from a preset name (``maskgit_presets``) or a config, with fields replaced by ``overrides``."""
    return MaskGIT(configs.from_preset(maskgit_presets, preset_or_config, overrides, "MaskGIT"))


def gumbel_noise(shape: tuple, generator: torch.Generator | None, device) -> torch.Tensor:
    """Standard Gumbel samples -log(-log(u)), u ~ U(0, 1), drawn from ``generator``."""
    u = torch.rand(shape, generator=generator, device=device).clamp(1e-20, 1.0 - 1e-7)
    return -torch.log(-torch.log(u))


def remask(sampled: torch.Tensor, confidence: torch.Tensor, is_masked: torch.Tensor, keep_masked: torch.Tensor,
           mask_id: int) -> torch.Tensor:
    """The re-masking of one decoding step: sampled (B, N) -> (B, N) with ``mask_id`` at the
    ``keep_masked`` (B,) least confident positions of each row among those that were masked
    (is_masked (B, N)); positions that were known never go back to ``mask_id``, whatever their confidence."""
    confidence = confidence.masked_fill(~is_masked, math.inf)  # (B, N): known positions rank last
    ranks = confidence.argsort(dim=1, stable=True).argsort(dim=1)  # (B, N): 0 = least confident
    return sampled.masked_fill(ranks < keep_masked[:, None], mask_id)


class MaskGIT(nn.Module):
    """Embeddings -> bidirectional transformer -> logits over the K image tokens at every grid position."""

    def __init__(self, config: MaskGITConfig):
        super().__init__()
        self.config = config
        vocabulary = config.codebook_size + config.num_classes + 2  # tokens, [MASK], classes, "no class"
        self.class_rows = ClassRows(config.num_classes, offset=config.codebook_size + 1, family="MaskGIT")
        self.embedding = nn.Embedding(vocabulary, config.width)
        self.transformer = Transformer(config.transformer_config())
        self.head = nn.Linear(config.width, config.codebook_size, bias=False)
        self.embedding.apply(init_weights)
        self.head.apply(init_weights)

    @property
    def mask_id(self) -> int:
        """The ``[MASK]`` token: marks the positions still to be generated in a grid."""
        return self.config.codebook_size

    # ----- the sequence -----

    def class_tokens(self, classes: torch.Tensor | int | list | None, n: int) -> torch.Tensor:
        """The first token of n sequences (n,): each row's class token, or "no class" where classes is None."""
        return self.class_rows(classes, n, self.head.weight.device)

    def _flat(self, grids: torch.Tensor, allow_mask: bool) -> torch.Tensor:
        """Grids (B, h, w) of token ids -> (B, N) in raster order, checked."""
        c = self.config
        if grids.ndim != 3 or tuple(grids.shape[1:]) != c.grid or grids.shape[0] == 0:
            raise ValueError(f"expected token grids of shape (B, {c.grid[0]}, {c.grid[1]}), got {tuple(grids.shape)}")
        top = c.codebook_size + int(allow_mask)  # the mask id is one past the last image token
        if grids.dtype.is_floating_point or grids.min() < 0 or grids.max() >= top:
            what = f"[0, {c.codebook_size}) or the mask id {self.mask_id}" if allow_mask else f"[0, {c.codebook_size})"
            raise ValueError(f"expected integer tokens in {what}, got {grids.dtype} "
                             f"in [{grids.min().item()}, {grids.max().item()}]")
        return rearrange(grids.long().to(self.head.weight.device), "b h w -> b (h w)")  # (B, N)

    def logits(self, grids: torch.Tensor, classes=None) -> torch.Tensor:
        """Logits (B, N, K) of every grid position, given grids (B, h, w) with ``mask_id`` where unknown."""
        flat = self._flat(grids, allow_mask=True)  # (B, N)
        return self._logits(flat, self.class_tokens(classes, flat.shape[0]))

    def _logits(self, flat: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
        sequence = torch.cat([first[:, None], flat], dim=1)  # (B, N+1)
        hidden = self.transformer(self.embedding(sequence))  # (B, N+1, D)
        return self.head(hidden[:, 1:])  # (B, N, K): the class position predicts nothing

    # ----- training -----

    def forward(self, tokens: torch.Tensor, classes=None, generator: torch.Generator | None = None) -> torch.Tensor:
        """The mean cross-entropy (nats per token) on the masked positions of grids (B, h, w).

        MaskGIT section 3.2: per sample a mask ratio gamma(r), r ~ U[0, 1), through the config's
        schedule; masked tokens become ``[MASK]`` and only they are predicted. In training mode each
        class is replaced by "no class" with probability ``class_dropout`` (for CFG).
        """
        flat = self._flat(tokens, allow_mask=False)  # (B, N)
        b, n = flat.shape
        # 1. which tokens to hide, drawn per sample through the schedule
        masked = training_mask(b, n, self.config.schedule, generator, flat.device)  # (B, N)
        inputs = flat.masked_fill(masked, self.mask_id)  # (B, N)
        # 2. the class token, dropped to "no class" now and then
        first = self.class_tokens(classes, b)  # (B,)
        if self.training and classes is not None and self.config.class_dropout > 0:
            ids = class_ids(classes, b, self.config.num_classes, "MaskGIT", flat.device)  # (B,)
            first = self.class_rows(drop_classes(ids, self.config.class_dropout, generator), b)
        # 3. cross-entropy on the masked positions only
        logits = self._logits(inputs, first)  # (B, N, K)
        return F.cross_entropy(logits[masked], flat[masked])

    # ----- decoding -----

    def _guided_logits(self, flat: torch.Tensor, classes, cfg: float) -> torch.Tensor:
        """Logits (B, N, K), guided by scale cfg (one batched pass with the "no class" rows)."""
        b = flat.shape[0]
        if cfg == 1.0:
            return self._logits(flat, self.class_tokens(classes, b))
        if classes is None:
            raise ValueError(f"cfg={cfg} guides towards a class: pass classes, or use cfg=1.0")
        first = torch.cat([self.class_tokens(classes, b), self.class_tokens(None, b)])  # (2B,)
        cond, uncond = self._logits(flat.repeat(2, 1), first).chunk(2)  # (B, N, K) each
        return cfg_logits(cond, uncond, cfg)

    @torch.no_grad()
    def decode_step(self, grids: torch.Tensor, classes=None, step: int = 0, steps: int = 8, unknown=None,
                    schedule: str = "cosine", temperature: float = 1.0, cfg: float = 1.0,
                    choice_temperature: float = 4.5, generator: torch.Generator | None = None) -> torch.Tensor:
        """One confidence-decoding step: grids (B, h, w) with ``mask_id`` where unknown -> the next grids.

        unknown: (B,) the number of masked positions when decoding started (default: the current
        count, right only at step 0). choice_temperature: the scale of the Gumbel noise added to the
        confidences, annealed as choice_temperature * (1 - r) (0: pure confidence).
        """
        check_steps(step, steps)
        flat = self._flat(grids, allow_mask=True)  # (B, N)
        b, n = flat.shape
        is_masked = flat == self.mask_id  # (B, N)
        masked_now = is_masked.sum(dim=1)  # (B,)
        if unknown is None and step > 0:
            raise ValueError(f"step={step}: pass unknown, the (B,) counts of masked positions at step 0")
        unknown = masked_now if unknown is None else torch.as_tensor(unknown, device=flat.device).expand(b)
        # 1. logits of every position, guided (the paper's eq. 2 samples each masked position independently)
        logits = self._guided_logits(flat, classes, cfg)  # (B, N, K)
        sampled = sample_step(rearrange(logits, "b n k -> (b n) k"), temperature=temperature, generator=generator)
        sampled = torch.where(is_masked, rearrange(sampled, "(b n) -> b n", b=b), flat)  # (B, N): known stay
        # 2. confidence: log-probability of the sampled token
        log_probs = logits.float().log_softmax(dim=-1)  # (B, N, K)
        confidence = log_probs.gather(-1, sampled[..., None])[..., 0]  # (B, N)
        # 3. annealed Gumbel noise on the confidences (reference: mask_by_random_topk)
        r = (step + 1) / steps
        scale = choice_temperature * (1.0 - r)
        if scale > 0:
            confidence = confidence + scale * gumbel_noise((b, n), generator, flat.device)
        # 4. the schedule's count of least confident samples goes back to [MASK]
        keep_masked = masked_after(step, steps, unknown, masked_now, schedule).to(flat.device)  # (B,)
        return rearrange(remask(sampled, confidence, is_masked, keep_masked, self.mask_id),
                         "b (h w) -> b h w", h=self.config.grid[0])

    @torch.no_grad()
    def sample(self, n: int, classes=None, steps: int = 8, schedule: str = "cosine", temperature: float = 1.0,
               cfg: float = 1.0, generator: torch.Generator | None = None, known: torch.Tensor | None = None,
               choice_temperature: float = 4.5) -> torch.Tensor:
        """n token grids (n, h, w) in ``steps`` parallel decoding steps.

        classes: None (unconditional), one int for all, or (n,) ints. cfg: the guidance scale
        (1: none; needs classes). known: (n, h, w) grids with ``mask_id`` at the positions to
        generate; the others are kept as given (inpainting). generator: a ``torch.Generator`` on
        the model's device, for reproducible samples.
        """
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive int, got {n!r}")
        check_schedule(schedule)  # bad settings raise before any work
        check_steps(0, steps)
        h, w = self.config.grid
        grids = torch.full((n, h, w), self.mask_id, dtype=torch.long, device=self.head.weight.device)
        if known is not None:
            if known.shape[:1] != (n,):
                raise ValueError(f"expected known grids of shape ({n}, {h}, {w}), got {tuple(known.shape)}")
            grids = rearrange(self._flat(known, allow_mask=True), "b (h w) -> b h w", h=h)
        unknown = (grids == self.mask_id).flatten(1).sum(dim=1)  # (n,)
        was_training = self.training
        self.eval()
        try:
            for step in range(steps):
                grids = self.decode_step(grids, classes, step, steps, unknown, schedule, temperature, cfg,
                                         choice_temperature, generator)
        finally:
            self.train(was_training)
        return grids


drawing.register(MaskGIT, "maskgit", ("steps", "schedule", "temperature", "cfg", "choice_temperature"), "a MaskGIT decodes a few tokens per step, in parallel")
