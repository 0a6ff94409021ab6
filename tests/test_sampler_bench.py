"""Timing and scoring token samplers side by side (lesson 08), and the masked-grid view of the notebooks."""
import pytest
import torch

from course_lib.evaluation.sampler_bench import scale_passes, time_samplers, token_passes
from course_lib.evaluation.yardstick import Yardstick
from course_lib.generators.maskgit import remask
from course_lib.notebook.viz import decode_masked


def test_samplers_are_timed_in_turn_and_the_median_is_reported():
    calls, fake = [], iter([0.0, 5.0, 5.0, 6.0, 6.0, 6.5, 6.5, 9.0, 9.0, 9.1, 9.1, 9.3])

    def sampler(name):
        return lambda classes, generator: calls.append((name, classes.tolist(), generator.initial_seed()))

    import course_lib.evaluation.sampler_bench as bench
    real = bench.time.perf_counter
    bench.time.perf_counter = lambda: next(fake)
    try:
        seconds = time_samplers({"a": sampler("a"), "b": sampler("b")}, torch.arange(3), repeats=3, seed=7)
    finally:
        bench.time.perf_counter = real
    assert [c[0] for c in calls] == ["a", "b", "a", "b", "a", "b"]  # interleaved, not a then b
    assert [c[2] for c in calls] == [7, 7, 8, 8, 9, 9] and calls[0][1] == [0, 1, 2]
    assert seconds == {"a": pytest.approx(0.5), "b": pytest.approx(1.0)}  # a: 5, 0.5, 0.1; b: 1, 2.5, 0.2


def test_time_samplers_refuses_nothing_to_do():
    with pytest.raises(ValueError, match="repeats >= 1"):
        time_samplers({"a": lambda c, g: None}, torch.arange(2), repeats=0)


def test_token_passes_count_the_work_of_each_decoder():
    assert token_passes(16) == 17 and token_passes(16, cfg=True) == 34  # KV-cached GPT: every token once
    assert token_passes(16, steps=8) == 8 * 17 and token_passes(16, steps=8, cfg=True) == 2 * 8 * 17
    with pytest.raises(ValueError, match="steps None or >= 1"):
        token_passes(16, steps=0)


class _Tokenizer:
    def eval(self):
        return self

    def decode(self, grids):  # (B, h, w) -> (B, 1, 8h, 8w): each token a flat cell of its value / 10
        return (grids.float() / 10).repeat_interleave(8, 1).repeat_interleave(8, 2)[:, None]


class _Yardstick(Yardstick):
    def __init__(self):  # three classes; no classifier: the first cell's token is the "class"
        self.class_names = ["a", "b", "c"]

    def score(self, images, classes):
        predicted = (images[:, 0, 0, 0] * 10).round().long()
        return {"class_accuracy": float((predicted == classes).float().mean()), "n": len(images)}


def test_sample_and_score_asks_for_the_classes_in_turn():
    right = lambda c, g: c[:, None, None].expand(-1, 2, 2).clone()  # noqa: E731
    wrong = lambda c, g: ((c + 1) % 3)[:, None, None].expand(-1, 2, 2).clone()  # noqa: E731
    scores, images, seconds = _Yardstick().sample_and_score(right, _Tokenizer(), 10, batch_size=4)
    assert scores == {"class_accuracy": 1.0, "n": 10} and images.shape == (10, 1, 16, 16) and seconds >= 0
    assert _Yardstick().sample_and_score(wrong, _Tokenizer(), 10)[0]["class_accuracy"] == 0.0


def test_decode_masked_paints_exactly_the_masked_cells_grey():
    grids = torch.tensor([[[1, 9], [3, 4]]])  # 9 is the mask id
    images = decode_masked(_Tokenizer(), grids, mask_id=9, grey=0.5)
    assert images.shape == (1, 1, 16, 16)
    assert torch.all(images[0, 0, :8, 8:] == 0.5) and torch.all(images[0, 0, :8, :8] == 0.1)
    assert torch.all(images[0, 0, 8:, 8:] == 0.4)
    with pytest.raises(ValueError, match=r"\(B, h, w\)"):
        decode_masked(_Tokenizer(), grids[0], mask_id=9)


def test_remask_never_re_masks_a_known_position_however_unsure():
    sampled = torch.tensor([[5, 6, 7, 8]])
    confidence = torch.tensor([[-9.0, -1.0, -2.0, -3.0]])  # the known position 0 is the least confident
    is_masked = torch.tensor([[False, True, True, True]])
    out = remask(sampled, confidence, is_masked, torch.tensor([2]), mask_id=99)
    assert out.tolist() == [[5, 6, 99, 99]]


def test_scale_passes_count_every_token_of_every_scale_once():
    assert scale_passes((1, 2, 3, 4, 6, 8)) == 130 and scale_passes((1, 2, 3, 4, 6, 8), cfg=True) == 260
    with pytest.raises(ValueError, match="positive scale sides"):
        scale_passes((0, 2))
