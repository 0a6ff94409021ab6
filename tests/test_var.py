"""VAR, next-scale prediction: the block-causal mask, teacher forcing, training, cached and guided sampling."""
import pytest
import torch
import torch.nn.functional as F

from course_lib.engine.checkpoints import load_model, save_checkpoint
from course_lib.generators.drawing import draw
from course_lib.generators.transformer import Transformer, TransformerConfig
from course_lib.generators.var import (VAR, block_causal_mask, build_var, guidance_scales, next_scale_inputs,
                                       scale_bounds, scale_levels)
from course_lib.tokenizers.multiscale import MultiScaleConfig, MultiScaleQuantizer, split_scales
from course_lib.tokenizers.tokenizer import build_tokenizer

SCALES = (1, 2, 4)  # L = 21: small enough for every test
L = 21


def tiny_var(num_classes=3, seed=0, **overrides) -> VAR:
    torch.manual_seed(seed)
    model = build_var("var-tiny", **{"codebook_size": 32, "scales": SCALES, "latent_channels": 4,
                                     "num_classes": num_classes, **overrides})
    with torch.no_grad():
        model.quantizer.codebook.normal_()
    return model.eval()


def tokens(n=4, seed=1):
    return torch.randint(0, 32, (n, L), generator=torch.Generator().manual_seed(seed))


# ----- the mask, the bounds, the teacher-forcing inputs -----

def test_block_causal_mask_by_hand():
    t, f = True, False
    expected = torch.tensor([[t, f, f, f, f]] + [[t, t, t, t, t]] * 4)  # scales (1, 2): 1 + 4 tokens
    assert torch.equal(block_causal_mask((1, 2)), expected)
    mask = block_causal_mask((1, 2, 3))  # 1 + 4 + 9
    assert mask.shape == (14, 14) and mask.dtype == torch.bool
    assert mask[5:, :].all() and not mask[1:5, 5:].any() and mask[1:5, :5].all() and mask[0].sum() == 1
    assert not torch.equal(mask, torch.ones(14, 14, dtype=torch.bool).tril())  # not the raster-causal mask


def test_levels_and_bounds():
    assert scale_levels((1, 2)).tolist() == [0, 1, 1, 1, 1]
    assert scale_bounds((1, 2, 3)) == [(0, 1), (1, 5), (5, 14)]


def var_input_reference(quantizer, grids):
    """VAR's idxBl_to_var_input, written out: embed, upsample, phi, accumulate, area-downsample."""
    side, f, out = quantizer.scales[-1], 0, []
    for i in range(len(quantizer.scales) - 1):
        h = quantizer.codebook[grids[i]].permute(0, 3, 1, 2)  # (B, C, k, k)
        if h.shape[-1] != side:
            h = F.interpolate(h, size=(side, side), mode="bicubic")
        f = f + quantizer.phi(i)(h)
        out.append(F.interpolate(f, size=(quantizer.scales[i + 1],) * 2, mode="area"))
    return out


def test_next_scale_inputs_follow_var():
    torch.manual_seed(0)
    q = MultiScaleQuantizer(4, MultiScaleConfig(32, (1, 2, 3, 4, 6, 8))).eval()
    grids = q.encode_scales(torch.randn(3, 4, 8, 8))
    inputs = next_scale_inputs(q, grids)
    assert [tuple(x.shape) for x in inputs] == [(3, 4, k, k) for k in (2, 3, 4, 6, 8)]
    for mine, theirs in zip(inputs, var_input_reference(q, grids)):
        assert torch.allclose(mine, theirs, atol=1e-6)
    # the last input is the reconstruction after the next-to-last scale, at full size
    assert torch.allclose(inputs[-1], q.reconstructions(grids)[-2], atol=1e-6)


def test_next_scale_input_by_hand():
    """Without phi, scale 2 reads scale 1's code spread over its 2x2 grid; the last scale's tokens are not read."""
    q = MultiScaleQuantizer(3, MultiScaleConfig(8, (1, 2), phi_ratio=0.0))
    grids = [torch.tensor([[[5]]]), torch.tensor([[[1, 2], [3, 4]]])]
    (only,) = next_scale_inputs(q, grids)
    assert torch.allclose(only, q.codebook[5].detach()[None, :, None, None].expand(1, 3, 2, 2), atol=1e-6)
    assert torch.equal(only, next_scale_inputs(q, [grids[0], torch.zeros(1, 2, 2, dtype=torch.long)])[0])


def test_logits_see_coarser_scales_only():
    model, t = tiny_var(), tokens()
    logits = model.logits(t, [0, 1, 2, 0])
    assert logits.shape == (4, L, 32)
    changed = t.clone()
    changed[:, 1:5] = (changed[:, 1:5] + 1) % 32  # scale 2's tokens
    other = model.logits(changed, [0, 1, 2, 0])
    assert torch.allclose(other[:, :5], logits[:, :5], atol=1e-6)  # scales 1 and 2 cannot see them
    assert not torch.allclose(other[:, 5:], logits[:, 5:], atol=1e-4)  # scale 4 reads them


# ----- training -----

def test_loss_is_finite_and_decreases_on_a_tiny_batch():
    model, t, classes = tiny_var(class_dropout=0.0).train(), tokens(8), torch.arange(8) % 3
    first = model(t, classes)
    assert torch.isfinite(first) and abs(first.item() - torch.log(torch.tensor(32.0)).item()) < 1.0
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=3e-3)
    for _ in range(60):
        optimizer.zero_grad()
        model(t, classes).backward()
        optimizer.step()
    assert model(t, classes).item() < 0.5 * first.item()
    assert all(not p.requires_grad for p in model.quantizer.parameters())  # the tokenizer's codes stay frozen


