"""LFQ: sign codes with straight-through, bits <-> indices, the entropy penalty, the module."""
import math

import pytest
import torch

from course_lib.tokenizers.lfq import LFQ, LFQConfig, binarize, bits_to_indices, entropy_terms, indices_to_bits


def entropy_penalty(z, temperature):
    """MAGVIT-v2 eq. 5 with diversity weight 1, as LFQ.forward weighs its terms."""
    per_token, batch = entropy_terms(z, temperature)
    return per_token - batch


pytestmark = pytest.mark.usefixtures("one_thread")


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_binarize_gives_signs_with_identity_gradient():
    z = torch.randn(50, generator=_gen(), requires_grad=True)
    upstream = torch.randn(50, generator=_gen(1))
    codes = binarize(z)
    assert torch.equal(codes, torch.where(z > 0, 1.0, -1.0))
    codes.backward(upstream)
    assert torch.equal(z.grad, upstream)


@pytest.mark.parametrize("bits", range(1, 9))
def test_every_index_round_trips(bits):
    indices = torch.arange(2**bits)
    codes = indices_to_bits(indices, bits)
    assert set(codes.unique().tolist()) <= {-1.0, 1.0}
    assert torch.equal(bits_to_indices(codes), indices)


def test_index_is_the_bits_read_least_significant_first():
    codes = torch.tensor([[1.0, -1.0, -1.0], [-1.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    assert bits_to_indices(codes).tolist() == [int("001", 2), int("110", 2), int("111", 2)]


def test_entropies_are_bounded_and_batch_entropy_is_at_least_token_entropy():
    z = torch.randn(200, 4, generator=_gen())
    for temperature in (0.01, 0.5, 10.0):
        per_token, batch = entropy_terms(z, temperature)
        assert 0 <= per_token <= batch + 1e-5 <= 4 * math.log(2) + 1e-5  # concavity of entropy


def test_penalty_extremes():
    spread = indices_to_bits(torch.arange(16), 4).repeat(4, 1)  # every code equally often, confidently
    collapsed = torch.ones(64, 4)
    assert torch.isclose(entropy_penalty(spread, 0.01), torch.tensor(-4 * math.log(2)), atol=1e-4)
    assert torch.isclose(entropy_penalty(collapsed, 0.01), torch.tensor(0.0), atol=1e-4)


def test_entropy_penalty_spreads_a_collapsed_batch():
    torch.manual_seed(0)
    z = (torch.ones(256, 4) + 0.3 * torch.randn(256, 4, generator=_gen())).requires_grad_()
    optimizer = torch.optim.SGD([z], lr=0.5)
    before = len(bits_to_indices(binarize(z)).unique())
    for _ in range(30):
        optimizer.zero_grad()
        entropy_penalty(z, 0.1).backward()
        optimizer.step()
    assert len(bits_to_indices(binarize(z)).unique()) > 2 * before


def test_module_forward_encode_decode_agree():
    lfq = LFQ(6, LFQConfig(bits=6))
    z = torch.randn(2, 6, 3, 3, generator=_gen(), requires_grad=True)
    out = lfq(z)
    assert lfq.codebook_size == 64 and set(out.losses) == {"commitment", "entropy"}
    assert torch.equal(lfq.encode(z), out.indices)
    assert torch.equal(lfq.decode(out.indices), out.z_q)
    (out.z_q.sum() + sum(out.losses.values())).backward()
    assert z.grad.abs().sum() > 0
    assert {"usage", "perplexity", "token_entropy", "batch_entropy"} <= set(out.stats)


def test_projection_when_dim_differs_from_bits():
    lfq = LFQ(16, LFQConfig(bits=5))
    out = lfq(torch.randn(2, 16, 2, 2, generator=_gen()))
    assert out.z_q.shape == (2, 16, 2, 2) and out.indices.max() < 32


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match=r"bits must be in \[1, 12\]"):
        LFQConfig(bits=16)
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 8\) for 3 bits, got \[0, 9\]"):
        indices_to_bits(torch.tensor([0, 9]), 3)
    with pytest.raises(ValueError, match=r"expected z of shape \(B, 6, H, W\), got \(2, 5, 2, 2\)"):
        LFQ(6, LFQConfig(bits=6))(torch.zeros(2, 5, 2, 2))
