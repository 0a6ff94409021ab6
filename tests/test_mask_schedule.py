"""MaskGIT's mask schedules: the ratios, the decoding counts per step, the training masks."""
import math

import pytest
import torch

from course_lib.generators.mask_schedule import SCHEDULES, mask_counts, mask_ratio, masked_after, training_mask

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_ratios_run_from_all_masked_to_none_and_decrease(schedule):
    r = torch.linspace(0, 1, 101)
    ratio = mask_ratio(r, schedule)
    assert ratio[0] == 1.0 and ratio[-1] == 0.0
    assert (ratio[1:] <= ratio[:-1]).all()
    assert ((ratio >= 0) & (ratio <= 1)).all()


def test_ratios_match_their_formulas():
    r = torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64)
    assert torch.allclose(mask_ratio(r, "cosine"), torch.cos(math.pi / 2 * r))
    assert torch.allclose(mask_ratio(r, "linear"), 1 - r)
    assert torch.allclose(mask_ratio(r, "square"), 1 - r ** 2)
    assert torch.allclose(mask_ratio(r, "sqrt"), 1 - r.sqrt())
    assert torch.allclose(mask_ratio(r, "constant"), 1 - r)
    # concave schedules keep more masked early than linear, convex ones fewer
    assert (mask_ratio(r, "cosine") > 1 - r).all() and (mask_ratio(r, "sqrt") < 1 - r).all()


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("n, steps", [(64, 8), (64, 1), (10, 4), (16, 16), (64, 32), (7, 3)])
def test_every_step_reveals_at_least_one_and_the_last_reveals_all(schedule, n, steps):
    counts = mask_counts(n, steps, schedule)
    assert len(counts) == steps and counts[-1] == 0
    revealed = [before - after for before, after in zip([n] + counts, counts)]
    assert all(k >= 1 for k in revealed), revealed
    assert sum(revealed) == n


@pytest.mark.parametrize("schedule", ["cosine", "linear", "square", "sqrt"])
def test_counts_follow_the_schedule_where_no_clamp_bites(schedule):
    counts = mask_counts(64, 8, schedule)
    expected = [math.floor(64 * float(mask_ratio((t + 1) / 8, schedule)) + 1e-9) for t in range(8)]
    assert counts == expected


def test_known_counts():
    assert mask_counts(64, 8, "cosine") == [62, 59, 53, 45, 35, 24, 12, 0]  # few revealed first, many last
    assert mask_counts(64, 8, "linear") == [56, 48, 40, 32, 24, 16, 8, 0]
    assert mask_counts(10, 4, "linear") == [7, 5, 2, 0]  # floor(10 * 0.25) = 2: reveals 3, 2, 3, 2
    assert mask_counts(10, 4, "constant") == [7, 4, 2, 0]  # reveals 3, 3, 2, 2
    assert mask_counts(16, 1, "cosine") == [0]  # one step reveals everything
    assert mask_counts(3, 5, "cosine") == [2, 1, 0, 0, 0]  # more steps than tokens: one per step, then none


def test_per_sample_counts_match_the_scalar_ones():
    unknown = torch.tensor([64, 10, 3, 1])
    masked = unknown.clone()
    for step in range(4):
        masked = masked_after(step, 4, unknown, masked, "cosine")
        assert masked.tolist() == [mask_counts(int(u), 4, "cosine")[step] for u in unknown]


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_training_masks_follow_the_schedule(schedule):
    masks = training_mask(4000, 16, schedule, generator=torch.Generator().manual_seed(0))
    assert masks.shape == (4000, 16) and masks.dtype == torch.bool
    assert (masks.sum(1) >= 1).all()
    # the mean masked fraction is E[ceil(16 gamma(r)) / 16], r ~ U[0, 1)
    r = torch.linspace(0, 1, 100001)[:-1]
    expected = torch.ceil(mask_ratio(r, schedule) * 16).clamp(1, 16).mean() / 16
    assert abs(masks.float().mean() - expected) < 0.02
    assert masks.float().mean(0).std() < 0.03  # positions chosen uniformly


def test_training_masks_are_reproducible():
    draw = lambda seed: training_mask(8, 16, generator=torch.Generator().manual_seed(seed))  # noqa: E731
    assert torch.equal(draw(1), draw(1)) and not torch.equal(draw(1), draw(2))


@pytest.mark.parametrize("call, message", [
    (lambda: mask_ratio(0.5, "cubic"), "unknown mask schedule 'cubic'"),
    (lambda: mask_ratio(1.5), r"must lie in \[0, 1\]"),
    (lambda: mask_counts(0, 4), "positive int"),
    (lambda: mask_counts(8, 0), "steps must be a positive int"),
    (lambda: masked_after(4, 4, 8, 8), r"step must be an int in \[0, 4\)"),
    (lambda: training_mask(0, 16), "batch >= 1"),
])
def test_bad_inputs_raise(call, message):
    with pytest.raises(ValueError, match=message):
        call()
