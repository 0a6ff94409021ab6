"""The transformer core shared by the generators of lessons 07-09, in the style of nanoGPT's model.py.

Paper: Attention Is All You Need (Vaswani et al., 2017), https://arxiv.org/abs/1706.03762, with
pre-norm blocks as in GPT-2 (https://github.com/karpathy/nanoGPT/blob/master/model.py). Options:

- ``mask``: "causal" (each token sees itself and the past: the GPT), "full" (MaskGIT, DiT) or
  "block" (the caller passes its own ``attn_mask`` on every call: VAR's block-causal mask, where a
  whole scale is appended to the KV cache at once);
- ``positions``: "learned" (one vector per position, added to the input), "rotary" (RoFormer,
  https://arxiv.org/abs/2104.09864: queries and keys rotated by a position-dependent angle) or
  "none" (the caller adds its own, e.g. DiT's fixed sinusoids);
- ``cond_dim > 0``: adaLN-Zero conditioning on a vector per sample, from Scalable Diffusion Models
  with Transformers (DiT, Peebles & Xie, 2022), https://arxiv.org/abs/2212.09748: each block's
  norms get a shift, scale and gate regressed from the condition, zero-initialized so every
  block starts as the identity;
- a :class:`KVCache` for incremental decoding: keys and values of past tokens are kept, so each new
  token costs one row of attention instead of re-running the whole prefix.

Shapes: B batch, N tokens, D width, nh heads, hs = D / nh head size, S keys (cached + new).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

MASKS = ("causal", "full", "block")
POSITIONS = ("learned", "rotary", "none")


@dataclass
class TransformerConfig:
    """Width, depth, heads, the longest sequence, the mask, the positions and the condition size."""

    width: int = 128
    depth: int = 4
    heads: int = 4
    max_len: int = 65
    mask: str = "causal"
    positions: str = "learned"
    cond_dim: int = 0  # 0: no adaLN conditioning
    mlp_ratio: int = 4
    dropout: float = 0.0

    def __post_init__(self):
        if self.mask not in MASKS:
            raise ValueError(f"unknown mask {self.mask!r}; choose one of {list(MASKS)}")
        if self.positions not in POSITIONS:
            raise ValueError(f"unknown positions {self.positions!r}; choose one of {list(POSITIONS)}")
        for name in ("width", "depth", "heads", "max_len", "mlp_ratio"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive int, got {getattr(self, name)!r}")
        if self.width % self.heads:
            raise ValueError(f"width must be divisible by heads, got width={self.width}, heads={self.heads}")
        if self.positions == "rotary" and (self.width // self.heads) % 2:
            raise ValueError(f"rotary positions need an even head size, got {self.width // self.heads}")
        if self.cond_dim < 0 or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"expected cond_dim >= 0 and 0 <= dropout < 1, got {self.cond_dim}, {self.dropout}")

    @property
    def head_dim(self) -> int:
        return self.width // self.heads


# sizes for 2 CPU cores: "base" at 64 tokens trains about 1.5 steps/s at batch 64
transformer_presets: dict[str, TransformerConfig] = {
    "tiny": TransformerConfig(width=64, depth=2, heads=2),
    "small": TransformerConfig(width=128, depth=4, heads=4),
    "base": TransformerConfig(width=256, depth=4, heads=8),
}


def config_to_dict(config: TransformerConfig) -> dict:
    return asdict(config)


def config_from_dict(data: dict) -> TransformerConfig:
    return TransformerConfig(**data)


# ----- rotary positions -----

def rotary_tables(max_len: int, head_dim: int, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the angle position * frequency, each (max_len, head_dim), halves repeated."""
    freqs = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)  # (hs/2,)
    angles = torch.outer(torch.arange(max_len, dtype=torch.float64), freqs)  # (max_len, hs/2)
    angles = torch.cat([angles, angles], dim=-1)  # (max_len, hs)
    return angles.cos().float(), angles.sin().float()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each pair (x[i], x[i + hs/2]) of x (B, nh, N, hs) by its position's angle (cos, sin: (N, hs))."""
    x1, x2 = x.chunk(2, dim=-1)  # (B, nh, N, hs/2) each
    rotated = torch.cat([-x2, x1], dim=-1)  # (B, nh, N, hs)
    return x * cos.to(x.dtype) + rotated * sin.to(x.dtype)


# ----- the KV cache -----

