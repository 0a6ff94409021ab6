"""FSQ: index <-> code round trips, the even-level offset, straight-through rounding, the module."""
import math

import pytest
import torch

from course_lib.tokenizers.fsq import (FSQ, FSQConfig, bound, check_levels, codes_to_indices, indices_to_codes,
                                       quantize, round_ste)


pytestmark = pytest.mark.usefixtures("one_thread")


LEVEL_SETS = [(8, 5, 5, 5), (2, 3, 4), (7,), (8, 8, 8, 6, 5), (2, 2, 2, 2)]


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("levels", LEVEL_SETS)
def test_every_index_round_trips(levels):
    indices = torch.arange(math.prod(levels))
    codes = indices_to_codes(indices, levels)
    assert codes.shape == (len(indices), len(levels))
    assert torch.equal(codes_to_indices(codes, levels), indices)
    assert len(torch.unique(codes, dim=0)) == len(indices)  # all codes distinct: the grid is the codebook


@pytest.mark.parametrize("levels", LEVEL_SETS)
def test_quantized_codes_round_trip_through_indices(levels):
    codes = quantize(3 * torch.randn(500, len(levels), generator=_gen()), levels)
    indices = codes_to_indices(codes, levels)
    assert indices.min() >= 0 and indices.max() < math.prod(levels)
    assert torch.equal(indices_to_codes(indices, levels), codes)


def test_mixed_radix_basis_first_channel_least_significant():
    # levels [8, 5, 5, 5]: digit i is worth 1, 8, 40, 200
    digits = torch.tensor([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1], [7, 4, 4, 4]])
    half = torch.tensor([4, 2, 2, 2])
    codes = (digits - half) / half
    assert codes_to_indices(codes, (8, 5, 5, 5)).tolist() == [1, 8, 40, 200, 999]


@pytest.mark.parametrize("num_levels", range(2, 10))
def test_exactly_L_levels_for_even_and_odd_L(num_levels):
    z = torch.linspace(-20, 20, 20001).unsqueeze(-1)  # (N, 1)
    values = torch.unique(bound(z, [num_levels]).round())
    assert len(values) == num_levels
    assert torch.equal(values, torch.arange(num_levels) - num_levels // 2)  # {-L/2, ..., L/2 - 1} when even


def _bound_without_offset(z, num_levels, eps=1e-3):
    # the pitfall: a symmetric tanh range for every L
    return torch.tanh(z) * (num_levels - 1) * (1 + eps) / 2


@pytest.mark.parametrize("num_levels", [4, 6, 8])
def test_the_missing_offset_pitfall_is_caught(num_levels):
    z = torch.linspace(-20, 20, 20001)
    assert len(torch.unique(_bound_without_offset(z, num_levels).round())) != num_levels


def test_bound_keeps_zero_at_zero_and_codes_in_unit_range():
    levels = (8, 5, 4, 3)
    assert torch.allclose(bound(torch.zeros(1, 4), levels), torch.zeros(1, 4), atol=1e-6)
    codes = quantize(100 * torch.randn(1000, 4, generator=_gen()), levels)
    assert codes.min() >= -1 and codes.max() <= 1


def test_round_ste_gradient_is_identity():
    z = torch.randn(10, generator=_gen(), requires_grad=True)
    upstream = torch.randn(10, generator=_gen(1))
    out = round_ste(z)
    assert torch.equal(out, z.detach().round())
    out.backward(upstream)
    assert torch.equal(z.grad, upstream)


def test_module_forward_encode_decode_agree():
    fsq = FSQ(4, FSQConfig((8, 5, 5, 5)))
    z = torch.randn(2, 4, 3, 5, generator=_gen(), requires_grad=True)
    out = fsq(z)
    assert fsq.codebook_size == 1000 and out.losses == {}
    assert out.indices.shape == (2, 3, 5) and out.z_q.shape == z.shape
    assert torch.equal(fsq.encode(z), out.indices)
    assert torch.allclose(fsq.decode(out.indices), out.z_q)
    out.z_q.sum().backward()
    assert z.grad.abs().sum() > 0  # gradients pass the rounding
    assert 0 < out.stats["usage"] <= 30 / 1000


def test_implicit_codebook_row_k_has_index_k():
    fsq = FSQ(3, FSQConfig((3, 4, 2)))
    assert torch.equal(codes_to_indices(fsq.codebook, (3, 4, 2)), torch.arange(24))


def test_projection_when_dim_differs_from_levels():
    fsq = FSQ(16, FSQConfig((8, 5, 5, 5)))
    z = torch.randn(2, 16, 2, 2, generator=_gen())
    out = fsq(z)
    assert out.z_q.shape == z.shape and isinstance(fsq.project_in, torch.nn.Linear)
    assert torch.allclose(fsq.decode(out.indices), out.z_q)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match=r"levels must be a non-empty list of ints >= 2, got \(8, 1\)"):
        FSQConfig((8, 1))
    with pytest.raises(ValueError, match=r"expected z of shape \(\.\.\., 4\) for levels \[8, 5, 5, 5\], got \(3, 2\)"):
        bound(torch.zeros(3, 2), (8, 5, 5, 5))
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 1000\)"):
        indices_to_codes(torch.tensor([1000]), (8, 5, 5, 5))
    with pytest.raises(ValueError, match=r"expected z of shape \(B, 4, H, W\), got \(2, 3, 2, 2\)"):
        FSQ(4)(torch.zeros(2, 3, 2, 2))
    assert FSQConfig([8, 5, 5, 5]) == FSQConfig((8, 5, 5, 5))  # lists from json become tuples


