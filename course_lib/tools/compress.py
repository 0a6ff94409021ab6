"""Tokens + GPT as an image compressor: a folder of images -> one archive -> the folder back.

    python -m course_lib.compress photos/ --out archive.tok           # the shipped vq-f4-photos + gpt-photos
    python -m course_lib.decompress archive.tok --out restored/

Each image is centre-cropped and resized to the tokenizer's size (32 x 32 for the shipped pair),
encoded into its token grid, and the grids are range-coded with the GPT's next-token probabilities
(:mod:`course_lib.generators.codec`). The tokens come back exactly; the pixels are the tokenizer's
reconstruction, so the images are compressed lossily at the tokenizer's quality, and losslessly
at the token level. Each command prints one JSON line with the bits per image.

Archive (format 2): magic ``TOKA``, the format number and the header's length (4 bytes each), a JSON
header (tokenizer and GPT names, file names), the codec stream's length (8 bytes), the codec stream
(whose own header holds a CRC of the GPT's weights), and a CRC32 of everything before it. An archive
whose lengths or checksum do not verify is refused before any image is written. Written atomically.
"""
from __future__ import annotations

import argparse
import json
import struct
import zlib
from pathlib import Path

import torch

from course_lib.datasets.folder import EXTENSIONS, load_folder
from course_lib.engine.checkpoints import load_model, read_metadata, resolve_checkpoint
from course_lib.engine.commands import run_command
from course_lib.engine.files import write_atomic
from course_lib.engine.png import save_png, to_uint8
from course_lib.generators import codec

MAGIC, FORMAT = b"TOKA", 2
PREFIX = struct.Struct("<4sII")  # magic, format, header length
LENGTH = struct.Struct("<Q")  # codec stream length
CHECKSUM = struct.Struct("<I")  # CRC32 of all bytes before it
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
    body = PREFIX.pack(MAGIC, FORMAT, len(text)) + text + LENGTH.pack(len(stream)) + stream
    return body + CHECKSUM.pack(zlib.crc32(body))


def unpack(data: bytes) -> tuple[dict, bytes]:
    """An archive's header and codec stream; a ValueError for anything that does not verify."""
    if len(data) < PREFIX.size or data[:4] != MAGIC:
        raise ValueError(f"not a token archive: expected magic {MAGIC!r}, got {data[:4]!r}")
    _, version, length = PREFIX.unpack_from(data)
    if version != FORMAT:
        raise ValueError(f"token archive of format {version}; this course_lib reads format {FORMAT}")
    start = PREFIX.size + length
    if len(data) < start + LENGTH.size + CHECKSUM.size:
        raise ValueError(f"truncated token archive: {len(data)} bytes, its header alone needs {start + LENGTH.size}")
    (size,) = LENGTH.unpack_from(data, start)
    end = start + LENGTH.size + size
    if len(data) != end + CHECKSUM.size:
        raise ValueError(f"token archive of {len(data)} bytes, its lengths say {end + CHECKSUM.size}: truncated or damaged")
    if zlib.crc32(data[:end]) != CHECKSUM.unpack_from(data, end)[0]:
        raise ValueError("token archive checksum does not match: the file is damaged")
    try:
        header = json.loads(data[PREFIX.size:start])
    except ValueError:
        raise ValueError("token archive header is not valid JSON: the file is damaged") from None
    return header, data[start + LENGTH.size:end]


