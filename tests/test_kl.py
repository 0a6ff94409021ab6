"""KL bottleneck: reparameterization, the closed-form KL against Monte Carlo, latent normalization."""
import math

import pytest
import torch

from course_lib.tokenizers.kl import DiagonalGaussian, LatentNormalizer, gaussian_kl, reparameterize


pytestmark = pytest.mark.usefixtures("one_thread")


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_reparameterize_is_mean_plus_std_times_noise():
    mean, logvar, noise = torch.tensor([1.0, -2.0]), torch.tensor([0.0, math.log(4.0)]), torch.tensor([0.5, 1.0])
    assert torch.allclose(reparameterize(mean, logvar, noise), torch.tensor([1.5, 0.0]))


def test_sample_is_reproducible_with_a_generator_and_differentiable():
    mean = torch.randn(2, 3, 4, 4, generator=_gen(), requires_grad=True)
    logvar = torch.randn(2, 3, 4, 4, generator=_gen(1), requires_grad=True)
    posterior = DiagonalGaussian(mean, logvar)
    a, b, c = posterior.sample(_gen(7)), posterior.sample(_gen(7)), posterior.sample(_gen(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    a.sum().backward()
    assert mean.grad is not None and logvar.grad is not None
    assert torch.equal(posterior.mode(), mean)


def test_kl_is_zero_for_the_prior_and_sums_over_chw_means_over_batch():
    zeros = torch.zeros(3, 2, 4, 4)
    assert gaussian_kl(zeros, zeros) == 0
    mean = torch.ones(1, 2, 4, 4)  # per element 0.5 * mean^2 = 0.5, 32 elements
    assert torch.isclose(gaussian_kl(mean, torch.zeros_like(mean)), torch.tensor(16.0))
    assert torch.isclose(gaussian_kl(mean.repeat(5, 1, 1, 1), torch.zeros(5, 2, 4, 4)), torch.tensor(16.0))


def test_closed_form_kl_matches_monte_carlo():
    g = _gen()
    mean, logvar = torch.randn(2, 2, 3, 3, generator=g), torch.randn(2, 2, 3, 3, generator=g)
    std = torch.exp(0.5 * logvar)
    samples = mean + std * torch.randn(20000, *mean.shape, generator=g)  # (S, B, C, H, W)
    log_q = -0.5 * (((samples - mean) / std) ** 2 + logvar + math.log(2 * math.pi))
    log_p = -0.5 * (samples ** 2 + math.log(2 * math.pi))
    monte_carlo = (log_q - log_p).flatten(2).sum(-1).mean()  # sum over C H W, mean over samples and batch
    assert torch.isclose(gaussian_kl(mean, logvar), monte_carlo, rtol=0.03)


def test_logvar_is_clamped_and_moments_split_on_channels():
    posterior = DiagonalGaussian.from_moments(torch.cat([torch.zeros(1, 2, 2, 2), torch.full((1, 2, 2, 2), 100.0)], 1))
    assert posterior.mean.shape == (1, 2, 2, 2) and posterior.logvar.max() == 20.0
    assert torch.isfinite(posterior.kl())
    with pytest.raises(ValueError, match=r"expected moments of shape \(B, 2C, H, W\), got \(1, 3, 2, 2\)"):
        DiagonalGaussian.from_moments(torch.zeros(1, 3, 2, 2))


@pytest.mark.parametrize("per_channel", [False, True])
def test_latent_normalizer_gives_zero_mean_unit_std(per_channel):
    scales = torch.tensor([0.1, 5.0, 30.0]).reshape(1, 3, 1, 1)
    latents = 7.0 + scales * torch.randn(64, 3, 8, 8, generator=_gen())
    normalizer = LatentNormalizer.fit(latents, per_channel=per_channel)
    normalized = normalizer.normalize(latents)
    dims = (0, 2, 3) if per_channel else (0, 1, 2, 3)
    assert torch.allclose(normalized.std(dim=dims), torch.ones(()), atol=1e-4)
    assert torch.allclose(normalized.mean(dim=dims), torch.zeros(()), atol=1e-4)
    assert torch.allclose(normalizer.denormalize(normalized), latents, atol=1e-4)


def test_latent_normalizer_state_round_trips_even_per_channel():
    fitted = LatentNormalizer.fit(torch.randn(8, 4, 2, 2, generator=_gen()) * 3, per_channel=True)
    fresh = LatentNormalizer()
    fresh.load_state_dict(fitted.state_dict())
    assert torch.equal(fresh.scale, fitted.scale) and fresh.scale.shape == (1, 4, 1, 1)


def test_latent_normalizer_scale_is_one_over_std():
    latents = 0.2 * torch.randn(16, 4, 8, 8, generator=_gen())
    normalizer = LatentNormalizer.fit(latents)
    assert torch.isclose(normalizer.scale, 1 / latents.std(), rtol=1e-5)
    with pytest.raises(ValueError, match=r"expected a batch of latents \(B, C, H, W\)"):
        LatentNormalizer.fit(torch.zeros(4, 8))
