"""The one run skeleton (engine/runs.py), the per-kind training defaults, and sampling as a library call
(generators/drawing.py)."""
from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn

from course_lib.engine.checkpoints import CheckpointError, read_metadata
from course_lib.engine.runs import TRAIN_DEFAULTS, Trainer, run_trainer, train_config
from course_lib.generators.drawing import KINDS, check_settings, draw, kind_of, known_kinds
from course_lib.generators.gpt import build_gpt


@dataclass
class LineConfig:
    width: int = 4


class Line(nn.Module):
    def __init__(self, config: LineConfig):
        super().__init__()
        self.config = config
        self.layer = nn.Linear(config.width, 1)


def _setup(width: int = 4, tag: str = "a"):
    def setup() -> Trainer:
        x = torch.randn(64, width, generator=torch.Generator().manual_seed(1))
        y = x.sum(1, keepdim=True)
        model = Line(LineConfig(width))
        return Trainer(model, (x, y), {"preset": "line", "tag": tag},
                       test=lambda m: {"mse": float(((m.layer(x) - y) ** 2).mean().detach())},
                       test_set={"data": "synthetic", "n": 64},
                       loss_fn=lambda m, b: ((m.layer(b[0]) - b[1]) ** 2).mean())
    return setup


def test_a_run_is_seeded_tested_and_recorded(tmp_path):
    config = train_config("classifier", 20, 16)
    model, result, metrics = run_trainer("line", _setup(), config, tmp_path / "a.pt", progress=False)
    again, _, _ = run_trainer("line", _setup(), config, tmp_path / "b.pt", progress=False)
    assert torch.equal(model.layer.weight, again.layer.weight) and result.steps == 20
    metadata = read_metadata(tmp_path / "a.pt")
    assert metadata["kind"] == "line" and metadata["seed"] == 0 and metadata["tag"] == "a"
    assert metadata["test_metrics"] == metrics and metadata["test_set"] == {"data": "synthetic", "n": 64}


def test_a_resume_must_match_every_entry_of_the_run(tmp_path):
    config = train_config("classifier", 10, 16)
    run_trainer("line", _setup(), config, tmp_path / "a.pt", progress=False)
    with pytest.raises(CheckpointError, match="tag: file has 'a', expected 'b'"):
        run_trainer("line", _setup(tag="b"), config, tmp_path / "a.pt", resume=True, progress=False)
    _, result, _ = run_trainer("line", _setup(), config, tmp_path / "a.pt", resume=True, progress=False)
    assert result.steps == 0  # already finished: nothing left to train


def test_training_defaults_come_from_one_table():
    config = train_config("gpt", 2000, 64)
    assert (config.lr, config.weight_decay, config.warmup) == (2e-3, 0.05, 200)
    assert (config.eval_every, config.checkpoint_every) == (400, 200)
    assert train_config("tokenizer", 50).warmup == 5 and train_config("flow", 50, lr=0.1).lr == 0.1
    assert set(TRAIN_DEFAULTS) >= {"tokenizer", "classifier", "gpt", "maskgit", "flow"}
    with pytest.raises(ValueError, match="no training defaults for kind 'vae'"):
        train_config("vae", 10)


def test_draw_takes_a_plain_dict_of_the_kinds_settings():
    torch.manual_seed(0)
    gpt = build_gpt("gpt-tiny", codebook_size=8, grid=(2, 2), num_classes=3).eval()
    grids = draw(gpt, 4, torch.arange(4) % 3, {"temperature": 0.5, "cfg": 2.0}, torch.Generator().manual_seed(0))
    same = gpt.sample(4, torch.arange(4) % 3, temperature=0.5, cfg=2.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(grids, same)
    unguided = draw(gpt, 2, None, {"cfg": 3.0}, torch.Generator().manual_seed(0))  # no class: guidance dropped
    assert unguided.shape == (2, 2, 2)
    with pytest.raises(ValueError, match=r"it has no --steps \(it takes --temperature, --top-k, --top-p, --cfg\)"):
        draw(gpt, 2, None, {"steps": 8})


def test_every_generator_kind_is_registered_by_its_own_module():
    assert {"gpt", "maskgit", "flow"} <= set(known_kinds())
    with pytest.raises(ValueError, match="a Linear is not a generator"):
        kind_of(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="a flow model integrates an ODE.*; it has no --temperature"):
        check_settings(KINDS["flow"], {"temperature": 1.0})
