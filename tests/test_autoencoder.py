"""Encoder / decoder: shapes for every downsampling factor, config errors, gradients, determinism."""
import pytest
import torch

from course_lib.tokenizers.autoencoder import AutoencoderConfig, Decoder, Encoder, ResBlock, count_parameters
from course_lib.engine.seeding import seed_everything


pytestmark = pytest.mark.usefixtures("one_thread")


WIDTHS = {2: (8, 16), 4: (8, 16, 16), 8: (8, 16, 16, 16)}


@pytest.mark.parametrize("downsample", [2, 4, 8])
@pytest.mark.parametrize("in_channels", [1, 3])
def test_shapes_round_trip(downsample, in_channels):
    config = AutoencoderConfig(in_channels, downsample, WIDTHS[downsample], latent_channels=5, res_blocks=1)
    images = torch.rand(2, in_channels, 16, 16) * 2 - 1
    z = Encoder(config)(images)
    assert z.shape == (2, 5, 16 // downsample, 16 // downsample)
    assert Decoder(config)(z).shape == images.shape


def test_out_channels_override_for_mean_and_logvar():
    config = AutoencoderConfig(widths=(8, 16, 16), latent_channels=4)
    assert Encoder(config, out_channels=8)(torch.zeros(1, 3, 8, 8)).shape == (1, 8, 2, 2)


def test_res_blocks_per_level():
    config = AutoencoderConfig(widths=(8, 16, 16), res_blocks=(0, 1, 2))
    blocks = [m for m in Encoder(config).modules() if isinstance(m, ResBlock)]
    assert [b.block[2].in_channels for b in blocks] == [16, 16, 16]
    assert len([m for m in Decoder(config).modules() if isinstance(m, ResBlock)]) == 3
    assert AutoencoderConfig(widths=(8, 16, 16), res_blocks=2).res_blocks == (2, 2, 2)


def test_odd_widths_get_a_legal_group_norm():
    config = AutoencoderConfig(widths=(6, 12, 20), latent_channels=3)
    assert Decoder(config)(Encoder(config)(torch.zeros(1, 3, 8, 8))).shape == (1, 3, 8, 8)


@pytest.mark.parametrize("kwargs, message", [
    ({"downsample": 3}, "downsample must be one of (2, 4, 8), got 3"),
    ({"downsample": 8}, "downsample=8 needs 4 widths"),
    ({"in_channels": 2}, "in_channels must be 1 (grey) or 3 (RGB), got 2"),
    ({"latent_channels": 0}, "latent_channels must be >= 1"),
    ({"res_blocks": (1, 1)}, "res_blocks must be one int >= 0 or 3 of them"),
])
def test_bad_configs_say_what_was_expected(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        AutoencoderConfig(**kwargs)


def test_every_parameter_gets_a_gradient():
    config = AutoencoderConfig(widths=(8, 16, 16), latent_channels=4, res_blocks=1)
    encoder, decoder = Encoder(config), Decoder(config)
    images = torch.rand(2, 3, 8, 8) * 2 - 1
    ((decoder(encoder(images)) - images) ** 2).mean().backward()
    for name, p in list(encoder.named_parameters()) + list(decoder.named_parameters()):
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_output_is_unclamped():
    # the decoder may leave [-1, 1]; the tokenizer documents this instead of clamping (clamping kills gradients)
    config = AutoencoderConfig(widths=(8, 16, 16), latent_channels=4)
    decoder = Decoder(config)
    with torch.no_grad():
        decoder.layers[-1].bias.fill_(5.0)
    assert decoder(torch.zeros(1, 4, 2, 2)).min() > 1.0


def test_same_seed_same_network():
    config = AutoencoderConfig(widths=(8, 16, 16), latent_channels=4)
    seed_everything(3)
    a = Encoder(config)
    seed_everything(3)
    b = Encoder(config)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    assert count_parameters(a) == count_parameters(b) > 0
