"""The shipped GPTs: they reproduce their test NLL, their samples reach the class-accuracy target, and the
photo GPT compresses test tokens exactly at the rate its NLL promises."""
import pytest
import torch

from course_lib.datasets.tokens import encode_dataset
from course_lib.engine.checkpoints import load_model, read_metadata
from course_lib.generators import codec
from course_lib.paths import CHECKPOINT_DIR
from course_lib.tools.recipes import RECIPES
from course_lib.tools.train_gpt import bits_per_token

GPTS = sorted(name for name, recipe in RECIPES.items() if recipe.kind == "gpt")


def _load(name):
    metadata = read_metadata(CHECKPOINT_DIR / f"{name}.pt")
    return load_model(CHECKPOINT_DIR / f"{name}.pt"), load_model(CHECKPOINT_DIR / f"{metadata['tokenizer']}.pt"), metadata


@pytest.mark.parametrize("name", GPTS)
def test_shipped_gpt_reproduces_its_test_nll(name):
    gpt, tokenizer, metadata = _load(name)
    assert metadata["tokenizer"] == RECIPES[name].needs[0]
    assert gpt.config.codebook_size == tokenizer.codebook_size and gpt.config.grid == tuple(tokenizer.tokens_shape)
    test_set = metadata["test_set"]
    tokens = encode_dataset(tokenizer, test_set["data"], "test", metadata["label"], test_set["n"])
    measured = bits_per_token(gpt, tokens)
    assert measured == pytest.approx(metadata["test_metrics"]["bits_per_token"], abs=0.01)
    assert measured < 0.8 * gpt.config.codebook_size.bit_length()  # well below the raw log2 K bits


@pytest.mark.parametrize("name", [n for n in GPTS if RECIPES[n].label is not None])
def test_conditional_samples_reach_the_class_accuracy_target(name):
    scores = read_metadata(CHECKPOINT_DIR / f"{name}.pt")["sample_metrics"]
    assert scores["n"] >= 1000 and scores["sampling"] == RECIPES[name].sampling
    assert scores["samples"]["class_accuracy"] >= 0.9
    # floor and ceiling differ by sampling noise only (tests/test_yardstick.py: random tokens are ~100x
    # farther); samples stay within a few times the ceiling
    assert scores["samples"]["frechet_distance"] < 5 * max(scores["ceiling"]["frechet_distance"], 1.0)


def test_photo_gpt_compresses_test_tokens_exactly_near_its_nll():
    gpt, tokenizer, metadata = _load("gpt-photos")
    tokens = encode_dataset(tokenizer, "photos", "test", None, metadata["test_set"]["n"]).tokens[:128]
    stream = codec.encode(gpt, tokens)
    assert torch.equal(codec.decode(gpt, stream), tokens)
    nll = float(codec.nll_bits(gpt, tokens).sum())
    assert codec.stream_bits(stream)["payload"] <= 1.02 * nll + 64
    assert codec.stream_bits(stream)["payload"] < 0.9 * len(tokens) * tokenizer.bits_per_image
