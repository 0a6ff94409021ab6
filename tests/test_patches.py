import pytest
import torch

from course_lib.tokenizers.kmeans import PatchCodebook, kmeans, nearest_centroid
from course_lib.tokenizers.patches import attention_cost, patchify, sequence_length, unpatchify


def test_lecture_numbers():
    assert sequence_length(512, 512) == 262_144
    assert sequence_length(512, 512, 16) == 1_024
    assert attention_cost(1024, dim=768)["flops"] == 2 * 1024 ** 2 * 768


@pytest.mark.parametrize("shape,p", [((2, 3, 8, 12), 4), ((1, 1, 6, 6), 3), ((3, 3, 16, 16), 16)])
def test_round_trip_is_exact(shape, p):
    images = torch.rand(*shape)
    patches = patchify(images, p)
    assert patches.shape == (shape[0], (shape[2] // p) * (shape[3] // p), p * p * shape[1])
    assert torch.equal(unpatchify(patches, p, shape[2], shape[3]), images)


def test_patch_order_is_raster_and_rows_columns_channels():
    images = torch.arange(2 * 4 * 4, dtype=torch.float32).reshape(1, 2, 4, 4)
    patches = patchify(images, 2)
    # second patch is the top-right one; its first values are pixel (0, 2) of channel 0 then channel 1
    assert patches[0, 1, :2].tolist() == [images[0, 0, 0, 2].item(), images[0, 1, 0, 2].item()]
    assert torch.equal(patches[0, 2], patchify(images[:, :, 2:4, 0:2], 2)[0, 0])


def test_bad_inputs_are_explained():
    with pytest.raises(ValueError, match="does not divide"):
        patchify(torch.rand(1, 3, 10, 10), 4)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        patchify(torch.rand(3, 8, 8), 4)
    with pytest.raises(ValueError, match="positive int"):
        patchify(torch.rand(1, 3, 8, 8), 0)
    with pytest.raises(ValueError, match="cannot tile"):
        unpatchify(torch.rand(1, 5, 48), 4, 8, 8)
    with pytest.raises(ValueError, match="multiple of"):
        unpatchify(torch.rand(1, 4, 50), 4, 8, 8)
    with pytest.raises(ValueError, match="does not divide"):
        sequence_length(10, 10, 3)


def test_nearest_centroid_matches_cdist_and_chunks():
    g = torch.Generator().manual_seed(0)
    x, c = torch.randn(20000, 6, generator=g), torch.randn(50, 6, generator=g)
    assert torch.equal(nearest_centroid(x, c), torch.cdist(x, c).argmin(1))
    with pytest.raises(ValueError, match="same D"):
        nearest_centroid(x, torch.randn(4, 5))


def test_kmeans_finds_separated_clusters_and_is_deterministic():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = torch.cat([c + 0.1 * torch.randn(100, 2, generator=g) for c in centres])
    found = kmeans(x, 3, iters=10, generator=torch.Generator().manual_seed(1))
    assert torch.cdist(found, centres).min(0).values.max() < 0.1
    again = kmeans(x, 3, iters=10, generator=torch.Generator().manual_seed(1))
    assert torch.equal(found, again)
    with pytest.raises(ValueError, match="N >= k"):
        kmeans(x, 1000)


def test_kmeans_restarts_empty_clusters():
    x = torch.zeros(10, 2)
    x[5:] = 1.0  # only two distinct points: most of K = 4 clusters go empty
    centroids = kmeans(x, 4, iters=3)
    assert centroids.shape == (4, 2) and not torch.isnan(centroids).any()


def test_patch_codebook_round_trip_and_quality_grows_with_k():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(64, 3, 8, 8, generator=g).round()  # binary patterns
    errors = []
    for k in (2, 64):
        book = PatchCodebook.fit(images, 2, k, iters=5)
        indices = book.encode(images)
        assert indices.shape == (64, 4, 4) and indices.max() < k and book.codebook_size == k
        errors.append(((book.decode(indices) - images) ** 2).mean().item())
    assert errors[1] < errors[0]
