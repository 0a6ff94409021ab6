"""A latent-space explorer: move through a tokenizer's latent space and watch what the decoder makes of it.

Three views. Each draws a static matplotlib figure, which every output shows (nbval, HTML export, a
notebook opened without a kernel), and, in a live Jupyter kernel, adds an ipywidgets panel below it
to do the same by hand:

- ``show_channels``: one image's latent at one position, each channel swept in turn (sliders);
- ``show_interpolation``: the straight path between two images' latents, continuous vs discrete; a
  discrete path is re-quantized at every step, so its images move in jumps (a slider over t);
- ``show_latent_map``: every image's latent projected to 2-D by PCA, coloured by a labelled factor of
  the images, such as the shapes dataset's shape, colour, size and position (drop-downs).

The latent of an image is what the decoder reads: the posterior mean of a KL tokenizer (Kingma &
Welling, https://arxiv.org/abs/1312.6114), the quantized vectors z_q of a VQ / FSQ / LFQ tokenizer.
Interpolating latents to probe a generative model follows White, "Sampling Generative Networks"
(2016), https://arxiv.org/abs/1609.04468. Shapes: images (B, C, H, W) in [0, 1], latents (B, C, h, w).
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any

import matplotlib.pyplot as plt
import torch
from matplotlib.colors import is_color_like
from PIL import Image

from course_lib.fsq import codes_to_indices, indices_to_codes
from course_lib.viz import as_display

OFFSETS = (-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0)  # channel sweeps, in units of the channel's spread


@dataclass
class View:
    """What a ``show_*`` call made: the static figure, and the widget panel (None without a kernel)."""

    figure: plt.Figure
    widget: Any = None


# ----- latents -----

def _check_image(tokenizer, image: torch.Tensor) -> torch.Tensor:
    expected = (tokenizer.config.autoencoder.in_channels, tokenizer.config.image_size, tokenizer.config.image_size)
    if not isinstance(image, torch.Tensor) or tuple(image.shape[-3:]) != expected or image.ndim not in (3, 4) \
            or (image.ndim == 4 and len(image) != 1):
        got = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"expected one image of shape {expected} (or (1, ...)), got {got}")
    return image.reshape(1, *expected)


def _encoder_output(tokenizer, images: torch.Tensor) -> torch.Tensor:
    """Encoder output before quantization (B, C, h, w); the networks work on the [-1, 1] scale."""
    if not tokenizer.is_discrete:
        return tokenizer.encode(images)
    return tokenizer.encoder(images * 2 - 1)


@torch.no_grad()
def decoder_input(tokenizer, images: torch.Tensor) -> torch.Tensor:
    """What the decoder reads (B, C, h, w): KL posterior means, or quantized vectors z_q."""
    tokens = tokenizer.encode(images)
    return tokenizer.quantizer.decode(tokens) if tokenizer.is_discrete else tokens


@torch.no_grad()
def _decode_latents(tokenizer, latents: torch.Tensor) -> torch.Tensor:
    """Decoder input (B, C, h, w) -> images (B, C, H, W) clamped to [0, 1]; for any kind, z_q included
    (``tokenizer.decode`` takes indices for discrete kinds)."""
    return ((tokenizer.decoder(latents) + 1) / 2).clamp(0, 1)


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
        rows.append(_decode_latents(tokenizer, batch))
        labels.append([f"{v:+.2f}" for v in values.tolist()])
    return torch.stack(rows), labels


def _fsq_sweep(tokenizer, image, y, x):
    levels = tokenizer.quantizer.levels
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
    z = _encoder_output(tokenizer, pair)  # (2, C, h, w)
    t = torch.linspace(0, 1, steps).view(-1, 1, 1, 1)
    path = (1 - t) * z[:1] + t * z[1:]  # (T, C, h, w)
    if not tokenizer.is_discrete:
        return _decode_latents(tokenizer, path), None
    indices = tokenizer.quantizer.encode(path)  # (T, h, w): every step snaps back to the codebook
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


# ----- widget panels (ipywidgets; built without a frontend too, so they can be tested headless) -----

def _png(image: torch.Tensor, scale: int = 6) -> bytes:
    """One image (C, H, W) in [0, 1] -> PNG bytes, enlarged with nearest neighbours."""
    array = (as_display(image)[0] * 255).round().astype("uint8")  # (H, W, C)
    picture = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
    buffer = io.BytesIO()
    picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST).save(buffer, format="PNG")
    return buffer.getvalue()


def _figure_png(fig: plt.Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    return buffer.getvalue()


def channels_widget(tokenizer, image: torch.Tensor, position=None):
    """Sliders for every latent channel at a position (and for the position itself)."""
    import ipywidgets as widgets

    image = _check_image(tokenizer, image)
    side = tokenizer.config.image_size // tokenizer.config.autoencoder.downsample
    y0, x0 = _position(tokenizer, position)
    is_fsq = tokenizer.kind == "fsq"
    if tokenizer.is_discrete and not is_fsq:
        raise ValueError(f"channel sliders need continuous latents (kl, ae) or FSQ codes, got {tokenizer.kind!r}")
    with torch.no_grad():
        base = (indices_to_codes(tokenizer.encode(image), tokenizer.quantizer.levels)[0].permute(2, 0, 1)
                if is_fsq else tokenizer.encode(image)[0])  # (C, h, w)
    spread = base.flatten(1).std(1)
    pos_y = widgets.IntSlider(y0, 0, side - 1, description="y")
    pos_x = widgets.IntSlider(x0, 0, side - 1, description="x")
    sliders = [_channel_slider(tokenizer, c, base, spread, is_fsq) for c in range(base.shape[0])]
    original, edited = widgets.Image(value=_png(image[0])), widgets.Image()

    def current_latent() -> torch.Tensor:
        latent = base.clone()
        for c, slider in enumerate(sliders):
            latent[c, pos_y.value, pos_x.value] = _slider_value(tokenizer, c, slider.value, is_fsq)
        return latent

    def redraw(_=None) -> None:
        latent = current_latent()[None]  # (1, C, h, w)
        with torch.no_grad():
            if is_fsq:
                levels = tokenizer.quantizer.levels
                decoded = tokenizer.decode(codes_to_indices(latent.permute(0, 2, 3, 1), levels)).clamp(0, 1)
            else:
                decoded = _decode_latents(tokenizer, latent)
        edited.value = _png(decoded[0])

    def move(_=None) -> None:  # a new position starts from that position's own values
        for c, slider in enumerate(sliders):
            slider.unobserve(redraw, "value")
            slider.value = _slider_start(tokenizer, c, base[c, pos_y.value, pos_x.value], is_fsq)
            slider.observe(redraw, "value")
        redraw()

    for slider in sliders:
        slider.observe(redraw, "value")
    pos_y.observe(move, "value")
    pos_x.observe(move, "value")
    move()  # start from the image's own latent
    pictures = widgets.HBox([_captioned(original, "original"), _captioned(edited, "edited latent")])
    return widgets.VBox([widgets.HBox([pos_y, pos_x]), *sliders, pictures])


def _channel_slider(tokenizer, c, base, spread, is_fsq):
    import ipywidgets as widgets

    if is_fsq:
        count = int(tokenizer.quantizer.levels[c])
        return widgets.IntSlider(0, 0, count - 1, description=f"channel {c}")
    low, high = base[c].min().item() - spread[c].item(), base[c].max().item() + spread[c].item()
    return widgets.FloatSlider(0.0, min=low, max=high, step=(high - low) / 100, description=f"channel {c}",
                               readout_format=".2f")


def _slider_start(tokenizer, c, value, is_fsq):
    if not is_fsq:
        return float(value)
    half = int(tokenizer.quantizer.levels[c]) // 2
    return int(round(float(value) * half + half))  # the level's digit


def _slider_value(tokenizer, c, value, is_fsq):
    if not is_fsq:
        return value
    half = int(tokenizer.quantizer.levels[c]) // 2
    return (value - half) / half  # digit -> normalized code


def interpolation_widget(tokenizers: dict, image_a: torch.Tensor, image_b: torch.Tensor, steps: int = 33):
    """A slider over t in [0, 1]: every tokenizer's decoded point of the path, side by side."""
    import ipywidgets as widgets

    _check_named(tokenizers)
    paths = {name: interpolate(t, image_a, image_b, steps) for name, t in tokenizers.items()}
    slider = widgets.IntSlider(0, 0, steps - 1, description="step")
    pictures = {name: widgets.Image() for name in tokenizers}
    captions = {name: widgets.Label() for name in tokenizers}

    def redraw(_=None) -> None:
        for name, (images, changed) in paths.items():
            pictures[name].value = _png(images[slider.value])
            extra = f", {changed[slider.value]}/{_token_count(tokenizers[name])} tokens changed" if changed else ""
            captions[name].value = f"{name}: t = {slider.value / (steps - 1):.2f}{extra}"

    slider.observe(redraw, "value")
    redraw()
    panels = [widgets.VBox([pictures[name], captions[name]]) for name in tokenizers]
    return widgets.VBox([slider, widgets.HBox(panels)])


