"""k-means on patches: the simplest discrete image tokenizer.

Each p x p patch is replaced by the index of its nearest centroid (Lloyd's algorithm, "Least squares
quantization in PCM", 1982). A learned codebook of K patches is the idea VQ-VAE later makes trainable:
Neural Discrete Representation Learning (van den Oord et al., https://arxiv.org/abs/1711.00937).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from .patches import patchify, unpatchify

_CHUNK = 8192  # rows per distance block: bounds memory at K = 4096


def nearest_centroid(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """(N, D), (K, D) -> (N,) int64 index of the nearest centroid in squared Euclidean distance."""
    if x.ndim != 2 or centroids.ndim != 2 or x.shape[1] != centroids.shape[1]:
        raise ValueError(f"expected x (N, D) and centroids (K, D) with the same D, "
                         f"got {tuple(x.shape)} and {tuple(centroids.shape)}")
    c_sq = (centroids ** 2).sum(1)  # (K,)
    # ||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2, and ||x||^2 does not change the argmin
    return torch.cat([(c_sq - 2 * block @ centroids.T).argmin(1) for block in x.split(_CHUNK)])  # (N,)


def kmeans(x: torch.Tensor, k: int, iters: int = 20, generator: torch.Generator | None = None,
           progress: bool = False) -> torch.Tensor:
    """Lloyd's k-means: (N, D) -> (K, D) centroids, started from K distinct random rows of ``x``."""
    if x.ndim != 2 or not 1 <= k <= len(x):
        raise ValueError(f"need x of shape (N, D) with N >= k >= 1, got {tuple(x.shape)} and k={k}")
    generator = generator or torch.Generator().manual_seed(0)
    centroids = x[torch.randperm(len(x), generator=generator)[:k]].clone()  # (K, D)
    for _ in tqdm(range(iters), desc=f"k-means K={k}", disable=not progress, leave=False):
        assign = nearest_centroid(x, centroids)  # (N,)
        counts = torch.bincount(assign, minlength=k).float()  # (K,)
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)  # (K, D)
        empty = counts == 0
        centroids = torch.where(empty[:, None], centroids, sums / counts.clamp(min=1)[:, None])
        if empty.any():  # an empty cluster restarts at a random data point instead of dying
            centroids[empty] = x[torch.randint(len(x), (int(empty.sum()),), generator=generator)]
    return centroids


@dataclass
class PatchCodebook:
    """A k-means codebook over p x p patches: images -> (B, h, w) indices -> images."""

    patch_size: int
    centroids: torch.Tensor  # (K, p*p*C)

    @classmethod
    def fit(cls, images: torch.Tensor, patch_size: int, k: int, iters: int = 20, seed: int = 0,
            max_patches: int = 65536, progress: bool = False) -> "PatchCodebook":
        patches = patchify(images, patch_size).flatten(0, 1)  # (B*N, D)
        g = torch.Generator().manual_seed(seed)
        if len(patches) > max_patches:
            patches = patches[torch.randperm(len(patches), generator=g)[:max_patches]]
        return cls(patch_size, kmeans(patches, k, iters, g, progress))

    @property
    def codebook_size(self) -> int:
        return len(self.centroids)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, h, w) indices."""
        b, _, height, width = images.shape
        indices = nearest_centroid(patchify(images, self.patch_size).flatten(0, 1), self.centroids)  # (B*N,)
        return indices.view(b, height // self.patch_size, width // self.patch_size)  # (B, h, w)

    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        """(B, h, w) indices -> (B, C, H, W) images made of centroid patches."""
        b, h, w = indices.shape
        patches = self.centroids[indices.flatten(1)]  # (B, N, D)
        return unpatchify(patches, self.patch_size, h * self.patch_size, w * self.patch_size)
