"""The offline feature distance (LPIPS's recipe on a course-trained network) and the real-LPIPS path."""
import math
import socket
import time
import warnings

import pytest
import torch
import torchvision

from course_lib.engine.checkpoints import load_model, read_metadata
from course_lib.datasets.photos import make_photo_crops
from course_lib.engine.checkpoints import config_from_dict
from course_lib.evaluation.distortions import equal_mse_distortions, reaches_target
from course_lib.tokenizers.lpips_real import (LPIPSWeightsMissing, RealLPIPS, backbone_weights_path, has_lpips_weights)
from course_lib.tokenizers.perceptual import (FEATURE_NET_CHECKPOINT, FeatureDistance, FeatureNet, FeatureNetConfig,
                                   feature_net_presets, feature_net_train_config, free_label_loss,
                                   perceptual_distance, rotate_batch, train_feature_net,
                                   unit_normalize)


def _features(seed=0, shapes=((2, 4, 8, 8), (2, 6, 4, 4))):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g) for s in shapes]


def _images(seed=0, n=3, size=16):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


# ----- perceptual_distance over given features -----

def test_distance_by_hand():
    fx, fy = [torch.tensor([3.0, 4.0]).view(1, 2, 1, 1)], [torch.tensor([1.0, 0.0]).view(1, 2, 1, 1)]
    # unit vectors (0.6, 0.8) and (1, 0): squared differences 0.16 + 0.64
    assert perceptual_distance(fx, fy).item() == pytest.approx(0.8, abs=1e-6)
    assert perceptual_distance(fx, fy, [torch.tensor([2.0, 1.0])]).item() == pytest.approx(0.96, abs=1e-6)


def test_distance_is_zero_for_identical_and_symmetric():
    fx, fy = _features(0), _features(1)
    assert torch.equal(perceptual_distance(fx, fx), torch.zeros(2))
    assert torch.allclose(perceptual_distance(fx, fy), perceptual_distance(fy, fx))
    assert (perceptual_distance(fx, fy) > 0).all()


def test_unit_normalization_ignores_feature_scale():
    fx, fy = _features(0), _features(1)
    g = torch.Generator().manual_seed(2)
    # any positive factor per layer and per position leaves the distance unchanged
    scaled = [f * (0.1 + 5 * torch.rand(f.shape[0], 1, *f.shape[2:], generator=g)) for f in fx]
    assert torch.allclose(perceptual_distance(scaled, fy), perceptual_distance(fx, fy), atol=1e-5)
    assert torch.allclose(unit_normalize(fx[0]).norm(dim=1), torch.ones(2, 8, 8), atol=1e-5)


def test_weights_of_ones_are_the_unweighted_sum_and_zeros_give_zero():
    fx, fy = _features(0), _features(1)
    ones = [torch.ones(f.shape[1]) for f in fx]
    assert torch.allclose(perceptual_distance(fx, fy, ones), perceptual_distance(fx, fy))
    assert torch.equal(perceptual_distance(fx, fy, [torch.zeros(f.shape[1]) for f in fx]), torch.zeros(2))


