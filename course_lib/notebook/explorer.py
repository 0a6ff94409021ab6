"""A latent-space explorer: move through a tokenizer's latent space and watch what the decoder makes of it.

Three views. Each draws a static matplotlib figure (``latent_views.py``), which every output shows
(nbval, HTML export, a notebook opened without a kernel), and, in a live Jupyter kernel, adds an
ipywidgets panel below it to do the same by hand:

- ``show_channels``: one image's latent at one position, each channel swept in turn (sliders);
- ``show_interpolation``: the straight path between two images' latents, continuous vs discrete; a
  discrete path is re-quantized at every step, so its images move in jumps (a slider over t);
- ``show_latent_map``: every image's latent projected to 2-D by PCA, coloured by a labelled factor of
  the images, such as the shapes dataset's shape, colour, size and position (drop-downs).

The panels are built without a frontend too, so they can be tested headless.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import matplotlib.pyplot as plt
import torch
from PIL import Image

from course_lib.notebook.latent_views import (  # noqa: F401  (the views are importable from here too)
    OFFSETS, _check_image, _check_named, _factors, _position, _token_count, channel_sweep, decode_latents,
    decoder_input, fsq_levels, interpolate, pca_2d, plot_channels, plot_interpolation, plot_latent_map)
from course_lib.notebook.viz import as_display
from course_lib.tokenizers.fsq import codes_to_indices, indices_to_codes


@dataclass
class View:
    """What a ``show_*`` call made: the static figure, and the widget panel (None without a kernel)."""

    figure: plt.Figure
    widget: Any = None


# ----- widget panels (ipywidgets; built without a frontend too, so they can be tested headless) -----

def _png(image: torch.Tensor, scale: int = 6) -> bytes:
    """One image (C, H, W) in [0, 1] -> PNG bytes, enlarged with nearest neighbours."""
    array = (as_display(image)[0] * 255).round().astype("uint8")  # (H, W, C)
    picture = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
    buffer = io.BytesIO()
    picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST).save(buffer, format="PNG")
    return buffer.getvalue()


FIGURE_DPI, SHOWN_DPI = 200, 100  # a panel's figure has twice the pixels it is shown at: sharp on dense screens


def _figure_png(fig: plt.Figure) -> tuple[bytes, str]:
    """The figure as PNG bytes, and the CSS width to show it at (never more than its pixels)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=FIGURE_DPI)
    width = f"{round(fig.get_figwidth() * SHOWN_DPI)}px"
    plt.close(fig)
    return buffer.getvalue(), width


def _picture(value: bytes = b""):
    """An image widget at its own size: in a VBox, flexbox would stretch it to the widest sibling (a caption)."""
    import ipywidgets as widgets

    return widgets.Image(value=value, layout=widgets.Layout(align_self="flex-start"))


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
        base = (indices_to_codes(tokenizer.encode(image), fsq_levels(tokenizer))[0].permute(2, 0, 1)
                if is_fsq else tokenizer.encode(image)[0])  # (C, h, w)
    spread = base.flatten(1).std(1)
    pos_y = widgets.IntSlider(y0, 0, side - 1, description="y")
    pos_x = widgets.IntSlider(x0, 0, side - 1, description="x")
    sliders = [_channel_slider(tokenizer, c, base, spread, is_fsq) for c in range(base.shape[0])]
    original, edited = _picture(_png(image[0])), _picture()

    def current_latent() -> torch.Tensor:
        latent = base.clone()
        for c, slider in enumerate(sliders):
            latent[c, pos_y.value, pos_x.value] = _slider_value(tokenizer, c, slider.value, is_fsq)
        return latent

    def redraw(_=None) -> None:
        latent = current_latent()[None]  # (1, C, h, w)
        with torch.no_grad():
            if is_fsq:
                levels = fsq_levels(tokenizer)
                decoded = tokenizer.decode(codes_to_indices(latent.permute(0, 2, 3, 1), levels)).clamp(0, 1)
            else:
                decoded = decode_latents(tokenizer, latent)
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
        count = int(fsq_levels(tokenizer)[c])
        return widgets.IntSlider(0, 0, count - 1, description=f"channel {c}")
    low, high = base[c].min().item() - spread[c].item(), base[c].max().item() + spread[c].item()
    return widgets.FloatSlider(0.0, min=low, max=high, step=(high - low) / 100, description=f"channel {c}",
                               readout_format=".2f")


def _slider_start(tokenizer, c, value, is_fsq):
    if not is_fsq:
        return float(value)
    half = int(fsq_levels(tokenizer)[c]) // 2
    return int(round(float(value) * half + half))  # the level's digit


def _slider_value(tokenizer, c, value, is_fsq):
    if not is_fsq:
        return value
    half = int(fsq_levels(tokenizer)[c]) // 2
    return (value - half) / half  # digit -> normalized code


def interpolation_widget(tokenizers: dict, image_a: torch.Tensor, image_b: torch.Tensor, steps: int = 33):
    """A slider over t in [0, 1]: every tokenizer's decoded point of the path, side by side."""
    import ipywidgets as widgets

    _check_named(tokenizers)
    paths = {name: interpolate(t, image_a, image_b, steps) for name, t in tokenizers.items()}
    slider = widgets.IntSlider(0, 0, steps - 1, description="step")
    pictures = {name: _picture() for name in tokenizers}
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
    picture = _picture()

    def redraw(_=None) -> None:
        fig = plot_latent_map({which.value: tokenizers[which.value]}, imageset, [factor.value],
                              {which.value: latents[which.value]})
        picture.value, picture.layout.width = _figure_png(fig)

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
