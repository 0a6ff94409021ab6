"""MNIST, Fashion-MNIST and CIFAR-10 through torchvision: read from data/, download when online.

Offline, a missing set fails within seconds: before any download the host is probed with a short
connection timeout, and the error names the offline sets that always work. Downloaded archives are
checked against torchvision's published MD5 sums.
"""
from __future__ import annotations

import gzip
import shutil
import socket
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision.datasets as tvd
from torchvision.datasets.mnist import read_image_file, read_label_file
from torchvision.datasets.utils import check_integrity, download_and_extract_archive

from course_lib.paths import data_dir

from .imageset import ImageSet

OFFLINE_SETS = ("shapes", "photos", "glyphs", "digits", "folder:PATH")
PROBE_TIMEOUT_S = 3.0
_IDX = {"mnist": tvd.MNIST, "fashion_mnist": tvd.FashionMNIST}
_IDX_FOLDER = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}
_IDX_PREFIX = {"train": "train", "test": "t10k"}


class DatasetUnavailable(RuntimeError):
    """A downloadable dataset is not on disk and cannot be downloaded now."""


def load_idx_set(name: str, split: str, root: Path | None = None) -> ImageSet:
    """MNIST or Fashion-MNIST as (N, 1, 28, 28) in [0, 1] with label ``class``."""
    cls = _IDX[name]
    raw = Path(root or data_dir()) / _IDX_FOLDER[name] / "raw"
    prefix = _IDX_PREFIX[split]
    wanted = [(file, md5) for file, md5 in cls.resources if file.startswith(prefix)]
    for file, md5 in wanted:
        _ensure_idx_file(raw, file, md5, cls.mirrors, name)
    images = read_image_file(str(raw / wanted[0][0].removesuffix(".gz")))  # (N, 28, 28) uint8
    labels = read_label_file(str(raw / wanted[1][0].removesuffix(".gz")))  # (N,) int64
    return ImageSet(name, split, images[:, None].float() / 255, {"class": labels.long()}, {"class": list(cls.classes)})


def load_cifar10(split: str, root: Path | None = None) -> ImageSet:
    """CIFAR-10 as (N, 3, 32, 32) in [0, 1] with label ``class``."""
    root = Path(root or data_dir())
    folder = root / tvd.CIFAR10.base_folder
    if not folder.is_dir():
        _require_online("cifar10", [tvd.CIFAR10.url])
        download_and_extract_archive(tvd.CIFAR10.url, str(root), filename=tvd.CIFAR10.filename,
                                     md5=tvd.CIFAR10.tgz_md5)
    data = tvd.CIFAR10(str(root), train=split == "train", download=False)
    images = torch.from_numpy(data.data).permute(0, 3, 1, 2).float() / 255  # (N, 3, 32, 32)
    return ImageSet("cifar10", split, images, {"class": torch.tensor(data.targets)}, {"class": list(data.classes)})


def _ensure_idx_file(raw: Path, file: str, md5: str, mirrors: list[str], name: str) -> None:
    unpacked = raw / file.removesuffix(".gz")
    if unpacked.exists():
        return
    archive = raw / file
    if not archive.exists():
        mirror = _require_online(name, mirrors)
        download_and_extract_archive(mirror + file, str(raw), filename=file, md5=md5)
        return
    if not check_integrity(str(archive), md5):
        raise DatasetUnavailable(f"{archive} does not match the official MD5 {md5}; delete it and retry")
    with gzip.open(archive, "rb") as src, open(unpacked.with_suffix(".tmp"), "wb") as dst:
        shutil.copyfileobj(src, dst)
    unpacked.with_suffix(".tmp").replace(unpacked)


def _require_online(name: str, urls: list[str]) -> str:
    """The first URL whose host answers within PROBE_TIMEOUT_S, else a DatasetUnavailable that says what to do."""
    for url in urls:
        parsed = urlparse(url)
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            with socket.create_connection((parsed.hostname, port), timeout=PROBE_TIMEOUT_S):
                return url
        except OSError:
            continue
    raise DatasetUnavailable(
        f"{name} is not in {data_dir()} and cannot be downloaded: no answer from "
        f"{', '.join(urlparse(u).hostname or u for u in urls)} (offline?). "
        f"Run once with network access to cache it in data/, or use an offline set: {', '.join(OFFLINE_SETS)}.")
