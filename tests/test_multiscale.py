"""The multi-scale residual quantizer (VAR's tokenizer) and its place in the course's Tokenizer."""
import pytest
import torch
import torch.nn.functional as F

from course_lib.engine.checkpoints import load_model, save_checkpoint
from course_lib.tokenizers.losses import TokenizerLoss
from course_lib.tokenizers.multiscale import (MultiScaleConfig, MultiScaleQuantizer, join_scales, phi_index,
                                              residual_step, split_scales)
from course_lib.tokenizers.tokenizer import build_tokenizer

SCALES = (1, 2, 3, 4, 6, 8)


def quantizer(phi_ratio=0.5, codebook_size=512, seed=0, scales=SCALES):
    """A quantizer whose codebook looks like the data (Gaussian codes, one of them zero)."""
    torch.manual_seed(seed)
    q = MultiScaleQuantizer(4, MultiScaleConfig(codebook_size, scales, phi_ratio=phi_ratio, restart_after=0))
    with torch.no_grad():
        q.codebook.copy_(torch.randn(codebook_size, 4) * 0.7)
        q.codebook[0] = 0
    return q.eval()


def latents(n=8, seed=1, side=8):
    return torch.randn(n, 4, side, side, generator=torch.Generator().manual_seed(seed))


def test_shapes_of_the_pyramid():
    q, z = quantizer(), latents()
    grids = q.encode_scales(z)
    assert [tuple(g.shape) for g in grids] == [(8, k, k) for k in SCALES]
    assert all(g.dtype == torch.long for g in grids)
    tokens = q.encode(z)
    assert tuple(tokens.shape) == (8, 130) and q.tokens_shape == (130,)
    out = q(z)
    assert out.z_q.shape == z.shape and torch.equal(out.indices, tokens)


def test_split_and_join_are_inverse():
    tokens = torch.arange(2 * 14).reshape(2, 14)
    grids = split_scales(tokens, (1, 2, 3))
    assert [tuple(g.shape) for g in grids] == [(2, 1, 1), (2, 2, 2), (2, 3, 3)]
    assert grids[1][0].tolist() == [[1, 2], [3, 4]]  # raster order within a scale, scales in turn
    assert torch.equal(join_scales(grids), tokens)
    with pytest.raises(ValueError, match=r"\(B, 14\)"):
        split_scales(tokens[:, :13], (1, 2, 3))


def test_decoding_the_index_list_gives_the_quantized_latent():
    q, z = quantizer(), latents()
    grids = q.encode_scales(z)
    assert torch.allclose(q.decode_scales(grids), q(z).z_q, atol=1e-6)
    assert torch.allclose(q.decode(q.encode(z)), q(z).z_q, atol=1e-6)
    # the running reconstruction after scale s is the sum of the first s contributions
    steps = q.reconstructions(grids)
    assert torch.allclose(steps[2], sum(q.contribution(g, i) for i, g in enumerate(grids[:3])), atol=1e-6)


def test_one_scale_by_hand():
    """Scale 1 quantizes the mean of the latent; without phi its code is spread over the whole grid."""
    q, z = quantizer(phi_ratio=0.0), latents()
    first = q.encode_scales(z)[0]  # (B, 1, 1)
    mean = z.mean(dim=(2, 3))  # (B, C): area-downsampling to 1x1
    nearest = torch.cdist(mean, q.codebook).argmin(-1)
    assert torch.equal(first[:, 0, 0], nearest)
    expected = q.codebook[nearest][:, :, None, None].expand_as(z)  # bicubic of one pixel is constant
    assert torch.allclose(q.reconstructions(q.encode_scales(z))[0], expected, atol=1e-5)


def test_residual_steps_make_the_pyramid():
    q, z = quantizer(), latents()
    residual, f, grids, steps = z, torch.zeros_like(z), [], []
    for i, k in enumerate(SCALES):
        grid, f, residual = residual_step(residual, f, q.codebook, k, q.phi(i))
        grids.append(grid), steps.append(f)
    assert all(torch.equal(a, b) for a, b in zip(grids, q.encode_scales(z)))
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(steps, q.reconstructions(grids)))
    assert torch.allclose(residual, z - f, atol=1e-6)


