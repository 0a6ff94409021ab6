"""Checkpoints: one file holds a model's weights, how to rebuild it, and where it came from.

A file is a plain dict that ``torch.load(..., weights_only=True)`` can read (no pickled code runs on
load): ``format``, ``version``, ``model`` (the class as ``module:Name`` and its config as a dict),
``state_dict``, ``metadata`` (preset, data, steps, seed, test metrics, code version ...) and, for a
run that can be resumed, ``train_state`` (optimizer, step, data order, random states).

Writes are atomic: the file is written next to its destination and moved over it with ``os.replace``,
so an interrupted write never leaves half a checkpoint behind. Notebooks load shipped checkpoints
through ``course_lib.notebook.live.shipped_or_live``.

The contract a model class keeps to be saved and loaded (every course_lib model keeps it):

1. it lives in ``course_lib`` and is built as ``Class(config)`` from one config dataclass, stored as
   ``model.config`` and named by the type annotation of ``__init__``'s ``config`` argument;
2. the config is plain data (ints, floats, strings, bools, tuples, None). Then the generic path
   rebuilds it (:func:`config_from_dict`: unknown fields raise, missing ones take their defaults). A
   config that nests other dataclasses (the tokenizer's) gives its module ``config_to_dict`` and
   ``config_from_dict`` functions, which :func:`describe_model` and :func:`build_model` use instead;
3. everything the model needs at inference is in its ``state_dict`` (buffers included, such as the
   DiT's latent normalizer), so weights load with ``strict=True``;
4. a class that moves between modules is listed in ``MOVED_CLASSES`` so older files still load.
"""
from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import io
import pickle
import subprocess
import typing
import zipfile
from pathlib import Path

import torch
from torch import nn

from course_lib.engine.files import write_atomic
from course_lib.paths import CHECKPOINT_DIR, ROOT

FORMAT, VERSION = "course_lib.checkpoint", 1
PACKAGE = "image-tokenization-labs"
# model classes that moved when the library was grouped into folders: files written before still load
MOVED_CLASSES = {"course_lib.tokenizer:Tokenizer": "course_lib.tokenizers.tokenizer:Tokenizer"}


class CheckpointError(ValueError):
    """A file that is missing, corrupt, not ours, or not the model that was asked for."""


def code_version() -> dict:
    """The package version and, inside a git checkout, the short commit hash (``+dirty`` with local edits)."""
    try:
        package = importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        package = None
    return {"package": package, "git": _git_hash()}