def test_matches_the_lpips_package_formula():
    # lpips's own forward on a random backbone (a formula check only, never used as a metric)
    import lpips
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's `pretrained=` deprecation inside lpips
        model = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False)
    x, y = _images(0, 2, 64) * 2 - 1, _images(1, 2, 64) * 2 - 1
    expected = model(x, y).flatten()
    with torch.no_grad():
        fx, fy = model.net(model.scaling_layer(x)), model.net(model.scaling_layer(y))
        weights = [lin.model[-1].weight.flatten() for lin in model.lins]
        ours = perceptual_distance(list(fx), list(fy), weights)
    assert torch.allclose(ours, expected, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("case, message", [
    ("lengths", "one map per layer"), ("shapes", "same shape"), ("weight_shape", "channel weights"),
    ("negative", "non-negative"), ("not_list", "two lists")])
def test_bad_features_raise(case, message):
    fx, fy = _features(0), _features(1)
    weights = None
    if case == "lengths":
        fy = fy[:1]
    elif case == "shapes":
        fy = [fy[0], fy[1][:, :3]]
    elif case == "weight_shape":
        weights = [torch.ones(4), torch.ones(5)]
    elif case == "negative":
        weights = [torch.ones(4), -torch.ones(6)]
    else:
        fx = fx[0]
    with pytest.raises(ValueError, match=message):
        perceptual_distance(fx, fy, weights)


# ----- the feature network and the distance module -----

def test_feature_maps_halve_per_stage():
    net = FeatureNet(feature_net_presets["photos-32"])
    shapes = [tuple(f.shape) for f in net.features(_images(0, 2, 32))]
    assert shapes == [(2, 16, 32, 32), (2, 32, 16, 16), (2, 64, 8, 8), (2, 128, 4, 4)]
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        net.features(torch.rand(2, 1, 32, 32))
    with pytest.raises(ValueError, match="at least 8x8"):
        net.features(torch.rand(2, 3, 4, 4))


def test_feature_distance_properties(one_thread):
    distance = FeatureDistance(FeatureNet(feature_net_presets["tiny"]))
    x, y = _images(0), _images(1)
    assert torch.allclose(distance(x, x), torch.zeros(3), atol=1e-6)
    assert torch.allclose(distance(x, y), distance(y, x))
    # usable as a loss: gradients reach the images, never the frozen network
    x.requires_grad_(True)
    distance(x, y).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in distance.parameters())
    distance.train()
    assert not distance.network.training  # BatchNorm statistics stay frozen inside a training parent
    with pytest.raises(ValueError, match="same shape"):
        distance(x, y[:2])


def test_channel_weights_are_checked_against_the_network():
    net = FeatureNet(feature_net_presets["tiny"])
    FeatureDistance(net, [torch.ones(8), torch.ones(16)])
    with pytest.raises(ValueError, match=r"shape \(16,\)"):
        FeatureDistance(net, [torch.ones(8), torch.ones(15)])


def test_rotate_batch_turns_each_image_by_its_own_count():
    images, turns = _images(0, 4), torch.tensor([0, 1, 2, 3])
    rotated = rotate_batch(images, turns)
    for i in range(4):
        assert torch.equal(rotated[i], torch.rot90(images[i], i, dims=(1, 2)))
    assert torch.equal(rotate_batch(rotated, (4 - turns) % 4), images)


def test_training_is_seeded_resumable_and_checkpoint_round_trips(tmp_path, one_thread):
    config = feature_net_train_config(steps=4, batch_size=8, seed=3)
    kwargs = dict(config="tiny", train_config=config, num_crops=64, eval_crops=16)
    net, result, report = train_feature_net(**kwargs, checkpoint=tmp_path / "net.pt")
    again, _, _ = train_feature_net(**kwargs)
    assert result.steps == 4 and all(torch.equal(a, b) for a, b in zip(net.state_dict().values(),
                                                                         again.state_dict().values()))
    assert 0 <= report["test_photos_base256"]["rotation_accuracy"] <= 1
    metadata = read_metadata(tmp_path / "net.pt")
    assert metadata["train_seconds"] > 0 and metadata["steps"] == 4 and metadata["train_images"] == 63
    assert metadata["test_metrics"] == report and metadata["kind"] == "feature-net"
    loaded = load_model(tmp_path / "net.pt")
    x = _images(0, 2, 32)
    assert torch.equal(FeatureDistance(loaded)(x, x.flip(3)), FeatureDistance(net)(x, x.flip(3)))
    # a finished run resumes as a no-op with the same weights
    resumed, rerun, _ = train_feature_net(**kwargs, checkpoint=tmp_path / "net.pt", resume=True)
    assert rerun.steps == 0 and all(torch.equal(a, b) for a, b in zip(net.state_dict().values(),
                                                                       resumed.state_dict().values()))
    with pytest.raises(ValueError, match="unknown feature network config fields"):
        config_from_dict(FeatureNetConfig, {"widths": (8,), "depth": 3}, "feature network")