@pytest.mark.parametrize("phi_ratio", [0.0, 0.5])
def test_the_residual_shrinks_scale_by_scale(phi_ratio):
    q = quantizer(phi_ratio)
    for seed in range(3):
        norms = q.residual_norms(latents(seed=seed))
        assert len(norms) == len(SCALES) + 1
        assert all(b <= a + 1e-6 for a, b in zip(norms, norms[1:])), norms
        assert norms[-1] < 0.7 * norms[0], norms


def test_phi_sharing_follows_var():
    # VAR's 4 partially shared phis over 6 scales: ticks 1/12, 5/12, 7/12, 11/12
    assert [phi_index(i, 6, 4) for i in range(6)] == [0, 0, 1, 2, 3, 3]
    assert [phi_index(i, 3, 1) for i in range(3)] == [0, 0, 0]
    assert [phi_index(i, 3, 3) for i in range(3)] == [0, 1, 2]


def test_straight_through_gradients_and_losses():
    q = quantizer().train()
    z = latents().requires_grad_(True)
    out = q(z)
    assert set(out.losses) == {"commitment", "codebook"}
    weights = torch.randn_like(z)
    (out.z_q * weights).sum().backward(retain_graph=True)
    assert torch.allclose(z.grad, weights)  # the identity: d z_q / d z = 1
    z.grad = None
    sum(out.losses.values()).backward()
    assert z.grad.abs().sum() > 0  # commitment reaches the encoder side
    assert q.codebook.grad.abs().sum() > 0 and q.phis[0].weight.grad.abs().sum() > 0  # codebook term


def test_losses_average_over_scales():
    q, z = quantizer(), latents()
    out = q(z)
    steps = q.reconstructions(q.encode_scales(z))
    expected = torch.stack([F.mse_loss(f, z) for f in steps]).mean()
    assert torch.allclose(out.losses["codebook"], expected, atol=1e-6)
    assert torch.allclose(out.losses["commitment"], 0.25 * expected, atol=1e-6)


def test_per_scale_usage_and_perplexity():
    q, z = quantizer(), latents()
    stats = q(z).stats
    for k in SCALES:
        assert 0 < stats[f"usage_{k}"] <= 1 and 1 <= stats[f"perplexity_{k}"] <= k * k * 8
    assert stats["perplexity_1"] <= 8  # 8 images, one code each at scale 1


def test_encoding_is_deterministic():
    q, z = quantizer(), latents()
    assert torch.equal(q.encode(z), q.encode(z.clone()))
    assert torch.equal(q.encode(z), quantizer().encode(z))  # same seed, same codebook and phis


def test_dead_codes_restart_at_residual_vectors():
    torch.manual_seed(0)
    q = MultiScaleQuantizer(4, MultiScaleConfig(64, (1, 2, 4), restart_after=1)).train()
    before = q.codebook.detach().clone()
    q(latents(side=4))  # every code unused so far: counted, then the unused ones restart
    q(latents(side=4))
    assert (q.codebook.detach() != before).any(dim=1).sum() > 32
    frozen = MultiScaleQuantizer(4, MultiScaleConfig(64, (1, 2, 4), restart_after=0)).train()
    start = frozen.codebook.detach().clone()
    frozen(latents(side=4)), frozen(latents(side=4))
    assert torch.equal(frozen.codebook.detach(), start)


def test_restarts_give_the_coarse_scales_their_share():
    """Scale 1 looks up one vector per image, scale 8 sixty-four: drawn alike, scale 1 would get 1/65 of the codes."""
    z = latents(n=4)
    means = z.mean(dim=(2, 3))  # (4, C): what scale 1 looks up (its residual is z itself)
    share = {}
    for restart_from in ("scales", "vectors"):
        torch.manual_seed(0)
        q = MultiScaleQuantizer(4, MultiScaleConfig(256, (1, 8), restart_after=1, restart_from=restart_from)).train()
        q(z)
        at_means = (torch.cdist(q.codebook.detach(), means).min(dim=1).values < 1e-5).sum().item()
        share[restart_from] = at_means / 256
    assert share["scales"] > 0.35 and share["vectors"] < 0.1, share


@pytest.mark.parametrize("bad, match", [
    (dict(scales=(2, 1, 8)), "increasing"), (dict(scales=()), "increasing"), (dict(scales=(1, 1, 8)), "increasing"),
    (dict(codebook_size=1), "codebook_size"), (dict(phi_ratio=1.5), "phi_ratio"), (dict(restart_after=-1), "restart"),
    (dict(restart_from="batch"), "restart_from"),
])
def test_bad_configs_raise(bad, match):
    with pytest.raises(ValueError, match=match):
        MultiScaleConfig(**bad)


