"""The training loop: schedule, sampling, exact resume, evaluation, NaN guard, atomic checkpoints."""
import math
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from course_lib.engine import checkpoints
from course_lib.engine.checkpoints import load_checkpoint, save_checkpoint
from course_lib.engine.training import BatchSampler, TrainConfig, TrainingDiverged, lr_at, train
from course_lib.tokenizers.losses import TokenizerLoss
from course_lib.tokenizers.tokenizer import build_tokenizer


@dataclass
class TinyConfig:
    width: int = 16


class Tiny(nn.Module):
    """A stand-in model with dropout (global RNG) and a loss as its output."""

    def __init__(self, config: TinyConfig = TinyConfig()):
        super().__init__()
        self.config = config
        self.net = nn.Sequential(nn.Linear(4, config.width), nn.ReLU(), nn.Dropout(0.2), nn.Linear(config.width, 1))

    def forward(self, x, y):
        return ((self.net(x).squeeze(-1) - y) ** 2).mean()


def _data(n=64):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g)
    return x, x @ torch.tensor([1.0, -2.0, 0.5, 3.0])


def _tiny(seed=0):
    torch.manual_seed(seed)
    return Tiny()


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


CONFIG = TrainConfig(steps=30, batch_size=8, lr=1e-2, warmup=5, eval_every=10, checkpoint_every=10)


def test_schedule_warms_up_then_decays():
    config = TrainConfig(steps=100, lr=1.0, warmup=10, min_lr=0.1)
    lrs = [lr_at(s, config) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:10]))  # warm-up rises
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))  # cosine falls
    assert lr_at(100, config) == pytest.approx(0.1)
    assert lr_at(55, config) == pytest.approx(0.55)  # half way: (1 + 0.1) / 2


def test_config_rejects_bad_values():
    for bad in [dict(steps=0), dict(lr=0.0), dict(batch_size=-1), dict(clip=0.0), dict(min_lr=2.0),
                dict(warmup=1.5)]:
        with pytest.raises(ValueError):
            TrainConfig(**bad)


def test_sampler_draws_epochs_and_resumes():
    sampler = BatchSampler(10, 3, seed=0)
    first_epoch = torch.cat([sampler.next() for _ in range(3)])
    assert len(set(first_epoch.tolist())) == 9  # no repeats inside an epoch; the last partial batch is dropped
    state = {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in sampler.state_dict().items()}
    ahead = [sampler.next() for _ in range(5)]
    again = BatchSampler(10, 3, seed=123)
    again.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(ahead, [again.next() for _ in range(5)]))
    with pytest.raises(ValueError, match="larger than"):
        BatchSampler(2, 3, seed=0)


def test_training_lowers_the_loss_and_records_history():
    model = _tiny()
    result = train(model, _data(), TrainConfig(steps=60, batch_size=16, lr=3e-2, warmup=5, log_every=10),
                   progress=False)
    assert result.steps == 60 and [row["step"] for row in result.history] == [10, 20, 30, 40, 50, 60]
    assert result.history[-1]["loss"] < result.history[0]["loss"] / 3
    assert not model.training  # left in eval mode


def _crash_at(step):
    """A loss_fn that raises when asked for its ``step``-th batch: a run killed mid-way."""
    calls = {"n": 0}

    def loss_fn(model, batch):
        calls["n"] += 1
        if calls["n"] == step:
            raise KeyboardInterrupt
        return model(*batch)
    return loss_fn


def test_resume_equals_uninterrupted_run(tmp_path):
    full = _tiny()
    train(full, _data(), CONFIG, checkpoint=tmp_path / "full.pt", eval_fn=lambda m: {"x": 1.0}, progress=False)
    crashed = _tiny()
    with pytest.raises(KeyboardInterrupt):
        train(crashed, _data(), CONFIG, loss_fn=_crash_at(15), checkpoint=tmp_path / "run.pt", progress=False)
    assert load_checkpoint(tmp_path / "run.pt")["train_state"]["step"] == 10
    resumed = _tiny(seed=99)  # a different initialization: everything must come from the checkpoint
    result = train(resumed, _data(), CONFIG, checkpoint=tmp_path / "run.pt", resume=True,
                   eval_fn=lambda m: {"x": 1.0}, progress=False)
    assert result.steps == 20
    assert _same_weights(full, resumed)
    assert not _same_weights(full, _tiny())


