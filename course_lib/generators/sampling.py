"""Next-token training and sampling, as small reference functions (lesson 07's exercises).

Papers: the shifted next-token loss of Improving Language Understanding by Generative Pre-Training
(GPT, Radford et al., 2018; teacher forcing); top-k sampling from Hierarchical Neural Story
Generation (Fan et al., 2018), https://arxiv.org/abs/1805.04833; top-p (nucleus) sampling from
The Curious Case of Neural Text Degeneration (Holtzman et al., 2019), https://arxiv.org/abs/1904.09751;
classifier-free guidance from Ho & Salimans (2022), https://arxiv.org/abs/2207.12598, applied to
logits as in Parti (https://arxiv.org/abs/2206.10789) and LlamaGen (https://arxiv.org/abs/2406.06525).

Shapes: B batch, N sequence length, K vocabulary (codebook) size.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange


def next_token_loss(logits: torch.Tensor, sequence: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of predicting ``sequence[:, i + 1]`` from ``logits[:, i]`` (teacher forcing).

    logits (B, N, K) from running the model on the whole sequence (B, N); the last position has
    nothing to predict and the first token is never a target.
    """
    if logits.ndim != 3 or sequence.shape != logits.shape[:2]:
        raise ValueError(f"expected logits (B, N, K) and sequence (B, N), got {tuple(logits.shape)} "
                         f"and {tuple(sequence.shape)}")
    targets = sequence[:, 1:]  # (B, N-1)
    if targets.numel() and (targets.min() < 0 or targets.max() >= logits.shape[-1]):
        raise ValueError(f"targets must lie in [0, {logits.shape[-1]}), got values in "
                         f"[{int(targets.min())}, {int(targets.max())}]")
    predictions = rearrange(logits[:, :-1], "b n k -> (b n) k")  # (B*(N-1), K)
    return F.cross_entropy(predictions, rearrange(targets, "b n -> (b n)"))


def filter_logits(logits: torch.Tensor, top_k: int | None = None, top_p: float | None = None) -> torch.Tensor:
    """logits (B, K) with every token outside the top-k / top-p support set to -inf.

    top_k keeps the k largest logits (ties with the k-th are kept too); top_p keeps the smallest set
    of most probable tokens whose total probability reaches p (at least one token); top_p = 1 keeps
    every token. Both: the intersection, top-k first.
    """
    if logits.ndim != 2:
        raise ValueError(f"expected logits of shape (B, K), got {tuple(logits.shape)}")
    if top_k is not None:
        if not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k must be a positive int or None, got {top_k!r}")
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p!r}")
    if top_p is not None and top_p < 1.0:  # at 1 keep all: a float32 cumsum can reach 1 early and drop a tail
        sorted_logits, order = logits.sort(dim=-1, descending=True)  # (B, K)
        probs = sorted_logits.softmax(dim=-1)
        before = probs.cumsum(dim=-1) - probs  # (B, K) mass of the more probable tokens
        drop_sorted = before >= top_p  # the first token always stays (before = 0)
        drop = drop_sorted.scatter(-1, order, drop_sorted)  # (B, K) back in vocabulary order
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample_step(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                top_p: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """One token per row from logits (B, K): divide by the temperature, filter, draw. Returns (B,).

    temperature 0 means greedy decoding (argmax). Pass a ``torch.Generator`` for reproducible draws.
    """
    if logits.ndim != 2:
        raise ValueError(f"expected logits of shape (B, K), got {tuple(logits.shape)}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature!r}")
    if temperature == 0:
        return logits.argmax(dim=-1)  # (B,)
    probs = filter_logits(logits.float() / temperature, top_k, top_p).softmax(dim=-1)  # (B, K)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]  # (B,)


def cfg_logits(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: uncond + scale * (cond - uncond).

    scale 1 is the conditional model, 0 the unconditional one, above 1 pushes away from the
    unconditional prediction (sharper, less diverse samples).
    """
    if cond.shape != uncond.shape:
        raise ValueError(f"cond and uncond logits must have the same shape, got {tuple(cond.shape)} "
                         f"and {tuple(uncond.shape)}")
    return uncond + scale * (cond - uncond)