class KVCache:
    """Keys and values of every layer for the tokens seen so far, for incremental (causal) decoding.

    Each layer's buffers (B, nh, max_len, hs) are allocated at its first write, with the dtype and
    device of the keys. ``length`` counts the positions already stored; :class:`Transformer`
    advances it after each forward pass.
    """

    def __init__(self, max_len: int):
        self.max_len, self.length = max_len, 0
        self.keys: dict[int, torch.Tensor] = {}
        self.values: dict[int, torch.Tensor] = {}

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (B, nh, N, hs) after the cached positions; return all keys and values (B, nh, S, hs)."""
        end = self.length + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"the KV cache holds at most {self.max_len} positions; {self.length} are stored "
                             f"and {k.shape[2]} more came")
        if layer not in self.keys:
            shape = (k.shape[0], k.shape[1], self.max_len, k.shape[3])
            self.keys[layer] = k.new_empty(shape)
            self.values[layer] = v.new_empty(shape)
        elif self.keys[layer].shape[0] != k.shape[0]:
            raise ValueError(f"the KV cache was started with batch {self.keys[layer].shape[0]}, got {k.shape[0]}")
        self.keys[layer][:, :, self.length:end] = k
        self.values[layer][:, :, self.length:end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]


# ----- blocks -----

def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: x (B, N, D) shifted and scaled per sample by shift, scale (B, D)."""
    return x * (1 + scale[:, None]) + shift[:, None]


class Attention(nn.Module):
    """Multi-head self-attention through ``F.scaled_dot_product_attention``."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.config = config
        self.qkv = nn.Linear(config.width, 3 * config.width)
        self.proj = nn.Linear(config.width, config.width)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, rotary: tuple | None = None, cache: KVCache | None = None,
                layer: int = 0, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        start = cache.length if cache is not None else 0
        qkv = rearrange(self.qkv(x), "b n (three nh hs) -> three b nh n hs", three=3, nh=self.config.heads)
        q, k, v = qkv.unbind(0)  # (B, nh, N, hs) each
        if rotary is not None:
            cos, sin = rotary
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if cache is not None:
            k, v = cache.update(layer, k, v)  # (B, nh, S, hs), S = start + N
        causal = self.config.mask == "causal"
        # is_causal aligns its mask top-left, right only when queries and keys start together
        mask = _cached_causal_mask(q.shape[2], start, x.device) if causal and start > 0 else attn_mask
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and start == 0,
                                           dropout_p=self.config.dropout if self.training else 0.0)
        y = rearrange(y, "b nh n hs -> b n (nh hs)")  # (B, N, D)
        return self.dropout(self.proj(y))


def _cached_causal_mask(n: int, start: int, device) -> torch.Tensor | None:
    """(N, start + N) booleans: new query i (at position start + i) sees keys 0 .. start + i."""
    if n == 1:
        return None  # one new token sees every cached key and itself: no mask needed
    keys = torch.arange(start + n, device=device)
    return keys[None, :] <= (start + torch.arange(n, device=device))[:, None]


class MLP(nn.Module):
    def __init__(self, config: TransformerConfig):
        super().__init__()
        hidden = config.mlp_ratio * config.width
        self.fc = nn.Linear(config.width, hidden)
        self.proj = nn.Linear(hidden, config.width)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(F.gelu(self.fc(x))))  # (B, N, D)


class Block(nn.Module):
    """Pre-norm block: x + attn(norm(x)), then x + mlp(norm(x)); with adaLN-Zero when cond_dim > 0."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        adaptive = config.cond_dim > 0
        # with adaLN the condition supplies the affine part of the norms (DiT)
        self.norm1 = nn.LayerNorm(config.width, elementwise_affine=not adaptive)
        self.attn = Attention(config)
        self.norm2 = nn.LayerNorm(config.width, elementwise_affine=not adaptive)
        self.mlp = MLP(config)
        self.modulation = nn.Linear(config.cond_dim, 6 * config.width) if adaptive else None

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None, rotary: tuple | None = None,
                cache: KVCache | None = None, layer: int = 0, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.modulation is None:
            x = x + self.attn(self.norm1(x), rotary, cache, layer, attn_mask)  # (B, N, D)
            return x + self.mlp(self.norm2(x))
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(F.silu(cond)).chunk(6, dim=-1)  # (B, D)
        x = x + gate1[:, None] * self.attn(modulate(self.norm1(x), shift1, scale1), rotary, cache, layer, attn_mask)
        return x + gate2[:, None] * self.mlp(modulate(self.norm2(x), shift2, scale2))


