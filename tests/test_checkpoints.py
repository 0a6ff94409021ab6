"""Checkpoint files: round trips, clear errors on bad files, and every shipped checkpoint."""
import dataclasses
import pickle
import time

import pytest
import torch

from course_lib.engine.checkpoints import (CheckpointError, export_weights, load_checkpoint, load_model,
                                    read_metadata, save_checkpoint)
from course_lib.datasets.images import load_images
from course_lib.evaluation.reconstruction import evaluate_tokenizer
from course_lib.paths import CHECKPOINT_DIR
from course_lib.tokenizers.losses import TokenizerLoss
from course_lib.tokenizers.perceptual import held_out_report
from course_lib.tools.make_checkpoints import MAX_BYTES, RECIPES
from course_lib.tokenizers.tokenizer import build_tokenizer
from course_lib.engine.training import TrainConfig, train

SHIPPED = sorted(CHECKPOINT_DIR.glob("*.pt"))


def _tiny(preset="vq-f4", **overrides):
    torch.manual_seed(0)
    return build_tokenizer(preset, image_size=16, widths=(8, 8, 8), res_blocks=(0, 0, 0), **overrides)


def test_round_trip_rebuilds_the_same_model(tmp_path):
    model = _tiny(codebook_size=32).eval()
    save_checkpoint(tmp_path / "m.pt", model, {"preset": "vq-f4", "data": "shapes"})
    loaded = load_model(tmp_path / "m.pt")
    images = torch.rand(2, 3, 16, 16)
    assert torch.equal(loaded(images).reconstruction, model(images).reconstruction)
    assert loaded.config == model.config and not loaded.training
    metadata = read_metadata(tmp_path / "m.pt")
    assert metadata["preset"] == "vq-f4" and metadata["code_version"]["package"] == "0.1.0"
    assert "git" in metadata["code_version"]


def test_files_load_with_weights_only(tmp_path):
    save_checkpoint(tmp_path / "m.pt", _tiny())
    payload = torch.load(tmp_path / "m.pt", weights_only=True)  # no pickled code needed
    assert payload["model"]["class"] == "course_lib.tokenizers.tokenizer:Tokenizer"


class Evil:
    def __reduce__(self):
        return (print, ("this ran at load time",))


def test_bad_files_give_clear_errors(tmp_path):
    save_checkpoint(tmp_path / "good.pt", _tiny())
    data = (tmp_path / "good.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.pt").write_text("not a checkpoint")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.pt")
    torch.save({"format": "course_lib.checkpoint", "version": 99}, tmp_path / "future.pt")
    with open(tmp_path / "evil.pt", "wb") as file:
        pickle.dump({"format": Evil()}, file, protocol=2)
    cases = {"missing.pt": "no checkpoint at", "truncated.pt": "not a readable checkpoint",
             "text.pt": "not a readable checkpoint", "foreign.pt": "not a course_lib checkpoint",
             "future.pt": "version 99", "evil.pt": "not a readable checkpoint"}
    for name, message in cases.items():
        with pytest.raises(CheckpointError, match=message):
            load_checkpoint(tmp_path / name)


def test_mismatched_files_give_clear_errors(tmp_path):
    save_checkpoint(tmp_path / "m.pt", _tiny(), {"preset": "vq-f4"})
    payload = load_checkpoint(tmp_path / "m.pt")
    payload["model"]["config"]["autoencoder"]["widths"] = (8, 8, 16)  # weights of another shape
    torch.save(payload, tmp_path / "mismatch.pt")
    with pytest.raises(CheckpointError, match="does not match"):
        load_model(tmp_path / "mismatch.pt")
    payload["model"]["class"] = "os:system"
    torch.save(payload, tmp_path / "foreign_class.pt")
    with pytest.raises(CheckpointError, match="only course_lib classes"):
        load_model(tmp_path / "foreign_class.pt")
    with pytest.raises(CheckpointError, match="preset: file has 'vq-f4', expected 'fsq-f4'"):
        load_model(tmp_path / "m.pt", expect={"preset": "fsq-f4"})


def test_export_drops_the_training_state(tmp_path):
    model = _tiny(codebook_size=16)
    train(model, torch.rand(16, 3, 16, 16), TrainConfig(steps=2, batch_size=4, warmup=0), loss_fn=TokenizerLoss(),
          checkpoint=tmp_path / "run.pt", progress=False)
    export_weights(tmp_path / "run.pt", tmp_path / "ship.pt")
    assert "train_state" not in load_checkpoint(tmp_path / "ship.pt")
    assert (tmp_path / "ship.pt").stat().st_size < (tmp_path / "run.pt").stat().st_size
    assert read_metadata(tmp_path / "ship.pt")["steps"] == 2


def test_every_recipe_is_shipped_and_nothing_else():
    assert sorted(p.stem for p in SHIPPED) == sorted(RECIPES), "run `make checkpoints` and commit data/checkpoints/"
    for preset in ("vq-f4", "fsq-f4", "kl-f4"):
        for data in ("shapes", "photos"):
            assert f"{preset}-{data}" in RECIPES


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_shipped_checkpoint_reproduces_its_test_metrics(name):
    path = CHECKPOINT_DIR / f"{name}.pt"
    assert path.is_file(), f"{path} is missing: run `make checkpoints`"
    assert path.stat().st_size <= MAX_BYTES
    payload = load_checkpoint(path)
    assert "train_state" not in payload
    metadata = payload["metadata"]
    for key in ("preset", "data", "steps", "seed", "test_metrics", "test_set", "code_version", "train_seconds"):
        assert key in metadata, f"{path.name} metadata lacks {key!r}"
    recipe = RECIPES[name]
    assert (metadata["recipe"], metadata["kind"], metadata["preset"], metadata["data"], metadata["steps"]) == \
        (name, recipe.kind, recipe.preset, recipe.data, recipe.train.steps), f"{path.name} was not made by its current recipe"
    assert set(recipe.needs) <= set(RECIPES)
    if "needs" in metadata:
        assert list(metadata["needs"]) == list(recipe.needs)
    REPRODUCE[recipe.kind](load_model(path), metadata)


