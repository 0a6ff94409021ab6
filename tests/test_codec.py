"""Tokens + GPT as a lossless codec: exact round trips, a rate at the model's NLL, loud failures."""
import math

import pytest
import torch

from course_lib.generators import codec
from course_lib.generators.gpt import build_gpt

pytestmark = pytest.mark.usefixtures("one_thread")


def _gpt(seed=0, sharpness=1.0, **overrides):
    torch.manual_seed(seed)
    settings = dict(codebook_size=256, grid=(8, 8), width=32, depth=2, heads=2)
    model = build_gpt("gpt-tiny", **{**settings, **overrides}).eval()
    with torch.no_grad():
        model.head.weight.mul_(sharpness)  # larger logits: peaked distributions, as after training
    return model


def _check_rate(model, grids, classes=None):
    data = codec.encode(model, grids, classes)
    assert torch.equal(codec.decode(model, data, classes), grids)
    nll = codec.nll_bits(model, grids, classes).sum().item()
    bits = codec.stream_bits(data)
    assert 0.99 * nll <= bits["payload"] <= 1.02 * nll, (bits, nll)
    return data, nll


def _coded_bits(model, grids, classes=None) -> tuple[int, float]:
    data = codec.encode(model, grids, classes)
    assert torch.equal(codec.decode(model, data, classes), grids)
    return codec.stream_bits(data)["payload"], codec.nll_bits(model, grids, classes).sum().item()


def test_nll_bits_is_the_training_loss_in_bits():
    model = _gpt()
    grids = torch.randint(0, 256, (5, 8, 8), generator=torch.Generator().manual_seed(0))
    per_token_nats = codec.nll_bits(model, grids).mean() * math.log(2) / 64
    assert torch.allclose(per_token_nats.float(), model(grids), atol=1e-5)


def test_round_trip_and_rate_on_a_random_model():
    model = _gpt()
    grids = model.sample(32, generator=torch.Generator().manual_seed(1))
    data, nll = _check_rate(model, grids)
    assert nll > 0.9 * 32 * 64 * 8  # a random model is close to uniform: about 8 bits per token
    assert codec.stream_bits(data)["total"] <= 1.02 * nll


@pytest.mark.parametrize("positions", ["learned", "rotary"])
def test_round_trip_and_rate_with_peaked_probabilities(positions):
    model = _gpt(sharpness=40.0, positions=positions)
    grids = model.sample(48, generator=torch.Generator().manual_seed(2))
    data, nll = _check_rate(model, grids)
    assert nll < 0.5 * 48 * 64 * 8  # far below the raw 8 bits per token
    assert codec.encode(model, grids) == data  # the same grids give the same bytes


def test_round_trip_of_grids_the_model_finds_unlikely():
    model = _gpt(sharpness=40.0)
    grids = torch.randint(0, 256, (8, 8, 8), generator=torch.Generator().manual_seed(3))
    bits, nll = _coded_bits(model, grids)
    with torch.no_grad():
        log_probs = model.logits(grids).double().log_softmax(-1)  # (B, N, K)
    token_bits = -log_probs.gather(-1, grids.flatten(1)[..., None]) / math.log(2)  # (B, N, 1)
    # constriction gives every token at least its smallest probability, 2**-24: a token the model
    # rules out costs about 24 bits, less than the model's own NLL for it
    capped = token_bits.clamp(max=24).sum().item()
    assert bits < 0.98 * nll and abs(bits - capped) < 0.02 * capped, (bits, capped, nll)


def test_streams_longer_than_a_chunk(monkeypatch):
    monkeypatch.setattr(codec, "CHUNK", 5)  # 12 grids: chunks of 5, 5 and 2
    model = _gpt(sharpness=10.0)
    grids = model.sample(12, generator=torch.Generator().manual_seed(6))
    _check_rate(model, grids)


def test_conditional_round_trip_needs_the_same_classes():
    model = _gpt(num_classes=3, sharpness=10.0)
    classes = torch.tensor([0, 1, 2, 1])
    grids = model.sample(4, classes=classes, generator=torch.Generator().manual_seed(4))
    data, _ = _check_rate(model, grids, classes)
    assert not torch.equal(codec.decode(model, data, torch.tensor([2, 2, 2, 2])), grids)  # classes are side info


def test_decoding_with_another_model_or_bad_bytes_fails_loudly():
    model = _gpt()
    data = codec.encode(model, model.sample(2, generator=torch.Generator().manual_seed(5)))
    with pytest.raises(ValueError, match="another model"):
        codec.decode(_gpt(seed=1), data)
    with pytest.raises(ValueError, match="magic"):
        codec.decode(model, b"JPEG" + data[4:])
    with pytest.raises(ValueError, match="truncated"):
        codec.decode(model, data[:-1])
    with pytest.raises(ValueError, match="at least 12 bytes"):
        codec.decode(model, data[:5])
    with pytest.raises(ValueError, match=r"\(B, 8, 8\)"):
        codec.encode(model, torch.zeros(2, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"in \[0, 256\)"):
        codec.encode(model, torch.full((1, 8, 8), 256))