EXTREMES = torch.tensor([-float("inf"), -1e4, -50.0, 0.0, 50.0, 1e4, float("inf")])


@pytest.mark.parametrize("num_levels, eps", [(999, 1e-3), (1000, 1e-3), (1001, 1e-4), (4096, 1e-4),
                                             (4096, 2.43e-4), (2, 1e-6), (3, 1e-6)])
def test_many_levels_stay_on_the_grid(num_levels, eps):
    check_levels([num_levels], eps)  # allowed
    z = torch.cat([EXTREMES, torch.atanh(torch.linspace(-1, 1, 20 * num_levels + 1))]).unsqueeze(-1)  # (N, 1)
    indices = codes_to_indices(quantize(z, [num_levels], eps), [num_levels])
    assert indices.min() == 0 and indices.max() == num_levels - 1  # the extremes reach the outer levels, no further
    assert len(torch.unique(indices)) == num_levels
    assert torch.equal(codes_to_indices(indices_to_codes(indices, [num_levels]), [num_levels]), indices)


def test_levels_the_margin_pushes_past_the_grid_are_refused():
    # the pitfall: at eps = 1e-3 a level of 1001 stretched tanh's range half a level past the outer
    # levels, and quantize(+-50) gave indices [1001, -1]
    for make in (lambda: FSQConfig((1001, 5)), lambda: quantize(torch.tensor([[50.0], [-50.0]]), [1001]),
                 lambda: FSQConfig((4096,), eps=2.44e-4)):
        with pytest.raises(ValueError, match=r"too many for eps = .*at most \d+ at this eps, or an eps below"):
            make()
    with pytest.raises(ValueError, match="at most 1000 at this eps, or an eps below 0.0009995 for L = 1001"):
        FSQConfig((8, 1001))
    with pytest.raises(ValueError, match="past what float32 can bound at any eps"):
        check_levels([2**21], 1e-6)
    with pytest.raises(ValueError, match="eps must be at least 1e-6"):
        FSQConfig((8, 5), eps=0.0)
    assert FSQConfig((1000, 8)).levels == (1000, 8) and FSQConfig((4096,), eps=1e-4).levels == (4096,)
