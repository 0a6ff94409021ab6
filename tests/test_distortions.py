"""Equal-MSE distortions really have equal MSE; the radial power spectrum of noise, photos and blur."""
import math

import pytest
import torch

from course_lib.datasets.photos import make_photo_crops
from course_lib.evaluation.distortions import (DISTORTIONS, compare_distortions, equal_mse_distortions, gaussian_blur,
                                    reaches_target, shift_one_pixel)
from course_lib.evaluation.metrics import mse
from course_lib.evaluation.spectrum import radial_power_spectrum


@pytest.fixture(scope="module")
def crops():
    return make_photo_crops(16, 32, "test", seed=0).images  # (16, 3, 32, 32)


# ----- equal-MSE distortions -----

@pytest.fixture(scope="module")
def distorted(crops):
    return equal_mse_distortions(crops)  # each distortion at the one-pixel shift's MSE


def test_default_target_is_the_one_pixel_shift(crops, distorted):
    assert list(distorted) == list(DISTORTIONS)
    assert torch.allclose(distorted["shift"], shift_one_pixel(crops))
    target = mse(shift_one_pixel(crops), crops)
    for name, images in distorted.items():
        assert torch.allclose(mse(images, crops), target, rtol=1e-4), name
        assert images.min() >= 0 and images.max() <= 1, name


@pytest.mark.parametrize("kind", ["per_image", "one_number"])
def test_a_given_target_is_met_by_every_distortion(crops, kind):
    shift_error = mse(shift_one_pixel(crops), crops)
    if kind == "per_image":
        target = 0.5 * shift_error
    else:  # crops with detail enough for a one-pixel shift to reach 1e-3
        crops = crops[shift_error > 2e-3]
        target = torch.full((len(crops),), 1e-3)
    distorted = equal_mse_distortions(crops, mse_target=target if kind == "per_image" else 1e-3)
    for name, images in distorted.items():
        assert torch.allclose(mse(images, crops), target, rtol=1e-4), name
    # same error, different images: no two distortions are the same picture
    names = list(distorted)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert mse(distorted[a], distorted[b]).min() > 1e-5, (a, b)


def test_noise_is_seeded(crops):
    first, again, other = (equal_mse_distortions(crops[:2], seed=seed)["noise"] for seed in (1, 1, 2))
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_equal_mse_means_equal_psnr_but_not_equal_ssim(crops, distorted):
    table = compare_distortions(crops, distorted, {"l1": lambda x, y: (x - y).abs().flatten(1).mean(1)})
    psnrs = [row["psnr"] for row in table.values()]
    ssims = [row["ssim"] for row in table.values()]
    assert max(psnrs) - min(psnrs) < 1e-3
    assert max(ssims) - min(ssims) > 0.02
    assert set(table["blur"]) == {"mse", "psnr", "ssim", "l1"}


def test_unreachable_target_and_bad_images_raise(crops):
    with pytest.raises(ValueError, match="the strongest blur reaches MSE .* below the target 0.5"):
        equal_mse_distortions(crops, mse_target=0.5)
    with pytest.raises(ValueError, match="one number or one per image"):
        equal_mse_distortions(crops, mse_target=torch.full((3,), 1e-3))
    with pytest.raises(ValueError, match="no one-pixel-shift error"):
        equal_mse_distortions(torch.full((2, 3, 16, 16), 0.5))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        equal_mse_distortions(crops[0])
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        equal_mse_distortions(crops * 2)


def test_blur_keeps_constants_and_the_mean():
    flat = torch.full((1, 3, 16, 16), 0.3)
    assert torch.allclose(gaussian_blur(flat, 2.0), flat)
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(gaussian_blur(images, 1.0).mean(), images.mean(), atol=1e-2)


# ----- radially averaged power spectrum -----

def test_white_noise_has_a_flat_spectrum_at_its_variance():
    noise = 0.1 * torch.randn(256, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    frequencies, power = radial_power_spectrum(noise)
    assert frequencies.shape == power.shape == (16,)
    assert frequencies[0].item() == pytest.approx(1 / 32) and frequencies[-1].item() == pytest.approx(0.5)
    assert torch.allclose(power, torch.full((16,), 0.01), rtol=0.1)


def test_photos_fall_with_frequency_and_blur_removes_high_frequencies(crops):
    _, power = radial_power_spectrum(crops)
    _, blurred = radial_power_spectrum(gaussian_blur(crops, 1.0))
    assert power[0] > 100 * power[-1]  # natural images: roughly 1 / f^2
    ratio = blurred / power
    assert ratio[-1] < 0.01 < 0.5 < ratio[0]
    assert (ratio[1:] <= ratio[:-1] + 1e-3).all()  # a low-pass filter: the loss grows with frequency


def test_spectrum_of_a_constant_is_zero_and_bad_input_raises():
    _, power = radial_power_spectrum(torch.full((2, 1, 16, 24), 0.7))
    assert power.shape == (8,) and torch.allclose(power, torch.zeros(8))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        radial_power_spectrum(torch.rand(3, 32, 32))
    with pytest.raises(ValueError, match="at least 4x4"):
        radial_power_spectrum(torch.rand(1, 1, 2, 2))
    assert math.isfinite(radial_power_spectrum(torch.rand(1, 1, 5, 5))[1].sum().item())


def test_reaches_target_says_which_images_can_be_matched(crops):
    flat = torch.full((1, 3, 32, 32), 0.5)
    images = torch.cat([crops[:4], flat])
    ok = reaches_target(images, mse_target=1e-4)
    assert not ok[-1]
    equal_mse_distortions(images[ok], mse_target=1e-4)  # no error on the images it keeps
