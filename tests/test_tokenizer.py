"""The tokenizer: every preset, encode / decode / forward agreement, input errors, configs round trips."""
import io
import json
import math

import pytest
import torch
import torch.nn.functional as F

from course_lib.engine.seeding import seed_everything
from course_lib.tokenizers.losses import TokenizerLoss
from course_lib.tokenizers.tokenizer import (Tokenizer, TokenizerConfig, apply_overrides, build_tokenizer, config_from_dict,
                                  config_to_dict, tokenizer_presets)

REQUIRED = ["ae-f4", "vq-f4", "vq-f8", "vq-f2", "fsq-f4", "lfq-f4", "kl-f4", "kl-f8", "vq-naive-f4"]


pytestmark = pytest.mark.usefixtures("one_thread")


def _images(n=2, channels=3, size=32, seed=0):
    return torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(seed))


def test_required_presets_exist():
    assert set(REQUIRED) <= set(tokenizer_presets)


@pytest.mark.parametrize("name", sorted(tokenizer_presets))
def test_every_preset_builds_and_round_trips_shapes(name):
    seed_everything(0)
    tokenizer = build_tokenizer(name)
    images = _images()
    tokens = tokenizer.encode(images)
    assert tokens.shape == (2, *tokenizer.tokens_shape)
    assert tokenizer.decode(tokens).shape == images.shape
    out = tokenizer(images)
    assert out.reconstruction.shape == images.shape and out.tokens.shape == tokens.shape
    terms, out = TokenizerLoss().terms(tokenizer, images)
    assert set(terms) == {"recon", *out.losses} and torch.isclose(terms["recon"], F.mse_loss(out.reconstruction, images))
    total, logs = TokenizerLoss()(tokenizer, images)
    assert total.ndim == 0 and {"recon", *out.stats} <= set(logs)
    total.backward()
    if tokenizer.is_discrete:
        assert tokens.dtype == torch.long and 0 <= tokens.min() and tokens.max() < tokenizer.codebook_size
        assert 0 < out.stats["usage"] <= 1 and out.stats["perplexity"] >= 1


@pytest.mark.parametrize("name, codebook_size, tokens, bits", [
    ("vq-f4", 1024, (8, 8), 640), ("vq-f2", 1024, (16, 16), 2560), ("vq-f8", 1024, (4, 4), 160),
    ("vq-naive-f4", 1024, (8, 8), 640), ("fsq-f4", 1000, (8, 8), 64 * math.log2(1000)), ("lfq-f4", 1024, (8, 8), 640),
])
def test_discrete_preset_sizes(name, codebook_size, tokens, bits):
    tokenizer = build_tokenizer(name)
    assert tokenizer.codebook_size == codebook_size and tokenizer.tokens_shape == tokens
    assert math.isclose(tokenizer.bits_per_image, bits)


@pytest.mark.parametrize("name, shape", [("kl-f4", (4, 8, 8)), ("kl-f8", (16, 4, 4)), ("ae-f4", (4, 8, 8))])
def test_continuous_presets_have_latents_not_codebooks(name, shape):
    tokenizer = build_tokenizer(name)
    assert tokenizer.tokens_shape == shape and not tokenizer.is_discrete
    with pytest.raises(ValueError, match="codebook_size is defined for discrete tokenizers"):
        tokenizer.codebook_size


@pytest.mark.parametrize("name", ["vq-f4", "fsq-f4", "lfq-f4", "kl-f4", "ae-f4"])
def test_eval_forward_equals_decode_of_encode(name):
    seed_everything(0)
    tokenizer = build_tokenizer(name)
    images = _images(4)
    tokenizer.train()(images)  # vq: runs the k-means init
    tokenizer.eval()
    with torch.no_grad():
        out = tokenizer(images)
        tokens = tokenizer.encode(images)
        assert torch.equal(out.tokens, tokens)
        assert torch.allclose(tokenizer.decode(tokens), out.reconstruction, atol=1e-5)


