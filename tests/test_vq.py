"""Vector quantization: the pure functions, the taming pitfall, EMA by hand, k-means init, restarts."""

import pytest
import torch
import torch.nn.functional as F

from course_lib.tokenizers.vq import VectorQuantizer, VQConfig, naive_vq_config, nearest_code, straight_through, vq_loss


pytestmark = pytest.mark.usefixtures("one_thread")


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ----- nearest_code -----

def test_nearest_code_matches_brute_force():
    g = _gen()
    z, codebook = torch.randn(2, 5, 7, 3, generator=g), torch.randn(11, 3, generator=g)
    brute = ((z.unsqueeze(-2) - codebook) ** 2).sum(-1).argmin(-1)  # (2, 5, 7, K) -> (2, 5, 7)
    assert torch.equal(nearest_code(z, codebook), brute)


def test_nearest_code_returns_the_code_itself():
    codebook = torch.randn(6, 4, generator=_gen())
    assert torch.equal(nearest_code(codebook, codebook), torch.arange(6))


def test_nearest_code_rejects_mismatched_dims():
    with pytest.raises(ValueError, match=r"same D, got z \(5, 3\) and codebook \(4, 2\)"):
        nearest_code(torch.zeros(5, 3), torch.zeros(4, 2))


# ----- straight-through and the losses -----

def test_straight_through_value_is_z_q_and_gradient_is_identity():
    z = torch.randn(4, 3, generator=_gen(), requires_grad=True)
    z_q = torch.randn(4, 3, generator=_gen(1))
    upstream = torch.randn(4, 3, generator=_gen(2))
    out = straight_through(z, z_q)
    assert torch.equal(out, z_q) or torch.allclose(out, z_q, atol=1e-6)
    out.backward(upstream)
    assert torch.equal(z.grad, upstream)


def _grads(loss_fn, beta=0.25):
    z = torch.randn(8, 3, generator=_gen(), requires_grad=True)
    codes = torch.randn(8, 3, generator=_gen(1), requires_grad=True)
    codebook_loss, commitment_loss = loss_fn(z, codes, beta)
    grads = {}
    for name, loss in (("codebook", codebook_loss), ("commitment", commitment_loss)):
        gz, gc = torch.autograd.grad(loss, (z, codes), allow_unused=True, retain_graph=True)
        grads[name] = (gz, gc)
    return z.detach(), codes.detach(), grads


def test_commitment_moves_only_the_encoder_and_codebook_loss_only_the_codes():
    z, codes, grads = _grads(vq_loss)
    assert grads["commitment"][1] is None and grads["codebook"][0] is None
    n = z.numel()
    assert torch.allclose(grads["commitment"][0], 2 * 0.25 * (z - codes) / n)  # beta on the encoder side
    assert torch.allclose(grads["codebook"][1], 2 * (codes - z) / n)


def _taming_legacy_loss(z, z_q, beta):
    # taming-transformers legacy=True: beta ended up on the codebook term
    return beta * F.mse_loss(z_q, z.detach()), F.mse_loss(z, z_q.detach())


def test_the_legacy_beta_placement_is_caught():
    z, codes, grads = _grads(_taming_legacy_loss)
    assert not torch.allclose(grads["commitment"][0], 2 * 0.25 * (z - codes) / z.numel())


# ----- EMA -----

def _two_code_quantizer(eps):
    q = VectorQuantizer(2, VQConfig(codebook_size=2, init="uniform", decay=0.5, eps=eps))
    q.codebook.copy_(torch.tensor([[0.0, 0.0], [10.0, 10.0]]))
    q.ema_sums.copy_(q.codebook)
    q.ema_counts.fill_(1.0)
    return q


