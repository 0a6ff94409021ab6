"""MaskGIT: the masked-token loss, bidirectional logits, confidence decoding, guidance, inpainting, learning."""
import math

import pytest
import torch
import torch.nn.functional as F

from course_lib.engine.checkpoints import config_from_dict, load_model, save_checkpoint
from course_lib.generators.mask_schedule import mask_counts, masked_after, training_mask
from course_lib.generators.maskgit import MaskGIT, MaskGITConfig, build_maskgit, maskgit_presets

pytestmark = pytest.mark.usefixtures("one_thread")

GREEDY = dict(temperature=0, choice_temperature=0)  # no randomness: argmax draws, pure confidence


def _from_dict(data):
    return config_from_dict(MaskGITConfig, data, "MaskGIT")


def _maskgit(seed=0, **overrides) -> MaskGIT:
    torch.manual_seed(seed)
    settings = dict(codebook_size=16, grid=(3, 4), num_classes=3, width=32, depth=2, heads=2)
    return build_maskgit("maskgit-tiny", **{**settings, **overrides}).eval()


def _grids(b=4, k=16, grid=(3, 4), seed=1) -> torch.Tensor:
    return torch.randint(0, k, (b, *grid), generator=torch.Generator().manual_seed(seed))


def _seed(seed=0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----- the model and its loss -----

@pytest.mark.parametrize("positions", ["learned", "rotary"])
def test_logits_are_bidirectional(positions):
    model, grids = _maskgit(positions=positions), _grids()
    changed = grids.clone()
    changed[:, 1, 2] = model.mask_id  # raster position 6
    with torch.no_grad():
        before, after = model.logits(grids, [0, 1, 2, 0]), model.logits(changed, [0, 1, 2, 0])
    assert before.shape == (4, 12, 16)
    assert not torch.allclose(before[:, :6], after[:, :6], atol=1e-4)  # earlier positions see it too (no GPT mask)


def test_forward_is_cross_entropy_on_the_masked_positions_only():
    model, grids = _maskgit(), _grids()
    loss = model(grids, [2, 1, 0, 2], generator=_seed(5))
    masked = training_mask(4, 12, "cosine", _seed(5))  # the same draw as inside forward
    inputs = grids.flatten(1).masked_fill(masked, model.mask_id).view(4, 3, 4)
    logits = model.logits(inputs, [2, 1, 0, 2])  # (B, N, K)
    assert torch.allclose(loss, F.cross_entropy(logits[masked], grids.flatten(1)[masked]), atol=1e-6)
    everywhere = F.cross_entropy(logits.flatten(0, 1), grids.flatten())
    assert not torch.allclose(loss, everywhere, atol=1e-4)  # unmasked positions are no targets


def test_class_dropout_trains_on_no_class():
    grids = _grids()
    never, always = _maskgit(class_dropout=0.0).train(), _maskgit(class_dropout=0.999).train()
    unconditional = never(grids, None, generator=_seed(0))
    assert torch.allclose(always(grids, [0, 1, 2, 0], generator=_seed(0)), unconditional)
    assert not torch.allclose(never(grids, [0, 1, 2, 0], generator=_seed(0)), unconditional)


# ----- one decoding step -----

def test_decode_step_keeps_known_tokens_and_masks_what_the_schedule_says():
    model = _maskgit()
    grids = torch.full((4, 3, 4), model.mask_id)
    grids[:, 0] = _grids()[:, 0]  # first row known: 8 unknown per grid
    unknown = torch.full((4,), 8)
    masked = unknown.clone()
    for step in range(4):
        new = model.decode_step(grids, [0, 1, 2, 0], step, 4, unknown, generator=_seed(step))
        was_known = grids != model.mask_id
        assert torch.equal(new[was_known], grids[was_known])  # known and revealed tokens never change
        masked = masked_after(step, 4, unknown, masked)
        assert ((new == model.mask_id).flatten(1).sum(1) == masked).all()
        assert ((new != model.mask_id) | (grids == model.mask_id)).all()  # nothing becomes masked again
        grids = new
    assert (grids != model.mask_id).all()


def test_greedy_decode_step_keeps_the_most_confident_tokens():
    model = _maskgit()
    grids = torch.full((2, 3, 4), model.mask_id)
    grids[0, 0, 0], grids[1, 2, 3] = 3, 5
    new = model.decode_step(grids, [0, 1], 0, 4, None, "linear", **GREEDY)  # 11 unknown: keep floor(8.25) = 8
    with torch.no_grad():
        log_probs = model.logits(grids, [0, 1]).log_softmax(-1)  # (B, N, K)
    best, choice = log_probs.max(-1)  # (B, N)
    best[grids.flatten(1) != model.mask_id] = math.inf
    for b in range(2):
        revealed = set(best[b].argsort(descending=True)[:4].tolist())  # 1 known + 3 most confident
        assert set(torch.nonzero(new[b].flatten() != model.mask_id).flatten().tolist()) == revealed
        kept = [i for i in revealed if grids[b].flatten()[i] == model.mask_id]
        assert new[b].flatten()[kept].tolist() == choice[b, kept].tolist()


def test_gumbel_noise_moves_the_choice_not_the_draws():
    model = _maskgit()
    grids = torch.full((8, 3, 4), model.mask_id)
    step = lambda seed, noise: model.decode_step(grids, 1, 0, 4, temperature=0, choice_temperature=noise,  # noqa: E731
                                                 generator=_seed(seed))
    assert torch.equal(step(0, 0.0), step(1, 0.0))  # no noise, argmax draws: nothing random
    noisy, other = step(0, 50.0), step(1, 50.0)
    assert not torch.equal(noisy, other)  # the revealed positions change with the seed
    both = (noisy != model.mask_id) & (other != model.mask_id)
    assert torch.equal(noisy[both], other[both])  # the tokens drawn there do not


# ----- sampling -----

def test_steps_1_reveals_everything_at_once():
    model = _maskgit()
    grids = torch.full((3, 3, 4), model.mask_id)
    assert (model.decode_step(grids, [0, 1, 2], 0, 1) != model.mask_id).all()
    samples = model.sample(3, classes=[0, 1, 2], steps=1, generator=_seed(0))
    assert samples.shape == (3, 3, 4) and samples.max() < 16


@pytest.mark.parametrize("schedule", ["cosine", "sqrt", "constant"])
def test_revealed_tokens_per_step_follow_the_schedule(schedule):
    model = _maskgit(grid=(4, 4))
    grids, counts = torch.full((2, 4, 4), model.mask_id), []
    for step in range(5):
        grids = model.decode_step(grids, [0, 1], step, 5, torch.tensor([16, 16]), schedule, generator=_seed(step))
        counts.append((grids == model.mask_id).flatten(1).sum(1).tolist())
    assert counts == [[c, c] for c in mask_counts(16, 5, schedule)]


def test_inpainting_never_changes_known_tokens():
    model, reference = _maskgit(), _grids(b=6)
    known = reference.clone()
    known[:, 1:, 1:] = model.mask_id  # keep the first row and column
    for settings in (dict(), dict(cfg=3.0, temperature=1.5), GREEDY):
        samples = model.sample(6, classes=[0, 1, 2] * 2, steps=4, known=known, generator=_seed(1), **settings)
        assert torch.equal(samples[:, 0], reference[:, 0]) and torch.equal(samples[:, :, 0], reference[:, :, 0])
        assert samples.max() < 16


def test_sampling_is_deterministic_given_a_generator():
    model = _maskgit()
    draw = lambda seed: model.sample(6, classes=[0, 1, 2, 0, 1, 2], steps=4, cfg=2.0, generator=_seed(seed))  # noqa: E731
    assert torch.equal(draw(7), draw(7))
    assert not torch.equal(draw(7), draw(8))


def test_guidance_at_scale_0_is_unconditional_and_at_1_conditional():
    model = _maskgit(seed=3)
    greedy = lambda **kw: model.sample(4, steps=3, **GREEDY, **kw)  # noqa: E731
    classes = [0, 1, 2, 1]
    assert torch.equal(greedy(classes=classes, cfg=0.0), greedy(classes=None))
    assert torch.equal(greedy(classes=classes, cfg=1.0), greedy(classes=classes))
    grids = torch.full((4, 3, 4), model.mask_id)
    with torch.no_grad():  # the batched guided pass matches two separate passes row by row
        cond, uncond = model.logits(grids, classes), model.logits(grids, None)
        assert torch.allclose(model._guided_logits(grids.flatten(1), classes, 2.5), 2.5 * cond - 1.5 * uncond,
                              atol=1e-5)


def test_a_tiny_maskgit_learns_a_handful_of_grids():
    torch.manual_seed(0)
    grids = _grids(b=4, k=16, grid=(4, 4), seed=3)
    model = build_maskgit("maskgit-tiny", codebook_size=16, grid=(4, 4), num_classes=4, class_dropout=0.0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    batch, classes = grids.repeat(8, 1, 1), torch.arange(4).repeat(8)  # 32 grids, each masked differently
    generator = _seed(0)
    for _ in range(250):
        loss = model(batch, classes, generator=generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05, f"the loss stayed at {loss.item():.3f} (chance is {math.log(16):.2f})"
    for steps in (1, 4):
        samples = model.eval().sample(4, classes=torch.arange(4), steps=steps, generator=_seed(1))
        assert torch.equal(samples, grids)  # class i -> grid i


@pytest.mark.parametrize("positions", ["learned", "rotary"])
def test_checkpoint_round_trip(tmp_path, positions):
    model, grids = _maskgit(positions=positions, grid=(2, 3), schedule="square"), _grids(grid=(2, 3))
    path = save_checkpoint(tmp_path / "maskgit.pt", model, {"preset": "maskgit-tiny"})
    loaded = load_model(path, expect={"preset": "maskgit-tiny"})
    assert isinstance(loaded, MaskGIT) and loaded.config == model.config
    with torch.no_grad():
        assert torch.equal(loaded.logits(grids, [0, 1, 2, 0]), model.logits(grids, [0, 1, 2, 0]))


def test_presets_build_and_grow():
    sizes = [sum(p.numel() for p in build_maskgit(name).parameters()) for name in maskgit_presets]
    assert sizes == sorted(sizes) and sizes[-1] < 5e6


@pytest.mark.parametrize("call, message", [
    (lambda m: m.logits(_grids(grid=(4, 3))), r"\(B, 3, 4\)"),
    (lambda m: m.logits(_grids() + 17), r"in \[0, 16\) or the mask id 16"),
    (lambda m: m(_grids() + 16, [0, 1, 2, 0]), r"in \[0, 16\), got"),  # no [MASK] in training targets
    (lambda m: m.logits(_grids().float()), "integer tokens"),
    (lambda m: m.logits(_grids(), [0, 1, 3, 0]), r"classes must lie in \[0, 3\)"),
    (lambda m: m.logits(_grids(), [0, 1]), r"shape \(4,\)"),
    (lambda m: m.sample(2, cfg=2.0), "pass classes"),
    (lambda m: m.sample(0), "positive int"),
    (lambda m: m.sample(2, steps=0), "steps must be a positive int"),
    (lambda m: m.sample(2, schedule="cubic"), "unknown mask schedule"),
    (lambda m: m.sample(2, known=_grids(b=3)), r"known grids of shape \(2, 3, 4\)"),
    (lambda m: m.decode_step(_grids(), step=2), "pass unknown"),
    (lambda m: m.decode_step(_grids(), step=8, steps=8), r"step must be an int in \[0, 8\)"),
    (lambda m: _maskgit(num_classes=0).sample(2, classes=1), "unconditional"),
    (lambda m: build_maskgit("maskgit-huge"), "unknown MaskGIT preset"),
    (lambda m: _from_dict({"codebook_size": 16, "layers": 3}), "unknown MaskGIT config fields"),
    (lambda m: MaskGITConfig(schedule="cubic"), "unknown mask schedule"),
    (lambda m: MaskGITConfig(positions="none"), "learned' or 'rotary"),
])
def test_bad_inputs_raise(call, message):
    with pytest.raises(ValueError, match=message):
        call(_maskgit())