@pytest.mark.parametrize("preset,overrides", [
    ("vq-f4", dict(codebook_size=16, restart_after=2)),  # k-means init, EMA buffers, dead-code restarts
    ("kl-f4", dict()),  # samples latents from the global generator
])
def test_resume_is_exact_for_tokenizers(tmp_path, preset, overrides):
    images = torch.rand(24, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    config = TrainConfig(steps=6, batch_size=4, warmup=2, checkpoint_every=3)

    def build():
        torch.manual_seed(0)
        return build_tokenizer(preset, image_size=16, widths=(8, 8, 8), res_blocks=(0, 0, 0), **overrides)
    full = build()
    train(full, images, config, loss_fn=TokenizerLoss(), progress=False)
    with pytest.raises(KeyboardInterrupt):
        train(build(), images, config, loss_fn=_crash_with(TokenizerLoss(), 5), checkpoint=tmp_path / "r.pt",
              progress=False)
    resumed = build()
    train(resumed, images, config, loss_fn=TokenizerLoss(), checkpoint=tmp_path / "r.pt", resume=True, progress=False)
    assert _same_weights(full, resumed)


def _crash_with(loss, step):
    calls = {"n": 0}

    def loss_fn(model, batch):
        calls["n"] += 1
        if calls["n"] == step:
            raise KeyboardInterrupt
        return loss(model, batch)
    return loss_fn


def test_evaluation_does_not_change_the_run():
    def noisy_eval(model):
        torch.rand(100)  # an evaluation that draws random numbers
        return {"mean_weight": model.net[0].weight.mean()}
    with_eval, without = _tiny(), _tiny()
    result = train(with_eval, _data(), CONFIG, eval_fn=noisy_eval, progress=False)
    train(without, _data(), CONFIG, progress=False)
    assert _same_weights(with_eval, without)
    assert [row["step"] for row in result.evals] == [10, 20, 30]
    assert with_eval.training is False


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    calls = {"n": 0}

    def loss_fn(model, batch):
        calls["n"] += 1
        loss = model(*batch)
        return loss * math.nan if calls["n"] == 17 else loss
    model = _tiny()
    with pytest.raises(TrainingDiverged, match=r"step 17: the loss became nan.*step 10\) is kept"):
        train(model, _data(), CONFIG, loss_fn=loss_fn, checkpoint=tmp_path / "run.pt", progress=False)
    assert all(torch.isfinite(p).all() for p in model.parameters())  # the bad update was not applied
    assert load_checkpoint(tmp_path / "run.pt")["train_state"]["step"] == 10


def test_infinite_gradient_stops_before_the_update():
    model = _tiny()
    calls = {"n": 0}

    def loss_fn(model, batch):
        calls["n"] += 1
        loss = model(*batch)
        if calls["n"] == 3:
            model.net[0].weight.register_hook(lambda grad: grad * math.inf)
        return loss
    with pytest.raises(TrainingDiverged, match="gradient norm became"):
        train(model, _data(), CONFIG, loss_fn=loss_fn, progress=False)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_resume_refuses_another_config_or_a_weights_only_file(tmp_path):
    train(_tiny(), _data(), CONFIG, checkpoint=tmp_path / "run.pt", progress=False)
    with pytest.raises(ValueError, match="'lr': \\(0.01, 0.02\\)"):
        train(_tiny(), _data(), TrainConfig(**{**CONFIG.__dict__, "lr": 0.02}), checkpoint=tmp_path / "run.pt",
              resume=True, progress=False)
    save_checkpoint(tmp_path / "weights.pt", _tiny())
    with pytest.raises(ValueError, match="no training state"):
        train(_tiny(), _data(), CONFIG, checkpoint=tmp_path / "weights.pt", resume=True, progress=False)


def test_checkpoint_writes_are_atomic(tmp_path, monkeypatch):
    path = tmp_path / "run.pt"
    train(_tiny(), _data(), CONFIG, checkpoint=path, progress=False)
    before = path.read_bytes()

    def dying_save(payload, file):
        file.write(b"half a checkpoint")
        raise KeyboardInterrupt  # killed while writing
    monkeypatch.setattr(checkpoints.torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        train(_tiny(), _data(), CONFIG, checkpoint=path, progress=False)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["run.pt"]  # no temporary file left behind


def test_data_forms_and_errors():
    x, y = _data()
    model = nn.Linear(4, 1)
    loss_fn = lambda m, batch: ((m(batch[0]).squeeze(-1) - batch[1]) ** 2).mean()  # noqa: E731
    train(model, (x, y), TrainConfig(steps=3, batch_size=4, warmup=0), loss_fn=loss_fn, progress=False)
    with pytest.raises(ValueError, match="same length"):
        train(model, (x, y[:10]), TrainConfig(steps=3), loss_fn=loss_fn, progress=False)
    with pytest.raises(ValueError, match="scalar tensor"):
        train(nn.Linear(4, 4), x, TrainConfig(steps=3, batch_size=4), progress=False)


class Critic(nn.Module):
    """A second player for the tests: a small critic with its own weights and a warm-up kept as a buffer."""

    def __init__(self, start: int = 2):
        super().__init__()
        torch.manual_seed(1)
        self.net = nn.Sequential(nn.Linear(1, 8), nn.ReLU(), nn.Dropout(0.2), nn.Linear(8, 1))
        self.start = start
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self.second_calls = 0

    def forward(self, model, batch):
        x, y = batch
        prediction = model.net(x)  # (B, 1)
        fooled = self.net(prediction).mean() if self.step >= self.start else prediction.sum() * 0
        return ((prediction.squeeze(-1) - y) ** 2).mean() - 0.01 * fooled, {"fooled": fooled.detach()}

    def second_loss(self, model, batch):
        self.step += 1
        self.second_calls += 1
        if self.step <= self.start:
            return None  # warm-up: the critic waits
        x, y = batch
        real, fake = self.net(y[:, None]), self.net(model.net(x).detach())
        return torch.relu(1 - real).mean() + torch.relu(1 + fake).mean(), {"critic": real.mean().detach()}


def test_a_second_player_trains_its_own_weights_after_its_warm_up():
    model, critic = _tiny(), Critic(start=3)
    before = [p.detach().clone() for p in critic.parameters()]
    result = train(model, _data(), TrainConfig(steps=10, batch_size=8, warmup=0, log_every=1), loss_fn=critic,
                   progress=False)
    assert critic.second_calls == 10 and int(critic.step) == 10
    assert any(not torch.equal(a, b) for a, b in zip(before, critic.parameters()))
    assert "critic" not in result.history[2] and "critic" in result.history[3] and "fooled" in result.history[0]


def test_resume_is_exact_with_a_second_player(tmp_path):
    config = TrainConfig(steps=12, batch_size=8, warmup=2, checkpoint_every=4)
    full_model, full_critic = _tiny(), Critic()
    train(full_model, _data(), config, loss_fn=full_critic, progress=False)
    crashed_critic = Critic()
    calls = {"n": 0}
    original = crashed_critic.forward

    def crash_at_7(model, batch):
        calls["n"] += 1
        if calls["n"] == 7:
            raise KeyboardInterrupt
        return original(model, batch)
    crashed_critic.forward = crash_at_7
    with pytest.raises(KeyboardInterrupt):
        train(_tiny(), _data(), config, loss_fn=crashed_critic, checkpoint=tmp_path / "gan.pt", progress=False)
    resumed_model, resumed_critic = _tiny(), Critic()
    train(resumed_model, _data(), config, loss_fn=resumed_critic, checkpoint=tmp_path / "gan.pt", resume=True,
          progress=False)
    assert _same_weights(full_model, resumed_model) and _same_weights(full_critic, resumed_critic)
    with pytest.raises(ValueError, match="second player"):
        train(_tiny(), _data(), config, checkpoint=tmp_path / "gan.pt", resume=True, progress=False)


def test_a_non_finite_second_loss_stops_the_run():
    class Broken(Critic):
        def second_loss(self, model, batch):
            out = super().second_loss(model, batch)
            return None if out is None else (out[0] * math.nan, out[1])
    critic = Broken(start=1)
    before = [p.detach().clone() for p in critic.parameters()]
    with pytest.raises(TrainingDiverged, match="the second loss became nan"):
        train(_tiny(), _data(), CONFIG, loss_fn=critic, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(before, critic.parameters()))


def test_a_loss_object_without_weights_is_no_second_player():
    from course_lib.engine.training import second_player
    assert second_player(TokenizerLoss()) is None and second_player(lambda m, b: 0) is None
    assert second_player(Critic()) is not None
