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
# every check in every notebook kernel reports here; tests/test_notebooks.py reads it at the end
os.environ["COURSE_RESULTS_FILE"] = str(_sandbox / "check-results.jsonl")


def pytest_collection_modifyitems(session, config, items):
    """Run the notebook-report test after the notebooks it reads about."""
    last = [item for item in items if item.name == "test_checks_reported_as_expected"]
    items[:] = [item for item in items if item not in last] + last
    config.course_notebooks = {Path(str(item.fspath)) for item in items if str(item.fspath).endswith(".ipynb")}


@pytest.fixture
def one_thread():
    """Run a test on one torch thread: on tiny tensors a second thread only adds synchronisation."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def root() -> Path:
    return ROOT
