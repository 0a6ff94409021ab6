import shutil
import socket
import time

import pytest
import torch
import torchvision.datasets as tvd

from conftest import SHARED_MNIST
from course_lib import datasets
from course_lib.datasets import DatasetUnavailable, ImageSet, check_images, load_dataset
from course_lib.datasets import downloads, photos


@pytest.mark.parametrize("name,channels", [("shapes", 3), ("photos", 3), ("glyphs", 1), ("digits", 1)])
def test_offline_sets_follow_the_convention(name, channels):
    data = load_dataset(name, "test", n=64, seed=1)
    assert data.images.shape == (64, channels, 32, 32)
    assert data.images.dtype == torch.float32
    assert 0 <= data.images.min() and data.images.max() <= 1
    assert data.images.std() > 0.05, "images should not be blank"
    for key, values in data.labels.items():
        assert values.dtype == torch.int64 and values.shape == (64,)
        assert 0 <= values.min() and values.max() < len(data.classes[key])


@pytest.mark.parametrize("name", ["shapes", "photos", "glyphs", "digits"])
def test_same_seed_same_tensors_other_seed_other_tensors(name):
    a = datasets._offline.__wrapped__(name, "train", 32, 7, None)
    b = datasets._offline.__wrapped__(name, "train", 32, 7, None)
    c = datasets._offline.__wrapped__(name, "train", 32, 8, None)
    assert torch.equal(a.images, b.images)
    assert all(torch.equal(a.labels[k], b.labels[k]) for k in a.labels)
    assert not torch.equal(a.images, c.images)


def test_train_and_test_differ():
    for name in ("shapes", "glyphs"):
        train, test = load_dataset(name, "train", n=16), load_dataset(name, "test", n=16)
        assert not torch.equal(train.images, test.images)


def test_shapes_labels_describe_the_pixels():
    data = load_dataset("shapes", "train", n=200)
    red = data.classes["colour"].index("red")
    images = data.images[data.labels["colour"] == red]
    # a red shape's brightest pixel is red-dominant
    flat = images.flatten(2)  # (N, 3, H*W)
    brightest = flat.sum(1).argmax(1)
    colour = flat[torch.arange(len(flat)), :, brightest]  # (N, 3)
    assert (colour[:, 0] > colour[:, 1] + 0.3).all()
    big, small = data.classes["size"].index("large"), data.classes["size"].index("small")
    area = (data.images.sum(1) > 0.5).flatten(1).sum(1).float()
    assert area[data.labels["size"] == big].mean() > 2 * area[data.labels["size"] == small].mean()


def test_photo_train_and_test_crops_come_from_disjoint_sources():
    train = load_dataset("photos", "train", n=64)
    test = load_dataset("photos", "test", n=64)
    assert set(train.classes["source"]).isdisjoint(test.classes["source"])
    assert set(train.classes["source"]) | set(test.classes["source"]) == set(photos.SOURCES)
    assert len(set(test.labels["source"].tolist())) > 1


def test_whole_photos_and_astronaut():
    image = datasets.astronaut()
    assert image.shape == (3, 512, 512) and 0 <= image.min() and image.max() <= 1
    for name in datasets.photo_names():
        assert datasets.photo(name).shape[0] == 3
    with pytest.raises(ValueError, match="choose one of"):
        datasets.photo("mona_lisa")


def test_bad_names_and_parameters_list_the_choices():
    with pytest.raises(ValueError, match="choose one of .*shapes"):
        load_dataset("imagenet")
    with pytest.raises(ValueError, match="split must be one of"):
        load_dataset("shapes", "validation")
    with pytest.raises(ValueError, match="n must be"):
        load_dataset("shapes", n=0)
    with pytest.raises(ValueError, match="size must be"):
        load_dataset("photos", size=4)
    with pytest.raises(ValueError, match="string"):
        load_dataset(3)
    with pytest.raises(ValueError, match="native size"):
        load_dataset("mnist", size=32)


