"""The DiT velocity model: shapes, patches, adaLN-Zero, conditioning, checkpoints, and learning with flow matching."""
import pytest
import torch

from course_lib.engine.checkpoints import config_from_dict, load_model, save_checkpoint
from course_lib.generators.dit import (DiT, DiTConfig, build_dit, dit_presets,
                                       sincos_positions_2d, timestep_features)
from course_lib.generators.flow import NO_CLASS, cfg_velocity, flow_loss, guided_velocity, sample

pytestmark = pytest.mark.usefixtures("one_thread")


def _from_dict(data):
    return config_from_dict(DiTConfig, data, "DiT")


def _dit(seed=0, **overrides) -> DiT:
    torch.manual_seed(seed)
    settings = dict(channels=3, grid=(4, 6), patch=2, num_classes=3, width=32, depth=2, heads=2)
    return build_dit("dit-tiny", **{**settings, **overrides}).eval()


def _latents(b=4, seed=1, shape=(3, 4, 6)) -> torch.Tensor:
    return torch.randn(b, *shape, generator=torch.Generator().manual_seed(seed))


def _perturb(model: DiT, seed=5) -> DiT:
    """Every weight moved off its initialization, so zero-initialized paths carry signal too."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model


@pytest.mark.parametrize("positions", ["sinusoidal", "learned"])
def test_output_has_the_latent_shape(positions):
    model = _dit(positions=positions)
    v = model(_latents(), torch.rand(4), [0, 1, 2, NO_CLASS])
    assert v.shape == (4, 3, 4, 6) and v.dtype == torch.float32
    assert model.config.num_tokens == 6


def test_fresh_dit_outputs_zero_and_still_learns():
    model = _dit().train()
    assert torch.equal(model(_latents(), torch.rand(4), [0, 1, 2, 0]), torch.zeros(4, 3, 4, 6))
    loss = flow_loss(model, _latents(), torch.tensor([0, 1, 2, 0]), generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert model.head.weight.grad.abs().sum() > 0  # the zero head gets a gradient at the first step


def test_patches_are_independent_tokens_in_the_right_places():
    model = _perturb(_dit())
    latents = _latents(b=1)
    changed = latents.clone()
    changed[0, :, 0:2, 2:4] += 1.0  # the patch at (row 0, column 1)
    t = torch.tensor([0.5])
    with torch.no_grad():
        before, after = model(latents, t, [1]), model(changed, t, [1])
    assert not torch.allclose(before, after)  # full attention: every patch sees the change
    one_patch = _dit(depth=1)
    one_patch.transformer.blocks = torch.nn.ModuleList()  # no attention: each patch maps to itself
    _perturb(one_patch)
    with torch.no_grad():
        before, after = one_patch(latents, t, [1]), one_patch(changed, t, [1])
    moved = (before - after).abs().sum(dim=1)[0] > 0  # (h, w)
    expected = torch.zeros(4, 6, dtype=torch.bool)
    expected[0:2, 2:4] = True
    assert torch.equal(moved, expected)  # patchify and unpatchify agree on where a patch lives


def test_time_and_class_change_the_velocity_and_no_class_is_none():
    model, latents = _perturb(_dit()), _latents()
    with torch.no_grad():
        base = model(latents, torch.full((4,), 0.3), [0, 0, 0, 0])
        assert not torch.allclose(base, model(latents, torch.full((4,), 0.7), [0, 0, 0, 0]))
        assert not torch.allclose(base, model(latents, torch.full((4,), 0.3), [1, 1, 1, 1]))
        assert torch.equal(model(latents, torch.full((4,), 0.3), None),
                           model(latents, torch.full((4,), 0.3), torch.full((4,), NO_CLASS)))
        assert torch.equal(model(latents, 0.3, 0), base)  # a number broadcasts


def test_embeddings():
    features = timestep_features(torch.tensor([0.0, 0.5, 1.0]), 16)
    assert features.shape == (3, 16) and torch.equal(features[0, :8], torch.ones(8))
    table = sincos_positions_2d(16, 2, 3)
    assert table.shape == (6, 16)
    assert len({tuple(row.tolist()) for row in table}) == 6  # every patch has its own position
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_positions_2d(18, 2, 3)


def _dit_reference_positions(width, grid):
    # facebookresearch/DiT models.py get_2d_sincos_pos_embed: np.meshgrid(grid_w, grid_h), w first
    def one_axis(dim, pos):
        angles = torch.outer(pos.flatten().double(), 1.0 / 10000 ** (torch.arange(dim // 2).double() / (dim / 2)))
        return torch.cat([angles.sin(), angles.cos()], dim=1)
    w_first = torch.stack(torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="xy"))  # (2, grid, grid)
    return torch.cat([one_axis(width // 2, w_first[0]), one_axis(width // 2, w_first[1])], dim=1).float()


def test_positions_are_dits_table_with_its_halves_swapped():
    ours, dits = sincos_positions_2d(32, 4, 4), _dit_reference_positions(32, 4)
    assert torch.allclose(ours, torch.cat([dits[:, 16:], dits[:, :16]], dim=1), atol=1e-6)
    assert not torch.allclose(ours, dits, atol=1e-3)  # as the docstring says: not DiT's table itself


def test_guidance_acts_on_every_latent_channel():
    # DiT's reference code guided only the first 3 of 4 channels (facebookresearch/DiT, models.py forward_with_cfg)
    model, latents = _perturb(_dit()), _latents()
    classes = torch.tensor([0, 1, 2, 0])
    with torch.no_grad():
        guided = guided_velocity(model, latents, 0.4, classes, cfg=3.0)
        cond, uncond = model(latents, torch.full((4,), 0.4), classes), model(latents, torch.full((4,), 0.4), None)
    assert torch.allclose(guided, cfg_velocity(cond, uncond, 3.0), atol=1e-5)
    assert ((guided - cond).abs().amax(dim=(0, 2, 3)) > 0).all()  # every channel is guided


@pytest.mark.parametrize("positions", ["sinusoidal", "learned"])
def test_checkpoint_round_trip(tmp_path, positions):
    model, latents, t = _perturb(_dit(positions=positions)), _latents(), torch.rand(4)
    path = save_checkpoint(tmp_path / "dit.pt", model, {"preset": "dit-tiny"})
    loaded = load_model(path, expect={"preset": "dit-tiny"})
    assert isinstance(loaded, DiT) and loaded.config == model.config
    with torch.no_grad():
        assert torch.equal(loaded(latents, t, [0, 1, 2, 0]), model(latents, t, [0, 1, 2, 0]))


def test_presets_build_and_grow():
    sizes = [sum(p.numel() for p in build_dit(name).parameters()) for name in dit_presets]
    assert sizes == sorted(sizes) and sizes[-1] < 6e6  # ordered, and at most ~24 MB


def test_dit_fits_a_tiny_set_of_latents_and_samples_deterministically():
    torch.manual_seed(0)
    model = build_dit("dit-tiny", channels=2, grid=(4, 4), num_classes=2, width=32, depth=2, heads=2)
    latents = torch.stack([torch.ones(2, 4, 4), -torch.ones(2, 4, 4)])  # class 0: all +1, class 1: all -1
    classes = torch.tensor([0, 1])
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(150):
        loss = flow_loss(model, latents.repeat(16, 1, 1, 1), classes.repeat(16), "logit-normal", 0.1, g)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    draw = lambda: sample(model, (4, 2, 4, 4), [0, 0, 1, 1], steps=8, method="heun", cfg=1.5,  # noqa: E731
                          generator=torch.Generator().manual_seed(3))
    samples = draw()
    assert torch.equal(samples, draw())
    assert (samples[:2].mean() > 0.5) and (samples[2:].mean() < -0.5)


@pytest.mark.parametrize("per_channel", [False, True])
def test_latent_scale_is_fitted_applied_and_saved(tmp_path, per_channel):
    # forgetting the scale factor before diffusion is a classic pitfall (LightningDiT issue 34)
    model = _dit()
    raw = 5.0 * _latents(b=64) + 2.0  # latents of std 5 around 2
    normalizer = model.fit_normalizer(raw, per_channel)
    assert abs(normalizer.normalize(raw).std().item() - 1) < 0.05 and abs(normalizer.normalize(raw).mean()) < 0.05
    seen = {}
    model.register_forward_hook(lambda m, args, out: seen.update(x_t=args[0]))
    model.train().loss(raw, torch.zeros(64), generator=torch.Generator().manual_seed(0))
    assert seen["x_t"].std() < 2  # the model saw unit-scale data plus noise, not std 5
    samples = model.sample(256, classes=0, steps=2, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (256, 3, 4, 6) and abs(samples.std().item() - 5) < 0.5  # a zero field: scaled noise
    assert model.training  # sample restores the mode
    loaded = load_model(save_checkpoint(tmp_path / "dit.pt", model))
    assert torch.equal(loaded.normalizer.scale, normalizer.scale)
    assert torch.equal(loaded.normalizer.shift, normalizer.shift)
    again = loaded.sample(256, classes=0, steps=2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again, samples)


def test_sample_returns_the_trajectory_from_noise_to_latents():
    model = _perturb(_dit())
    final, path = model.sample(3, classes=[0, 1, 2], steps=4, method="heun", cfg=2.0, trajectory=True,
                               generator=torch.Generator().manual_seed(1))
    assert path.shape == (5, 3, 3, 4, 6) and torch.equal(path[-1], final)


@pytest.mark.parametrize("call, message", [
    (lambda m: m(_latents(shape=(3, 6, 4)), torch.rand(4)), r"\(B, 3, 4, 6\)"),
    (lambda m: m(_latents(), torch.rand(3)), r"times of shape \(4,\)"),
    (lambda m: m(_latents(), torch.rand(4) + 1.5), r"in \[0, 1\]"),
    (lambda m: m(_latents(), torch.rand(4), [0, 1, 3, 0]), r"classes must lie in \[0, 3\)"),
    (lambda m: m(_latents(), torch.rand(4), [0, 1]), r"shape \(4,\)"),
    (lambda m: _dit(num_classes=0)(_latents(), torch.rand(4), [0, 1, 0, 1]), "unconditional"),
    (lambda m: build_dit("dit-huge"), "unknown DiT preset"),
    (lambda m: m.sample(0), "positive int"),
    (lambda m: m.sample(2, cfg=2.0), "pass classes"),
    (lambda m: _dit(patch=4), "dividing the grid"),
    (lambda m: _dit(positions="rotary"), "unknown DiT positions"),
    (lambda m: _from_dict({**vars(m.config), "sigma": 1}), "unknown DiT config fields"),
])
def test_bad_inputs_raise(call, message):
    with pytest.raises(ValueError, match=message):
        call(_dit())


def test_config_dict_round_trip():
    config = DiTConfig(grid=(8, 4), num_classes=10)
    assert _from_dict(vars(config)) == config
