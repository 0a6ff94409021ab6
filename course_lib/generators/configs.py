"""What the generators' configs share: the grid and class checks, the token-grid config of the GPT and
MaskGIT, and configs from a preset name (a checkpoint's dict goes through the generic
``course_lib.engine.checkpoints.config_from_dict``).

    build_gpt("gpt-small", grid=(4, 4)) == GPT(from_preset(gpt_presets, "gpt-small", {"grid": (4, 4)}, "GPT"))
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from course_lib.generators.conditioning import check_class_dropout
from course_lib.generators.transformer import TransformerConfig


def check_grid(grid) -> tuple[int, int]:
    """``grid`` as a tuple of two positive ints (h, w), or a ValueError."""
    grid = tuple(grid)
    if len(grid) != 2 or not all(isinstance(s, int) and s > 0 for s in grid):
        raise ValueError(f"grid must be two positive ints (h, w), got {grid!r}")
    return grid


@dataclass
class TokenGridConfig:
    """A transformer over a token grid (from the tokenizer) with a class token: the GPT's and MaskGIT's
    common fields. A subclass names its ``FAMILY`` (for messages) and its attention ``MASK``."""

    FAMILY = "token grid model"
    MASK = "causal"

    codebook_size: int = 1024
    grid: tuple[int, int] = (8, 8)
    num_classes: int = 0  # 0: unconditional
    class_dropout: float = 0.1  # probability of training on "no class" (for CFG)
    width: int = 128
    depth: int = 4
    heads: int = 4
    positions: str = "learned"  # "learned" or "rotary"
    dropout: float = 0.0

    def __post_init__(self):
        self.grid = check_grid(self.grid)
        if self.codebook_size < 2 or self.num_classes < 0:
            raise ValueError(f"expected codebook_size >= 2 and num_classes >= 0, got "
                             f"{self.codebook_size} and {self.num_classes}")
        check_class_dropout(self.class_dropout)
        if self.positions not in ("learned", "rotary"):
            raise ValueError(f"{self.FAMILY} needs positions 'learned' or 'rotary', got {self.positions!r}")
        self.transformer_config()  # validates width / heads / dropout

    @property
    def num_tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    def transformer_config(self) -> TransformerConfig:
        return TransformerConfig(width=self.width, depth=self.depth, heads=self.heads, max_len=self.num_tokens + 1,
                                 mask=self.MASK, positions=self.positions, dropout=self.dropout)


# the transformer sizes every generator family comes in, so families compare at equal sizes
SIZES: dict[str, dict] = {
    "tiny": {"width": 64, "depth": 2, "heads": 2},  # tests, live demos
    "small": {"width": 128, "depth": 4, "heads": 4},  # the shipped models
    "base": {"width": 256, "depth": 4, "heads": 8},  # too big to ship
}


def sized_presets(config_class: type, prefix: str) -> dict:
    """``{"PREFIX-tiny": config_class(width=64, ...), ...}``: a family's presets, one per size of ``SIZES``."""
    return {f"{prefix}-{size}": config_class(**fields) for size, fields in SIZES.items()}


def from_preset(presets: dict, preset_or_config, overrides: dict, family: str):
    """The config of a preset name (a key of ``presets``) or a config, with fields replaced by ``overrides``."""
    if isinstance(preset_or_config, str):
        if preset_or_config not in presets:
            raise ValueError(f"unknown {family} preset {preset_or_config!r}; choose one of {list(presets)}")
        preset_or_config = presets[preset_or_config]
    return replace(preset_or_config, **overrides)
