"""Lesson 09's tools: train flow, the flow sampler of ``sample`` and ``draw`` (on a tiny DiT trained here),
the recipe and builder, and the shipped flow model: its test loss and its samples' scores come back."""
import json

import pytest
import torch

from course_lib.datasets.tokens import encode_latents
from course_lib.engine.checkpoints import load_model, read_metadata
from course_lib.generators.dit import DiT, flow_test_loss
from course_lib.generators.drawing import draw_checkpoint
from course_lib.paths import CHECKPOINT_DIR
from course_lib.tools import sample as sample_tool
from course_lib.tools import train as train_tool
from course_lib.tools.recipes import BUILDERS, RECIPES, sample_metrics

FLOWS = sorted(name for name, recipe in RECIPES.items() if recipe.kind == "flow")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny class-conditional DiT on kl-f4-shapes latents, trained for 3 steps."""
    folder = tmp_path_factory.mktemp("flow")
    mp = pytest.MonkeyPatch()
    mp.setenv("COURSE_DATA_DIR", str(folder))  # the latent cache goes here, not into data/
    assert train_tool.main(["flow", "--tokenizer", "kl-f4-shapes", "--data", "shapes", "--label", "shape,colour",
                            "--preset", "dit-tiny", "--steps", "3", "--n-train", "128", "--n-test", "32",
                            "--batch-size", "16", "--out", str(folder / "flow.pt")]) == 0
    yield folder / "flow.pt"
    mp.undo()


def test_train_flow_records_tokenizer_classes_scale_and_test_loss(run):
    metadata = read_metadata(run)
    assert metadata["kind"] == "flow" and metadata["tokenizer"] == "kl-f4-shapes" and metadata["steps"] == 3
    assert len(metadata["class_names"]) == 24 and metadata["class_names"][0] == "circle-red"
    assert metadata["time_sampling"] == "logit-normal" and metadata["train_images"] == 128
    model = load_model(run)
    assert isinstance(model, DiT) and model.normalizer.scale.item() == pytest.approx(metadata["latent_scale"])
    assert metadata["latent_scale"] != 1.0 and 0 < metadata["test_metrics"]["flow_loss"] < 10


def test_train_flow_refuses_a_discrete_tokenizer(tmp_path, capsys):
    assert train_tool.main(["flow", "--tokenizer", "vq-f4-shapes", "--data", "shapes", "--preset", "dit-tiny",
                            "--steps", "2", "--n-train", "64", "--out", str(tmp_path / "f.pt")]) == 2
    assert "needs continuous latents" in capsys.readouterr().err


def test_sample_flow_writes_pngs_and_is_deterministic(run, tmp_path, capsys):
    args = [str(run), "--n", "4", "--steps", "2", "--method", "heun", "--cfg", "2", "--class", "square-blue"]
    assert sample_tool.main(args + ["--save-dir", str(tmp_path / "a")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == 4 and len(result["written"]) == 4 and "square-blue" in result["written"][0]
    assert sample_tool.main(args + ["--save-dir", str(tmp_path / "b")]) == 0
    capsys.readouterr()
    for name in sorted(p.name for p in (tmp_path / "a").iterdir()):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_sample_refuses_options_a_flow_model_lacks(run, capsys):
    assert sample_tool.main([str(run), "--n", "2", "--temperature", "0.9"]) == 2
    assert "no --temperature" in capsys.readouterr().err
    assert sample_tool.main([str(run), "--n", "2", "--top-k", "5"]) == 2
    assert "no --top-k" in capsys.readouterr().err
    assert sample_tool.main(["gpt-shapes", "--n", "2", "--method", "heun"]) == 2
    assert "no --method" in capsys.readouterr().err


def test_draw_gives_images_and_seconds_and_follows_the_seed(run):
    images, seconds = draw_checkpoint(run, 6, seed=1, settings={"steps": 3})
    assert images.shape == (6, 3, 32, 32) and 0 <= images.min() and images.max() <= 1 and seconds > 0
    again, _ = draw_checkpoint(run, 6, seed=1, settings={"steps": 3})
    other, _ = draw_checkpoint(run, 6, seed=2, settings={"steps": 3})
    assert torch.equal(images, again) and not torch.equal(images, other)
    by_name, _ = draw_checkpoint(run, 2, classes="circle-red", seed=1, settings={"steps": 3})
    by_index, _ = draw_checkpoint(run, 2, classes=0, seed=1, settings={"steps": 3})
    assert torch.equal(by_name, by_index)
    with pytest.raises(ValueError, match="unknown sampling settings"):
        draw_checkpoint(run, 2, settings={"temperatur": 0.5})
    with pytest.raises(ValueError, match="class indices"):
        draw_checkpoint(run, 2, classes=[0, 24])


def test_draw_decodes_token_grids_and_latents_alike():
    grids, _ = draw_checkpoint("gpt-shapes", 2, seed=0)
    assert grids.shape == (2, 3, 32, 32)
    with pytest.raises(ValueError, match="sample from a generator"):
        draw_checkpoint("kl-f4-shapes", 2)


def test_flow_recipes_have_a_builder_and_their_sampling_settings():
    assert "flow" in BUILDERS and FLOWS
    for name in FLOWS:
        recipe = RECIPES[name]
        assert recipe.needs[0].startswith("kl-") and recipe.needs[1].startswith("classifier-")
        assert set(recipe.sampling) == {"steps", "method", "cfg"} and recipe.sampling["steps"] == 16


@pytest.mark.parametrize("name", FLOWS)
def test_shipped_flow_model_reproduces_its_test_loss(name):
    metadata = read_metadata(CHECKPOINT_DIR / f"{name}.pt")
    dit, kl = load_model(CHECKPOINT_DIR / f"{name}.pt"), load_model(CHECKPOINT_DIR / f"{metadata['tokenizer']}.pt")
    assert metadata["tokenizer"] == RECIPES[name].needs[0] and dit.config.grid == kl.tokens_shape[1:]
    test_set = metadata["test_set"]
    latents = encode_latents(kl, test_set["data"], "test", metadata["label"], test_set["n"])
    measured = flow_test_loss(dit, latents.latents, latents.classes, metadata["time_sampling"])
    assert measured == pytest.approx(metadata["test_metrics"]["flow_loss"], abs=1e-3)


@pytest.mark.parametrize("name", FLOWS)
def test_shipped_flow_samples_reach_the_target(name):
    metadata = read_metadata(CHECKPOINT_DIR / f"{name}.pt")
    scores = metadata["sample_metrics"]
    assert scores["n"] >= 1000 and scores["sampling"] == RECIPES[name].sampling
    assert scores["sampling"]["method"] == "euler" and scores["sampling"]["steps"] == 16
    assert scores["samples"]["class_accuracy"] >= 0.9
    assert scores["samples"]["frechet_distance"] < 5 * max(scores["ceiling"]["frechet_distance"], 1.0)


def test_shipped_flow_scores_reproduce():
    """The recorded scores come from the recorded settings: drawn and scored again (one of the two shipped
    flows: the same code path serves both, and a redraw costs 1,000 samples)."""
    name = "flow-shapes"
    metadata = read_metadata(CHECKPOINT_DIR / f"{name}.pt")
    scores = metadata["sample_metrics"]
    again = sample_metrics(load_model(CHECKPOINT_DIR / f"{name}.pt"), load_model(CHECKPOINT_DIR / f"{metadata['tokenizer']}.pt"),
                           load_model(CHECKPOINT_DIR / f"{RECIPES[name].needs[1]}.pt"), metadata["data"],
                           metadata["label"], scores["sampling"])
    assert again["samples"]["class_accuracy"] == pytest.approx(scores["samples"]["class_accuracy"], abs=0.005)
    assert again["samples"]["frechet_distance"] == pytest.approx(scores["samples"]["frechet_distance"], rel=0.02)


def test_sample_defaults_to_the_flow_recipes_settings(tmp_path, monkeypatch, capsys):
    seen = {}
    original = DiT.sample

    def spy(self, n, classes=None, **settings):
        seen.update(settings)
        return original(self, n, classes, **settings)
    monkeypatch.setattr(DiT, "sample", spy)
    assert sample_tool.main(["flow-shapes", "--n", "2", "--out", str(tmp_path / "g.png")]) == 0
    recorded = read_metadata(CHECKPOINT_DIR / "flow-shapes.pt")["sample_metrics"]["sampling"]
    assert {k: seen[k] for k in recorded} == recorded
    assert sample_tool.main(["flow-shapes", "--n", "2", "--steps", "4", "--method", "heun", "--out",
                             str(tmp_path / "g.png")]) == 0
    assert seen["steps"] == 4 and seen["method"] == "heun" and seen["cfg"] == recorded["cfg"]