def test_bad_inputs_raise():
    q = quantizer()
    with pytest.raises(ValueError, match=r"\(B, 4, 8, 8\)"):
        q.encode(torch.randn(2, 4, 6, 6))
    with pytest.raises(ValueError, match=r"\(B, 4, 8, 8\)"):
        q.encode(torch.randn(2, 3, 8, 8))
    with pytest.raises(ValueError, match="long"):
        q.decode(torch.zeros(2, 130))
    with pytest.raises(ValueError, match=r"\(B, 130\)"):
        q.decode(torch.zeros(2, 129, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[0, 512\)"):
        q.decode(torch.full((2, 130), 512, dtype=torch.long))
    with pytest.raises(ValueError, match="one long grid"):
        q.decode_scales(q.encode_scales(latents())[:-1])


# ----- inside the Tokenizer -----

def test_tokenizer_kind_msvq():
    torch.manual_seed(0)
    tokenizer = build_tokenizer("msvq-f4")
    assert tokenizer.is_discrete and tokenizer.tokens_shape == (130,) and tokenizer.bits_per_image == 1300
    images = torch.rand(2, 3, 32, 32)
    loss, logs = TokenizerLoss()(tokenizer, images)
    loss.backward()
    assert {"recon", "commitment", "codebook", "usage_1", "perplexity_8"} <= set(logs)
    tokenizer.eval()
    tokens = tokenizer.encode(images)
    assert tuple(tokens.shape) == (2, 130)
    assert torch.allclose(tokenizer.decode(tokens), tokenizer(images).reconstruction, atol=1e-5)
    with pytest.raises(ValueError, match=r"\(B, 130\)"):
        tokenizer.decode(tokens[:, :64].reshape(2, 8, 8))


def test_the_last_scale_must_be_the_latent_grid():
    with pytest.raises(ValueError, match="latent grid's side 8"):
        build_tokenizer("msvq-f4", scales=(1, 2, 4))
    assert build_tokenizer("msvq-f4", scales=(1, 2, 4, 8)).tokens_shape == (85,)


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    tokenizer = build_tokenizer("msvq-f4", codebook_size=64, scales=(1, 2, 4, 8)).eval()
    with torch.no_grad():
        tokenizer.quantizer.codebook.normal_()
    save_checkpoint(tmp_path / "msvq.pt", tokenizer, {"kind": "tokenizer"})
    loaded = load_model(tmp_path / "msvq.pt")
    assert loaded.config == tokenizer.config
    images = torch.rand(3, 3, 32, 32)
    assert torch.equal(loaded.encode(images), tokenizer.encode(images))
    assert torch.allclose(loaded.decode(tokenizer.encode(images)), tokenizer.decode(tokenizer.encode(images)))


def test_normalize_quantizes_each_position_at_unit_rms_and_keeps_the_gradient():
    q = MultiScaleQuantizer(4, MultiScaleConfig(512, SCALES, restart_after=0, normalize=True)).train()
    z = (latents() * 5).requires_grad_(True)
    n = q.normalized(z)
    assert torch.allclose(n.pow(2).mean(1), torch.ones(8, 8, 8), atol=1e-4)
    out = q(z)
    out.losses["commitment"].backward()  # the encoder side learns from the commitment term
    assert z.grad is not None and z.grad.abs().sum() > 0
    assert torch.equal(q.encode(z.detach()), q.encode(z.detach() * 3))  # the scale of z no longer matters


def test_commitment_to_every_scale_or_the_last_only():
    z = latents()
    q = quantizer()
    last = MultiScaleQuantizer(4, MultiScaleConfig(512, SCALES, restart_after=0, commitment="last")).eval()
    last.load_state_dict(q.state_dict())
    steps = q.reconstructions(q.encode_scales(z))
    assert torch.allclose(last(z).losses["commitment"], 0.25 * F.mse_loss(z, steps[-1]), atol=1e-6)
    with pytest.raises(ValueError, match="commitment"):
        MultiScaleConfig(commitment="first")


def test_a_quantizer_names_its_pyramid():
    assert quantizer().extra_repr() == "dim=4, scales=(1, 2, 3, 4, 6, 8), codebook_size=512"
