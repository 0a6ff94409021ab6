"""The scale-by-scale view of a multi-scale tokenizer: the static figure and the slider panel (headless)."""
import matplotlib
import pytest
import torch

from course_lib.notebook.scale_views import decode_by_scale, plot_scales, scales_widget, show_scales
from course_lib.tokenizers.tokenizer import build_tokenizer

matplotlib.use("agg")


@pytest.fixture(scope="module")
def tokenizer():
    torch.manual_seed(0)
    return build_tokenizer("msvq-f4", codebook_size=64, scales=(1, 2, 4, 8)).eval()


def test_each_stage_decodes_the_running_reconstruction(tokenizer):
    images = torch.rand(3, 3, 32, 32)
    stages = decode_by_scale(tokenizer, images)
    assert stages.shape == (4, 3, 3, 32, 32) and stages.min() >= 0 and stages.max() <= 1
    assert torch.allclose(stages[-1], tokenizer.decode(tokenizer.encode(images)).clamp(0, 1), atol=1e-5)


def test_the_figure_has_the_images_and_one_column_per_scale(tokenizer):
    fig = plot_scales(tokenizer, torch.rand(2, 3, 32, 32))
    assert len(fig.axes) == 2 * 5 and fig.axes[4].get_title().startswith("8x8\n85 tokens")


def test_the_slider_redraws_and_counts_the_tokens(tokenizer):
    panel = scales_widget(tokenizer, torch.rand(2, 3, 32, 32))
    slider, caption = panel.children[0], panel.children[1]
    first = panel.children[2].children[0].children[0].value
    slider.value = 1
    assert "5 of 85 tokens" not in caption.value and "1 of 85 tokens" in caption.value
    assert panel.children[2].children[0].children[0].value != first


def test_without_a_kernel_only_the_figure_and_other_tokenizers_are_refused(tokenizer):
    assert show_scales(tokenizer, torch.rand(1, 3, 32, 32)).widget is None
    with pytest.raises(ValueError, match="msvq"):
        decode_by_scale(build_tokenizer("vq-f4"), torch.rand(1, 3, 32, 32))