def test_kl_samples_in_training_and_the_generator_makes_it_reproducible():
    seed_everything(0)
    tokenizer = build_tokenizer("kl-f4").train()
    images = _images()
    a = tokenizer(images, generator=torch.Generator().manual_seed(1))
    b = tokenizer(images, generator=torch.Generator().manual_seed(1))
    c = tokenizer(images, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a.reconstruction, b.reconstruction) and not torch.equal(a.reconstruction, c.reconstruction)
    assert set(a.losses) == {"kl"} and a.stats["kl"] > 0
    assert torch.isclose(a.losses["kl"], torch.tensor(1e-6 * a.stats["kl"]))


def test_same_seed_same_tokenizer_and_outputs():
    outputs = []
    for _ in range(2):
        seed_everything(5)
        tokenizer = build_tokenizer("vq-f4").train()
        outputs.append(tokenizer(_images()).reconstruction)
    assert torch.equal(*outputs)


def test_grey_images_with_an_override():
    tokenizer = build_tokenizer("fsq-f4", in_channels=1, image_size=16)
    assert tokenizer(_images(2, 1, 16)).reconstruction.shape == (2, 1, 16, 16)
    assert tokenizer.tokens_shape == (4, 4)


@pytest.mark.parametrize("images, message", [
    (torch.rand(2, 1, 32, 32), r"expected float images of shape \(B, 3, 32, 32\), got torch.float32 \(2, 1, 32, 32\)"),
    (torch.rand(2, 3, 28, 28), r"got torch.float32 \(2, 3, 28, 28\)"),
    (torch.rand(3, 32, 32), r"got torch.float32 \(3, 32, 32\)"),
    (torch.randint(0, 255, (2, 3, 32, 32)), r"got torch.int64 \(2, 3, 32, 32\)"),
    (torch.rand(2, 3, 32, 32) * 255, r"values in \[0, 1\], got values in .*divide by 255"),
    (torch.linspace(-1, 1, 2 * 3 * 32 * 32).reshape(2, 3, 32, 32), r"values in \[0, 1\], got values in \[-1, 1\]"),
])
def test_bad_images_raise_with_expected_and_got(images, message):
    tokenizer = build_tokenizer("vq-f4")
    for call in (tokenizer, tokenizer.encode):
        with pytest.raises(ValueError, match=message):
            call(images)


def test_bad_tokens_raise():
    with pytest.raises(ValueError, match=r"expected long indices of shape \(B, 8, 8\), got torch.float32 \(2, 8, 8\)"):
        build_tokenizer("vq-f4").decode(torch.zeros(2, 8, 8))
    with pytest.raises(ValueError, match=r"expected float latents of shape \(B, 4, 8, 8\), got torch.float32 \(2, 4, 4, 4\)"):
        build_tokenizer("kl-f4").decode(torch.zeros(2, 4, 4, 4))
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 1024\)"):
        build_tokenizer("vq-f4").decode(torch.full((1, 8, 8), 5000))


