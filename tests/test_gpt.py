"""The GPT over token grids and its sampling references: losses, filters, guidance, the KV cache, learning."""
import math
import time

import pytest
import torch

from course_lib.engine.checkpoints import config_from_dict, load_model, save_checkpoint
from course_lib.generators.gpt import GPT, GPTConfig, build_gpt, gpt_presets
from course_lib.generators.sampling import cfg_logits, filter_logits, next_token_loss, sample_step

pytestmark = pytest.mark.usefixtures("one_thread")


def _from_dict(data):
    return config_from_dict(GPTConfig, data, "GPT")


def _gpt(seed=0, **overrides) -> GPT:
    torch.manual_seed(seed)
    settings = dict(codebook_size=16, grid=(3, 4), num_classes=3, width=32, depth=2, heads=2)
    return build_gpt("gpt-tiny", **{**settings, **overrides}).eval()


def _grids(b=4, k=16, grid=(3, 4), seed=1) -> torch.Tensor:
    return torch.randint(0, k, (b, *grid), generator=torch.Generator().manual_seed(seed))


# ----- the sampling references -----

def test_next_token_loss_matches_a_loop_over_positions():
    logits = torch.randn(2, 5, 7)
    sequence = torch.randint(0, 7, (2, 5))
    terms = [-logits[b, i].log_softmax(-1)[sequence[b, i + 1]] for b in range(2) for i in range(4)]
    assert torch.allclose(next_token_loss(logits, sequence), torch.stack(terms).mean(), atol=1e-6)
    unshifted = torch.nn.functional.cross_entropy(logits.flatten(0, 1), sequence.flatten())
    assert not torch.allclose(next_token_loss(logits, sequence), unshifted)  # the shift matters
    with pytest.raises(ValueError, match=r"\(B, N, K\)"):
        next_token_loss(logits, sequence[:, :4])
    with pytest.raises(ValueError, match=r"in \[0, 7\)"):
        next_token_loss(logits, sequence + 7)


def test_top_k_and_top_p_keep_exactly_the_right_support():
    probs = torch.tensor([[0.05, 0.5, 0.15, 0.3]])  # sorted: 1 (0.5), 3 (0.3), 2 (0.15), 0 (0.05)
    logits = probs.log()
    kept = lambda filtered: set(torch.nonzero(filtered[0] > -math.inf).flatten().tolist())  # noqa: E731
    assert kept(filter_logits(logits, top_k=1)) == {1}
    assert kept(filter_logits(logits, top_k=3)) == {1, 3, 2}
    assert kept(filter_logits(logits, top_k=10)) == {0, 1, 2, 3}
    assert kept(filter_logits(logits, top_p=0.4)) == {1}  # 0.5 already reaches 0.4
    assert kept(filter_logits(logits, top_p=0.75)) == {1, 3}  # 0.5 + 0.3 reaches 0.75
    assert kept(filter_logits(logits, top_p=0.85)) == {1, 3, 2}
    assert kept(filter_logits(logits, top_p=1.0)) == {0, 1, 2, 3}
    assert kept(filter_logits(logits, top_k=2, top_p=0.95)) == {1, 3}
    assert torch.equal(filter_logits(logits, top_k=2)[0, [1, 3]], logits[0, [1, 3]])  # kept logits unchanged


def test_top_p_one_keeps_every_token_of_a_peaked_distribution():
    # a float32 cumsum of a peaked softmax reaches 1.0 before its tail: 423 of 1000 kept before the fix
    logits = torch.randn(2, 1000, generator=torch.Generator().manual_seed(0)) * 3
    logits[:, 0] = 20.0
    assert torch.equal(filter_logits(logits, top_p=1.0), logits)
    assert (filter_logits(logits, top_p=1.0).softmax(-1) > 0).all()
    assert (filter_logits(logits, top_p=0.999).isinf().sum(-1) > 900).all()  # below 1 the filter still cuts