@pytest.mark.parametrize("eps, expected", [
    # counts 0.5*[1, 1] + 0.5*[2, 1] = [1.5, 1]; sums 0.5*[[0, 0], [10, 10]] + 0.5*[[4, 4], [9, 9]] = [[2, 2], [9.5, 9.5]]
    (0.0, [[2 / 1.5] * 2, [9.5 / 1.0] * 2]),
    # laplace: total 2.5, smoothed = (counts + 0.1) / (2.5 + 2 * 0.1) * 2.5 = [1.6, 1.1] / 2.7 * 2.5
    (0.1, [[2 / (1.6 / 2.7 * 2.5)] * 2, [9.5 / (1.1 / 2.7 * 2.5)] * 2]),
])
def test_ema_update_by_hand(eps, expected):
    q = _two_code_quantizer(eps)
    z = torch.tensor([[1.0, 1.0], [3.0, 3.0], [9.0, 9.0]])
    q.ema_update(z, nearest_code(z, q.codebook))
    assert torch.allclose(q.codebook, torch.tensor(expected))
    assert torch.allclose(q.ema_counts, torch.tensor([1.5, 1.0]))


def test_training_forward_runs_the_ema_update_and_eval_does_not():
    q = _two_code_quantizer(0.0)
    z = torch.tensor([[1.0, 3.0, 9.0], [1.0, 3.0, 9.0]]).reshape(1, 2, 1, 3)  # (B, C, H, W): 3 vectors
    q.eval()(z)
    assert torch.equal(q.codebook, torch.tensor([[0.0, 0.0], [10.0, 10.0]]))
    q.train()(z)
    assert torch.allclose(q.codebook, torch.tensor([[4 / 3, 4 / 3], [9.5, 9.5]]))


def test_ema_codebook_gets_no_gradient_but_the_encoder_does():
    q = VectorQuantizer(4, VQConfig(codebook_size=8)).train()
    z = torch.randn(2, 4, 3, 3, generator=_gen(), requires_grad=True)
    out = q(z)
    assert set(out.losses) == {"commitment"} and not q.codebook.requires_grad
    (out.z_q.sum() + out.losses["commitment"]).backward()
    assert z.grad is not None and z.grad.abs().sum() > 0


# ----- k-means init and dead-code restart -----

def _clusters(k=4, per=50, dim=3, seed=0):
    g = _gen(seed)
    centers = torch.randn(k, dim, generator=g) * 10
    points = centers.repeat_interleave(per, 0) + 0.01 * torch.randn(k * per, dim, generator=g)
    return centers, points


def _assigned_means(points, centroids):
    indices = nearest_code(points, centroids)
    return torch.stack([points[indices == k].mean(0) if (indices == k).any() else centroids[k]
                        for k in range(len(centroids))])


def _quantization_error(points, codebook):
    return ((points - codebook[nearest_code(points, codebook)]) ** 2).sum(-1).mean()


def test_kmeans_init_uses_the_first_batch_of_encoder_outputs():
    torch.manual_seed(0)
    centers, points = _clusters(k=4, per=40)
    z = points.T.reshape(1, 3, 4, 40)  # (B, C, H, W) holding the 160 vectors
    q = VectorQuantizer(3, VQConfig(codebook_size=4, kmeans_iters=20, decay=0.5)).train()
    uniform_error = _quantization_error(points, q.codebook.clone())
    assert not bool(q.initialized)
    q(z)
    assert bool(q.initialized)
    # the codes are means of encoder outputs, and quantize the batch far better than the uniform init
    assert torch.allclose(q.codebook, _assigned_means(points, q.codebook), atol=1e-2)
    assert _quantization_error(points, q.codebook) < uniform_error / 4
    q(z + 100)  # a second batch must not re-run the init: EMA (decay 0.5) moves codes only halfway there
    assert torch.cdist(q.codebook, centers + 100).min() > 10 and bool(q.initialized)


def test_initialized_flag_survives_a_state_dict_round_trip():
    q = VectorQuantizer(3, VQConfig(codebook_size=4)).train()
    q(torch.randn(1, 3, 4, 10, generator=_gen()))
    fresh = VectorQuantizer(3, VQConfig(codebook_size=4))
    fresh.load_state_dict(q.state_dict())
    assert bool(fresh.initialized) and torch.equal(fresh.codebook, q.codebook)


