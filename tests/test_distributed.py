"""Data-parallel training: 2 CPU ranks with gloo take the steps one process takes with the same global
batch, a 2-rank run resumed from its checkpoint is the uninterrupted one, and a checkpoint resumes
under another number of ranks."""
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from course_lib.engine.checkpoints import load_checkpoint
from torch import nn

from course_lib.engine.distributed import DataParallelModel, Ranks, all_gather_cat, all_reduce_sum_
from course_lib.engine.training import TrainConfig, train
from course_lib.tokenizers.losses import TokenizerLoss
from course_lib.tokenizers.tokenizer import build_tokenizer

ROOT = Path(__file__).resolve().parent.parent
CONFIG = TrainConfig(steps=6, batch_size=8, lr=3e-3, warmup=2, checkpoint_every=3)
# EMA codebook, k-means init and dead-code restarts: the statistics every rank must share
VQ = dict(codebook_size=16, restart_after=2)


def _images() -> torch.Tensor:
    return torch.rand(32, 3, 16, 16, generator=torch.Generator().manual_seed(0))  # (N, C, H, W)


def _build():
    torch.manual_seed(0)
    return build_tokenizer("vq-f4", image_size=16, widths=(8, 8, 8), res_blocks=(0, 0, 0), **VQ)


class Critic(TokenizerLoss):
    """A second player with its own weights: its gradients are averaged over the ranks by hand, not by DDP."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.critic = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 1))

    def forward(self, tokenizer, images):
        terms, out = self.terms(tokenizer, images)
        return sum(terms.values()) - 0.01 * self.critic(out.reconstruction).mean(), {}

    def second_loss(self, tokenizer, images):
        with torch.no_grad():
            fake = tokenizer.decode(tokenizer.encode(images))  # (B, C, H, W); encode/decode leave the codebook
        return torch.relu(1 - self.critic(images)).mean() + torch.relu(1 + self.critic(fake)).mean()


def _crash_at(call: int):
    loss, calls = TokenizerLoss(), {"n": 0}

    def loss_fn(model, batch):
        calls["n"] += 1
        if calls["n"] == call:
            raise KeyboardInterrupt
        return loss(model, batch)
    return loss_fn


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, world_size: int, port: int, out: str) -> None:
    """One rank: an uninterrupted run, then a run stopped at step 5 and resumed from its step-3 checkpoint."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world_size), GLOO_SOCKET_IFNAME="lo")
    torch.set_num_threads(1)
    out = Path(out)
    full = _build()
    train(full, _images(), CONFIG, loss_fn=TokenizerLoss(), checkpoint=out / "full.pt", progress=False, device="cpu")
    torch.save(full.state_dict(), out / f"full-rank{rank}.pt")
    try:
        train(_build(), _images(), CONFIG, loss_fn=_crash_at(5), checkpoint=out / "run.pt", progress=False,
              device="cpu")
    except KeyboardInterrupt:
        pass
    torch.distributed.barrier()
    if rank == 0:  # kept for the resume under one process, below
        (out / "at-step-3.pt").write_bytes((out / "run.pt").read_bytes())
    torch.distributed.barrier()
    resumed = _build()
    train(resumed, _images(), CONFIG, loss_fn=TokenizerLoss(), checkpoint=out / "run.pt", resume=True,
          progress=False, device="cpu")
    torch.save(resumed.state_dict(), out / f"resumed-rank{rank}.pt")
    from_one = _build()  # a run that one process started, finished by two
    train(from_one, _images(), CONFIG, loss_fn=TokenizerLoss(), checkpoint=out / "one-process.pt", resume=True,
          progress=False, device="cpu")
    torch.save(from_one.state_dict(), out / f"from-one-rank{rank}.pt")
    critic, model = Critic(), _build()
    train(model, _images(), CONFIG, loss_fn=critic, progress=False, device="cpu")
    torch.save({"model": model.state_dict(), "critic": critic.state_dict()}, out / f"critic-rank{rank}.pt")
    torch.distributed.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp")
    torch.set_num_threads(1)
    with pytest.raises(KeyboardInterrupt):  # one process stops at step 5; its checkpoint holds step 3
        train(_build(), _images(), CONFIG, loss_fn=_crash_at(5), checkpoint=out / "one-process.pt", progress=False,
              device="cpu")
    mp.spawn(_rank, args=(2, _free_port(), str(out)), nprocs=2, join=True)
    return out


def _close(a: dict, b: dict, atol: float = 1e-5) -> list[str]:
    """Names of the entries where two state dicts differ by more than ``atol``."""
    assert a.keys() == b.keys()
    return [k for k in a if not torch.allclose(a[k].float(), b[k].float(), atol=atol, rtol=1e-4)]


