import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from course_lib.notebook import viz  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_as_display_layout_and_range():
    out = viz.as_display(torch.rand(2, 3, 5, 4))
    assert out.shape == (2, 5, 4, 3)
    assert viz.as_display(torch.rand(1, 6, 6)).shape == (1, 6, 6, 1)
    assert viz.as_display(np.zeros((3, 4, 4), dtype=np.float32)).shape == (1, 4, 4, 3)


@pytest.mark.parametrize("bad,fragment", [
    (torch.rand(2, 3, 4, 4) * 255, r"in \[0, 1\]"),
    (torch.rand(2, 3, 4, 4) * 2 - 1, r"\(x \+ 1\) / 2"),
    (torch.zeros(1, 3, 4, 4, dtype=torch.uint8), "divide by 255"),
    (torch.rand(2, 4, 4, 3), r"\(N, C, H, W\)"),
    ([1, 2], "got list"),
])
def test_bad_images_are_explained(bad, fragment):
    with pytest.raises(ValueError, match=fragment):
        viz.show_images(bad)


def test_clip_accepts_model_overshoot():
    viz.show_images(torch.rand(3, 3, 4, 4) * 1.2 - 0.1, clip=True)


def test_show_images_grid_and_labels():
    fig = viz.show_images(torch.rand(10, 1, 4, 4), ncols=4, labels=list("abcdefghij"), title="t")
    assert len(fig.axes) == 12
    assert fig.axes[1].get_title() == "b"


def test_compare_rows():
    fig = viz.compare({"a": torch.rand(3, 3, 4, 4), "b": torch.rand(3, 3, 4, 4)}, n=2)
    assert len(fig.axes) == 4
    assert fig.axes[0].get_ylabel() == "a"
    with pytest.raises(ValueError, match="non-empty dict"):
        viz.compare([])
    with pytest.raises(ValueError, match="row 'b'"):
        viz.compare({"a": torch.rand(1, 3, 4, 4), "b": torch.rand(1, 3, 4, 4) * 9}, clip=False)


def test_show_tokens():
    fig = viz.show_tokens(torch.randint(0, 16, (3, 4, 4)), codebook_size=16, images=torch.rand(3, 3, 8, 8))
    assert len(fig.axes) == 6
    with pytest.raises(ValueError, match="integer token indices"):
        viz.show_tokens(torch.rand(2, 4, 4))
    with pytest.raises(ValueError, match=r"lie in \[0, 4\)"):
        viz.show_tokens(torch.full((1, 2, 2), 7), codebook_size=4)
