"""A GPT over token grids: raster-order next-token prediction, class-conditional, with guided sampling.

Papers: Taming Transformers for High-Resolution Image Synthesis (Esser et al., 2021),
https://arxiv.org/abs/2012.09841 (a GPT over VQ token grids in raster order), and Autoregressive
Model Beats Diffusion: Llama for Scalable Image Generation (LlamaGen, Sun et al., 2024),
https://arxiv.org/abs/2406.06525 (a class token as the first token of the sequence, class dropout
during training and classifier-free guidance on the logits at sampling time).

One vocabulary for the sequence: image tokens 0..K-1, then one token per class K..K+C-1, then the
"no class" token K+C. A grid (B, h, w) becomes the sequence [class, t_0, ..., t_{N-1}] (B, N+1),
N = h * w in raster order (row by row); the head predicts image tokens only (K logits). An
unconditional model (num_classes=0) starts every sequence with the "no class" token.

Shapes: B batch, h w grid, N = h*w tokens, D width, K codebook size, C classes.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn

from course_lib.generators import configs, drawing
from course_lib.generators.conditioning import ClassRows, class_ids, drop_classes
from course_lib.generators.configs import TokenGridConfig
from course_lib.generators.sampling import cfg_logits, next_token_loss, sample_step
from course_lib.generators.transformer import KVCache, Transformer, init_weights


@dataclass
class GPTConfig(TokenGridConfig):
    """The token grid (from the tokenizer), the classes, and the transformer's size: causal attention."""

    FAMILY = "GPT"
    MASK = "causal"


# grid, codebook and classes come from the tokenizer and dataset: build_gpt("gpt-small", grid=..., ...)
# measured on 8x8 grids, K=1024, batch 64, one busy CPU thread: training steps/s, parameters, file size:
# gpt-tiny 7 steps/s, 0.24 M, 1 MB; gpt-small 2.3 steps/s, 1.1 M, 4.3 MB; gpt-base 0.8 steps/s, 3.7 M, 15 MB
gpt_presets: dict[str, GPTConfig] = configs.sized_presets(GPTConfig, "gpt")


def build_gpt(preset_or_config: str | GPTConfig, **overrides) -> "GPT":
    """A GPT from a preset name (``gpt_presets``) or a config, with fields replaced by ``overrides``."""
    return GPT(configs.from_preset(gpt_presets, preset_or_config, overrides, "GPT"))


