"""Evaluate a tokenizer checkpoint on a dataset split; prints one JSON object.

    python -m course_lib.evaluate data/checkpoints/vq-f4-photos.pt --data photos --split test

Reports PSNR and SSIM of the reconstructions and, for discrete tokenizers, codebook usage, perplexity,
bits per image (tokens * log2 K) and the compression ratio against raw 8-bit pixels. Continuous
(kl / ae) tokenizers report null for the token statistics and give their latent shape instead.
``--jpeg`` adds JPEG at the same scan-bit budget (see ``course_lib/jpeg.py``).
"""
from __future__ import annotations

import argparse
import json
import sys

from course_lib.datasets import DatasetUnavailable
from course_lib.datasets.images import load_images
from course_lib.engine.checkpoints import load_model, read_metadata, resolve_checkpoint
from course_lib.engine.commands import run_command
from course_lib.engine.runtime import pick_device
from course_lib.evaluation.jpeg import jpeg_at_budget
from course_lib.evaluation.reconstruction import evaluate_tokenizer


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m course_lib.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", help="a tokenizer: shipped name (vq-f4-photos) or a .pt file")
    parser.add_argument("--data", required=True, help="shapes, photos, glyphs, digits, mnist, fashion_mnist, cifar10 "
                                                      "or folder:PATH")
    parser.add_argument("--split", default="test", choices=("train", "test", "all"), help="all: a whole folder")
    parser.add_argument("--n", type=int, default=None, help="evaluate the first N images (default: 1024 test / "
                                                            "8192 train images of built-in sets; all of a folder)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--jpeg", action="store_true", help="add JPEG at the same scan-bit budget")
    parser.add_argument("--device", default=None, help="cpu, cuda or mps (default: best available)")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> dict:
    if (args.n is not None and args.n < 1) or args.batch_size < 1:
        raise ValueError(f"--n and --batch-size must be >= 1, got {args.n}, {args.batch_size}")
    path = resolve_checkpoint(args.checkpoint)
    kind = read_metadata(path).get("kind")
    if kind not in ("tokenizer", "vqgan"):
        hint = f"python -m course_lib.sample {args.checkpoint}" if kind in ("gpt", "maskgit", "flow") else \
            "python -m course_lib.evaluate vq-f4-photos --data photos"
        raise ValueError(f"{args.checkpoint} holds a {kind!r} model; evaluate reads tokenizers (try: {hint})")
    model = load_model(path, pick_device(args.device))
    config = model.config
    images = load_images(args.data, args.split, config.autoencoder.in_channels, config.image_size, args.n)
    result = {"checkpoint": str(args.checkpoint), "data": args.data, "split": args.split, "images": len(images),
              **evaluate_tokenizer(model, images, args.batch_size)}
    if args.jpeg and result["bits_per_image"]:
        point = jpeg_at_budget(images, result["bits_per_image"], count="scan")
        result["jpeg"] = {"quality": point.quality, "psnr": point.psnr, "ssim": point.ssim,
                          "scan_bits": point.scan_bits, "file_bits": point.file_bits}
    return result


def main(argv=None) -> int:
    args = parse_args(argv)
    return run_command(lambda: print(json.dumps(run(args))), (DatasetUnavailable,))


if __name__ == "__main__":
    sys.exit(main())
