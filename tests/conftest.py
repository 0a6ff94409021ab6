"""Test-wide settings: quick mode and private config dirs, set before any notebook kernel starts."""
import os
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_MNIST = ROOT.parent / "shared" / "data" / "mnist"

os.environ["COURSE_QUICK"] = "1"
_sandbox = Path(tempfile.mkdtemp(prefix="course-tests-"))
for name, sub in [("JUPYTER_CONFIG_DIR", "jupyter"), ("JUPYTER_DATA_DIR", "jupyter-data"),
                  ("JUPYTER_RUNTIME_DIR", "jupyter-runtime"), ("IPYTHONDIR", "ipython"),
                  ("MPLCONFIGDIR", "matplotlib")]:
    os.environ.setdefault(name, str(_sandbox / sub))
os.environ.setdefault("JUPYTER_PLATFORM_DIRS", "1")


@pytest.fixture
def root() -> Path:
    return ROOT
