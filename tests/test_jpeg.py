"""JPEG baseline: scan bits vs file bits, and the highest quality that fits a bit budget."""
import pytest

from course_lib.datasets import load_dataset
from course_lib.evaluation.jpeg import jpeg_at_budget, jpeg_point


@pytest.fixture(scope="module")
def crops():
    return load_dataset("photos", "test", n=16).images  # (16, 3, 32, 32)


def test_point_counts_scan_inside_file(crops):
    point = jpeg_point(crops, 50)
    assert 0 < point.scan_bits < point.file_bits
    assert point.file_bits - point.scan_bits > 8 * 300  # the header: tables worth hundreds of bytes
    assert point.images.shape == crops.shape
    assert 20 < point.psnr < 50 and 0 < point.ssim < 1


def test_budget_gives_the_highest_quality_that_fits(crops):
    best = jpeg_at_budget(crops, 640)
    assert best.scan_bits <= 640
    assert jpeg_point(crops, best.quality + 1).scan_bits > 640
    assert jpeg_at_budget(crops, 2000).psnr > best.psnr  # more bits, better images


def test_file_budget_is_stricter_than_scan_budget(crops):
    scan = jpeg_at_budget(crops, 3000, count="scan")
    file = jpeg_at_budget(crops, 3000, count="file")
    assert file.file_bits <= 3000 and file.quality < scan.quality


def test_grey_images():
    glyphs = load_dataset("glyphs", "test", n=8).images  # (8, 1, 32, 32)
    point = jpeg_at_budget(glyphs, 1000)
    assert point.images.shape == glyphs.shape and point.scan_bits <= 1000


def test_budget_errors(crops):
    with pytest.raises(ValueError, match="quality 1 needs"):
        jpeg_at_budget(crops, 10)
    with pytest.raises(ValueError, match="count must be one of"):
        jpeg_at_budget(crops, 640, count="bytes")