def _git_hash() -> str | None:
    try:
        run = lambda *args: subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,  # noqa: E731
                                           timeout=5, check=True).stdout.strip()
        commit = run("rev-parse", "--short", "HEAD")
        return commit + ("+dirty" if run("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.SubprocessError):
        return None


# ----- model <-> (class, config dict) -----

def describe_model(model: nn.Module) -> dict:
    """``{"class": "module:Name", "config": dict}``: enough to rebuild the model before loading weights.

    The model needs a ``config`` dataclass; its module's ``config_to_dict`` is used when it has one.
    """
    config = getattr(model, "config", None)
    if not dataclasses.is_dataclass(config):
        raise CheckpointError(f"cannot describe {type(model).__name__}: checkpoints need a model with a "
                              f"`config` dataclass (like every course_lib model) to rebuild it on load")
    module = importlib.import_module(type(model).__module__)
    to_dict = getattr(module, "config_to_dict", dataclasses.asdict)
    return {"class": f"{type(model).__module__}:{type(model).__qualname__}", "config": to_dict(config)}


def build_model(spec: dict) -> nn.Module:
    """Inverse of :func:`describe_model`: only classes inside ``course_lib`` are rebuilt."""
    module_name, _, class_name = MOVED_CLASSES.get(str(spec.get("class", "")), str(spec.get("class", ""))).partition(":")
    if module_name.split(".")[0] != "course_lib" or not class_name:
        raise CheckpointError(f"checkpoint names model class {spec.get('class')!r}; only course_lib "
                              f"classes (course_lib.module:Name) are rebuilt")
    try:
        module = importlib.import_module(module_name)
        cls = getattr(module, class_name)
    except (ImportError, AttributeError) as error:
        raise CheckpointError(f"model class {spec['class']!r} is not in this version of course_lib: {error}") from None
    from_dict = getattr(module, "config_from_dict", None)
    try:
        config = from_dict(spec["config"]) if from_dict else config_from_dict(_config_class(cls), spec["config"])
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"the checkpoint's {class_name} config does not fit this course_lib: {error}") from None
    return cls(config)


def config_from_dict(cls: type, data: dict, family: str | None = None):
    """``cls(**data)`` for a config dataclass; unknown fields raise with the known ones."""
    if not isinstance(data, dict):
        raise ValueError(f"expected a dict for the {family or cls.__name__} config, got {type(data).__name__}")
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValueError(f"unknown {family or cls.__name__} config fields {unknown}; known: {known}")
    return cls(**data)


def _config_class(cls: type) -> type:
    try:
        annotation = typing.get_type_hints(cls.__init__).get("config")
    except (NameError, TypeError):
        annotation = None
    if not (isinstance(annotation, type) and dataclasses.is_dataclass(annotation)):
        raise CheckpointError(f"{cls.__name__} has no config_from_dict in its module and no config dataclass "
                              f"annotating __init__'s config argument")
    return annotation


# ----- save / load -----

def save_checkpoint(path: str | Path, model: nn.Module, metadata: dict | None = None,
                    train_state: dict | None = None) -> Path:
    """Write model weights + how to rebuild it + metadata atomically; ``code_version`` is added."""
    payload = {"format": FORMAT, "version": VERSION, "model": describe_model(model),
               "state_dict": model.state_dict(),
               "metadata": plain_data({**(metadata or {}), "code_version": code_version()}, "metadata")}
    if train_state is not None:
        payload["train_state"] = train_state
    return atomic_save(payload, path)


def plain_data(value, where: str = "value"):
    """``value`` as what ``weights_only`` loading accepts: dicts, lists, tuples, str, numbers, bool, None,
    tensors. str / int / float subclasses (``torch.__version__``, numpy scalars) become the plain type."""
    if value is None or isinstance(value, (bool, torch.Tensor)):
        return value
    for plain in (str, int, float):
        if isinstance(value, plain):
            return plain(value)
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # numpy scalar
        return value.item()
    if isinstance(value, dict):
        return {plain_data(k, where): plain_data(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [plain_data(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if isinstance(value, tuple) else items
    raise CheckpointError(f"{where} holds a {type(value).__name__}; checkpoints keep plain data only "
                          f"(dict, list, tuple, str, int, float, bool, None, tensors)")


def atomic_save(payload: dict, path: str | Path) -> Path:
    """``torch.save`` into memory, then :func:`write_atomic` to ``path``."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return write_atomic(path, buffer.getvalue())


def find_checkpoint(name_or_path: str | Path, folder: Path = CHECKPOINT_DIR) -> Path | None:
    """A checkpoint's name (``vq-f4-shapes``, looked up in ``folder``) or a path to a ``.pt`` file -> the path,
    or None where there is no such file."""
    path = Path(name_or_path)
    path = path if path.suffix == ".pt" else Path(folder) / f"{name_or_path}.pt"
    return path if path.is_file() else None


def resolve_checkpoint(name_or_path: str | Path) -> Path:
    """A shipped checkpoint's name (``vq-f4-shapes``) or a path to a ``.pt`` file -> the path, or a CheckpointError."""
    found = find_checkpoint(name_or_path)
    if found is None and Path(name_or_path).suffix == ".pt":
        raise CheckpointError(f"no checkpoint at {name_or_path}")
    if found is None:
        known = sorted(p.stem for p in CHECKPOINT_DIR.glob("*.pt"))
        raise CheckpointError(f"{str(name_or_path)!r} is neither a .pt file nor a shipped checkpoint; shipped: {known}")
    return found


def shipped_name(path: str | Path) -> str:
    """How metadata names a checkpoint: its shipped name when it lies in ``data/checkpoints``, else its path."""
    path = Path(path)
    return path.stem if path.parent.resolve() == CHECKPOINT_DIR.resolve() else str(path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read and validate a checkpoint file with ``weights_only=True``; clear errors for bad files."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, OSError, KeyError, ValueError,
            TypeError, AttributeError, IndexError, UnicodeDecodeError) as error:
        # torch's own message advises weights_only=False: wrong for a file that is simply not a checkpoint
        raise CheckpointError(f"{path} is not a readable checkpoint of course_lib (truncated, corrupt, or another kind "
                              f"of file; {type(error).__name__} while reading it)") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a course_lib checkpoint (no format={FORMAT!r} entry)")
    if payload.get("version") != VERSION:
        raise CheckpointError(f"{path} has checkpoint version {payload.get('version')!r}; this course_lib "
                              f"reads version {VERSION}")
    return payload


def read_metadata(path: str | Path) -> dict:
    """The metadata dict of a checkpoint (preset, data, steps, seed, test metrics, code version ...)."""
    return load_checkpoint(path)["metadata"]


def restore_model(payload: dict, model: nn.Module | None = None, where: str = "checkpoint") -> nn.Module:
    """Load ``payload``'s weights into ``model`` (default: one rebuilt from the payload's spec)."""
    model = build_model(payload["model"]) if model is None else model
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as error:
        raise CheckpointError(f"{where} does not match the model {type(model).__name__}: "
                              f"{str(error).splitlines()[0]} ...") from None
    return model


def load_model(path: str | Path, device: str | torch.device | None = None,
               expect: dict | None = None) -> nn.Module:
    """Rebuild the model saved at ``path``, in eval mode on ``device`` (default cpu).

    ``expect`` ({"preset": "vq-f4", ...}) must match the file's metadata, so a notebook never runs on
    a checkpoint of the wrong model by accident.
    """
    payload = load_checkpoint(path)
    check_metadata(payload["metadata"], expect or {}, path)
    return restore_model(payload, where=str(path)).to(device or "cpu").eval()


def check_metadata(metadata: dict, expect: dict, path: str | Path) -> None:
    wrong = {k: (metadata.get(k), v) for k, v in expect.items() if metadata.get(k) != v}
    if wrong:
        details = ", ".join(f"{k}: file has {got!r}, expected {want!r}" for k, (got, want) in wrong.items())
        raise CheckpointError(f"{path} holds a different model ({details}); delete it to retrain")


def update_metadata(path: str | Path, **entries) -> dict:
    """Add or replace metadata entries of the checkpoint at ``path`` (atomically); returns the metadata."""
    payload = load_checkpoint(path)
    payload["metadata"].update(plain_data(entries, "metadata"))
    atomic_save(payload, path)
    return payload["metadata"]


def export_weights(source: str | Path, destination: str | Path) -> Path:
    """Copy a finished run without its training state (optimizer, data order): the small file to ship."""
    payload = load_checkpoint(source)
    if not payload["metadata"].get("complete", True):
        raise CheckpointError(f"{source} is an unfinished run (step {payload['metadata'].get('steps')}); "
                              f"finish it before exporting")
    payload.pop("train_state", None)
    return atomic_save(payload, destination)