def test_unknown_presets_and_settings_list_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown tokenizer preset 'vq-f16'; choose one of \[.*'vq-f4'"):
        build_tokenizer("vq-f16")
    with pytest.raises(ValueError, match=r"unknown settings \['levels'\] for a 'vq' tokenizer; known: .*codebook_size"):
        build_tokenizer("vq-f4", levels=(8, 8))
    with pytest.raises(ValueError, match="kind cannot be overridden"):
        build_tokenizer("vq-f4", kind="fsq")
    with pytest.raises(ValueError, match=r"unknown tokenizer kind 'pq'; choose one of \['ae', 'vq'"):
        TokenizerConfig(kind="pq")
    with pytest.raises(ValueError, match="downsample=8 needs 4 widths"):
        build_tokenizer("vq-f4", downsample=8)


def test_overrides_reach_every_level_and_leave_presets_alone():
    config = apply_overrides(tokenizer_presets["vq-f4"], codebook_size=64, distance="cosine", latent_channels=8,
                             image_size=16)
    assert (config.bottleneck.codebook_size, config.bottleneck.distance) == (64, "cosine")
    assert config.autoencoder.latent_channels == 8 and config.image_size == 16
    assert tokenizer_presets["vq-f4"].bottleneck.codebook_size == 1024


@pytest.mark.parametrize("name", sorted(tokenizer_presets))
def test_config_dict_round_trip_also_through_json(name):
    config = tokenizer_presets[name]
    assert config_from_dict(config_to_dict(config)) == config
    assert config_from_dict(json.loads(json.dumps(config_to_dict(config)))) == config


def test_config_dict_errors():
    data = config_to_dict(tokenizer_presets["vq-f4"])
    data["bottleneck"]["codebook_sise"] = 3
    with pytest.raises(ValueError, match=r"unknown vq bottleneck fields \['codebook_sise'\]; known: \['codebook_size'"):
        config_from_dict(data)
    with pytest.raises(ValueError, match="unknown tokenizer kind 'pq'"):
        config_from_dict({"kind": "pq"})


def test_checkpoint_with_config_dict_reloads_weights_only():
    seed_everything(0)
    tokenizer = build_tokenizer("vq-f4").train()
    tokenizer(_images(4))  # k-means init and one EMA step change buffers
    buffer = io.BytesIO()
    torch.save({"config": config_to_dict(tokenizer.config), "state_dict": tokenizer.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    restored = Tokenizer(config_from_dict(saved["config"]))
    restored.load_state_dict(saved["state_dict"])
    images = _images(2, seed=1)
    assert torch.equal(restored.encode(images), tokenizer.encode(images))


def test_a_few_steps_reduce_the_loss():
    seed_everything(0)
    tokenizer = build_tokenizer("vq-f4", image_size=16, widths=(8, 16, 16), codebook_size=64).train()
    optimizer = torch.optim.Adam(tokenizer.parameters(), lr=1e-2)
    colours = torch.rand(8, 3, 1, 1, generator=torch.Generator().manual_seed(0))
    images = colours.expand(8, 3, 16, 16)  # flat colours: learnable in a few steps
    losses = []
    for _ in range(15):
        loss, _ = TokenizerLoss()(tokenizer, images)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.75 * losses[0]


@pytest.mark.parametrize("name", ["vq-f4", "fsq-f4", "lfq-f4", "kl-f4", "ae-f4"])
def test_the_public_latent_api_joins_encode_and_decode(name):
    seed_everything(0)
    tokenizer = build_tokenizer(name).eval()
    images = _images()
    with torch.no_grad():
        z = tokenizer.encode_latents(images)  # (B, C, h, w) before the bottleneck
        assert z.shape == (2, tokenizer.config.autoencoder.latent_channels, 8, 8)
        if tokenizer.is_discrete:
            tokens = tokenizer.latents_to_tokens(z)
            assert torch.equal(tokens, tokenizer.encode(images))
            z_q = tokenizer.tokens_to_latents(tokens)
            if tokenizer.kind != "fsq":  # fsq bounds z with tanh before rounding, so its codes move
                assert torch.equal(tokenizer.latents_to_tokens(z_q), tokens)  # codes are fixed points
        else:
            assert torch.equal(z, tokenizer.encode(images))
            z_q = z
            with pytest.raises(ValueError, match="discrete"):
                tokenizer.latents_to_tokens(z)
        assert torch.allclose(tokenizer.decode_latents(z_q), tokenizer.decode(tokenizer.encode(images)), atol=1e-6)
    with pytest.raises(ValueError, match="expected float latents of shape"):
        tokenizer.decode_latents(torch.zeros(2, 99, 8, 8))


def test_the_loss_object_adds_the_reconstruction_term_of_its_kind():
    seed_everything(0)
    tokenizer = build_tokenizer("ae-f4").eval()
    images = _images()
    out = tokenizer(images)
    l1, _ = TokenizerLoss("l1")(tokenizer, images)
    l2, _ = TokenizerLoss("l2")(tokenizer, images)
    assert torch.isclose(l1, (out.reconstruction - images).abs().mean())
    assert torch.isclose(l2, ((out.reconstruction - images) ** 2).mean())
    with pytest.raises(ValueError, match="choose one of"):
        TokenizerLoss("l3")
