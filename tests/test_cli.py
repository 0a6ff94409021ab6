"""Command lines: train + evaluate end to end (built-in data and a folder of images), and user errors."""
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from course_lib.tools import evaluate
from course_lib.tools import make_checkpoints
from course_lib.tools import train
from course_lib.engine.checkpoints import read_metadata

TINY = ["--set", "widths=(8,8,8)", "--set", "res_blocks=(0,0,0)", "--set", "image_size=16",
        "--batch-size", "8", "--n-train", "64", "--n-test", "32"]


def _python(*args):
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "vq.pt"
    done = _python("course_lib.train", "tokenizer", "--preset", "vq-f4", "--data", "shapes", "--steps", "4",
                   "--out", str(out), "--set", "codebook_size=32", *TINY)
    assert done.returncode == 0, done.stderr
    assert f"saved {out}" in done.stdout
    return out


def test_train_writes_a_checkpoint_with_metadata(trained):
    metadata = read_metadata(trained)
    assert metadata["preset"] == "vq-f4" and metadata["data"] == "shapes" and metadata["steps"] == 4
    assert metadata["overrides"]["codebook_size"] == 32 and metadata["test_set"]["n"] == 32
    assert set(metadata["test_metrics"]) >= {"psnr", "ssim", "usage", "perplexity", "bits_per_image"}


def test_evaluate_prints_exactly_one_json_object(trained):
    done = _python("course_lib.evaluate", str(trained), "--data", "shapes", "--split", "test", "--n", "16")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)  # the whole of stdout is one object
    assert result["images"] == 16 and result["bits_per_image"] == 16 * 5  # 4x4 tokens of log2(32) bits
    assert 0 < result["usage"] <= 1 and 1 <= result["perplexity"] <= 32 and -1 < result["ssim"] <= 1


