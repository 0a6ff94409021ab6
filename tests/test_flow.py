"""Flow matching: the interpolant and its target, time sampling, the loss, guidance, Euler / Heun, the 2D toy."""
import pytest
import torch

from course_lib.engine.checkpoints import load_model, save_checkpoint

from course_lib.generators.flow import (NO_CLASS, cfg_velocity, drop_classes, euler_step, flow_loss, integrate,
                                        interpolant, sample, sample_times, time_grid)
from course_lib.generators.toy2d import (ToyConfig, ToyVelocity, checkerboard, gaussian_velocity, toy_dataset,
                                         train_toy, two_moons)

pytestmark = pytest.mark.usefixtures("one_thread")

MEAN, STD = torch.tensor([2.0, -1.0]), torch.tensor([0.5, 1.5])


def _toy(seed=0, **overrides) -> ToyVelocity:
    torch.manual_seed(seed)
    return ToyVelocity(ToyConfig(**{"hidden": 32, "depth": 2, "num_classes": 2, **overrides}))


# ----- the references -----

def test_interpolant_endpoints_and_midpoint():
    g = torch.Generator().manual_seed(0)
    data, noise = torch.randn(3, 4, 2, 2, generator=g), torch.randn(3, 4, 2, 2, generator=g)
    x0, target = interpolant(data, noise, torch.zeros(3))
    x1, _ = interpolant(data, noise, torch.ones(3))
    assert torch.equal(x0, data) and torch.equal(x1, noise)  # t = 0 is data, t = 1 is noise
    assert torch.allclose(target, noise - data)
    x_half, _ = interpolant(data, noise, torch.tensor([0.5, 0.5, 0.5]))
    assert torch.allclose(x_half, (data + noise) / 2)
    mixed, _ = interpolant(data, noise, torch.tensor([0.0, 1.0, 0.25]))  # one time per sample
    assert torch.equal(mixed[0], data[0]) and torch.equal(mixed[1], noise[1])


def test_target_is_constant_along_a_straight_path():
    data, noise = torch.randn(1, 5), torch.randn(1, 5)
    times = torch.linspace(0, 1, 11)
    points = torch.cat([interpolant(data, noise, t)[0] for t in times])  # (11, 5)
    targets = torch.cat([interpolant(data, noise, t)[1] for t in times])
    assert torch.allclose(targets, targets[:1].expand(11, 5))
    # the target is the path's derivative: finite differences along it give the same vector
    assert torch.allclose((points[1:] - points[:-1]) / 0.1, targets[1:], atol=1e-4)


def test_euler_step_and_cfg_velocity():
    g = torch.Generator().manual_seed(0)  # not the global generator: other tests move it
    x, v = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    assert torch.allclose(euler_step(x, v, 0.75, 0.5), x - 0.25 * v)
    cond, uncond = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    # uncond + 1 * (cond - uncond) rounds: compare with an absolute tolerance, not only a relative one
    assert torch.allclose(cfg_velocity(cond, uncond, 1.0), cond, atol=1e-6)
    assert torch.allclose(cfg_velocity(cond, uncond, 0.0), uncond, atol=1e-6)
    assert torch.allclose(cfg_velocity(cond, uncond, 4.0), 4 * cond - 3 * uncond, atol=1e-5)


def test_time_samplings():
    g = torch.Generator().manual_seed(0)
    uniform, logit = sample_times(20000, "uniform", g), sample_times(20000, "logit-normal", g)
    assert 0 <= uniform.min() and uniform.max() <= 1 and abs(uniform.mean() - 0.5) < 0.01
    assert 0 < logit.min() and logit.max() < 1 and abs(logit.mean() - 0.5) < 0.01
    middle = lambda t: ((t > 0.25) & (t < 0.75)).float().mean()  # noqa: E731
    assert middle(logit) > middle(uniform) + 0.1  # logit-normal trains the middle times more
    shifted = sample_times(20000, "logit-normal", g, mean=1.0)
    assert shifted.mean() > 0.6
    assert torch.equal(time_grid(4), torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0]))


def test_drop_classes_uses_no_class():
    classes = torch.arange(4).repeat(1000)
    dropped = drop_classes(classes, 0.25, torch.Generator().manual_seed(0))
    assert abs((dropped == NO_CLASS).float().mean() - 0.25) < 0.03
    kept = dropped != NO_CLASS
    assert torch.equal(dropped[kept], classes[kept])
    assert torch.equal(drop_classes(classes, 0.0), classes)


def test_flow_loss_is_the_regression_on_the_target():
    data = torch.randn(64, 2, generator=torch.Generator().manual_seed(1))
    seen = {}

    def model(x, t, classes):
        seen.update(x=x, t=t, classes=classes)
        return torch.zeros_like(x)

    loss = flow_loss(model, data, generator=torch.Generator().manual_seed(2))
    g = torch.Generator().manual_seed(2)
    t, noise = torch.rand(64, generator=g), torch.randn(64, 2, generator=g)  # the same draws, in order
    assert torch.allclose(seen["t"], t) and torch.allclose(seen["x"], (1 - t[:, None]) * data + t[:, None] * noise)
    assert torch.allclose(loss, ((noise - data) ** 2).mean())
    # the exact field has a lower loss than predicting zero
    exact = flow_loss(gaussian_velocity(0.0, 1.0), data, generator=torch.Generator().manual_seed(2))
    assert exact < loss


