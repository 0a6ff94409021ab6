"""The high-frequency comparison of power spectra and the perceptual report of a tokenizer."""
import pytest
import torch

from course_lib.datasets.photos import make_photo_crops
from course_lib.evaluation.distortions import gaussian_blur
from course_lib.evaluation.perceptual_eval import feature_distance_mean, high_frequency_power, perceptual_report
from course_lib.tokenizers.perceptual import FeatureDistance, FeatureNet, feature_net_presets
from course_lib.tokenizers.tokenizer import build_tokenizer


def _crops(n=64):
    return make_photo_crops(n, 32, "test", seed=0).images


def test_blur_loses_high_frequencies_and_noise_adds_them():
    crops = _crops()
    same = high_frequency_power(crops, crops)
    assert same["hf_power_ratio"] == pytest.approx(1.0) and same["hf_log_gap"] == pytest.approx(0.0, abs=1e-6)
    blurred = high_frequency_power(crops, gaussian_blur(crops, 1.0))
    noisy = high_frequency_power(crops, crops + 0.05 * torch.randn(crops.shape, generator=torch.Generator().manual_seed(0)))
    assert blurred["hf_power_ratio"] < 0.5 < 1.5 < noisy["hf_power_ratio"]
    assert blurred["hf_log_gap"] > 0.3 and noisy["hf_log_gap"] > 0.1
    with pytest.raises(ValueError, match="same shape"):
        high_frequency_power(crops, crops[:2])


def test_perceptual_report_adds_distance_and_spectrum_to_the_usual_metrics(one_thread):
    torch.manual_seed(0)
    model = build_tokenizer("vq-f4", widths=(8, 8, 8), res_blocks=(0, 0, 0), codebook_size=16)
    distance = FeatureDistance(FeatureNet(feature_net_presets["tiny"]))
    crops = _crops(16)
    report = perceptual_report(model, crops, distance, with_ssim=False)
    assert {"psnr", "usage", "feature_distance", "hf_power_ratio", "hf_log_gap"} <= set(report)
    assert "reconstruction" not in report and report["feature_distance"] > 0
    assert feature_distance_mean(distance, crops, crops) == pytest.approx(0.0, abs=1e-6)
