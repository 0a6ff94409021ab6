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
import math
import sys

import torch
import torch.nn.functional as F

from .checkpoints import CheckpointError, load_model
from .datasets import DatasetUnavailable, load_dataset
from .datasets.folder import load_folder
from .jpeg import jpeg_at_budget
from .metrics import codebook_usage, compression_ratio, perplexity, psnr, ssim
from .runtime import pick_device

_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, as PIL's "L" mode


def tokenizer_images(name: str, split: str, channels: int, size: int, n: int | None = None,
                     seed: int = 0) -> torch.Tensor:
    """A dataset's images converted to what a tokenizer takes: (N, channels, size, size) in [0, 1]."""
    if name.startswith("folder:"):
        images = load_folder(name.removeprefix("folder:"), split, size, channels).images
        return images[:n] if n else images
    sized = name in ("shapes", "photos", "glyphs")
    images = load_dataset(name, split, n=n, seed=seed, size=size if sized else None).images
    return convert_images(images, channels, size)


def convert_images(images: torch.Tensor, channels: int, size: int) -> torch.Tensor:
    """Grey <-> RGB and square resizing (antialiased bilinear): (N, C, H, W) -> (N, channels, size, size)."""
    if images.shape[1] == 3 and channels == 1:
        weights = torch.tensor(_LUMA, dtype=images.dtype).view(1, 3, 1, 1)
        images = (images * weights).sum(1, keepdim=True)  # (N, 1, H, W)
    elif images.shape[1] == 1 and channels == 3:
        images = images.expand(-1, 3, -1, -1)  # (N, 3, H, W)
    if images.shape[-2:] != (size, size):
        images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return images.clamp(0, 1).contiguous()


@torch.no_grad()
def evaluate_tokenizer(model, images: torch.Tensor, batch_size: int = 256, with_ssim: bool = True) -> dict:
    """Mean PSNR / SSIM over ``images`` and token statistics over all their tokens (model in eval mode)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    scores, structural, tokens = [], [], []
    for batch in images.split(batch_size):
        out = model(batch.to(device))
        reconstruction = out.reconstruction.clamp(0, 1).cpu()
        scores.append(psnr(reconstruction, batch))
        if with_ssim:
            structural.append(ssim(reconstruction, batch))
        tokens.append(out.tokens.cpu())
    model.train(was_training)
    metrics = {"psnr": torch.cat(scores).mean().item(),
               "ssim": torch.cat(structural).mean().item() if with_ssim else None}
    return {**metrics, **token_statistics(model, torch.cat(tokens), tuple(images.shape[1:]))}


def token_statistics(model, tokens: torch.Tensor, image_shape: tuple[int, int, int]) -> dict:
    """Usage, perplexity, bits per image and compression ratio (null for continuous latents)."""
    if not model.is_discrete:
        return {"usage": None, "perplexity": None, "bits_per_image": None, "compression_ratio": None,
                "latent_shape": list(model.tokens_shape)}
    k, bits = model.codebook_size, model.bits_per_image
    return {"usage": codebook_usage(tokens, k), "perplexity": perplexity(tokens, k), "bits_per_image": bits,
            "compression_ratio": compression_ratio(bits, image_shape), "codebook_size": k,
            "tokens_per_image": math.prod(model.tokens_shape)}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m course_lib.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", help="a .pt file written by course_lib.train or make_checkpoints")
    parser.add_argument("--data", required=True, help="shapes, photos, glyphs, mnist, fashion_mnist, cifar10 "
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
    model = load_model(args.checkpoint, pick_device(args.device))
    config = model.config
    images = tokenizer_images(args.data, args.split, config.autoencoder.in_channels, config.image_size, args.n)
    result = {"checkpoint": str(args.checkpoint), "data": args.data, "split": args.split, "images": len(images),
              **evaluate_tokenizer(model, images, args.batch_size)}
    if args.jpeg and result["bits_per_image"]:
        point = jpeg_at_budget(images, result["bits_per_image"], count="scan")
        result["jpeg"] = {"quality": point.quality, "psnr": point.psnr, "ssim": point.ssim,
                          "scan_bits": point.scan_bits, "file_bits": point.file_bits}
    return result


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        result = run(args)
    except (ValueError, DatasetUnavailable, CheckpointError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
