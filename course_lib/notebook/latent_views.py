"""The latent-space explorer's views as computations and static figures (the widgets are in ``explorer.py``).

A channel sweep, an interpolation between two images' latents (continuous, or re-quantized at every
step), and a 2-D PCA map of many images' latents. They use only the tokenizer's public face.

The latent of an image is what the decoder reads: the posterior mean of a KL tokenizer (Kingma &
Welling, https://arxiv.org/abs/1312.6114), the quantized vectors z_q of a VQ / FSQ / LFQ tokenizer.
Interpolating latents to probe a generative model follows White, "Sampling Generative Networks"
(2016), https://arxiv.org/abs/1609.04468. Shapes: images (B, C, H, W) in [0, 1], latents (B, C, h, w).
"""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import torch
from matplotlib.colors import is_color_like

from course_lib.notebook.viz import as_display
from course_lib.tokenizers.fsq import codes_to_indices, indices_to_codes

OFFSETS = (-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0)  # channel sweeps, in units of the channel's spread


# ----- latents -----

def _check_image(tokenizer, image: torch.Tensor) -> torch.Tensor:
    expected = (tokenizer.config.autoencoder.in_channels, tokenizer.config.image_size, tokenizer.config.image_size)
    if not isinstance(image, torch.Tensor) or tuple(image.shape[-3:]) != expected or image.ndim not in (3, 4) \
            or (image.ndim == 4 and len(image) != 1):
        got = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"expected one image of shape {expected} (or (1, ...)), got {got}")
    return image.reshape(1, *expected)


@torch.no_grad()
def decoder_input(tokenizer, images: torch.Tensor) -> torch.Tensor:
    """What the decoder reads (B, C, h, w): KL posterior means, or quantized vectors z_q."""
    tokens = tokenizer.encode(images)
    return tokenizer.tokens_to_latents(tokens) if tokenizer.is_discrete else tokens


@torch.no_grad()
def decode_latents(tokenizer, latents: torch.Tensor) -> torch.Tensor:
    """Decoder input (B, C, h, w) -> images (B, C, H, W) clamped to [0, 1], for any kind."""
    return tokenizer.decode_latents(latents).clamp(0, 1)


def fsq_levels(tokenizer) -> torch.Tensor:
    """The levels of an FSQ tokenizer's code channels (d,)."""
    return torch.tensor(tokenizer.config.bottleneck.levels)


