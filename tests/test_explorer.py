"""The latent-space explorer: its computations, its static figures, and its widgets, all headless."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from course_lib.notebook import explorer  # noqa: E402
from course_lib.datasets import load_dataset  # noqa: E402
from course_lib.tokenizers.fsq import indices_to_codes  # noqa: E402
from course_lib.engine.seeding import seed_everything  # noqa: E402
from course_lib.tokenizers.tokenizer import build_tokenizer  # noqa: E402

SMALL = {"widths": (8, 8, 8)}  # untrained and tiny: the explorer only needs the shapes to be right


@pytest.fixture(scope="module")
def models():
    seed_everything(0)
    return {kind: build_tokenizer(f"{kind}-f4", **SMALL).eval() for kind in ("kl", "fsq", "vq")}


@pytest.fixture(scope="module")
def shapes():
    return load_dataset("shapes", "test", n=24)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_decoder_input_is_what_the_decoder_reads(models, shapes):
    images = shapes.images[:4]
    for kind, model in models.items():
        latents = explorer.decoder_input(model, images)
        assert latents.shape == (4, model.config.autoencoder.latent_channels, 8, 8), kind
        with torch.no_grad():
            assert torch.allclose(explorer.decode_latents(model, latents), model.decode(model.encode(images)).clamp(0, 1),
                                  atol=1e-5), kind


def test_continuous_channel_sweep_changes_one_channel_at_one_position(models, shapes):
    model, image = models["kl"], shapes.images[0]
    grid, labels = explorer.channel_sweep(model, image, position=(2, 5))
    assert grid.shape == (4, len(explorer.OFFSETS), 3, 32, 32) and len(labels) == 4
    centre = explorer.OFFSETS.index(0.0)  # offset 0 is the unchanged latent
    with torch.no_grad():
        unchanged = model.decode(model.encode(image[None])).clamp(0, 1)[0]
    for row in grid:
        assert torch.allclose(row[centre], unchanged, atol=1e-5)
        assert not torch.allclose(row[0], row[-1])  # moving the channel changes the image


def test_fsq_sweep_runs_through_every_level_of_every_channel(models, shapes):
    model = models["fsq"]
    grid, labels = explorer.channel_sweep(model, shapes.images[0])
    levels = model.config.bottleneck.levels  # (8, 5, 5, 5)
    assert grid.shape[:2] == (len(levels), max(levels))
    assert [sum(1 for text in row if text) for row in labels] == list(levels)
    assert labels[0][0] == "-1.00" and labels[1][4] == "+1.00"


def test_channel_sweep_refuses_vq_and_positions_off_the_grid(models, shapes):
    with pytest.raises(ValueError, match="continuous latents"):
        explorer.channel_sweep(models["vq"], shapes.images[0])
    with pytest.raises(ValueError, match="8x8 latent grid"):
        explorer.channel_sweep(models["kl"], shapes.images[0], position=(8, 0))
    with pytest.raises(ValueError, match="expected one image"):
        explorer.channel_sweep(models["kl"], shapes.images[:2])


def test_interpolation_ends_at_both_images(models, shapes):
    a, b = shapes.images[0], shapes.images[1]
    for kind, model in models.items():
        images, changed = explorer.interpolate(model, a, b, steps=5)
        with torch.no_grad():
            ends = model.decode(model.encode(torch.stack([a, b]))).clamp(0, 1)
        assert images.shape == (5, 3, 32, 32)
        assert torch.allclose(images[0], ends[0], atol=1e-5) and torch.allclose(images[-1], ends[1], atol=1e-5), kind
        if model.is_discrete:
            with torch.no_grad():
                differ = (model.encode(a[None]) != model.encode(b[None])).sum().item()
            assert changed[0] == 0 and changed[-1] == differ, kind
        else:
            assert changed is None
    with pytest.raises(ValueError, match="steps"):
        explorer.interpolate(models["kl"], a, b, steps=1)


def test_pca_finds_the_directions_of_largest_variance():
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(500, 3, generator=g) * torch.tensor([5.0, 2.0, 0.1])  # variances 25, 4, 0.01
    coords, explained = explorer.pca_2d(latents)
    assert coords.shape == (500, 2)
    assert coords[:, 0].std() > coords[:, 1].std()
    assert explained.sum() > 0.99 and explained[0] > 0.8
    with pytest.raises(ValueError, match="at least 3"):
        explorer.pca_2d(latents[:2])


def test_static_figures_have_one_panel_per_view(models, shapes):
    fig = explorer.plot_channels(models["kl"], shapes.images[0])
    assert len(fig.axes) == 4 * len(explorer.OFFSETS)
    fig = explorer.plot_interpolation({"KL": models["kl"], "FSQ": models["fsq"]}, shapes.images[0], shapes.images[1], steps=6)
    assert len(fig.axes) == 12 and "/64 changed" in fig.axes[7].get_title() and "changed" not in fig.axes[1].get_title()
    fig = explorer.plot_latent_map({"KL": models["kl"], "VQ": models["vq"]}, shapes, factors=["shape", "colour"])
    assert len(fig.axes) == 4 and "coloured by colour" in fig.axes[1].get_title()
    with pytest.raises(ValueError, match="labels of the image set"):
        explorer.plot_latent_map({"KL": models["kl"]}, shapes, factors=["mood"])
    with pytest.raises(ValueError, match="dict"):
        explorer.plot_interpolation([models["kl"]], shapes.images[0], shapes.images[1])


def test_show_without_a_kernel_is_the_static_figure_only(models, shapes):
    assert not explorer.in_kernel()
    view = explorer.show_channels(models["kl"], shapes.images[0])
    assert isinstance(view.figure, plt.Figure) and view.widget is None


def test_channel_sliders_redraw_the_edited_image(models, shapes):
    panel = explorer.channels_widget(models["kl"], shapes.images[0], position=(3, 3))
    positions, *sliders, pictures = panel.children
    edited = pictures.children[1].children[0]
    before = edited.value
    sliders[0].value = sliders[0].max
    assert edited.value != before and edited.value[:4] == b"\x89PNG"
    positions.children[0].value = 0  # a new position resets the sliders to that position's values
    with torch.no_grad():
        latent = models["kl"].encode(shapes.images[:1])[0]
    assert sliders[0].value == pytest.approx(latent[0, 0, 3].item(), abs=1e-6)


def test_fsq_sliders_step_through_levels(models, shapes):
    model = models["fsq"]
    panel = explorer.channels_widget(model, shapes.images[0])
    _, *sliders, _ = panel.children
    assert [s.max + 1 for s in sliders] == list(model.config.bottleneck.levels)
    codes = indices_to_codes(model.encode(shapes.images[:1]), explorer.fsq_levels(model))[0, 4, 4]
    digits = [round(c * (lv // 2) + lv // 2) for c, lv in zip(codes.tolist(), model.config.bottleneck.levels)]
    assert [s.value for s in sliders] == digits
    with pytest.raises(ValueError, match="continuous latents"):
        explorer.channels_widget(models["vq"], shapes.images[0])


def test_interpolation_and_map_widgets_update(models, shapes):
    panel = explorer.interpolation_widget({"KL": models["kl"], "VQ": models["vq"]}, shapes.images[0],
                                          shapes.images[1], steps=5)
    slider, row = panel.children
    first = row.children[0].children[0].value
    slider.value = 4
    assert row.children[0].children[0].value != first
    assert row.children[1].children[1].value.startswith("VQ: t = 1.00")
    panel = explorer.latent_map_widget({"KL": models["kl"], "FSQ": models["fsq"]}, shapes)
    (which, factor), picture = panel.children[0].children, panel.children[1]
    before = picture.value
    factor.value = "colour"
    assert picture.value != before and picture.value[:4] == b"\x89PNG"
    which.value = "FSQ"
    assert set(factor.options) == set(shapes.labels)