@pytest.mark.parametrize("name", sorted(n for n, r in RECIPES.items() if r.kind == "classifier"))
def test_shipped_classifier_metadata_is_what_its_recipe_writes(name):
    from course_lib.datasets import DEFAULT_SIZE, load_dataset
    from course_lib.datasets.tokens import class_label
    recipe, metadata = RECIPES[name], read_metadata(CHECKPOINT_DIR / f"{name}.pt")
    _, names = class_label(load_dataset(recipe.data, "test", n=8), recipe.label)  # names come from the label alone
    expected = {"kind": "classifier", "preset": recipe.preset, "data": recipe.data, "label": recipe.label,
                "class_names": names, "train_images": recipe.n_train or DEFAULT_SIZE["train"],
                "seed": recipe.train.seed, "recipe": name, "needs": list(recipe.needs), "steps": recipe.train.steps}
    for key, value in expected.items():
        assert key in metadata, f"{name} metadata lacks {key!r}"
        assert (type(metadata[key]), metadata[key]) == (type(value), value), key
    assert list(metadata["class_names"]) == list(load_model(CHECKPOINT_DIR / f"{name}.pt").config.class_names)
    assert metadata["train_config"] == dataclasses.asdict(recipe.train)
    git = metadata["code_version"]["git"]
    assert git and not git.endswith("+dirty"), f"{name} names no commit that makes it: {git!r}"


def _reproduce_tokenizer(model, metadata):
    test_set = metadata["test_set"]
    images = load_images(test_set["data"], test_set["split"], model.config.autoencoder.in_channels,
                         model.config.image_size, test_set["n"])
    metrics = evaluate_tokenizer(model, images, with_ssim=False)
    assert abs(metrics["psnr"] - metadata["test_metrics"]["psnr"]) < 0.1
    if model.is_discrete:
        assert abs(metrics["usage"] - metadata["test_metrics"]["usage"]) < 0.01


def _reproduce_feature_net(model, metadata):
    recorded = metadata["test_metrics"]
    report = held_out_report(model, metadata["test_set"]["n"], metadata["seed"])
    for group in recorded:
        for key, value in recorded[group].items():
            assert abs(report[group][key] - value) < 0.01, (group, key)


def _reproduced_in_their_own_tests(model, metadata):
    """Classifiers: tests/test_yardstick.py; GPTs: tests/test_gpt_checkpoints.py; MaskGITs:
    tests/test_maskgit_checkpoints.py; flow models: tests/test_flow_tools.py (they need other checkpoints)."""


# kind -> check(loaded model, metadata): the recorded held-out metrics come back
REPRODUCE = {"tokenizer": _reproduce_tokenizer, "vqgan": _reproduce_tokenizer, "feature-net": _reproduce_feature_net,
             "classifier": _reproduced_in_their_own_tests, "gpt": _reproduced_in_their_own_tests,
             "maskgit": _reproduced_in_their_own_tests, "flow": _reproduced_in_their_own_tests,
             "var": _reproduced_in_their_own_tests}  # tests/test_var_checkpoints.py


def test_every_recipe_kind_has_a_reproduction_check():
    assert {r.kind for r in RECIPES.values()} <= set(REPRODUCE)


def test_metadata_is_kept_as_plain_data(tmp_path):
    import numpy as np
    save_checkpoint(tmp_path / "m.pt", _tiny(), {"torch": torch.__version__, "score": np.float32(1.5),
                                                 "shape": (1, 2), "nested": {"n": np.int64(3)}})
    metadata = read_metadata(tmp_path / "m.pt")  # a str subclass would fail weights_only loading
    assert type(metadata["torch"]) is str and metadata["score"] == 1.5 and metadata["nested"]["n"] == 3
    assert metadata["shape"] == (1, 2)
    with pytest.raises(CheckpointError, match=r"metadata\['bad'\] holds a object"):
        save_checkpoint(tmp_path / "bad.pt", _tiny(), {"bad": object()})


def test_files_get_ordinary_permissions(tmp_path):
    import os
    import stat
    save_checkpoint(tmp_path / "m.pt", _tiny())
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE((tmp_path / "m.pt").stat().st_mode) == 0o666 & ~mask


def test_training_time_adds_up_over_resumed_sessions(tmp_path):
    path, config = tmp_path / "run.pt", TrainConfig(steps=6, batch_size=4, warmup=0, checkpoint_every=3)
    images = torch.rand(16, 3, 16, 16)
    calls = {"n": 0}

    def busy_loss(model, batch):  # measurable wall and cpu time per step, even on a fast machine
        busy_until = time.process_time() + 0.02
        while time.process_time() < busy_until:
            pass
        return TokenizerLoss()(model, batch)

    def crash_at_5(model, batch):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return busy_loss(model, batch)
    with pytest.raises(KeyboardInterrupt):
        train(_tiny(codebook_size=16), images, config, loss_fn=crash_at_5, checkpoint=path, progress=False)
    first = read_metadata(path)
    train(_tiny(codebook_size=16), images, config, loss_fn=busy_loss, checkpoint=path, resume=True, progress=False)
    second = read_metadata(path)
    assert 0 < first["train_seconds"] < second["train_seconds"] and 0 < first["cpu_seconds"] < second["cpu_seconds"]
