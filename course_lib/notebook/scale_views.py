"""A multi-scale tokenizer's pyramid, scale by scale: what the decoder makes of the reconstruction after each
scale, and what each scale adds.

``show_scales`` draws the static figure (every output shows it) and, in a live kernel, adds a slider over
the scales in the explorer's style (:mod:`course_lib.notebook.explorer`): the images decoded from the first
k scales only, beside what scale k added to them.

Shapes: B images, S scales, C image channels, H x W image size.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import torch

from course_lib.notebook.explorer import View, _captioned, _picture, _png, _show
from course_lib.notebook.viz import as_display


def _check_multiscale(tokenizer) -> None:
    if getattr(tokenizer, "kind", None) != "msvq":
        raise ValueError(f"expected a multi-scale ('msvq') tokenizer, got "
                         f"{getattr(tokenizer, 'kind', type(tokenizer).__name__)!r}")


@torch.no_grad()
def decode_by_scale(tokenizer, images: torch.Tensor) -> torch.Tensor:
    """Images (B, C, H, W) -> (S, B, C, H, W): the decoded running reconstruction after scales 1..S, in [0, 1]."""
    _check_multiscale(tokenizer)
    quantizer = tokenizer.quantizer
    grids = quantizer.encode_scales(tokenizer.encode_latents(images))  # S x (B, k, k)
    return torch.stack([tokenizer.decode_latents(f).clamp(0, 1) for f in quantizer.reconstructions(grids)])


def plot_scales(tokenizer, images: torch.Tensor) -> plt.Figure:
    """One row per image: the originals, then the decoded reconstruction after each scale (titled by side)."""
    stages = decode_by_scale(tokenizer, images)  # (S, B, C, H, W)
    scales, n = tokenizer.quantizer.scales, images.shape[0]
    fig, axes = plt.subplots(n, len(scales) + 1, figsize=(1.3 * (len(scales) + 1), 1.3 * n), squeeze=False)
    tokens = 0
    for j in range(len(scales) + 1):
        if j:
            tokens += scales[j - 1] ** 2
        column = images if j == 0 else stages[j - 1]
        for i in range(n):
            ax = axes[i, j]
            ax.imshow(as_display(column[i:i + 1], clip=True)[0], cmap="gray" if column.shape[1] == 1 else None)
            ax.set_xticks([]), ax.set_yticks([])
        side = scales[j - 1] if j else 0
        axes[0, j].set_title("image" if j == 0 else f"{side}x{side}\n{tokens} token{'s' * (tokens > 1)}", fontsize=8)
    fig.suptitle("the reconstruction after each scale, coarse to fine", fontsize=9)
    fig.tight_layout()
    return fig


def scales_widget(tokenizer, images: torch.Tensor):
    """A slider over the scales: each image decoded from the first k scales, and what scale k added."""
    import ipywidgets as widgets

    stages = decode_by_scale(tokenizer, images)  # (S, B, C, H, W)
    scales = tokenizer.quantizer.scales
    slider = widgets.IntSlider(len(scales), 1, len(scales), description="scales")
    pictures = [_picture() for _ in range(images.shape[0])]
    added = [_picture() for _ in range(images.shape[0])]
    caption = widgets.Label()

    def redraw(_=None) -> None:
        k = slider.value
        before = stages[k - 2] if k > 1 else torch.full_like(stages[0], 0.5)
        for i in range(images.shape[0]):
            pictures[i].value = _png(stages[k - 1, i])
            added[i].value = _png((stages[k - 1, i] - before[i]) / 2 + 0.5)  # grey: nothing added
        tokens = sum(s * s for s in scales[:k])
        caption.value = f"scales 1-{k} ({scales[k - 1]}x{scales[k - 1]} last): {tokens} of " \
                        f"{sum(s * s for s in scales)} tokens; below, what scale {k} added (grey: nothing)"

    slider.observe(redraw, "value")
    redraw()
    return widgets.VBox([slider, caption, widgets.HBox([_captioned(p, "") for p in pictures]),
                         widgets.HBox([_captioned(a, "") for a in added])])


def show_scales(tokenizer, images: torch.Tensor, interactive: bool | None = None) -> View:
    """The scale-by-scale figure + a slider over the scales (in a live kernel)."""
    return _show(plot_scales(tokenizer, images), lambda: scales_widget(tokenizer, images), interactive)