def test_folder_dataset(tmp_path):
    from PIL import Image
    for i in range(12):
        Image.new("RGB", (40 + i, 30), (20 * i, 100, 200)).save(tmp_path / f"img{i:02d}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    train = load_dataset(f"folder:{tmp_path}", "train", size=16)
    test = load_dataset(f"folder:{tmp_path}", "test", size=16)
    assert train.images.shape == (11, 3, 16, 16) and test.images.shape == (1, 3, 16, 16)
    assert torch.allclose(test.images[0, :, 0, 0], torch.tensor([180, 100, 200]) / 255, atol=0.01)
    with pytest.raises(ValueError, match="no such folder"):
        load_dataset(f"folder:{tmp_path / 'missing'}")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="not a readable image"):
        load_dataset(f"folder:{tmp_path}", "all")


def test_imageset_checks_and_labels():
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        ImageSet("x", "train", torch.full((2, 3, 4, 4), 2.0))
    with pytest.raises(ValueError, match="shape \\(N, C, H, W\\)"):
        check_images(torch.rand(3, 4, 4))
    with pytest.raises(ValueError, match="floats"):
        check_images(torch.zeros(1, 3, 4, 4, dtype=torch.uint8))
    data = load_dataset("shapes", "test", n=20)
    assert torch.equal(data.label("shape"), data.labels["shape"]) and len(data.subset(4)) == 4
    with pytest.raises(ValueError, match="has no label"):
        data.label("mood")


@pytest.fixture
def mnist_root(tmp_path, monkeypatch):
    if not SHARED_MNIST.is_dir():
        pytest.skip(f"the real MNIST test files are not at {SHARED_MNIST}")
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for file in SHARED_MNIST.glob("t10k-*.gz"):
        shutil.copy(file, raw / file.name)
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path))
    return tmp_path


def test_mnist_loader_reads_the_real_test_set(mnist_root):
    data = load_dataset("mnist", "test")
    assert data.images.shape == (10000, 1, 28, 28)
    assert data.labels["class"][:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert torch.bincount(data.labels["class"]).tolist()[:3] == [980, 1135, 1032]
    assert abs(data.images.mean().item() - 0.1325) < 0.001  # the well-known MNIST mean
    assert load_dataset("mnist", "test", n=5).images.shape == (5, 1, 28, 28)


def test_corrupt_archive_is_rejected(mnist_root):
    (mnist_root / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz").write_bytes(b"corrupt")
    with pytest.raises(DatasetUnavailable, match="MD5"):
        load_dataset("mnist", "test")


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10"])
def test_offline_download_fails_fast_with_the_message(name, tmp_path, monkeypatch):
    # the download hosts point at a closed local port: no traffic leaves the machine
    closed = _closed_local_port()
    monkeypatch.setattr(tvd.MNIST, "mirrors", [f"http://127.0.0.1:{closed}/"])
    monkeypatch.setattr(tvd.FashionMNIST, "mirrors", [f"http://127.0.0.1:{closed}/"])
    monkeypatch.setattr(tvd.CIFAR10, "url", f"http://127.0.0.1:{closed}/cifar-10-python.tar.gz")
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path))
    start = time.monotonic()
    with pytest.raises(DatasetUnavailable, match="offline set: shapes, photos, glyphs"):
        load_dataset(name, "train")
    assert time.monotonic() - start < 10
    assert not any(tmp_path.rglob("*.gz")), "nothing half-downloaded is left behind"


def test_probe_gives_up_within_its_timeout(monkeypatch):
    calls = []

    def never_answers(address, timeout):
        calls.append(timeout)
        raise socket.timeout("timed out")

    monkeypatch.setattr(downloads.socket, "create_connection", never_answers)
    with pytest.raises(DatasetUnavailable):
        downloads._require_online("mnist", ["https://example.invalid/a", "http://example.invalid/b"])
    assert calls == [downloads.PROBE_TIMEOUT_S] * 2 and sum(calls) < 10


def _closed_local_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