def test_two_ranks_take_the_steps_of_one_process_with_the_global_batch(two_ranks, one_thread):
    single = _build()
    train(single, _images(), CONFIG, loss_fn=TokenizerLoss(), progress=False, device="cpu")
    rank0, rank1 = (torch.load(two_ranks / f"full-rank{r}.pt") for r in (0, 1))
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0), "the ranks' weights or codebooks drifted apart"
    assert _close(single.state_dict(), rank0) == []
    assert not torch.equal(rank0["quantizer.codebook"], _build().state_dict()["quantizer.codebook"])
    assert _close(_build().state_dict(), rank0) != []  # the comparison can fail: training moved the weights


def test_two_rank_resume_equals_the_uninterrupted_two_rank_run(two_ranks):
    state = load_checkpoint(two_ranks / "at-step-3.pt")["train_state"]
    assert state["step"] == 3 and len(state["rank_rng"]) == 2
    for rank in (0, 1):
        full, resumed = (torch.load(two_ranks / f"{name}-rank{rank}.pt") for name in ("full", "resumed"))
        assert all(torch.equal(full[k], resumed[k]) for k in full)


def test_a_two_rank_checkpoint_resumes_in_one_process(two_ranks, tmp_path, one_thread):
    (tmp_path / "run.pt").write_bytes((two_ranks / "at-step-3.pt").read_bytes())
    resumed = _build()
    result = train(resumed, _images(), CONFIG, loss_fn=TokenizerLoss(), checkpoint=tmp_path / "run.pt",
                   resume=True, progress=False, device="cpu")
    assert result.steps == 3
    assert _close(resumed.state_dict(), torch.load(two_ranks / "full-rank0.pt")) == []


def test_a_one_process_checkpoint_resumes_on_two_ranks(two_ranks, one_thread):
    single = _build()
    train(single, _images(), CONFIG, loss_fn=TokenizerLoss(), progress=False, device="cpu")
    ranks = [torch.load(two_ranks / f"from-one-rank{r}.pt") for r in (0, 1)]
    assert all(torch.equal(ranks[0][k], ranks[1][k]) for k in ranks[0])
    assert _close(single.state_dict(), ranks[0]) == []


def test_a_second_player_trains_alike_on_two_ranks(two_ranks, one_thread):
    critic, model = Critic(), _build()
    train(model, _images(), CONFIG, loss_fn=critic, progress=False, device="cpu")
    ranks = [torch.load(two_ranks / f"critic-rank{r}.pt") for r in (0, 1)]
    for part, single in (("model", model.state_dict()), ("critic", critic.state_dict())):
        assert all(torch.equal(ranks[0][part][k], ranks[1][part][k]) for k in single), part
        assert _close(single, ranks[0][part]) == [], part


def test_a_loss_that_bypasses_the_models_forward_is_refused(tmp_path):
    """Under DDP, model.encoder(x) would skip the gradient averaging: the wrapper says so."""
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'group'}", rank=0, world_size=1)
    try:
        wrapped = DataParallelModel(_build())
        assert wrapped.kind == "vq" and wrapped.config.image_size == 16  # plain attributes pass through
        for name in ("encoder", "encode"):
            with pytest.raises(AttributeError, match=f"call the model itself instead of model.{name}"):
                getattr(wrapped, name)
    finally:
        torch.distributed.destroy_process_group()


def test_ranks_shard_the_global_batch_and_need_a_divisible_batch():
    indices = torch.arange(8)
    shards = [Ranks(rank, 2).shard(indices) for rank in (0, 1)]
    assert torch.equal(torch.cat(shards), indices)  # rank order is the one-process order
    with pytest.raises(ValueError, match="divisible by the 3 ranks"):
        Ranks(0, 3).check_batch(8)
    x = torch.ones(3)  # one process: the collectives change nothing
    assert torch.equal(all_reduce_sum_(x.clone()), x) and torch.equal(all_gather_cat(x), x)


def test_torchrun_trains_from_the_command_line(tmp_path):
    """The README's command on 2 CPU processes: rank 0 alone prints and writes the checkpoint."""
    out = tmp_path / "vq.pt"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
               f"--master_port={_free_port()}", "-m", "course_lib.train", "tokenizer", "--preset", "vq-f4",
               "--data", "shapes", "--steps", "4", "--batch-size", "8", "--n-train", "64", "--n-test", "16",
               "--set", "codebook_size=16", "--set", "widths=(8,8,8)", "--device", "cpu", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.count("saved ") == 1, run.stdout
    metadata = load_checkpoint(out)["metadata"]
    assert metadata["steps"] == 4 and metadata["complete"] and metadata["test_metrics"]["psnr"] > 0
