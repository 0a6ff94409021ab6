"""Where the course keeps its files: the repository root, shipped checkpoints, training runs, downloads."""
from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT_DIR = ROOT / "data" / "checkpoints"  # shipped, small, in git
RUN_DIR = ROOT / "data" / "runs"  # resumable training runs of `make checkpoints` (git-ignored)
DATA_ENV = "COURSE_DATA_DIR"


def data_dir() -> Path:
    """Where downloads are cached: ``$COURSE_DATA_DIR`` or the repository's ``data/``."""
    return Path(os.environ.get(DATA_ENV) or ROOT / "data")
