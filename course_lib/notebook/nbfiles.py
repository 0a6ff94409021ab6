"""Notebook files: read one (with a clear error for a broken file) and write its canonical text."""
from __future__ import annotations

import json
from pathlib import Path

import nbformat


def dumps(nb: nbformat.NotebookNode) -> str:
    """The canonical text of a notebook (what is written to disk)."""
    return json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def read(path: Path) -> nbformat.NotebookNode:
    try:
        return nbformat.read(str(path), as_version=4)
    except Exception as error:  # noqa: BLE001
        raise ValueError(f"{path} is not a readable notebook: {error}") from None
