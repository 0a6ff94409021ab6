"""The generator command lines: train gpt, sample, compress / decompress (on tiny GPTs trained here)."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from course_lib.datasets import load_dataset
from course_lib.engine.checkpoints import load_model, read_metadata
from course_lib.generators import codec
from course_lib.paths import CHECKPOINT_DIR
from course_lib.tools import compress as compress_tool
from course_lib.tools import sample as sample_tool
from course_lib.tools import train as train_tool


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny conditional GPT on shapes tokens and a tiny unconditional one on photo tokens."""
    folder = tmp_path_factory.mktemp("runs")
    mp = pytest.MonkeyPatch()
    mp.setenv("COURSE_DATA_DIR", str(folder))  # the token cache goes here, not into data/
    common = ["--preset", "gpt-tiny", "--steps", "3", "--n-train", "128", "--n-test", "32", "--batch-size", "16"]
    assert train_tool.main(["gpt", "--tokenizer", "vq-f4-shapes", "--data", "shapes", "--label", "shape,colour",
                            "--out", str(folder / "cond.pt"), *common]) == 0
    assert train_tool.main(["gpt", "--tokenizer", "vq-f4-photos", "--data", "photos",
                            "--out", str(folder / "photos.pt"), *common]) == 0
    yield folder
    mp.undo()


def test_train_gpt_records_tokenizer_classes_and_test_nll(runs):
    metadata = read_metadata(runs / "cond.pt")
    assert metadata["kind"] == "gpt" and metadata["tokenizer"] == "vq-f4-shapes" and metadata["steps"] == 3
    assert len(metadata["class_names"]) == 24 and metadata["label"] == ("shape", "colour")
    assert 0 < metadata["test_metrics"]["bits_per_token"] < 11
    assert read_metadata(runs / "photos.pt")["class_names"] == []


def test_list_classes_prints_the_names_in_index_order(runs, capsys):
    assert sample_tool.main([str(runs / "cond.pt"), "--list-classes"]) == 0
    names = capsys.readouterr().out.split()
    assert names == read_metadata(runs / "cond.pt")["class_names"] and names[0] == "circle-red"


def test_sample_writes_a_grid_and_one_png_per_sample(runs, tmp_path, capsys):
    args = [str(runs / "cond.pt"), "--n", "6", "--class", "square-blue", "--out", str(tmp_path / "grid.png"),
            "--save-dir", str(tmp_path / "each"), "--seed", "3", "--cfg", "2"]
    assert sample_tool.main(args) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert result["n"] == 6 and result["sampling_seconds"] > 0 and "sampled 6 in" in captured.err
    files = sorted((tmp_path / "each").glob("*.png"))
    assert [f.name for f in files] == [f"sample{i:04d}-square-blue.png" for i in range(6)]
    assert np.asarray(Image.open(files[0])).shape == (32, 32, 3)
    grid = np.asarray(Image.open(tmp_path / "grid.png"))
    assert grid.shape == (2 * 34 + 2, 3 * 34 + 2, 3)  # 2 rows of 3 cells of 32 pixels, 2-pixel gaps
    # the same seed draws the same samples; the class given by index is the same class
    again = [str(runs / "cond.pt"), "--n", "6", "--class", "8", "--save-dir", str(tmp_path / "again"), "--seed", "3",
             "--cfg", "2"]  # square-blue is class 1 * 6 + 2
    assert sample_tool.main(again) == 0
    assert all(np.array_equal(np.asarray(Image.open(f)), np.asarray(Image.open(tmp_path / "again" / f.name)))
               for f in files)
    other = [str(runs / "cond.pt"), "--n", "6", "--class", "8", "--save-dir", str(tmp_path / "other"), "--seed", "4",
             "--cfg", "2"]  # another seed, other samples
    assert sample_tool.main(other) == 0
    assert not all(np.array_equal(np.asarray(Image.open(f)), np.asarray(Image.open(tmp_path / "other" / f.name)))
                   for f in files)