def test_free_label_loss_learns_both_heads_from_the_labels(one_thread):
    torch.manual_seed(0)
    net = FeatureNet(feature_net_presets["tiny"])
    images, sources = _images(0, 8, 32), torch.arange(8) % 6
    loss, logs = free_label_loss(net, (images, sources))
    assert loss.item() == pytest.approx((logs["rotation"] + logs["source"]).item())
    assert logs["rotation"].item() == pytest.approx(math.log(4), rel=0.2)  # an untrained head: near chance
    with pytest.raises(IndexError):
        free_label_loss(net, (images, sources + 10))  # a source label outside the head's classes


def test_shipped_feature_network():
    if not FEATURE_NET_CHECKPOINT.is_file():
        pytest.skip("no shipped feature network (data/checkpoints/feature-net-photos.pt)")
    assert FEATURE_NET_CHECKPOINT.stat().st_size < 5 * 2**20
    metadata = read_metadata(FEATURE_NET_CHECKPOINT)
    assert 0 < metadata["train_seconds"] < 1200 and metadata["threads"] == 1
    fresh = metadata["test_metrics"]["train_photos_fresh_crops_base64"]
    assert fresh["source_accuracy"] > 0.9 and fresh["rotation_accuracy"] > 0.5  # chance: 1/6 and 1/4
    # the lesson's claim: at equal MSE, a one-pixel shift is far closer than a blur or JPEG blocks
    crops = make_photo_crops(32, 32, "test", seed=0).images
    crops = crops[reaches_target(crops)]
    distorted = equal_mse_distortions(crops)
    distance = FeatureDistance.load()
    with torch.no_grad():
        scores = {name: distance(images, crops).mean().item() for name, images in distorted.items()}
    assert 2 * scores["shift"] < min(scores["blur"], scores["jpeg"]), scores


# ----- real LPIPS: never a download, never a random backbone -----

@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    """A private TORCH_HOME, and no way to reach the network or torch.hub's downloader."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def no_network(*args, **kwargs):
        raise AssertionError("tried the network")
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    return tmp_path / "torch" / "hub" / "checkpoints"


def test_missing_weights_raise_at_once_with_one_line(empty_hub):
    start = time.perf_counter()
    with pytest.raises(LPIPSWeightsMissing) as error:
        RealLPIPS("alex")
    assert time.perf_counter() - start < 1.0
    message = str(error.value)
    assert "\n" not in message and "alexnet-owt-7be5be79.pth" in message and str(empty_hub) in message
    assert not has_lpips_weights("vgg")
    with pytest.raises(ValueError, match="unknown LPIPS backbone"):
        RealLPIPS("resnet")


def test_lpips_plumbing_with_a_stand_in_backbone_file(empty_hub, one_thread):
    # STAND-IN: a randomly initialized AlexNet's features saved under torchvision's file name, to
    # test the loading path offline; its distances mean nothing
    stand_in = {k: v for k, v in torchvision.models.alexnet().state_dict().items() if k.startswith("features.")}
    empty_hub.mkdir(parents=True)
    torch.save(stand_in, backbone_weights_path("alex"))
    assert has_lpips_weights("alex")
    lpips_real = RealLPIPS("alex")
    assert "alexnet-owt-7be5be79.pth" in lpips_real.description
    assert torch.equal(lpips_real.lpips.net.slice1[0].weight, stand_in["features.0.weight"])
    assert torch.equal(getattr(lpips_real.lpips.net.slice5, "10").bias, stand_in["features.10.bias"])
    x, y = _images(0, 2, 32), _images(1, 2, 32)
    assert lpips_real(x, y).shape == (2,)
    assert torch.allclose(lpips_real(x, x), torch.zeros(2))
    assert torch.allclose(lpips_real(x, y), lpips_real(y, x), atol=1e-6)


def test_a_wrong_backbone_file_is_refused(empty_hub):
    empty_hub.mkdir(parents=True)
    torch.save({"classifier.1.weight": torch.zeros(1)}, backbone_weights_path("alex"))
    with pytest.raises(ValueError, match="not torchvision's alex weight file"):
        RealLPIPS("alex")

