"""Metrics: PSNR / SSIM against known values and scikit-image, token statistics on hand-made histograms."""
import math

import pytest
import torch
from skimage.metrics import structural_similarity

from course_lib.evaluation.metrics import (bits_per_image, code_histogram, codebook_usage, compression_ratio, mse,
                                perplexity, psnr, ssim)


def _images(seed=0, shape=(4, 3, 32, 32)):
    g = torch.Generator().manual_seed(seed)
    clean = torch.rand(shape, generator=g)
    noisy = (clean + 0.1 * torch.randn(shape, generator=g)).clamp(0, 1)
    return clean, noisy


def test_psnr_of_a_constant_error():
    x = torch.full((2, 3, 8, 8), 0.5)
    assert torch.allclose(psnr(x, x + 0.1), torch.tensor([20.0, 20.0]), atol=1e-4)  # mse 0.01 -> 20 dB
    assert mse(x, x).eq(0).all()


def test_psnr_is_per_image_not_pooled():
    x = torch.zeros(2, 1, 4, 4)
    y = torch.stack([torch.full((1, 4, 4), 0.1), torch.full((1, 4, 4), 0.01)])
    assert torch.allclose(psnr(y, x), torch.tensor([20.0, 40.0]), atol=1e-3)


@pytest.mark.parametrize("channels", [1, 3])
def test_ssim_matches_scikit_image(channels):
    clean, noisy = _images(shape=(3, channels, 32, 32))
    ours = ssim(noisy, clean)
    for i in range(3):
        reference = structural_similarity(
            clean[i].double().numpy(), noisy[i].double().numpy(), data_range=1.0, channel_axis=0,
            gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
        assert ours[i].item() == pytest.approx(reference, abs=1e-5)


def test_ssim_properties():
    clean, noisy = _images()
    assert torch.allclose(ssim(clean, clean), torch.ones(4), atol=1e-6)
    assert torch.allclose(ssim(clean, noisy), ssim(noisy, clean), atol=1e-6)
    worse = (clean + 0.3 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    assert (ssim(worse, clean) < ssim(noisy, clean)).all()
    # a brightness shift hurts PSNR a lot but leaves structure: SSIM stays high
    shifted = (clean * 0.8 + 0.1)
    assert ssim(shifted, clean).min() > 0.9 > ssim(worse, clean).max()


def test_ssim_rejects_bad_input():
    x = torch.rand(1, 3, 8, 8)
    with pytest.raises(ValueError, match="window_size"):
        ssim(x, x)  # 11x11 window does not fit an 8x8 image
    assert ssim(x, x, window_size=7).item() == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="same shape"):
        ssim(x, torch.rand(1, 3, 8, 9), window_size=7)


def test_usage_and_perplexity_on_known_histograms():
    k = 8
    assert codebook_usage(torch.tensor([0, 0, 1, 3]), k) == 3 / 8
    assert perplexity(torch.zeros(100, dtype=torch.long), k) == pytest.approx(1.0)  # collapsed
    assert perplexity(torch.arange(k).repeat(5), k) == pytest.approx(k)  # all codes equally often
    two = torch.tensor([0] * 50 + [1] * 50).view(10, 10)  # any shape of indices
    assert perplexity(two, k) == pytest.approx(2.0)
    assert code_histogram(two, k).tolist() == [50, 50, 0, 0, 0, 0, 0, 0]


def test_token_statistics_reject_bad_indices():
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        codebook_usage(torch.tensor([0, 4]), 4)
    with pytest.raises(ValueError, match="integer"):
        perplexity(torch.tensor([0.0, 1.0]), 4)
    with pytest.raises(ValueError, match="empty"):
        codebook_usage(torch.tensor([], dtype=torch.long), 4)


def test_bits_and_compression_ratio():
    bits = bits_per_image(64, 1024)  # an 8x8 grid of 10-bit tokens
    assert bits == 640
    assert compression_ratio(bits, (3, 32, 32)) == pytest.approx(3 * 32 * 32 * 8 / 640)  # 38.4
    assert compression_ratio(bits_per_image(16, 2), (1, 28, 28)) == pytest.approx(28 * 28 * 8 / 16)
    with pytest.raises(ValueError):
        compression_ratio(0, (3, 32, 32))
    with pytest.raises(ValueError):
        compression_ratio(640, (32, 32))
    assert math.isclose(bits_per_image(1, 1000), math.log2(1000))