def test_sample_step_draws_only_from_the_support_and_in_proportion():
    logits = torch.tensor([0.0, 3.0, 1.0, 2.5, -1.0]).expand(4000, 5)
    draws = sample_step(logits, top_k=3, generator=torch.Generator().manual_seed(0))
    assert set(draws.tolist()) == {1, 2, 3}
    p = filter_logits(logits[:1], top_k=3).softmax(-1)[0]
    frequencies = torch.bincount(draws, minlength=5).float() / 4000
    assert torch.allclose(frequencies, p, atol=0.03)
    assert torch.equal(sample_step(logits[:3], temperature=0), torch.tensor([1, 1, 1]))  # greedy
    cold = sample_step(logits, temperature=0.05, generator=torch.Generator().manual_seed(0))
    assert (cold == 1).float().mean() > 0.99  # low temperature: nearly greedy


def test_sample_step_is_reproducible_with_a_generator():
    logits = torch.randn(64, 50)
    draw = lambda seed: sample_step(logits, top_p=0.9, generator=torch.Generator().manual_seed(seed))  # noqa: E731
    assert torch.equal(draw(3), draw(3))
    assert not torch.equal(draw(3), draw(4))


def test_cfg_logits():
    g = torch.Generator().manual_seed(0)  # its own draws: the same numbers in any test order
    cond, uncond = torch.randn(2, 8, generator=g), torch.randn(2, 8, generator=g)
    assert torch.allclose(cfg_logits(cond, uncond, 1.0), cond)
    assert torch.allclose(cfg_logits(cond, uncond, 0.0), uncond)
    # uncond + 3 (cond - uncond) and 3 cond - 2 uncond round differently in float32: a relative tolerance
    assert torch.allclose(cfg_logits(cond, uncond, 3.0), 3 * cond - 2 * uncond, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="same shape"):
        cfg_logits(cond, uncond[:1], 2.0)


@pytest.mark.parametrize("kwargs, message", [
    (dict(top_k=0), "top_k"), (dict(top_p=0.0), "top_p"), (dict(top_p=1.5), "top_p"),
    (dict(temperature=-1), "temperature"),
])
def test_bad_sampling_settings_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        sample_step(torch.randn(2, 5), **kwargs)


# ----- the GPT -----

@pytest.mark.parametrize("positions", ["learned", "rotary"])
def test_logits_are_causal_in_raster_order(positions):
    model, grids = _gpt(positions=positions), _grids()
    changed = grids.clone()
    changed[:, 1, 2] = (changed[:, 1, 2] + 1) % 16  # raster position 6
    with torch.no_grad():
        before, after = model.logits(grids, [0, 1, 2, 0]), model.logits(changed, [0, 1, 2, 0])
    assert before.shape == (4, 12, 16)
    assert torch.allclose(before[:, :7], after[:, :7], atol=1e-6)  # logits up to 6 predict tokens 0..6
    assert not torch.allclose(before[:, 7:], after[:, 7:], atol=1e-4)


def test_forward_is_the_shifted_loss_of_the_teacher_forced_logits():
    model, grids = _gpt(), _grids()
    logits = model.logits(grids, [2, 1, 0, 2])
    expected = torch.nn.functional.cross_entropy(logits.flatten(0, 1), grids.flatten())
    assert torch.allclose(model(grids, [2, 1, 0, 2]), expected, atol=1e-6)
    assert not torch.allclose(model(grids, [2, 1, 0, 2]), model(grids, [0, 0, 0, 0]), atol=1e-6)


def test_class_dropout_trains_on_no_class():
    grids = _grids()
    never, always = _gpt(class_dropout=0.0).train(), _gpt(class_dropout=0.999).train()
    generator = torch.Generator().manual_seed(0)
    unconditional = never(grids, None)
    assert torch.allclose(always(grids, [0, 1, 2, 0], generator=generator), unconditional)
    assert not torch.allclose(never(grids, [0, 1, 2, 0]), unconditional)
    assert torch.allclose(always.eval()(grids, [0, 1, 2, 0]), never(grids, [0, 1, 2, 0]))  # eval: no dropout


@pytest.mark.parametrize("positions", ["learned", "rotary"])
@pytest.mark.parametrize("settings", [dict(), dict(top_k=5, temperature=0.8), dict(top_p=0.9, cfg=2.5)])
def test_cached_and_uncached_sampling_draw_the_same_tokens(positions, settings):
    model = _gpt(positions=positions)
    draw = lambda use_cache: model.sample(6, classes=[0, 1, 2, 0, 1, 2], use_cache=use_cache,  # noqa: E731
                                          generator=torch.Generator().manual_seed(7), **settings)
    cached = draw(True)
    assert cached.shape == (6, 3, 4) and cached.dtype == torch.long
    assert torch.equal(cached, draw(False))
    assert torch.equal(cached, draw(True))  # same seed, same samples
    other = model.sample(6, classes=[0, 1, 2, 0, 1, 2], generator=torch.Generator().manual_seed(8), **settings)
    assert not torch.equal(cached, other)