def latent_map_widget(tokenizers: dict, imageset, factors=None):
    """Drop-downs for the tokenizer and the factor that colours the 2-D PCA map."""
    import ipywidgets as widgets

    _check_named(tokenizers)
    factors = _factors(imageset, factors)
    latents = {name: decoder_input(t, imageset.images) for name, t in tokenizers.items()}
    which = widgets.Dropdown(options=list(tokenizers), description="latents")
    factor = widgets.Dropdown(options=factors, description="colour by")
    picture = widgets.Image()

    def redraw(_=None) -> None:
        fig = plot_latent_map({which.value: tokenizers[which.value]}, imageset, [factor.value],
                              {which.value: latents[which.value]})
        picture.value = _figure_png(fig)

    which.observe(redraw, "value")
    factor.observe(redraw, "value")
    redraw()
    return widgets.VBox([widgets.HBox([which, factor]), picture])


def _captioned(picture, text: str):
    import ipywidgets as widgets

    return widgets.VBox([picture, widgets.Label(text)])


# ----- one call per view: the static figure, plus the widget panel in a live kernel -----

def in_kernel() -> bool:
    """True inside a Jupyter kernel with ipywidgets installed (a frontend may or may not be attached)."""
    try:
        import ipywidgets  # noqa: F401
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and hasattr(shell, "kernel")