def load_pair(tokenizer_name: str, gpt_name: str):
    """A discrete tokenizer and an unconditional GPT over its tokens, or a one-line reason why not."""
    tokenizer_path, gpt_path = resolve_checkpoint(tokenizer_name), resolve_checkpoint(gpt_name)
    tokenizer_kind, gpt_kind = read_metadata(tokenizer_path).get("kind"), read_metadata(gpt_path).get("kind")
    if tokenizer_kind not in ("tokenizer", "vqgan"):
        raise ValueError(f"--tokenizer {tokenizer_name} holds a {tokenizer_kind!r} model; give a discrete tokenizer "
                         f"(--tokenizer {DEFAULT_TOKENIZER})")
    if gpt_kind != "gpt":
        raise ValueError(f"--gpt {gpt_name} holds a {gpt_kind!r} model; give an unconditional GPT over the "
                         f"tokenizer's tokens (--gpt {DEFAULT_GPT})")
    tokenizer, gpt = load_model(tokenizer_path), load_model(gpt_path)
    if not tokenizer.is_discrete:
        raise ValueError(f"{tokenizer_name} is a continuous ({tokenizer.kind}) tokenizer: a GPT cannot entropy-code "
                         f"latents; give a discrete tokenizer (--tokenizer {DEFAULT_TOKENIZER})")
    if gpt.config.codebook_size != tokenizer.codebook_size or gpt.config.grid != tokenizer.tokens_shape:
        raise ValueError(f"{gpt_name} models {gpt.config.grid} grids of {gpt.config.codebook_size} tokens, "
                         f"{tokenizer_name} makes {tokenizer.tokens_shape} grids of {tokenizer.codebook_size}")
    return tokenizer, gpt


def compress(folder: Path, out: Path, tokenizer_name: str = DEFAULT_TOKENIZER, gpt_name: str = DEFAULT_GPT) -> dict:
    tokenizer, gpt = load_pair(tokenizer_name, gpt_name)
    files = sorted(p for p in Path(folder).expanduser().rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file())
    images = load_folder(folder, "all", tokenizer.config.image_size, tokenizer.config.autoencoder.in_channels).images
    tokens, stream = compress_images(images, tokenizer, gpt)
    header = {"tokenizer": tokenizer_name, "gpt": gpt_name, "files": [str(p.relative_to(folder)) for p in files]}
    data = pack(header, stream)
    write_atomic(out, data)
    n = len(files)
    return {"archive": str(out), "images": n, "bytes": len(data),
            "bits_per_image": 8 * len(data) / n,  # everything: header, file names, lengths, checksum and stream
            "stream_bits_per_image": codec.stream_bits(stream)["payload"] / n,
            "nll_bits_per_image": float(codec.nll_bits(gpt, tokens).mean()),
            "raw_token_bits_per_image": tokenizer.bits_per_image}


def decompress(archive: Path, out: Path) -> dict:
    data = Path(archive).read_bytes()
    header, stream = unpack(data)
    tokenizer, gpt = load_pair(header["tokenizer"], header["gpt"])
    tokens = codec.decode(gpt, stream)  # (N, h, w)
    if len(tokens) != len(header["files"]):
        raise ValueError(f"{archive}: the stream holds {len(tokens)} images, the header names {len(header['files'])}")
    with torch.no_grad():
        images = torch.cat([tokenizer.decode(t).clamp(0, 1) for t in tokens.split(256)])
    for name, image in zip(header["files"], to_uint8(images)):
        save_png(image, Path(out) / Path(name).with_suffix(".png"))
    n = len(tokens)
    return {"folder": str(out), "images": n, "bits_per_image": 8 * len(data) / n,
            "stream_bits_per_image": codec.stream_bits(stream)["payload"] / n}


def _parser(prog: str, source: str, target: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    parser.add_argument("source", type=Path, help=source)
    parser.add_argument("--out", type=Path, required=True, help=target)
    return parser


def _run(function, *args) -> int:
    return run_command(lambda: print(json.dumps(function(*args))))


def main_compress(argv=None) -> int:
    parser = _parser("python -m course_lib.compress", "folder of images", "archive to write (.tok)")
    parser.add_argument("--tokenizer", default=DEFAULT_TOKENIZER, help="a discrete tokenizer: shipped name or .pt")
    parser.add_argument("--gpt", default=DEFAULT_GPT, help="an unconditional GPT on its tokens: shipped name or .pt")
    args = parser.parse_args(argv)
    return _run(compress, args.source, args.out, args.tokenizer, args.gpt)


def main_decompress(argv=None) -> int:
    args = _parser("python -m course_lib.decompress", "archive written by course_lib.compress", "folder to write").parse_args(argv)
    return _run(decompress, args.source, args.out)