@pytest.mark.parametrize("scale", [1.0, 3.0])
def test_greedy_guided_sampling_matches_a_slow_reference(scale):
    model = _gpt()
    grids = torch.zeros(3, 3, 4, dtype=torch.long)
    with torch.no_grad():
        for i in range(12):  # causal: the zeros after position i do not change logits[:, i]
            cond, uncond = model.logits(grids, [0, 1, 2])[:, i], model.logits(grids, None)[:, i]
            grids.view(3, 12)[:, i] = cfg_logits(cond, uncond, scale).argmax(-1)
    assert torch.equal(model.sample(3, classes=[0, 1, 2], temperature=0, cfg=scale), grids)


def test_cache_makes_sampling_faster():
    model = build_gpt("gpt-tiny", codebook_size=64, grid=(8, 8), num_classes=2).eval()
    timings = {}
    for use_cache in (True, False, True, False):  # best of two each, interleaved
        start = time.perf_counter()
        model.sample(16, classes=1, use_cache=use_cache, generator=torch.Generator().manual_seed(0))
        timings[use_cache] = min(timings.get(use_cache, math.inf), time.perf_counter() - start)
    assert timings[False] > 1.5 * timings[True], timings  # measured 2.8-3.5x for this small case


def test_a_tiny_gpt_learns_a_handful_of_grids():
    torch.manual_seed(0)
    grids = _grids(b=4, k=16, grid=(4, 4), seed=3)
    model = build_gpt("gpt-tiny", codebook_size=16, grid=(4, 4), num_classes=4, class_dropout=0.0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    classes = torch.arange(4)
    for _ in range(200):
        loss = model(grids, classes)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05, f"the loss stayed at {loss.item():.3f} (chance is {math.log(16):.2f})"
    assert torch.equal(model.eval().sample(4, classes=classes, temperature=0), grids)  # class i -> grid i


@pytest.mark.parametrize("positions", ["learned", "rotary"])
def test_checkpoint_round_trip(tmp_path, positions):
    model, grids = _gpt(positions=positions, grid=(2, 3)), _grids(grid=(2, 3))
    path = save_checkpoint(tmp_path / "gpt.pt", model, {"preset": "gpt-tiny"})
    loaded = load_model(path, expect={"preset": "gpt-tiny"})
    assert isinstance(loaded, GPT) and loaded.config == model.config
    with torch.no_grad():
        assert torch.equal(loaded.logits(grids, [0, 1, 2, 0]), model.logits(grids, [0, 1, 2, 0]))


def test_presets_build_and_grow():
    sizes = [sum(p.numel() for p in build_gpt(name).parameters()) for name in gpt_presets]
    assert sizes == sorted(sizes) and sizes[-1] < 5e6  # ordered, and a checkpoint under ~20 MB at most


@pytest.mark.parametrize("call, message", [
    (lambda m: m.logits(_grids(grid=(4, 3))), r"\(B, 3, 4\)"),
    (lambda m: m.logits(_grids() + 16), r"in \[0, 16\)"),
    (lambda m: m.logits(_grids().float()), "integer tokens"),
    (lambda m: m.logits(_grids(), [0, 1, 3, 0]), r"classes must lie in \[0, 3\)"),
    (lambda m: m.logits(_grids(), [0, 1]), r"shape \(4,\)"),
    (lambda m: m.sample(2, cfg=2.0), "pass classes"),
    (lambda m: m.sample(0), "positive int"),
    (lambda m: _gpt(num_classes=0).sample(2, classes=1), "unconditional"),
    (lambda m: build_gpt("gpt-huge"), "unknown GPT preset"),
    (lambda m: _from_dict({"codebook_size": 16, "layers": 3}), "unknown GPT config fields"),
    (lambda m: GPTConfig(positions="none"), "learned' or 'rotary"),
    (lambda m: GPTConfig(grid=(8,)), "grid"),
])
def test_bad_inputs_raise(call, message):
    with pytest.raises(ValueError, match=message):
        call(_gpt())
