"""How well a tokenizer reconstructs held-out images, and what its tokens cost: one ``evaluate_tokenizer``.

Used by the training command line (periodic and final evaluation), the ``evaluate`` command line, the
checkpoint recipes and the notebooks, so every number the course reports about a tokenizer comes
from the same code.
"""
from __future__ import annotations

import math

import torch

from course_lib.evaluation.metrics import codebook_usage, compression_ratio, perplexity, psnr, ssim
from course_lib.tokenizers.multiscale import scale_statistics


@torch.no_grad()
def evaluate_tokenizer(model, images: torch.Tensor, batch_size: int = 256, with_ssim: bool = True,
                       keep_outputs: bool = False) -> dict:
    """Mean PSNR / SSIM over ``images`` (N, C, H, W) and token statistics over all their tokens.

    The model is evaluated in eval mode (KL: the posterior mean) and put back in the mode it was in.
    Continuous kinds add the spread of their latents ("latent_std"), KL its mean KL in nats per image
    ("kl"); ``keep_outputs`` adds the clamped "reconstruction" (N, C, H, W) and the "tokens".
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    reconstructions, tokens, kls = [], [], []
    for batch in images.split(batch_size):
        out = model(batch.to(device))
        reconstructions.append(out.reconstruction.clamp(0, 1).cpu())
        tokens.append(out.tokens.cpu())
        kls += [out.stats["kl"]] * len(batch) if "kl" in out.stats else []
    model.train(was_training)
    reconstruction, tokens = torch.cat(reconstructions), torch.cat(tokens)
    metrics = {"psnr": psnr(reconstruction, images).mean().item(),
               "ssim": ssim(reconstruction, images).mean().item() if with_ssim else None,
               **token_statistics(model, tokens, tuple(images.shape[1:]))}
    if not model.is_discrete:
        metrics["latent_std"] = tokens.std().item()
    if kls:
        metrics["kl"] = sum(kls) / len(kls)  # nats per image
    return {**metrics, "reconstruction": reconstruction, "tokens": tokens} if keep_outputs else metrics


def token_statistics(model, tokens: torch.Tensor, image_shape: tuple[int, int, int]) -> dict:
    """Usage, perplexity, bits per image and compression ratio (null for continuous latents)."""
    if not model.is_discrete:
        return {"usage": None, "perplexity": None, "bits_per_image": None, "compression_ratio": None,
                "latent_shape": list(model.tokens_shape)}
    k, bits = model.codebook_size, model.bits_per_image
    scales = getattr(model.config.bottleneck, "scales", None)  # a multi-scale tokenizer: each scale's codes too
    return {"usage": codebook_usage(tokens, k), "perplexity": perplexity(tokens, k), "bits_per_image": bits,
            "compression_ratio": compression_ratio(bits, image_shape), "codebook_size": k,
            "tokens_per_image": math.prod(model.tokens_shape), **(scale_statistics(tokens, scales, k) if scales else {})}