def test_sample_refuses_what_the_model_lacks(runs, capsys):
    assert sample_tool.main([str(runs / "cond.pt"), "--class", "hexagon"]) == 2
    assert "unknown class 'hexagon'" in capsys.readouterr().err
    assert sample_tool.main([str(runs / "cond.pt"), "--n", "2", "--steps", "8"]) == 2
    assert "no --steps" in capsys.readouterr().err
    assert sample_tool.main([str(runs / "photos.pt"), "--class", "0"]) == 2
    assert "unconditional" in capsys.readouterr().err
    assert sample_tool.main(["vq-f4-shapes"]) == 2
    assert "sample from a generator" in capsys.readouterr().err


def _photo_folder(folder, n=5):
    crops = load_dataset("photos", "test", n=n).images
    folder.mkdir()
    for i, crop in enumerate(crops):
        Image.fromarray((crop.permute(1, 2, 0) * 255).round().byte().numpy()).save(folder / f"crop{i}.png")
    return crops


def test_compress_and_decompress_round_trip_the_tokens(runs, tmp_path, capsys):
    _photo_folder(tmp_path / "in")
    archive = tmp_path / "a.tok"
    assert compress_tool.main_compress([str(tmp_path / "in"), "--out", str(archive), "--gpt", str(runs / "photos.pt")]) == 0
    packed = json.loads(capsys.readouterr().out)
    assert packed["images"] == 5 and packed["bits_per_image"] == 8 * archive.stat().st_size / 5
    assert not list(tmp_path.glob(".*.tmp")), "the archive is written atomically"
    assert compress_tool.main_decompress([str(archive), "--out", str(tmp_path / "out")]) == 0
    unpacked = json.loads(capsys.readouterr().out)
    assert unpacked["images"] == 5 and sorted(p.name for p in (tmp_path / "out").glob("*.png")) == \
        [f"crop{i}.png" for i in range(5)]
    # the decoded images are the tokenizer's reconstruction of exactly the tokens that were encoded
    tokenizer = load_model(CHECKPOINT_DIR / "vq-f4-photos.pt")
    images = torch.stack([torch.from_numpy(np.asarray(Image.open(tmp_path / "in" / f"crop{i}.png")).copy())
                          for i in range(5)]).permute(0, 3, 1, 2).float() / 255
    header, stream = compress_tool.unpack(archive.read_bytes())
    decoded = codec.decode(load_model(runs / "photos.pt"), stream)
    with torch.no_grad():
        assert torch.equal(decoded, tokenizer.encode(images))


def test_compress_fails_cleanly(runs, tmp_path, capsys):
    _photo_folder(tmp_path / "in", 2)
    archive = tmp_path / "a.tok"
    assert compress_tool.main_compress([str(tmp_path / "in"), "--out", str(archive), "--gpt", str(runs / "cond.pt")]) == 2
    assert "unconditional" in capsys.readouterr().err and not archive.exists()
    archive.write_bytes(b"JUNKJUNK")
    assert compress_tool.main_decompress([str(archive), "--out", str(tmp_path / "out")]) == 2
    assert "not a token archive" in capsys.readouterr().err


def test_sample_defaults_to_the_recipes_settings(capsys, tmp_path, monkeypatch):
    seen = {}
    from course_lib.generators.gpt import GPT
    original = GPT.sample

    def spy(self, n, classes=None, **settings):
        seen.update(settings)
        return original(self, n, classes, **settings)
    monkeypatch.setattr(GPT, "sample", spy)
    assert sample_tool.main(["gpt-shapes", "--n", "2", "--out", str(tmp_path / "g.png")]) == 0
    recorded = read_metadata(CHECKPOINT_DIR / "gpt-shapes.pt")["sample_metrics"]["sampling"]
    assert {k: seen[k] for k in recorded} == recorded
    assert sample_tool.main(["gpt-shapes", "--n", "2", "--cfg", "1.5", "--out", str(tmp_path / "g.png")]) == 0
    assert seen["cfg"] == 1.5 and seen.get("top_k") == recorded.get("top_k")