def test_class_dropout_trains_on_no_class():
    model, t = tiny_var(class_dropout=0.999), tokens()
    unconditional = model(t, None)
    model.train()
    dropped = model(t, [0, 1, 2, 0], generator=torch.Generator().manual_seed(0))
    assert torch.equal(dropped, unconditional)
    model.eval()
    assert not torch.equal(model(t, [0, 1, 2, 0]), unconditional)


# ----- sampling -----

def test_sampling_shapes():
    model = tiny_var()
    out = model.sample(5, [0, 1, 2, 0, 1], cfg=2.0, generator=torch.Generator().manual_seed(0))
    assert out.shape == (5, L) and out.dtype == torch.long and 0 <= out.min() and out.max() < 32
    grids = split_scales(out, SCALES)
    assert [tuple(g.shape) for g in grids] == [(5, k, k) for k in SCALES]
    assert model.sample(2, generator=torch.Generator().manual_seed(0)).shape == (2, L)  # unconditional


@pytest.mark.parametrize("settings", [{}, {"cfg": 3.0}, {"cfg": 2.0, "guidance": "constant", "top_k": 5}])
def test_cached_sampling_equals_uncached(settings):
    model = tiny_var()
    cached = model.sample(4, [0, 1, 2, 1], generator=torch.Generator().manual_seed(3), **settings)
    uncached = model.sample(4, [0, 1, 2, 1], generator=torch.Generator().manual_seed(3), use_cache=False,
                            **settings)
    assert torch.equal(cached, uncached)


def test_guidance_ramps_with_the_scale():
    assert guidance_scales(3.0, 5) == [1.0, 1.5, 2.0, 2.5, 3.0]
    assert guidance_scales(3.0, 5, "constant") == [3.0] * 5
    assert guidance_scales(3.0, 1) == [3.0]
    with pytest.raises(ValueError, match="ramp"):
        guidance_scales(3.0, 5, "cosine")


def test_the_first_scale_under_a_ramp_is_unguided():
    model = tiny_var(scales=(2, 4))  # 4 tokens at the first scale
    ramp = model.sample(16, 1, cfg=5.0, generator=torch.Generator().manual_seed(0))
    plain = model.sample(16, 1, cfg=1.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(ramp[:, :4], plain[:, :4])
    constant = model.sample(16, 1, cfg=5.0, guidance="constant", generator=torch.Generator().manual_seed(0))
    assert not torch.equal(constant[:, :4], plain[:, :4])  # a constant scale guides the first scale too


def test_draw_and_settings():
    model = tiny_var()
    out = draw(model, 3, torch.tensor([0, 1, 2]), {"cfg": 2.0, "guidance": "constant"}, torch.Generator().manual_seed(0))
    assert out.shape == (3, L)
    with pytest.raises(ValueError, match="steps"):
        draw(model, 3, torch.tensor([0, 1, 2]), {"steps": 4})


# ----- the tokenizer, checkpoints, bad input -----

def test_built_from_an_msvq_tokenizer_decodes_its_samples():
    torch.manual_seed(0)
    tokenizer = build_tokenizer("msvq-f4", codebook_size=64, scales=(1, 2, 4, 8)).eval()
    model = build_var("var-tiny", tokenizer, num_classes=2)
    assert model.config.scales == (1, 2, 4, 8) and model.config.latent_channels == 16
    assert torch.equal(model.quantizer.codebook, tokenizer.quantizer.codebook)
    images = tokenizer.decode(model.sample(2, [0, 1], generator=torch.Generator().manual_seed(0)))
    assert images.shape == (2, 3, 32, 32)
    with pytest.raises(ValueError, match="msvq"):
        build_var("var-tiny", build_tokenizer("vq-f4"))
    with pytest.raises(ValueError, match="the tokenizer has"):
        tiny_var().load_quantizer(tokenizer.quantizer)


def test_checkpoint_round_trip(tmp_path):
    model = tiny_var()
    save_checkpoint(tmp_path / "var.pt", model, {"kind": "var"})
    loaded = load_model(tmp_path / "var.pt")
    assert loaded.config == model.config
    a = model.sample(3, [0, 1, 2], cfg=2.0, generator=torch.Generator().manual_seed(0))
    b = loaded.sample(3, [0, 1, 2], cfg=2.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)


def test_bad_inputs_raise():
    model = tiny_var()
    with pytest.raises(ValueError, match=r"\(B, 21\)"):
        model(torch.zeros(2, 20, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[0, 32\)"):
        model(torch.full((2, L), 32))
    with pytest.raises(ValueError, match="pass classes"):
        model.sample(2, cfg=2.0)
    with pytest.raises(ValueError, match="classes must lie"):
        model.sample(2, [0, 3])
    with pytest.raises(ValueError, match="increasing"):
        build_var("var-tiny", scales=(2, 1))


def test_a_block_transformer_needs_its_mask():
    block = Transformer(TransformerConfig(width=16, depth=1, heads=2, max_len=5, mask="block", positions="none"))
    x = torch.randn(2, 5, 16)
    with pytest.raises(ValueError, match="mask='block'"):
        block(x)
    with pytest.raises(ValueError, match=r"\(5, 5\)"):
        block(x, attn_mask=torch.ones(5, 4, dtype=torch.bool))
    causal = Transformer(TransformerConfig(width=16, depth=1, heads=2, max_len=5, positions="none"))
    with pytest.raises(ValueError, match="mask='causal'"):
        causal(x, attn_mask=torch.ones(5, 5, dtype=torch.bool))
    # with the raster-causal mask passed by hand, a block transformer is the causal one
    block.load_state_dict(causal.state_dict())
    assert torch.allclose(block(x, attn_mask=torch.ones(5, 5, dtype=torch.bool).tril()), causal(x), atol=1e-6)