def _position(tokenizer, position) -> tuple[int, int]:
    side = tokenizer.config.image_size // tokenizer.config.autoencoder.downsample
    y, x = (side // 2, side // 2) if position is None else position
    if not (0 <= y < side and 0 <= x < side):
        raise ValueError(f"position must be (y, x) inside the {side}x{side} latent grid, got {position}")
    return y, x


@torch.no_grad()
def channel_sweep(tokenizer, image: torch.Tensor, position=None, offsets=OFFSETS) -> tuple[torch.Tensor, list]:
    """Decode one image with one latent channel at ``position`` changed at a time.

    Continuous latents: channel c becomes its value + offset * (its std over the image's positions).
    FSQ: channel c of the code runs through all its levels. Returns images (C, V, 3, H, W) (rows of
    unequal length are padded with the unchanged image) and the value labels of each row.
    """
    image = _check_image(tokenizer, image)
    y, x = _position(tokenizer, position)
    if tokenizer.kind == "fsq":
        return _fsq_sweep(tokenizer, image, y, x)
    if tokenizer.is_discrete:
        raise ValueError(f"channel sweeps need continuous latents (kl, ae) or FSQ codes, got a {tokenizer.kind!r} "
                         f"tokenizer, whose token is one index (try show_interpolation instead)")
    latent = tokenizer.encode(image)[0]  # (C, h, w)
    spread = latent.flatten(1).std(1)  # (C,)
    rows, labels = [], []
    for c in range(latent.shape[0]):
        values = latent[c, y, x] + torch.tensor(offsets) * spread[c]  # (V,)
        batch = latent[None].repeat(len(values), 1, 1, 1)  # (V, C, h, w)
        batch[:, c, y, x] = values
        rows.append(decode_latents(tokenizer, batch))
        labels.append([f"{v:+.2f}" for v in values.tolist()])
    return torch.stack(rows), labels


def _fsq_sweep(tokenizer, image, y, x):
    levels = fsq_levels(tokenizer)
    codes = indices_to_codes(tokenizer.encode(image), levels)[0]  # (h, w, d)
    unchanged = tokenizer.decode(tokenizer.encode(image)).clamp(0, 1)[0]
    width = int(levels.max())
    rows, labels = [], []
    for c, count in enumerate(levels.tolist()):
        half = count // 2
        values = (torch.arange(count) - half) / half  # (L,) every level of channel c
        batch = codes[None].repeat(count, 1, 1, 1)  # (L, h, w, d)
        batch[:, y, x, c] = values
        decoded = tokenizer.decode(codes_to_indices(batch, levels)).clamp(0, 1)
        pad = unchanged[None].repeat(width - count, 1, 1, 1)
        rows.append(torch.cat([decoded, pad]))
        labels.append([f"{v:+.2f}" for v in values.tolist()] + [""] * (width - count))
    return torch.stack(rows), labels


@torch.no_grad()
def interpolate(tokenizer, image_a: torch.Tensor, image_b: torch.Tensor, steps: int = 8):
    """The straight path from image_a's latent to image_b's, decoded: images (T, C, H, W) and, for a
    discrete tokenizer, how many tokens differ from image_a's at each step (None when continuous)."""
    if steps < 2:
        raise ValueError(f"steps must be >= 2 (both ends are included), got {steps}")
    pair = torch.cat([_check_image(tokenizer, image_a), _check_image(tokenizer, image_b)])
    z = tokenizer.encode_latents(pair)  # (2, C, h, w), before the bottleneck
    t = torch.linspace(0, 1, steps).view(-1, 1, 1, 1)
    path = (1 - t) * z[:1] + t * z[1:]  # (T, C, h, w)
    if not tokenizer.is_discrete:
        return decode_latents(tokenizer, path), None
    indices = tokenizer.latents_to_tokens(path)  # (T, h, w): every step snaps back to the codebook
    changed = (indices != indices[:1]).flatten(1).sum(1)  # (T,)
    return tokenizer.decode(indices).clamp(0, 1), changed.tolist()


def _token_count(tokenizer) -> int:
    return math.prod(tokenizer.tokens_shape)


def pca_2d(latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Latents (B, ...) -> coordinates on the first two principal components (B, 2), and the fraction
    of the variance each explains (2,)."""
    flat = latents.detach().flatten(1).double()  # (B, D)
    if flat.shape[0] < 3:
        raise ValueError(f"PCA needs at least 3 latents, got {flat.shape[0]}")
    flat = flat - flat.mean(0)
    _, singular, vh = torch.linalg.svd(flat, full_matrices=False)
    variance = singular ** 2
    return (flat @ vh[:2].T).float(), (variance[:2] / variance.sum()).float()


# ----- static figures -----

def plot_channels(tokenizer, image: torch.Tensor, position=None, offsets=OFFSETS) -> plt.Figure:
    """One row per channel: the image decoded with that channel at ``position`` swept."""
    grid, labels = channel_sweep(tokenizer, image, position, offsets)  # (C, V, 3, H, W)
    y, x = _position(tokenizer, position)
    rows, cols = grid.shape[:2]
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.95 + 0.8, rows * 1.05 + 0.5), squeeze=False)
    f = tokenizer.config.autoencoder.downsample
    for r in range(rows):
        for c in range(cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if not labels[r][c]:  # an FSQ channel with fewer levels than the longest row
                ax.axis("off")
                continue
            ax.imshow(as_display(grid[r, c])[0], interpolation="nearest")
            ax.set_title(labels[r][c], fontsize=7, pad=2)
            ax.add_patch(plt.Rectangle((x * f - 0.5, y * f - 0.5), f, f, fill=False, color="red", lw=0.8))
        axes[r, 0].set_ylabel(f"channel {r}", fontsize=8)
    what = "level" if tokenizer.kind == "fsq" else "value"
    fig.suptitle(f"{tokenizer.kind}: one latent channel changed at position (y={y}, x={x}) (red), "
                 f"{what} above each image", fontsize=9)
    fig.tight_layout()
    return fig


def plot_interpolation(tokenizers: dict, image_a: torch.Tensor, image_b: torch.Tensor, steps: int = 8) -> plt.Figure:
    """One row per tokenizer ({name: tokenizer}): the decoded path from image_a to image_b."""
    _check_named(tokenizers)
    fig, axes = plt.subplots(len(tokenizers), steps, figsize=(steps * 1.0 + 1.6, len(tokenizers) * 1.2 + 0.4),
                             squeeze=False)
    for r, (name, tokenizer) in enumerate(tokenizers.items()):
        images, changed = interpolate(tokenizer, image_a, image_b, steps)
        for c, ax in enumerate(axes[r]):
            ax.imshow(as_display(images[c])[0], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            note = f"t={c / (steps - 1):.2f}" + (f"\n{changed[c]}/{_token_count(tokenizer)} changed" if changed else "")
            ax.set_title(note, fontsize=6.5, pad=2)
        axes[r, 0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
    fig.tight_layout()
    return fig


def plot_latent_map(tokenizers: dict, imageset, factors=None, latents: dict | None = None) -> plt.Figure:
    """PCA of every image's latent, one row per tokenizer and one column per labelled factor."""
    _check_named(tokenizers)
    factors = _factors(imageset, factors)
    latents = latents or {name: decoder_input(t, imageset.images) for name, t in tokenizers.items()}
    fig, axes = plt.subplots(len(tokenizers), len(factors), figsize=(4.0 * len(factors), 3.0 * len(tokenizers)),
                             squeeze=False)
    for r, name in enumerate(tokenizers):
        coords, explained = pca_2d(latents[name])
        for c, factor in enumerate(factors):
            _scatter(axes[r, c], coords, imageset.label(factor), imageset.classes.get(factor))
            axes[r, c].set_title(f"{name}: coloured by {factor}", fontsize=9)
            axes[r, c].set_xlabel(f"PC 1 ({explained[0]:.0%} of variance)", fontsize=8)
            axes[r, c].set_ylabel(f"PC 2 ({explained[1]:.0%})", fontsize=8)
    fig.tight_layout()
    return fig


def _scatter(ax, coords, labels, names) -> None:
    # a factor whose classes are colour names ("red", "cyan", ...) is drawn in those colours
    as_colours = names is not None and all(is_color_like(n) for n in names)
    for k in labels.unique().tolist():
        chosen = labels == k
        colour = names[k] if as_colours else plt.cm.tab10(k % 10)
        ax.scatter(coords[chosen, 0], coords[chosen, 1], s=6, alpha=0.7, color=colour,
                   label=names[k] if names else str(k))
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=6, markerscale=1.5, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)


def _factors(imageset, factors) -> list[str]:
    factors = list(imageset.labels) if factors is None else [factors] if isinstance(factors, str) else list(factors)
    unknown = [f for f in factors if f not in imageset.labels]
    if not factors or unknown:
        raise ValueError(f"factors must be labels of the image set {sorted(imageset.labels)}, got {factors}")
    return factors


def _check_named(tokenizers) -> None:
    if not isinstance(tokenizers, dict) or not tokenizers:
        raise ValueError("expected a non-empty dict {name: tokenizer}")
