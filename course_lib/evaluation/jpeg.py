"""JPEG as the baseline codec: bits per image, counted two ways.

A JPEG file is headers (quantization and Huffman tables: a fixed cost of a few hundred bytes) plus the
entropy-coded scan. For small images the header dominates, so the fair comparison with a tokenizer's
bits per image is the scan alone. Wallace, "The JPEG still picture compression standard" (1992).
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from .metrics import psnr, ssim

COUNTS = ("scan", "file")
_SOS, _EOI = b"\xff\xda", b"\xff\xd9"


def encode_jpeg(image: torch.Tensor, quality: int) -> bytes:
    """One image (C, H, W) in [0, 1] -> JPEG bytes (optimized Huffman tables, 4:2:0 for RGB)."""
    if image.ndim != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"expected one image of shape (C, H, W) with C in (1, 3), got {tuple(image.shape)}")
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be in 1..100, got {quality}")
    array = (image.detach().cpu().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()  # (H, W, C)
    pil = Image.fromarray(array[..., 0] if array.shape[2] == 1 else array)
    buffer = io.BytesIO()
    pil.save(buffer, format="JPEG", quality=quality, optimize=True)
    return buffer.getvalue()


def decode_jpeg(data: bytes, channels: int) -> torch.Tensor:
    """JPEG bytes -> (C, H, W) in [0, 1]."""
    array = np.asarray(Image.open(io.BytesIO(data)).convert("RGB" if channels == 3 else "L"), dtype=np.float32)
    array = array.reshape(array.shape[0], array.shape[1], channels)
    return torch.from_numpy(array / 255).permute(2, 0, 1)  # (C, H, W)


def scan_bytes(data: bytes) -> int:
    """Bytes of entropy-coded scan data: after the SOS segment header, up to the EOI marker."""
    start = data.find(_SOS)
    if start < 0 or not data.endswith(_EOI):
        raise ValueError("not a baseline JPEG stream (no SOS marker or no EOI at the end)")
    header_length = int.from_bytes(data[start + 2:start + 4], "big")  # counts its own 2 length bytes
    return len(data) - (start + 2 + header_length) - len(_EOI)


def jpeg_roundtrip(images: torch.Tensor, quality: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, C, H, W) -> decoded images (B, C, H, W), file bits (B,), scan bits (B,)."""
    if images.ndim != 4:
        raise ValueError(f"expected images of shape (B, C, H, W), got {tuple(images.shape)}")
    decoded, file_bits, scan_bits = [], [], []
    for image in images:
        data = encode_jpeg(image, quality)
        decoded.append(decode_jpeg(data, image.shape[0]))
        file_bits.append(8 * len(data))
        scan_bits.append(8 * scan_bytes(data))
    return torch.stack(decoded), torch.tensor(file_bits, dtype=torch.float32), torch.tensor(scan_bits, dtype=torch.float32)


@dataclass
class JpegPoint:
    """JPEG at one quality on a set of images: mean PSNR (dB), SSIM and file / scan bits per image."""

    quality: int
    psnr: float
    ssim: float
    file_bits: float
    scan_bits: float
    images: torch.Tensor  # decoded images (B, C, H, W)


def jpeg_point(images: torch.Tensor, quality: int) -> JpegPoint:
    """Round-trip ``images`` (B, C, H, W) at ``quality``; one point of JPEG's rate-distortion curve."""
    decoded, file_bits, scan_bits = jpeg_roundtrip(images, quality)
    return JpegPoint(quality, psnr(decoded, images).mean().item(), ssim(decoded, images).mean().item(),
                     file_bits.mean().item(), scan_bits.mean().item(), decoded)


def jpeg_at_budget(images: torch.Tensor, bits: float, count: str = "scan") -> JpegPoint:
    """The highest JPEG quality whose mean bits per image (``count``: "scan" or "file") fit in ``bits``.

    Bits grow with quality (up to rare one-step wiggles), so a binary search over 1..100 finds it in
    seven round trips. Compare a tokenizer's ``tokens * log2(K)`` with scan bits: the file adds a
    fixed header of tables that a tokenizer's decoder holds in its weights.
    """
    if count not in COUNTS:
        raise ValueError(f"count must be one of {COUNTS}, got {count!r}")
    low, high, best = 1, 100, None
    while low <= high:
        point = jpeg_point(images, (low + high) // 2)
        if _bits(point, count) <= bits:
            best, low = point, point.quality + 1
        else:
            high = point.quality - 1
    if best is None:
        lowest = _bits(jpeg_point(images, 1), count)
        raise ValueError(f"no JPEG quality fits {bits:g} {count} bits per image: quality 1 needs {lowest:.0f}")
    return best


def _bits(point: JpegPoint, count: str) -> float:
    return point.scan_bits if count == "scan" else point.file_bits
