"""Token datasets: encoded once, cached under the tokenizer's weights and the arguments, labels combined."""
import pytest
import torch

from course_lib.datasets import load_dataset
from course_lib.datasets.tokens import TokenSet, cache_path, class_label, encode_dataset
from course_lib.tokenizers.tokenizer import build_tokenizer


@pytest.fixture
def tokenizer():
    torch.manual_seed(0)
    return build_tokenizer("vq-f4", image_size=16, widths=(8, 8, 8), res_blocks=(0, 0, 0), codebook_size=32).eval()


@pytest.fixture(autouse=True)
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path))
    return tmp_path


def test_tokens_are_the_tokenizers_grids_with_their_classes(tokenizer):
    tokens = encode_dataset(tokenizer, "shapes", "test", ("shape", "colour"), n=32)
    images = load_dataset("shapes", "test", n=32, size=16)
    assert isinstance(tokens, TokenSet) and tokens.tokens.shape == (32, 4, 4) and tokens.grid == (4, 4)
    with torch.no_grad():
        assert torch.equal(tokens.tokens, tokenizer.encode(images.images).long())
    assert torch.equal(tokens.classes, images.labels["shape"] * 6 + images.labels["colour"])
    assert tokens.num_classes == 24 and tokens.class_names[6 + 2] == "square-blue"


def test_the_cache_is_read_back_and_keyed_on_the_weights(tokenizer, data_dir, monkeypatch):
    first = encode_dataset(tokenizer, "digits", "test", "char", n=16)
    assert len(list((data_dir / "tokens").glob("*.pt"))) == 1
    calls = []
    monkeypatch.setattr(tokenizer, "encode", lambda images: calls.append(1) or torch.zeros(len(images), 4, 4))
    again = encode_dataset(tokenizer, "digits", "test", "char", n=16)
    assert not calls and torch.equal(again.tokens, first.tokens) and again.class_names == list("0123456789")
    before = cache_path(tokenizer, "digits", "test", "char", 16, 0)
    with torch.no_grad():
        next(tokenizer.parameters()).add_(0.01)  # a retrained tokenizer must not read stale tokens
    assert cache_path(tokenizer, "digits", "test", "char", 16, 0) != before
    assert cache_path(tokenizer, "digits", "test", "char", 32, 0) != cache_path(tokenizer, "digits", "test", "char", 16, 0)


def test_class_labels_combine_in_mixed_radix():
    images = load_dataset("shapes", "test", n=64)
    classes, names = class_label(images, ("colour", "shape"))
    assert len(names) == 24 and names[0] == "red-circle"
    assert torch.equal(classes, images.labels["colour"] * 4 + images.labels["shape"])
    none, no_names = class_label(images, None)
    assert no_names == [] and not none.any()


def test_a_continuous_tokenizer_is_refused():
    kl = build_tokenizer("kl-f4", image_size=16, widths=(8, 8, 8), res_blocks=(0, 0, 0)).eval()
    with pytest.raises(ValueError, match="discrete|tokens"):
        encode_dataset(kl, "shapes", "test", n=8, cache=False)
