"""Tokens + GPT as an image compressor: a folder of images -> one archive -> the folder back.

    python -m course_lib.compress photos/ --out archive.tok           # the shipped vq-f4-photos + gpt-photos
    python -m course_lib.decompress archive.tok --out restored/

Each image is centre-cropped and resized to the tokenizer's size (32 x 32 for the shipped pair),
encoded into its token grid, and the grids are range-coded with the GPT's next-token probabilities
(:mod:`course_lib.generators.codec`). The tokens come back exactly; the pixels are the tokenizer's
reconstruction, so the images are compressed lossily at the tokenizer's quality, and losslessly
at the token level. Each command prints one JSON line with the bits per image.

Archive: magic ``TOKA``, a 4-byte length, a JSON header (tokenizer and GPT names, the weights CRC is
inside the codec stream, file names), then the codec stream. Written atomically.
"""
from __future__ import annotations

import argparse
import json
import struct
import sys
from pathlib import Path

import torch

from course_lib.datasets.folder import EXTENSIONS, load_folder
from course_lib.engine.checkpoints import CheckpointError, load_model
from course_lib.engine.files import write_atomic
from course_lib.generators import codec
from course_lib.tools.sample import to_uint8, _save_png
from course_lib.tools.train_gpt import resolve_checkpoint

MAGIC = b"TOKA"
LENGTH = struct.Struct("<4sI")
DEFAULT_TOKENIZER, DEFAULT_GPT = "vq-f4-photos", "gpt-photos"


def compress_images(images: torch.Tensor, tokenizer, gpt) -> tuple[torch.Tensor, bytes]:
    """Images (N, C, S, S) -> their token grids (N, h, w) and the codec stream of those grids."""
    if gpt.config.num_classes:
        raise ValueError("compress with an unconditional GPT (num_classes=0)")
    with torch.no_grad():
        tokens = torch.cat([tokenizer.encode(b) for b in images.split(256)]).cpu()  # (N, h, w)
    return tokens, codec.encode(gpt, tokens)


def pack(header: dict, stream: bytes) -> bytes:
    text = json.dumps(header).encode()
    return LENGTH.pack(MAGIC, len(text)) + text + stream


def unpack(data: bytes) -> tuple[dict, bytes]:
    if len(data) < LENGTH.size or data[:4] != MAGIC:
        raise ValueError(f"not a token archive: expected magic {MAGIC!r}, got {data[:4]!r}")
    _, length = LENGTH.unpack_from(data)
    header = json.loads(data[LENGTH.size:LENGTH.size + length])
    return header, data[LENGTH.size + length:]


def compress(folder: Path, out: Path, tokenizer_name: str = DEFAULT_TOKENIZER, gpt_name: str = DEFAULT_GPT) -> dict:
    tokenizer, gpt = load_model(resolve_checkpoint(tokenizer_name)), load_model(resolve_checkpoint(gpt_name))
    files = sorted(p for p in Path(folder).expanduser().rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file())
    images = load_folder(folder, "all", tokenizer.config.image_size, tokenizer.config.autoencoder.in_channels).images
    tokens, stream = compress_images(images, tokenizer, gpt)
    header = {"tokenizer": tokenizer_name, "gpt": gpt_name, "files": [str(p.relative_to(folder)) for p in files]}
    data = pack(header, stream)
    write_atomic(out, data)
    n = len(files)
    return {"archive": str(out), "images": n, "bytes": len(data),
            "bits_per_image": 8 * len(data) / n,  # everything: header, file names and stream
            "stream_bits_per_image": codec.stream_bits(stream)["payload"] / n,
            "nll_bits_per_image": float(codec.nll_bits(gpt, tokens).mean()),
            "raw_token_bits_per_image": tokenizer.bits_per_image}


def decompress(archive: Path, out: Path) -> dict:
    data = Path(archive).read_bytes()
    header, stream = unpack(data)
    tokenizer = load_model(resolve_checkpoint(header["tokenizer"]))
    gpt = load_model(resolve_checkpoint(header["gpt"]))
    tokens = codec.decode(gpt, stream)  # (N, h, w)
    if len(tokens) != len(header["files"]):
        raise ValueError(f"{archive}: the stream holds {len(tokens)} images, the header names {len(header['files'])}")
    with torch.no_grad():
        images = torch.cat([tokenizer.decode(t).clamp(0, 1) for t in tokens.split(256)])
    for name, image in zip(header["files"], to_uint8(images)):
        _save_png(image, Path(out) / Path(name).with_suffix(".png"))
    n = len(tokens)
    return {"folder": str(out), "images": n, "bits_per_image": 8 * len(data) / n,
            "stream_bits_per_image": codec.stream_bits(stream)["payload"] / n}


def _parser(prog: str, source: str, target: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    parser.add_argument("source", type=Path, help=source)
    parser.add_argument("--out", type=Path, required=True, help=target)
    return parser


def _run(function, *args) -> int:
    try:
        print(json.dumps(function(*args)))
    except (ValueError, CheckpointError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


def main_compress(argv=None) -> int:
    parser = _parser("python -m course_lib.compress", "folder of images", "archive to write (.tok)")
    parser.add_argument("--tokenizer", default=DEFAULT_TOKENIZER, help="a discrete tokenizer: shipped name or .pt")
    parser.add_argument("--gpt", default=DEFAULT_GPT, help="an unconditional GPT on its tokens: shipped name or .pt")
    args = parser.parse_args(argv)
    return _run(compress, args.source, args.out, args.tokenizer, args.gpt)


def main_decompress(argv=None) -> int:
    args = _parser("python -m course_lib.decompress", "archive written by course_lib.compress", "folder to write").parse_args(argv)
    return _run(decompress, args.source, args.out)
