"""PatchGAN shapes and receptive field, hinge losses by hand, the adaptive weight against autograd by hand."""
from dataclasses import asdict

import pytest
import torch
from torch import nn

from course_lib.engine.checkpoints import config_from_dict
from course_lib.tokenizers.discriminator import (DiscriminatorConfig, PatchDiscriminator, adaptive_weight,
                                      discriminator_presets, gan_warmup_weight, hinge_d_loss,
                                      hinge_g_loss)


@pytest.mark.parametrize("preset, side", [("patchgan-16", 14), ("patchgan-34", 6), ("patchgan-70", 2)])
def test_patchgan_gives_a_grid_of_logits_on_32x32(preset, side, one_thread):
    torch.manual_seed(0)
    logits = PatchDiscriminator(discriminator_presets[preset])(torch.rand(2, 3, 32, 32))
    assert logits.shape == (2, 1, side, side)


@pytest.mark.parametrize("n_layers", [1, 2])
def test_patch_size_is_the_receptive_field_of_one_logit(n_layers, one_thread):
    torch.manual_seed(0)
    config = DiscriminatorConfig(n_layers=n_layers, width=8, norm="none")
    images = torch.rand(1, 3, 96, 96, requires_grad=True)
    logits = PatchDiscriminator(config)(images)  # (1, 1, h, w)
    logits[0, 0, logits.shape[2] // 2, logits.shape[3] // 2].backward()
    rows, cols = images.grad.abs().sum(dim=(0, 1)).nonzero().unbind(1)
    assert rows.max() - rows.min() + 1 == config.patch_size
    assert cols.max() - cols.min() + 1 == config.patch_size


def test_init_is_taming_weights_init_with_zero_conv_biases(one_thread):
    torch.manual_seed(0)
    d = PatchDiscriminator(DiscriminatorConfig(width=64, n_layers=2))
    convs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    norms = [m for m in d.modules() if isinstance(m, nn.BatchNorm2d)]
    weights = torch.cat([m.weight.flatten() for m in convs])
    assert abs(weights.std().item() - 0.02) < 0.001 and abs(weights.mean().item()) < 0.001
    assert all(torch.equal(m.bias, torch.zeros_like(m.bias)) for m in convs if m.bias is not None)  # taming: uniform
    assert [m.bias is not None for m in convs] == [True, False, False, True]  # norm layers carry no conv bias
    assert all(abs(m.weight.mean().item() - 1) < 0.01 and not m.bias.any() for m in norms)


def test_patchgan_refuses_bad_images():
    d = PatchDiscriminator(discriminator_presets["patchgan-34"])
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        d(torch.rand(2, 1, 32, 32))
    with pytest.raises(ValueError, match="at least 12x12"):
        d(torch.rand(2, 3, 8, 8))
    with pytest.raises(ValueError, match="unknown norm"):
        DiscriminatorConfig(norm="spectral")


def test_config_round_trip():
    config = discriminator_presets["patchgan-70"]
    assert config_from_dict(DiscriminatorConfig, asdict(config)) == config
    with pytest.raises(ValueError, match="unknown discriminator config fields"):
        config_from_dict(DiscriminatorConfig, {"layers": 3}, "discriminator")


# ----- hinge losses -----

def test_hinge_d_loss_by_hand():
    real, fake = torch.tensor([2.0, 0.5, -1.0]), torch.tensor([-2.0, 0.0, 1.5])
    # relu(1 - real) = (0, 0.5, 2), relu(1 + fake) = (0, 1, 2.5): 0.5 * (2.5 / 3 + 3.5 / 3) = 1
    assert hinge_d_loss(real, fake).item() == pytest.approx(1.0)
    assert hinge_g_loss(fake).item() == pytest.approx(0.5 / 3)


def test_a_confident_discriminator_stops_pushing():
    real, fake = torch.full((2, 1, 4, 4), 1.5, requires_grad=True), torch.full((2, 1, 4, 4), -3.0, requires_grad=True)
    loss = hinge_d_loss(real, fake)
    loss.backward()
    assert loss.item() == 0 and real.grad.abs().sum() == 0 and fake.grad.abs().sum() == 0


def test_hinge_losses_refuse_non_logits():
    with pytest.raises(ValueError, match="logits_real"):
        hinge_d_loss(torch.ones(3, dtype=torch.long), torch.zeros(3))
    with pytest.raises(ValueError, match="logits_fake"):
        hinge_g_loss(torch.zeros(0))


# ----- adaptive weight -----

def _decoder_and_losses(scale=1.0):
    torch.manual_seed(0)
    body, last = nn.Conv2d(4, 8, 3, padding=1), nn.Conv2d(8, 3, 3, padding=1)
    disc = PatchDiscriminator(DiscriminatorConfig(width=8))
    z, target = torch.randn(2, 4, 32, 32), torch.rand(2, 3, 32, 32)
    reconstruction = torch.sigmoid(last(torch.relu(body(z))))
    rec_loss = ((reconstruction - target) ** 2).mean()
    gan_loss = scale * hinge_g_loss(disc(reconstruction))
    return rec_loss, gan_loss, last.weight


def test_adaptive_weight_against_autograd_by_hand():
    rec_loss, gan_loss, weight = _decoder_and_losses()
    rec_grad = torch.autograd.grad(rec_loss, weight, retain_graph=True)[0]
    gan_grad = torch.autograd.grad(gan_loss, weight, retain_graph=True)[0]
    expected = rec_grad.norm() / (gan_grad.norm() + 1e-4)
    result = adaptive_weight(rec_loss, gan_loss, weight)
    assert torch.allclose(result, expected) and not result.requires_grad
    # the graph is kept: the losses can still be backpropagated afterwards
    (rec_loss + result * gan_loss).backward()
    assert weight.grad is not None


def test_adaptive_weight_balances_the_gradient_scale():
    rec, gan, w = _decoder_and_losses(1.0)
    rec10, gan10, w10 = _decoder_and_losses(10.0)
    # a GAN loss ten times larger gets a weight ten times smaller (exactly so without delta)
    assert adaptive_weight(rec10, gan10, w10, delta=0).item() == pytest.approx(
        adaptive_weight(rec, gan, w, delta=0).item() / 10, rel=1e-5)


def test_adaptive_weight_is_clamped():
    rec_loss, _, weight = _decoder_and_losses()
    flat_gan = 0.0 * weight.sum()  # depends on the layer, zero gradient: weight would be ||g|| / delta
    assert adaptive_weight(rec_loss, flat_gan, weight, max_weight=3.0).item() == 3.0


def test_adaptive_weight_refuses_what_it_cannot_differentiate():
    rec_loss, gan_loss, weight = _decoder_and_losses()
    with pytest.raises(ValueError, match="does not depend on last_layer"):
        adaptive_weight(rec_loss, gan_loss, nn.Conv2d(1, 1, 1).weight)
    with torch.no_grad():
        frozen = rec_loss * 1
    with pytest.raises(ValueError, match="torch.no_grad"):
        adaptive_weight(frozen.detach(), gan_loss, weight)
    with pytest.raises(ValueError, match="last_layer must be a weight tensor"):
        adaptive_weight(rec_loss, gan_loss, weight.detach())


# ----- warm-up -----

def test_warmup_weight_is_zero_before_the_start_step():
    assert [gan_warmup_weight(s, 3, 0.8) for s in range(5)] == [0.0, 0.0, 0.0, 0.8, 0.8]
    assert gan_warmup_weight(0, 0) == 1.0
    with pytest.raises(ValueError, match="start_step must be a non-negative int"):
        gan_warmup_weight(5, -1)