def test_folder_of_own_images_any_size_and_mode(tmp_path, capsys):
    folder = tmp_path / "pictures"
    folder.mkdir()
    g = np.random.default_rng(0)
    for i in range(20):  # odd sizes, grey and RGBA files: converted to the preset's 3 channels and size
        size = (int(g.integers(20, 60)), int(g.integers(20, 60)))
        mode = ["RGB", "L", "RGBA"][i % 3]
        array = g.integers(0, 255, (*size[::-1], len(mode)), dtype=np.uint8).squeeze()
        Image.fromarray(array, mode).save(folder / f"img{i:02d}.png")
    out = tmp_path / "fsq.pt"
    assert train.main(["tokenizer", "--preset", "fsq-f4", "--data", f"folder:{folder}", "--steps", "3",
                       "--out", str(out), *TINY[:-4], "--batch-size", "4"]) == 0
    assert read_metadata(out)["test_set"]["n"] == 2  # every 10th file is a test image
    capsys.readouterr()
    assert evaluate.main([str(out), "--data", f"folder:{folder}", "--split", "test"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["images"] == 2 and result["bits_per_image"] > 0
    assert evaluate.main([str(out), "--data", f"folder:{folder}", "--split", "all"]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 20


def test_continuous_latents_report_null_token_statistics(tmp_path, capsys):
    out = tmp_path / "kl.pt"
    assert train.main(["tokenizer", "--preset", "kl-f4", "--data", "glyphs", "--steps", "2",
                       "--out", str(out), *TINY]) == 0  # 1-channel glyphs become 3-channel images
    capsys.readouterr()
    assert evaluate.main([str(out), "--data", "shapes", "--n", "8"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["usage"] is None and result["bits_per_image"] is None and result["latent_shape"] == [4, 4, 4]


@pytest.mark.parametrize("argv,message", [
    (["tokenizer", "--preset", "vq-f4", "--data", "nowhere", "--steps", "2", "--out", "{tmp}/a.pt"],
     "unknown dataset 'nowhere'"),
    (["tokenizer", "--preset", "vq-f4", "--data", "folder:{tmp}/missing", "--steps", "2", "--out", "{tmp}/a.pt"],
     "no such folder"),
    (["tokenizer", "--preset", "vq-f4", "--data", "shapes", "--steps", "2", "--out", "{tmp}/a.pt",
      "--set", "colour=3"], "unknown settings ['colour']"),
    (["tokenizer", "--preset", "vq-f4", "--data", "shapes", "--steps", "2", "--out", "{tmp}/a.pt",
      "--set", "nonsense"], "--set takes KEY=VALUE"),
    (["tokenizer", "--preset", "vq-f4", "--data", "shapes", "--steps", "0", "--out", "{tmp}/a.pt"],
     "--steps must be >= 1"),
])
def test_train_user_errors(tmp_path, capsys, argv, message):
    assert train.main([a.replace("{tmp}", str(tmp_path)) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_train_refuses_to_overwrite_and_resume_checks_the_run(trained, capsys):
    def args(data="shapes", steps="4", *extra):
        return ["tokenizer", "--preset", "vq-f4", "--data", data, "--steps", steps, "--out", str(trained),
                "--set", "codebook_size=32", *TINY, *extra]
    assert train.main(args()) == 2
    assert "--resume" in capsys.readouterr().err
    assert train.main(args("photos", "4", "--resume")) == 2
    assert "data: file has 'shapes', expected 'photos'" in capsys.readouterr().err
    assert train.main(args("shapes", "8", "--resume")) == 2
    assert "TrainConfig differs" in capsys.readouterr().err


def test_evaluate_user_errors(tmp_path, trained, capsys):
    (tmp_path / "broken.pt").write_bytes(trained.read_bytes()[:1000])
    cases = [([str(tmp_path / "none.pt"), "--data", "shapes"], "no checkpoint at"),
             ([str(tmp_path / "broken.pt"), "--data", "shapes"], "not a readable checkpoint"),
             ([str(trained), "--data", "nowhere"], "unknown dataset"),
             ([str(trained), "--data", "shapes", "--n", "0"], "--n and --batch-size must be >= 1")]
    for argv, message in cases:
        assert evaluate.main(argv) == 2
        captured = capsys.readouterr()
        assert message in captured.err and "Traceback" not in captured.err and captured.out == ""


def test_unknown_preset_lists_the_known_ones(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train.main(["tokenizer", "--preset", "vq-f5", "--data", "shapes", "--steps", "1", "--out", "x.pt"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'vq-f5'" in capsys.readouterr().err


def test_make_checkpoints_rejects_unknown_names(capsys):
    assert make_checkpoints.main(["--only", "vq-f4-shapes,vq-f99"]) == 2
    assert "vq-f99" in capsys.readouterr().err
    assert make_checkpoints.main(["--list"]) == 0
    assert "vq-f4-photos" in capsys.readouterr().out


def test_augment_images_are_symmetries_and_channel_orders():
    import torch
    from course_lib.datasets.augment import augment_images
    images = torch.rand(64, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    out = augment_images(images, seed=1)
    assert torch.equal(out, augment_images(images, seed=1)) and not torch.equal(out, augment_images(images, seed=2))
    variants = 0
    for x, y in zip(images, out):
        candidates = [torch.rot90(x, k, dims=(1, 2)) for k in range(4)]
        candidates += [c.flip(2) for c in candidates]
        matches = [c[list(p)] for c in candidates for p in
                   [(0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)] if torch.equal(c[list(p)], y)]
        assert matches, "every output is a turned / flipped / channel-reordered input"
        variants += not torch.equal(x, y)
    assert variants > 50
    grey = torch.rand(8, 1, 8, 8)
    assert augment_images(grey).shape == grey.shape
    with pytest.raises(ValueError, match="square"):
        augment_images(torch.rand(2, 3, 8, 6))


def test_make_checkpoints_force_retrains_only_what_was_asked(monkeypatch, capsys):
    made = []
    monkeypatch.setattr(make_checkpoints, "make", lambda name, force=False: made.append((name, force)))
    monkeypatch.setattr(make_checkpoints, "summary_line", lambda name: name)
    assert make_checkpoints.main(["--only", "vqgan-f4-photos", "--force"]) == 0
    assert made == [("vqgan-f4-photos", True)]  # its shipped needs are not retrained
    assert "vq-f4-photos: already shipped" in capsys.readouterr().out
