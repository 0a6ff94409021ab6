"""JPEG as the baseline codec: bits per image, counted two ways.

A JPEG file is headers (quantization and Huffman tables: a fixed cost of a few hundred bytes) plus the
entropy-coded scan. For small images the header dominates, so the fair comparison with a tokenizer's
bits per image is the scan alone. Wallace, "The JPEG still picture compression standard" (1992).
"""
from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

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
