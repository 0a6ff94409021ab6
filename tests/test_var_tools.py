"""Lesson 10's commands on tiny runs: train a multi-scale tokenizer, train VAR on its pyramids, sample it."""
import json

import pytest
import torch

from course_lib.datasets.tokens import TokenSet
from course_lib.engine.checkpoints import load_model, read_metadata
from course_lib.tools import sample as sample_tool
from course_lib.tools import train as train_tool
from course_lib.tools.recipes import BUILDERS, TRAINERS

COMMON = ["--steps", "20", "--n-train", "128", "--n-test", "32", "--batch-size", "16"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A 20-step msvq tokenizer (K = 64) on shapes and a 20-step conditional var-tiny on its pyramids."""
    folder = tmp_path_factory.mktemp("var-runs")
    mp = pytest.MonkeyPatch()
    mp.setenv("COURSE_DATA_DIR", str(folder))  # the token cache goes here, not into data/
    torch.set_num_threads(1)
    assert train_tool.main(["tokenizer", "--preset", "msvq-f4", "--data", "shapes", "--set", "codebook_size=64",
                            "--out", str(folder / "msvq.pt"), *COMMON]) == 0
    assert train_tool.main(["var", "--tokenizer", str(folder / "msvq.pt"), "--data", "shapes", "--label",
                            "shape,colour", "--preset", "var-tiny", "--out", str(folder / "var.pt"), *COMMON]) == 0
    yield folder
    mp.undo()


def test_the_tokenizer_run_trains_and_is_measured(runs):
    metadata = read_metadata(runs / "msvq.pt")
    metrics = metadata["test_metrics"]
    assert metadata["steps"] == 20 and metrics["tokens_per_image"] == 130 and metrics["bits_per_image"] == 780
    assert 0 < metrics["usage"] <= 1 and metrics["psnr"] > 5
    for k in (1, 2, 3, 4, 6, 8):  # each scale's codes on the test set
        assert 0 < metrics[f"usage_{k}"] <= 1 and 1 <= metrics[f"perplexity_{k}"] <= 64


def test_the_var_run_records_bits_per_scale(runs):
    metadata = read_metadata(runs / "var.pt")
    metrics = metadata["test_metrics"]
    assert metadata["kind"] == "var" and metadata["steps"] == 20 and len(metadata["class_names"]) == 24
    assert 0 < metrics["bits_per_token"] < 7  # log2(64) = 6 at chance
    sizes = {1: 1, 2: 4, 3: 9, 4: 16, 6: 36, 8: 64}
    assert sum(metrics[f"bits_per_token_{k}"] * n for k, n in sizes.items()) == pytest.approx(metrics["bits_per_image"])
    model = load_model(runs / "var.pt")
    assert model.config.scales == (1, 2, 3, 4, 6, 8) and model.config.codebook_size == 64
    tokenizer = load_model(runs / "msvq.pt")
    assert torch.equal(model.quantizer.codebook, tokenizer.quantizer.codebook)  # the tokenizer's codes, frozen


def test_sample_a_var_checkpoint(runs, tmp_path, capsys):
    args = [str(runs / "var.pt"), "--n", "4", "--class", "circle-red", "--cfg", "2", "--guidance", "constant",
            "--save-dir", str(tmp_path / "each"), "--seed", "1"]
    assert sample_tool.main(args) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 4
    assert len(list((tmp_path / "each").glob("*.png"))) == 4
    gpt_only = [str(runs / "var.pt"), "--n", "2", "--steps", "8"]
    assert sample_tool.main(gpt_only) == 2
    assert "VAR" in capsys.readouterr().err


def test_var_is_a_trainer_and_a_builder():
    assert "var" in TRAINERS and "var" in BUILDERS


def test_token_sets_hold_pyramids():
    sequences = TokenSet("shapes", "test", torch.zeros(3, 130, dtype=torch.long), torch.zeros(3, dtype=torch.long))
    assert sequences.grid == (130,)
    with pytest.raises(ValueError, match=r"\(N, L\)"):
        TokenSet("shapes", "test", torch.zeros(3, dtype=torch.long), torch.zeros(3, dtype=torch.long))
