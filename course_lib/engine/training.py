"""One training loop for every model of the course, in notebooks and on the command line.

- AdamW: Loshchilov & Hutter, "Decoupled Weight Decay Regularization" (2019), https://arxiv.org/abs/1711.05101
- linear warm-up (Goyal et al. 2017, https://arxiv.org/abs/1706.02677), then cosine decay
  (Loshchilov & Hutter, "SGDR", 2017, https://arxiv.org/abs/1608.03983)
- gradient clipping by global norm: Pascanu et al. 2013, https://arxiv.org/abs/1211.5063

Batches are drawn from an explicit ``torch.Generator`` (a fresh permutation per epoch). A checkpoint
stores everything the next step depends on (weights, optimizer, step, data order, random states), so
a resumed run is the uninterrupted run, bit for bit on CPU. A non-finite loss or gradient stops the
run before the bad step is taken; the checkpoint on disk stays the last good one.

The loss is ``loss_fn(model, batch) -> loss`` or ``(loss, logs)``: a function, or a loss object (an
``nn.Module``, such as ``course_lib.tokenizers.losses.TokenizerLoss``). A loss object with trainable
parameters of its own and a ``second_loss(model, batch)`` method is a second player (lesson 06's
discriminator): it gets a second AdamW with the same schedule, and after every step of the model
``second_loss`` is minimized over the object's parameters (it may return None to skip a step, as in a
warm-up). Its weights, its optimizer and any step counter it keeps as a buffer are checkpointed, so
exact resume and the non-finite guard hold for both players.

Under ``torchrun`` the same loop trains data-parallel (:mod:`course_lib.engine.distributed`): every rank
takes its slice of each global batch, DDP averages the gradients, rank 0 writes checkpoints and logs,
and a checkpoint resumes under any number of ranks. Rank r seeds its global generator with seed + r,
so noise (dropout, sampled latents) differs between slices. On cuda the loop can autocast to bf16 and
compile the model (:class:`course_lib.engine.accelerate.Accelerate`).
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from course_lib.engine import distributed
from course_lib.engine.accelerate import Accelerate, autocast, compiled, fetch, place_data
from course_lib.engine.batches import BatchSampler
from course_lib.engine.checkpoints import load_checkpoint, restore_model, save_checkpoint
from course_lib.engine.seeding import rng_state, seed_everything, set_rng_state

__all__ = ["Accelerate", "BatchSampler", "TrainConfig", "TrainResult", "TrainingDiverged", "lr_at", "train"]


class TrainingDiverged(RuntimeError):
    """The loss or the gradient norm became NaN or infinite."""


@dataclass
class TrainConfig:
    """Optimization settings; ``eval_every`` / ``checkpoint_every`` = 0 means only at the end."""

    steps: int = 1000
    batch_size: int = 64
    lr: float = 1e-3
    warmup: int = 100  # steps of linear warm-up from 0 to lr
    min_lr: float = 0.1  # the cosine ends at lr * min_lr
    weight_decay: float = 0.0  # on weight matrices and kernels only (ndim >= 2), never on biases / norms
    betas: tuple[float, float] = (0.9, 0.99)
    clip: float | None = 1.0  # max global gradient norm (None: no clipping)
    eval_every: int = 0
    checkpoint_every: int = 0
    log_every: int = 10
    seed: int = 0

    def __post_init__(self):
        self.betas = tuple(self.betas)
        for name in ("steps", "batch_size", "warmup", "eval_every", "checkpoint_every", "log_every", "seed"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be a non-negative int, got {value!r}")
        if self.steps < 1 or self.batch_size < 1 or self.log_every < 1:
            raise ValueError(f"steps, batch_size and log_every must be >= 1, got "
                             f"{self.steps}, {self.batch_size}, {self.log_every}")
        if not self.lr > 0 or not 0 <= self.min_lr <= 1 or self.weight_decay < 0:
            raise ValueError(f"need lr > 0, 0 <= min_lr <= 1, weight_decay >= 0; got "
                             f"{self.lr}, {self.min_lr}, {self.weight_decay}")
        if self.clip is not None and not self.clip > 0:
            raise ValueError(f"clip must be positive or None, got {self.clip!r}")


def lr_at(step: int, config: TrainConfig) -> float:
    """Learning rate of step ``step`` (0-based): linear warm-up, then cosine from lr to lr * min_lr."""
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    progress = (step - config.warmup) / max(1, config.steps - config.warmup)  # 0 -> 1
    cosine = 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))  # 1 -> 0
    return config.lr * (config.min_lr + (1 - config.min_lr) * cosine)


@dataclass
class TrainResult:
    """What a run did: ``history`` has a row every ``log_every`` steps, ``evals`` one per evaluation."""

    steps: int
    seconds: float
    history: list[dict] = field(default_factory=list)
    evals: list[dict] = field(default_factory=list)

    @property
    def steps_per_second(self) -> float:
        return self.steps / self.seconds if self.seconds > 0 else float("nan")


def default_loss(model: nn.Module, batch) -> torch.Tensor | tuple[torch.Tensor, dict]:
    """``model(batch)`` for a model whose forward returns its loss (or ``(loss, logs)``), like the GPT."""
    out = model(*batch) if isinstance(batch, tuple) else model(batch)
    if isinstance(out, torch.Tensor) or (isinstance(out, tuple) and out and isinstance(out[0], torch.Tensor)):
        return out
    raise ValueError(f"{type(model).__name__} returned {type(out).__name__}, not a loss; pass "
                     f"loss_fn=(model, batch) -> loss (a tokenizer: loss_fn=TokenizerLoss() from "
                     f"course_lib.tokenizers.losses)")


def second_player(loss_fn) -> nn.Module | None:
    """``loss_fn`` when it is a loss object with trainable parameters and a ``second_loss`` method."""
    if not isinstance(loss_fn, nn.Module) or not callable(getattr(loss_fn, "second_loss", None)):
        return None
    return loss_fn if any(p.requires_grad for p in loss_fn.parameters()) else None


def train(model: nn.Module, data, config: TrainConfig, loss_fn: Callable | None = None,
          eval_fn: Callable[[nn.Module], dict] | None = None, checkpoint: str | Path | None = None,
          resume: bool = False, metadata: dict | None = None, device: str | None = None,
          progress: bool = True, accelerate: Accelerate | None = None) -> TrainResult:
    """Train ``model`` in place on ``data`` (an ImageSet, a tensor, or a tuple of equal-length tensors).

    ``loss_fn(model, batch) -> loss`` or ``(loss, logs)`` (default :func:`default_loss`; a second
    player is trained beside the model, see the module docstring);
    ``eval_fn(model) -> {name: float}`` runs in eval mode without gradients every ``eval_every`` steps
    and at the end, with its own random state so that evaluating never changes the training run.
    ``checkpoint`` is written every ``checkpoint_every`` steps and at the end (with ``metadata``);
    ``resume=True`` continues the run saved there, if any. The model is left in eval mode.
    Under torchrun, ``config.batch_size`` is the global batch (split over the ranks).
    """
    ranks = distributed.setup(device)
    ranks.check_batch(config.batch_size)
    accelerate = accelerate or Accelerate()
    tensors = place_data(_as_tensors(data), ranks.device, accelerate)
    seed_everything(config.seed + ranks.rank)
    model.to(ranks.device).train()
    loss_fn = loss_fn or default_loss
    if isinstance(loss_fn, nn.Module):
        loss_fn.to(ranks.device).train()
    players = [model] + [p for p in [second_player(loss_fn)] if p is not None]
    optimizers = [make_optimizer(player, config) for player in players]
    sampler = BatchSampler(len(tensors[0]), config.batch_size, config.seed)
    run = _Run(model, loss_fn, optimizers, sampler, config, checkpoint, metadata or {}, ranks, accelerate)
    if resume and checkpoint is not None and Path(checkpoint).is_file():
        run.restore()
    return run.loop(tensors, eval_fn, progress and ranks.is_main)


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices / kernels only (biases, norms and scalars are not decayed)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"{type(model).__name__} has no trainable parameters")
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": config.weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=config.lr, betas=config.betas, foreach=True)


def _as_tensors(data) -> tuple[torch.Tensor, ...]:
    tensors = getattr(data, "images", data)  # an ImageSet trains on its images
    tensors = (tensors,) if isinstance(tensors, torch.Tensor) else tuple(tensors)
    if not tensors or not all(isinstance(t, torch.Tensor) for t in tensors):
        raise ValueError("data must be an ImageSet, a tensor, or a tuple of tensors")
    if len({len(t) for t in tensors}) != 1:
        raise ValueError(f"data tensors must have the same length, got {[len(t) for t in tensors]}")
    return tensors


def _scalar(value) -> float:
    return value.detach().item() if isinstance(value, torch.Tensor) else float(value)


class _Run:
    """The state of one run, and the loop over it."""

    def __init__(self, model, loss_fn, optimizers, sampler, config, checkpoint, metadata, ranks, accelerate):
        self.model, self.loss_fn, self.optimizers, self.sampler = model, loss_fn, optimizers, sampler
        self.config, self.checkpoint, self.metadata = config, checkpoint, metadata
        self.ranks, self.device, self.accelerate = ranks, ranks.device, accelerate
        self.forward_model = compiled(ranks.wrap(model), accelerate)  # what the loss calls; `model` is saved
        self.players = [model, loss_fn][:len(optimizers)]  # the model, and the loss object if it trains too
        self.step, self.saved_step, self.history, self.evals = 0, None, [], []
        self.seconds, self.cpu_seconds = 0.0, 0.0  # spent by earlier sessions of this run

    def restore(self) -> None:
        payload = load_checkpoint(self.checkpoint)  # on cpu: random states and the data order live there
        state = payload.get("train_state")
        if state is None:
            raise ValueError(f"{self.checkpoint} holds no training state (a shipped, weights-only checkpoint?); "
                             f"it cannot be resumed")
        saved = TrainConfig(**state["config"])
        if saved != self.config:
            diff = {k: (v, getattr(self.config, k)) for k, v in asdict(saved).items() if getattr(self.config, k) != v}
            raise ValueError(f"cannot resume {self.checkpoint}: its TrainConfig differs {diff} (saved, given)")
        if ("second_optimizer" in state) != (len(self.optimizers) > 1):
            raise ValueError(f"cannot resume {self.checkpoint}: it was trained "
                             f"{'with' if 'second_optimizer' in state else 'without'} a second player "
                             f"(a loss object with parameters), this run is not")
        restore_model(payload, self.model, str(self.checkpoint))
        self.optimizers[0].load_state_dict(state["optimizer"])
        if len(self.optimizers) > 1:
            self.loss_fn.load_state_dict(state["objective"])
            self.optimizers[1].load_state_dict(state["second_optimizer"])
        self.sampler.load_state_dict(state["sampler"])
        self._restore_rng(state)
        self.step = self.saved_step = state["step"]
        self.history, self.evals = state["history"], state["evals"]
        self.seconds, self.cpu_seconds = state.get("seconds", 0.0), state.get("cpu_seconds", 0.0)

    def _restore_rng(self, state: dict) -> None:
        """Each rank's saved random state; with another number of ranks, rank 0's, and fresh seeds elsewhere."""
        saved = state.get("rank_rng", [state["rng"]])
        if len(saved) == self.ranks.world_size:
            set_rng_state(saved[self.ranks.rank])
        elif self.ranks.is_main:
            set_rng_state(state["rng"])
        else:  # a rank the saved run did not have: seeded from the run's seed, its rank and the step
            seed_everything(self.config.seed + self.ranks.rank + 7919 * state["step"])

    def loop(self, tensors, eval_fn, progress) -> TrainResult:
        config, start = self.config, self.step
        self.began, self.cpu_began = time.perf_counter(), time.process_time()
        bar = tqdm(total=config.steps, initial=self.step, disable=not progress, dynamic_ncols=True)
        with bar:
            while self.step < config.steps:
                logs = self.train_step(tensors)
                if self.step % config.log_every == 0 or self.step == config.steps:
                    self.history.append({"step": self.step, **{k: _scalar(v) for k, v in logs.items()}})
                    bar.set_postfix({k: f"{v:.4g}" for k, v in self.history[-1].items() if k != "step"},
                                    refresh=False)
                bar.update(1)
                if eval_fn is not None and self.ranks.is_main and self._due(config.eval_every):
                    self.evaluate(eval_fn, bar)
                if self.checkpoint is not None and self._due(config.checkpoint_every):
                    self.save()
        self.model.eval()
        return TrainResult(self.step - start, time.perf_counter() - self.began, self.history, self.evals)

    def _due(self, every: int) -> bool:
        return self.step == self.config.steps or (every > 0 and self.step % every == 0)

    def train_step(self, tensors) -> dict[str, Any]:
        lr = lr_at(self.step, self.config)
        for optimizer in self.optimizers:
            for group in optimizer.param_groups:
                group["lr"] = lr
        batch = fetch(tensors, self.ranks.shard(self.sampler.next()), self.device)  # this rank's slice
        batch = batch[0] if len(batch) == 1 else batch
        with autocast(self.device, self.accelerate):
            loss, logs = _loss_and_logs(self.loss_fn(self.forward_model, batch), "loss")
        loss = self._update(0, loss, "loss")
        if len(self.optimizers) > 1:
            with autocast(self.device, self.accelerate):
                second = self.loss_fn.second_loss(self.model, batch)
            if second is not None:
                second_loss, second_logs = _loss_and_logs(second, "second loss")
                self._update(1, second_loss, "second loss")
                logs = {**logs, **second_logs}
        self.step += 1
        return {"loss": loss, "lr": lr, **logs}  # loss: the mean over ranks; other logs: this rank's slice

    def _update(self, player: int, loss: torch.Tensor, what: str) -> torch.Tensor:
        """One optimizer step of player 0 (the model) or 1 (the loss object), guarded against non-finite
        values; returns the loss averaged over the ranks."""
        mean = self.ranks.mean(loss.detach())  # a non-finite loss on any rank stops every rank
        self._guard(mean.item(), what)
        optimizer, parameters = self.optimizers[player], list(self.players[player].parameters())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if player == 1:  # the model's gradients were averaged by DDP during backward; these were not
            self.ranks.average_gradients(parameters)
        norm = nn.utils.clip_grad_norm_(parameters, self.config.clip or math.inf, foreach=True)
        self._guard(norm.item(), "gradient norm" if player == 0 else f"gradient norm of the {what}")
        optimizer.step()
        return mean

    def _guard(self, value: float, what: str) -> None:
        if math.isfinite(value):
            return
        kept = (f"the last good checkpoint (step {self.saved_step}) is kept at {self.checkpoint}"
                if self.saved_step is not None else "no checkpoint was written yet")
        raise TrainingDiverged(
            f"training stopped at step {self.step + 1}: the {what} became {value}; the update was not applied "
            f"and {kept}. Lower the learning rate (now {self.config.lr:g}) or the gradient clip "
            f"({self.config.clip}) and train again (the model in memory may hold non-finite buffers).")

    def evaluate(self, eval_fn, bar) -> None:
        self.model.eval()
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.no_grad(), torch.random.fork_rng(devices=devices):
            metrics = {k: (None if v is None else float(v)) for k, v in eval_fn(self.model).items()}
        self.model.train()
        self.evals.append({"step": self.step, **metrics})
        bar.write(f"step {self.step}: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if v is not None))

    def save(self) -> None:
        # wall and cpu (all threads) seconds of the training loop, summed over resumed sessions
        seconds = self.seconds + time.perf_counter() - self.began
        cpu_seconds = self.cpu_seconds + time.process_time() - self.cpu_began
        rank_rng = self.ranks.gather(rng_state())  # a collective: every rank comes here, rank 0 writes
        if not self.ranks.is_main:
            self.saved_step = self.step
            self.ranks.barrier()
            return
        train_state = {"step": self.step, "config": asdict(self.config), "optimizer": self.optimizers[0].state_dict(),
                       "sampler": self.sampler.state_dict(), "rng": rank_rng[0], "rank_rng": rank_rng,
                       "history": self.history, "evals": self.evals, "seconds": seconds, "cpu_seconds": cpu_seconds}
        if len(self.optimizers) > 1:
            train_state.update(objective=self.loss_fn.state_dict(), second_optimizer=self.optimizers[1].state_dict())
        metadata = {**self.metadata, "steps": self.step, "complete": self.step == self.config.steps,
                    "train_config": asdict(self.config), "metrics": self.evals[-1] if self.evals else None,
                    "train_seconds": round(seconds, 3), "cpu_seconds": round(cpu_seconds, 3)}
        save_checkpoint(self.checkpoint, self.model, metadata, train_state)
        self.saved_step = self.step
        self.ranks.barrier()


def _loss_and_logs(out, what: str) -> tuple[torch.Tensor, dict]:
    loss, logs = out if isinstance(out, tuple) else (out, {})
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        got = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
        raise ValueError(f"the {what} must be a scalar tensor, got {got}; pass loss_fn=(model, batch) -> loss")
    return loss, logs