class GPT(nn.Module):
    """Embeddings -> causal transformer -> logits over the K image tokens."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        vocabulary = config.codebook_size + config.num_classes + 1  # tokens, classes, "no class"
        self.class_rows = ClassRows(config.num_classes, offset=config.codebook_size, family="GPT")
        self.embedding = nn.Embedding(vocabulary, config.width)
        self.transformer = Transformer(config.transformer_config())
        self.head = nn.Linear(config.width, config.codebook_size, bias=False)
        self.embedding.apply(init_weights)
        self.head.apply(init_weights)

    # ----- the sequence -----

    def class_tokens(self, classes: torch.Tensor | int | list | None, n: int) -> torch.Tensor:
        """The first token of n sequences (n,): each row's class token, or "no class" where classes is None."""
        return self.class_rows(classes, n, self.head.weight.device)

    def sequence(self, tokens: torch.Tensor, classes=None) -> torch.Tensor:
        """Grids (B, h, w) -> sequences (B, N+1): the class token, then the tokens in raster order."""
        c = self.config
        if tokens.ndim != 3 or tuple(tokens.shape[1:]) != c.grid or tokens.shape[0] == 0:
            raise ValueError(f"expected token grids of shape (B, {c.grid[0]}, {c.grid[1]}), got {tuple(tokens.shape)}")
        if tokens.dtype.is_floating_point or tokens.min() < 0 or tokens.max() >= c.codebook_size:
            raise ValueError(f"expected integer tokens in [0, {c.codebook_size}), got {tokens.dtype} "
                             f"in [{tokens.min().item()}, {tokens.max().item()}]")
        first = self.class_tokens(classes, tokens.shape[0])  # (B,)
        flat = rearrange(tokens.long().to(first.device), "b h w -> b (h w)")  # (B, N) raster order
        return torch.cat([first[:, None], flat], dim=1)  # (B, N+1)

    # ----- training -----

    def forward(self, tokens: torch.Tensor, classes=None, generator: torch.Generator | None = None) -> torch.Tensor:
        """The mean next-token loss (nats per token) on grids (B, h, w) given their classes (B,) or None.

        In training mode each class is replaced by "no class" with probability ``class_dropout``,
        so the same model also learns the unconditional distribution that CFG needs.
        """
        sequence = self.sequence(tokens, classes)  # (B, N+1)
        if self.training and classes is not None and self.config.class_dropout > 0:
            ids = class_ids(classes, sequence.shape[0], self.config.num_classes, "GPT", sequence.device)  # (B,)
            sequence[:, 0] = self.class_rows(drop_classes(ids, self.config.class_dropout, generator), len(ids))
        logits = self.head(self.transformer(self.embedding(sequence)))  # (B, N+1, K)
        return next_token_loss(logits, sequence)

    def logits(self, tokens: torch.Tensor, classes=None) -> torch.Tensor:
        """Teacher-forced logits (B, N, K): ``logits[:, i]`` predicts token i (raster order) from the ones before."""
        sequence = self.sequence(tokens, classes)[:, :-1]  # (B, N): the last token predicts nothing
        return self.head(self.transformer(self.embedding(sequence)))  # (B, N, K)

    def next_logits(self, sequence: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """Logits (B, K) of the token after ``sequence`` (B, T); with a cache, only the tokens it has not seen."""
        hidden = self.transformer(self.embedding(sequence), cache=cache)  # (B, T, D)
        return self.head(hidden[:, -1])  # (B, K)

    def new_cache(self) -> KVCache:
        return self.transformer.new_cache()

    # ----- sampling -----

    @torch.no_grad()
    def sample(self, n: int, classes=None, temperature: float = 1.0, top_k: int | None = None,
               top_p: float | None = None, cfg: float = 1.0, generator: torch.Generator | None = None,
               use_cache: bool = True) -> torch.Tensor:
        """n token grids (n, h, w), one token at a time in raster order.

        classes: None (unconditional), one int for all, or (n,) ints. cfg: the guidance scale (1: none;
        needs classes). generator: a ``torch.Generator`` on the model's device, for reproducible
        samples. use_cache=False re-runs the whole prefix each step (the slow reference).
        """
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive int, got {n!r}")
        guided = cfg != 1.0
        if guided and classes is None:
            raise ValueError(f"cfg={cfg} guides towards a class: pass classes, or use cfg=1.0")
        was_training = self.training
        self.eval()  # dropout off: cached and uncached paths must see the same model
        try:
            return self._sample(n, classes, guided, dict(temperature=temperature, top_k=top_k, top_p=top_p,
                                                         generator=generator), cfg, use_cache)
        finally:
            self.train(was_training)

    def _sample(self, n: int, classes, guided: bool, step_args: dict, cfg: float, use_cache: bool) -> torch.Tensor:
        # 1. the first token: the class; with guidance a second half of "no class" rows
        first = self.class_tokens(classes, n)  # (n,)
        if guided:
            first = torch.cat([first, self.class_tokens(None, n)])  # (2n,)
        sequence = first[:, None]  # (B', 1)
        cache = self.new_cache() if use_cache else None
        tokens = []
        for i in range(self.config.num_tokens):
            # 2. logits of the next token: the newest token only with a cache, the whole prefix without
            logits = self.next_logits(sequence[:, -1:] if use_cache else sequence, cache)  # (B', K)
            if guided:
                cond, uncond = logits.chunk(2)  # (n, K) each
                logits = cfg_logits(cond, uncond, cfg)
            # 3. draw it, and append it to every row that shares it
            token = sample_step(logits, **step_args)  # (n,)
            tokens.append(token)
            sequence = torch.cat([sequence, token.repeat(2 if guided else 1)[:, None]], dim=1)  # (B', i+2)
        grid = torch.stack(tokens, dim=1)  # (n, N)
        return rearrange(grid, "b (h w) -> b h w", h=self.config.grid[0])


drawing.register(GPT, "gpt", ("temperature", "top_k", "top_p", "cfg"), "a GPT draws one token per step, in raster order")