def _show(fig: plt.Figure, make_widget, interactive: bool | None) -> View:
    interactive = in_kernel() if interactive is None else interactive
    if not interactive:
        return View(fig)
    from IPython.display import display

    display(fig)  # first the static figure, so exports without a widget frontend still show the view
    plt.close(fig)
    widget = make_widget()
    display(widget)
    return View(fig, widget)


def show_channels(tokenizer, image: torch.Tensor, position=None, interactive: bool | None = None) -> View:
    """Channel sweep figure + sliders (continuous latents or FSQ codes)."""
    return _show(plot_channels(tokenizer, image, position), lambda: channels_widget(tokenizer, image, position),
                 interactive)


def show_interpolation(tokenizers: dict, image_a: torch.Tensor, image_b: torch.Tensor, steps: int = 8,
                       interactive: bool | None = None) -> View:
    """Interpolation figure (one row per tokenizer) + a slider over t."""
    return _show(plot_interpolation(tokenizers, image_a, image_b, steps),
                 lambda: interpolation_widget(tokenizers, image_a, image_b), interactive)


def show_latent_map(tokenizers: dict, imageset, factors=None, interactive: bool | None = None) -> View:
    """PCA maps coloured by factors + drop-downs to choose the tokenizer and the factor."""
    return _show(plot_latent_map(tokenizers, imageset, factors),
                 lambda: latent_map_widget(tokenizers, imageset, factors), interactive)

