"""The MaskGIT command lines: ``train maskgit`` (a tiny model trained here) and ``sample`` with --steps."""
import json

import numpy as np
import pytest
from PIL import Image

from course_lib.engine.checkpoints import read_metadata
from course_lib.generators.maskgit import MaskGIT
from course_lib.paths import CHECKPOINT_DIR
from course_lib.tools import sample as sample_tool
from course_lib.tools import train as train_tool


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny class-conditional MaskGIT on the shapes tokens of vq-f8-shapes, 3 training steps."""
    folder = tmp_path_factory.mktemp("runs")
    mp = pytest.MonkeyPatch()
    mp.setenv("COURSE_DATA_DIR", str(folder))  # the token cache goes here, not into data/
    args = ["maskgit", "--tokenizer", "vq-f8-shapes", "--data", "shapes", "--label", "shape,colour", "--preset",
            "maskgit-tiny", "--steps", "3", "--n-train", "128", "--n-test", "32", "--batch-size", "16",
            "--set", "schedule=square", "--out", str(folder / "mg.pt")]
    assert train_tool.main(args) == 0
    yield folder / "mg.pt"
    mp.undo()


def test_train_maskgit_records_kind_tokenizer_classes_and_test_loss(run, capsys):
    metadata = read_metadata(run)
    assert metadata["kind"] == "maskgit" and metadata["preset"] == "maskgit-tiny" and metadata["steps"] == 3
    assert metadata["tokenizer"] == "vq-f8-shapes" and metadata["label"] == ("shape", "colour")
    assert len(metadata["class_names"]) == 24 and metadata["overrides"] == {"schedule": "square"}
    assert 0 < metadata["test_metrics"]["bits_per_masked_token"] < 9  # K = 256: about 8 bits untrained


def test_train_maskgit_refuses_to_overwrite_and_bad_presets(run, capsys):
    args = ["maskgit", "--tokenizer", "vq-f8-shapes", "--data", "shapes", "--steps", "3", "--out", str(run)]
    assert train_tool.main(args) == 2
    assert "exists" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train_tool.main([*args[:-2], "--preset", "gpt-tiny", "--out", str(run.parent / "x.pt")])


def test_sample_takes_steps_and_is_reproducible(run, tmp_path, capsys):
    def draw(folder, *extra):
        assert sample_tool.main([str(run), "--n", "4", "--class", "circle-red", "--save-dir", str(tmp_path / folder),
                                 "--seed", "1", *extra]) == 0
        assert json.loads(capsys.readouterr().out)["n"] == 4
        return [np.asarray(Image.open(f)) for f in sorted((tmp_path / folder).glob("*.png"))]

    first, again = draw("a", "--steps", "4", "--cfg", "2"), draw("b", "--steps", "4", "--cfg", "2")
    assert len(first) == 4 and first[0].shape == (32, 32, 3)
    assert all(np.array_equal(x, y) for x, y in zip(first, again))
    other = draw("c", "--steps", "1", "--cfg", "2", "--temperature", "0.5")
    assert not all(np.array_equal(x, y) for x, y in zip(first, other))


def test_sample_refuses_what_a_maskgit_lacks(run, capsys):
    assert sample_tool.main([str(run), "--n", "2", "--top-k", "5"]) == 2
    assert "no --top-k" in capsys.readouterr().err
    assert sample_tool.main([str(run), "--n", "2", "--steps", "0"]) == 2
    assert "steps must be a positive int" in capsys.readouterr().err


def test_sample_defaults_to_the_recipes_settings(tmp_path, monkeypatch):
    seen = {}
    original = MaskGIT.sample

    def spy(self, n, classes=None, **settings):
        seen.clear()
        seen.update(settings)
        return original(self, n, classes, **settings)
    monkeypatch.setattr(MaskGIT, "sample", spy)
    assert sample_tool.main(["maskgit-shapes", "--n", "2", "--out", str(tmp_path / "g.png")]) == 0
    recorded = read_metadata(CHECKPOINT_DIR / "maskgit-shapes.pt")["sample_metrics"]["sampling"]
    assert "steps" in recorded and {k: seen[k] for k in recorded} == recorded
    assert sample_tool.main(["maskgit-shapes", "--n", "2", "--steps", "3", "--out", str(tmp_path / "g.png")]) == 0
    assert seen["steps"] == 3 and seen["cfg"] == recorded["cfg"]
