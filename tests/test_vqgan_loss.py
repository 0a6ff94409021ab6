"""The VQGAN loss object: its terms, the discriminator's warm-up, the adaptive weight, exact resume."""
import pytest
import torch

from course_lib.engine.checkpoints import load_checkpoint
from course_lib.engine.training import TrainConfig, train
from course_lib.tokenizers.discriminator import hinge_g_loss
from course_lib.tokenizers.perceptual import FeatureDistance, FeatureNet, feature_net_presets
from course_lib.tokenizers.tokenizer import build_tokenizer
from course_lib.tokenizers.vqgan_loss import VQGANLoss, VQGANLossConfig


def _tokenizer():
    torch.manual_seed(0)
    return build_tokenizer("vq-f4", image_size=16, widths=(8, 8, 8), res_blocks=(0, 0, 0), codebook_size=16)


def _loss(**config):
    torch.manual_seed(2)
    distance = FeatureDistance(FeatureNet(feature_net_presets["tiny"]))
    return VQGANLoss(distance, VQGANLossConfig(**{"discriminator": "patchgan-16", **config}))


def _images(n=24, seed=0):
    return torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


def _same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_terms_and_the_discriminator_warm_up(one_thread):
    tokenizer, loss = _tokenizer(), _loss(gan_start=3, perceptual_weight=0.5)
    before = [p.detach().clone() for p in loss.discriminator.parameters()]
    result = train(tokenizer, _images(), TrainConfig(steps=6, batch_size=4, warmup=0, log_every=1), loss_fn=loss,
                   progress=False)
    assert int(loss.step) == 6
    history = result.history
    for row in history[:3]:  # warm-up: reconstruction + perceptual only, D untouched
        assert {"recon", "perceptual", "commitment"} <= set(row) and "gan" not in row and "d_loss" not in row
    for row in history[3:]:
        assert {"gan", "adaptive_weight", "g_hinge", "d_loss", "logits_real", "logits_fake"} <= set(row)
    assert any(not torch.equal(a, b) for a, b in zip(before, loss.discriminator.parameters()))
    assert all(not p.requires_grad for p in loss.distance.parameters())  # the distance stays frozen
    assert history[0]["perceptual"] > 0


def test_discriminator_is_frozen_before_its_start():
    tokenizer, loss = _tokenizer(), _loss(gan_start=100)
    before = [p.detach().clone() for p in loss.discriminator.parameters()]
    train(tokenizer, _images(), TrainConfig(steps=3, batch_size=4, warmup=0), loss_fn=loss, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(before, loss.discriminator.parameters()))


def test_adaptive_weight_matches_a_manual_computation():
    # the tokenizer in eval mode: its codebook does not move between the two passes; the loss in training mode
    tokenizer, loss = _tokenizer().eval(), _loss(perceptual_weight=0.3, gan_weight=0.7)
    loss.train()
    images = _images(4)
    torch.manual_seed(5)
    terms, out = loss.terms(tokenizer, images)
    # by hand: gradients of the nll (recon + perceptual) and of the generator's hinge loss at the last layer
    torch.manual_seed(5)
    tokenizer_out = tokenizer(images)
    reconstruction = tokenizer_out.reconstruction
    last = tokenizer.decoder.layers[-1].weight
    nll = ((reconstruction - images) ** 2).mean() + 0.3 * loss.distance(reconstruction, images).mean()
    g_loss = hinge_g_loss(loss.discriminator(reconstruction))
    (g_nll,) = torch.autograd.grad(nll, last, retain_graph=True)
    (g_gan,) = torch.autograd.grad(g_loss, last, retain_graph=True)
    expected = g_nll.norm() / (g_gan.norm() + 1e-4)
    assert out.stats["adaptive_weight"] == pytest.approx(expected.item(), rel=1e-4)
    assert terms["gan"].item() == pytest.approx(0.7 * expected.item() * g_loss.item(), rel=1e-4)
    assert tokenizer.decoder_last_layer() is last


def test_no_gan_term_without_grad_or_in_eval_mode():
    tokenizer, loss = _tokenizer(), _loss()
    loss.eval()
    terms, out = loss.terms(tokenizer, _images(4))
    assert "gan" not in terms and "adaptive_weight" not in out.stats
    with pytest.raises(ValueError, match="reconstructions of a training-mode forward"):
        loss.second_loss(tokenizer, _images(4))


def test_resume_is_exact_with_the_discriminator(tmp_path, one_thread):
    images, config = _images(), TrainConfig(steps=8, batch_size=4, warmup=2, checkpoint_every=3)
    full_model, full_loss = _tokenizer(), _loss(gan_start=2)
    train(full_model, images, config, loss_fn=full_loss, progress=False)
    crashed_loss, calls = _loss(gan_start=2), {"n": 0}
    original = crashed_loss.forward

    def crash_at_5(model, batch):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return original(model, batch)
    crashed_loss.forward = crash_at_5
    with pytest.raises(KeyboardInterrupt):
        train(_tokenizer(), images, config, loss_fn=crashed_loss, checkpoint=tmp_path / "gan.pt", progress=False)
    assert int(load_checkpoint(tmp_path / "gan.pt")["train_state"]["objective"]["step"]) == 3
    resumed_model, resumed_loss = _tokenizer(), _loss(gan_start=2)
    train(resumed_model, images, config, loss_fn=resumed_loss, checkpoint=tmp_path / "gan.pt", resume=True,
          progress=False)
    assert int(resumed_loss.step) == 8
    assert _same(full_model, resumed_model) and _same(full_loss.discriminator, resumed_loss.discriminator)
    assert not _same(full_loss.discriminator, _loss().discriminator)


def test_config_errors_are_loud():
    with pytest.raises(ValueError, match="unknown discriminator preset"):
        VQGANLossConfig(discriminator="patchgan-3")
    with pytest.raises(ValueError, match="gan_start"):
        VQGANLossConfig(gan_start=-1)
    with pytest.raises(ValueError, match="discriminator_seed must be a non-negative int or None"):
        VQGANLossConfig(discriminator_seed=-1)


def test_a_discriminator_seed_fixes_d_whatever_came_before(one_thread):
    distance = FeatureDistance(FeatureNet(feature_net_presets["tiny"]))
    build = lambda seed: VQGANLoss(distance, VQGANLossConfig(discriminator_seed=seed)).discriminator  # noqa: E731
    torch.manual_seed(5)
    first = build(0)
    after_first = torch.rand(3)
    torch.manual_seed(5)
    torch.rand(100)  # a different global state: the seeded D does not see it
    second = build(0)
    assert _same(first, second) and not _same(first, build(1))
    torch.manual_seed(5)
    assert torch.equal(torch.rand(3), after_first)  # building the seeded D drew nothing from the global stream
    torch.manual_seed(5)
    unseeded = build(None)  # without a seed, D comes from the global stream as before
    torch.manual_seed(5)
    assert _same(unseeded, build(None)) and not _same(unseeded, first)