class Transformer(nn.Module):
    """Token vectors (B, N, D) -> normed hidden states (B, N, D); the model on top owns embeddings and heads."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.config = config
        if config.positions == "learned":
            self.position = nn.Parameter(torch.zeros(config.max_len, config.width))
        if config.positions == "rotary":
            cos, sin = rotary_tables(config.max_len, config.head_dim)
            self.register_buffer("cos", cos, persistent=False)
            self.register_buffer("sin", sin, persistent=False)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.depth))
        adaptive = config.cond_dim > 0
        self.norm = nn.LayerNorm(config.width, elementwise_affine=not adaptive)
        self.final_modulation = nn.Linear(config.cond_dim, 2 * config.width) if adaptive else None
        self.apply(init_weights)
        self._init_special()

    def _init_special(self):
        if self.config.positions == "learned":
            nn.init.normal_(self.position, std=0.02)
        for block in self.blocks:
            # gpt-2: residual projections scaled down with depth
            for proj in (block.attn.proj, block.mlp.proj):
                nn.init.normal_(proj.weight, std=0.02 / math.sqrt(2 * self.config.depth))
            if block.modulation is not None:
                nn.init.zeros_(block.modulation.weight)  # adaLN-Zero: every block starts as the identity
                nn.init.zeros_(block.modulation.bias)
        if self.final_modulation is not None:
            nn.init.zeros_(self.final_modulation.weight)
            nn.init.zeros_(self.final_modulation.bias)

    def new_cache(self) -> KVCache:
        """An empty KV cache for incremental decoding (causal or block mask)."""
        if self.config.mask == "full":
            raise ValueError("a KV cache needs the causal (or block) mask: with a full mask every token changes every output")
        return KVCache(self.config.max_len)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None, cache: KVCache | None = None,
                attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, N, D) token vectors; cond (B, cond_dim) when cond_dim > 0; cache: the past, for a causal or
        block model; attn_mask (N, S) booleans, True where a query may attend (S keys, cached + new): block only."""
        start = self._check(x, cond, cache)
        self._check_mask(attn_mask, x.shape[1], start + x.shape[1])
        n = x.shape[1]
        if self.config.positions == "learned":
            x = x + self.position[start:start + n]  # (B, N, D)
        rotary = (self.cos[start:start + n], self.sin[start:start + n]) if self.config.positions == "rotary" else None
        for layer, block in enumerate(self.blocks):
            x = block(x, cond, rotary, cache, layer, attn_mask)  # (B, N, D)
        if cache is not None:
            cache.length += n
        if self.final_modulation is None:
            return self.norm(x)
        shift, scale = self.final_modulation(F.silu(cond)).chunk(2, dim=-1)  # (B, D)
        return modulate(self.norm(x), shift, scale)

    def _check(self, x: torch.Tensor, cond: torch.Tensor | None, cache: KVCache | None) -> int:
        c = self.config
        if x.ndim != 3 or x.shape[2] != c.width:
            raise ValueError(f"expected token vectors of shape (B, N, {c.width}), got {tuple(x.shape)}")
        start = cache.length if cache is not None else 0
        if cache is not None and c.mask == "full":
            raise ValueError("a KV cache needs the causal (or block) mask: with a full mask every token changes every output")
        if start + x.shape[1] > c.max_len:
            raise ValueError(f"sequence too long: positions {start}..{start + x.shape[1] - 1}, max_len={c.max_len}")
        if (cond is None) != (c.cond_dim == 0):
            raise ValueError(f"cond_dim={c.cond_dim}: expected cond of shape (B, {c.cond_dim}) exactly when "
                             f"cond_dim > 0, got {None if cond is None else tuple(cond.shape)}")
        if cond is not None and tuple(cond.shape) != (x.shape[0], c.cond_dim):
            raise ValueError(f"expected cond of shape ({x.shape[0]}, {c.cond_dim}), got {tuple(cond.shape)}")
        return start

    def _check_mask(self, attn_mask: torch.Tensor | None, n: int, keys: int) -> None:
        if (attn_mask is not None) != (self.config.mask == "block"):
            raise ValueError(f"attn_mask is given exactly when mask='block' (the caller's own mask); this "
                             f"transformer has mask={self.config.mask!r} and got "
                             f"{None if attn_mask is None else tuple(attn_mask.shape)}")
        if attn_mask is not None and (tuple(attn_mask.shape) != (n, keys) or attn_mask.dtype != torch.bool):
            raise ValueError(f"expected a boolean attn_mask of shape ({n}, {keys}) (queries, cached + new keys), "
                             f"got {attn_mask.dtype} {tuple(attn_mask.shape)}")


def init_weights(module: nn.Module) -> None:
    """nanoGPT's initialization: normal(0, 0.02) weights, zero biases, unit LayerNorms."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
        if getattr(module, "bias", None) is not None:
            nn.init.zeros_(module.bias)