# ----- the samplers -----

def _exact_transport(steps, method):
    noise = torch.randn(2000, 2, generator=torch.Generator().manual_seed(0))
    samples = integrate(gaussian_velocity(MEAN, STD), noise, steps=steps, method=method)
    return samples, MEAN + STD * noise  # the exact flow's image of each noise point


@pytest.mark.parametrize("method", ["euler", "heun"])
def test_exact_field_integrates_to_the_target_gaussian(method):
    samples, exact = _exact_transport(32, method)
    assert torch.allclose(samples.mean(0), MEAN, atol=0.08)
    assert torch.allclose(samples.std(0), STD, rtol=0.08)
    assert (samples - exact).abs().mean() < (0.05 if method == "euler" else 0.002)  # first vs second order


@pytest.mark.parametrize("steps", [2, 4, 8])
def test_heun_beats_euler_at_equal_steps(steps):
    errors = {m: (lambda s, e: (s - e).abs().mean())(*_exact_transport(steps, m)) for m in ("euler", "heun")}
    assert errors["heun"] < errors["euler"] / 2


def test_sampling_is_deterministic_given_a_generator_and_returns_the_trajectory():
    model = _toy()
    draw = lambda seed, **kw: sample(model, (8, 2), classes=[0, 1] * 4, steps=5,  # noqa: E731
                                     generator=torch.Generator().manual_seed(seed), **kw)
    assert torch.equal(draw(3), draw(3))
    assert not torch.equal(draw(3), draw(4))
    final, path = draw(3, trajectory=True, method="heun")
    assert path.shape == (6, 8, 2) and torch.equal(path[-1], final)
    assert torch.equal(path[0], torch.randn(8, 2, generator=torch.Generator().manual_seed(3)))  # starts at the noise


def test_cfg_scale_one_is_conditional_and_zero_is_unconditional():
    model, classes = _toy(), torch.tensor([0, 1, 1, 0])
    run = lambda c, scale: sample(model, (4, 2), c, steps=4, cfg=scale,  # noqa: E731
                                  generator=torch.Generator().manual_seed(0))
    assert torch.allclose(run(classes, 1.0), run(classes, 1.0))
    assert torch.allclose(run(classes, 0.0), run(torch.full((4,), NO_CLASS), 1.0), atol=1e-6)
    assert torch.allclose(run(classes, 0.0), run(None, 1.0), atol=1e-6)
    assert not torch.allclose(run(classes, 3.0), run(classes, 1.0), atol=1e-4)


@pytest.mark.parametrize("call, message", [
    (lambda: interpolant(torch.zeros(2, 3), torch.zeros(2, 4), torch.zeros(2)), "same shape"),
    (lambda: interpolant(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(3)), r"shape \(2,\)"),
    (lambda: sample_times(4, "cosine"), "unknown time sampling"),
    (lambda: drop_classes(torch.zeros(3, dtype=torch.long), 1.0), r"\[0, 1\)"),
    (lambda: time_grid(0), "positive int"),
    (lambda: sample(_toy(), (2, 2), steps=2, method="rk4"), "unknown sampler"),
    (lambda: sample(_toy(), (2, 2), cfg=2.0), "pass classes"),
    (lambda: sample(_toy(), (2, 2), classes=[0, 1, 0]), r"shape \(2,\)"),
    (lambda: sample(_toy(num_classes=0), (2, 2), classes=[0, 1]), "unconditional"),
    (lambda: cfg_velocity(torch.zeros(2), torch.zeros(3), 2.0), "same shape"),
    (lambda: toy_dataset("spirals", 10), "unknown toy dataset"),
])
def test_bad_inputs_raise(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# ----- the 2D toy -----

def test_toy_datasets_are_seeded_and_labelled():
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    for make in (two_moons, checkerboard):
        (a, la), (b, lb) = make(500, g()), make(500, g())
        assert a.shape == (500, 2) and la.shape == (500,) and torch.equal(a, b) and torch.equal(la, lb)
        assert set(la.tolist()) == {0, 1}
    points, _ = checkerboard(2000, g())
    cells = ((points + 2) // 1).long()  # 4 x 4 squares of side 1
    assert ((cells[:, 0] + cells[:, 1]) % 2 == 0).all()  # only dark squares


def test_toy_flow_learns_the_moons(tmp_path):
    g = torch.Generator().manual_seed(0)
    points, labels = two_moons(2000, g)
    model = _toy(hidden=64, depth=3)
    losses = train_toy(model, points, labels, steps=1200, batch=256, generator=g)
    assert sum(losses[-50:]) / 50 < sum(losses[:50]) / 50
    samples = sample(model.eval(), (2000, 2), steps=16, generator=g)
    assert torch.allclose(samples.mean(0), points.mean(0), atol=0.1)
    assert torch.allclose(torch.cov(samples.T), torch.cov(points.T), atol=0.1)
    loaded = load_model(save_checkpoint(tmp_path / "toy.pt", model))
    assert torch.equal(sample(loaded, (5, 2), generator=torch.Generator().manual_seed(1)),
                       sample(model, (5, 2), generator=torch.Generator().manual_seed(1)))
    upper = sample(model, (500, 2), classes=0, steps=16, cfg=2.0, generator=g)
    assert upper[:, 1].mean() > points[labels == 0, 1].mean() - 0.2  # the class steers the samples
    assert upper[:, 1].mean() > points[labels == 1, 1].mean() + 0.5