@pytest.mark.parametrize("update", ["ema", "loss"])
def test_dead_code_restart_revives_dead_codes(update):
    torch.manual_seed(0)
    config = VQConfig(codebook_size=8, update=update, init="uniform", restart_after=2)
    q = VectorQuantizer(2, config).train()
    q.codebook.data.copy_(torch.cat([torch.zeros(1, 2), torch.full((7, 2), 1000.0)]))  # 7 codes never chosen
    if update == "ema":
        q.ema_sums.copy_(q.codebook)
    z = torch.randn(1, 2, 4, 16, generator=_gen())  # 64 vectors near the origin
    vectors = z.flatten(2).squeeze(0).T  # (64, 2)
    assert q(z).stats["usage"] == 1 / 8
    for _ in range(2):
        q(z)  # codes unused for two steps
    out = q(z)  # restarted at the start of this step, from this batch
    dead_before = torch.arange(1, 8)
    assert torch.cdist(q.codebook[dead_before], vectors).min(1).values.max() < 1.0
    assert out.stats["usage"] > 0.5


def test_no_restart_when_disabled():
    q = VectorQuantizer(2, naive_vq_config(8)).train()
    q.codebook.data[1:] = 1000.0
    for _ in range(5):
        q(torch.randn(1, 2, 4, 4, generator=_gen()))
    assert (q.codebook[1:] > 900).all()


# ----- cosine codes and low-dimensional lookup -----

def test_cosine_codes_are_unit_vectors():
    q = VectorQuantizer(4, VQConfig(codebook_size=16, distance="cosine")).train()
    out = q(torch.randn(2, 4, 3, 3, generator=_gen()))
    assert torch.allclose(q.lookup_codebook().norm(dim=-1), torch.ones(16), atol=1e-5)
    assert torch.allclose(out.z_q.norm(dim=1), torch.ones(2, 3, 3), atol=1e-5)


def test_low_dim_lookup_projects_in_and_out():
    q = VectorQuantizer(16, VQConfig(codebook_size=32, code_dim=4)).train()
    z = torch.randn(2, 16, 3, 3, generator=_gen(), requires_grad=True)
    out = q(z)
    assert q.codebook.shape == (32, 4) and out.z_q.shape == z.shape
    out.z_q.sum().backward()
    assert q.project_in.weight.grad is not None and z.grad.abs().sum() > 0


# ----- encode / decode and errors -----

@pytest.mark.parametrize("config", [VQConfig(codebook_size=16), naive_vq_config(16),
                                    VQConfig(codebook_size=16, distance="cosine", code_dim=3)])
def test_encode_decode_match_forward_in_eval(config):
    q = VectorQuantizer(5, config)
    z = torch.randn(2, 5, 3, 4, generator=_gen())
    q.train()(z)
    q.eval()
    out = q(z)
    assert torch.equal(q.encode(z), out.indices) and out.indices.shape == (2, 3, 4)
    assert torch.allclose(q.decode(out.indices), out.z_q, atol=1e-6)


def test_naive_config_trains_the_codebook_with_the_loss():
    q = VectorQuantizer(4, naive_vq_config(8)).train()
    out = q(torch.randn(2, 4, 3, 3, generator=_gen()))
    assert set(out.losses) == {"commitment", "codebook"}
    out.losses["codebook"].backward()
    assert q.codebook.grad is not None and q.codebook.grad.abs().sum() > 0


def test_bad_inputs_raise_with_expected_and_got():
    q = VectorQuantizer(4, VQConfig(codebook_size=8))
    with pytest.raises(ValueError, match=r"expected z of shape \(B, 4, H, W\), got \(2, 3, 5, 5\)"):
        q(torch.zeros(2, 3, 5, 5))
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 8\), got \[0, 8\]"):
        q.decode(torch.tensor([[[0, 8]]]))
    with pytest.raises(ValueError, match="expected long indices"):
        q.decode(torch.zeros(1, 2, 2))
    with pytest.raises(ValueError, match=r"unknown distance 'dot'; choose one of \['l2', 'cosine'\]"):
        VQConfig(distance="dot")
