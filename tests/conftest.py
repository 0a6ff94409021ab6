"""Test-wide settings: quick mode, one thread per process, private config dirs (set before any notebook
kernel starts), and the report of every check the notebooks ran, read once all of them have run.

``make test`` runs the suite in two processes (pytest-xdist: ``-n 2 --dist loadgroup
--no-loadscope-reorder``). Each notebook's cells carry one ``xdist_group`` so that a notebook runs in one
kernel on one worker, from its first cell to its last; so do the tests of a module with a module-scoped
fixture. Those modules go first, then the notebooks, then the other tests one by one. The controller sets the
environment below before it starts the workers, so the workers and every kernel share the config dirs and the
results file, and each of them runs torch on one thread (two processes on two cores).
"""
import json
import os
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_MNIST = ROOT.parent / "shared" / "data" / "mnist"
RESULTS_ENV = "COURSE_RESULTS_FILE"
EXPECTED_STATUS = {"solutions": "pass", "notebooks": "not implemented"}  # per notebook folder

os.environ["COURSE_QUICK"] = "1"
for _threads in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # read by torch when it starts, in kernels too
    os.environ.setdefault(_threads, "1")
_CONFIG_DIRS = [("JUPYTER_CONFIG_DIR", "jupyter"), ("JUPYTER_DATA_DIR", "jupyter-data"),
                ("JUPYTER_RUNTIME_DIR", "jupyter-runtime"), ("IPYTHONDIR", "ipython"), ("MPLCONFIGDIR", "matplotlib")]
_IS_WORKER = "PYTEST_XDIST_WORKER" in os.environ  # a worker inherits the controller's settings below
if not _IS_WORKER:
    _sandbox = Path(tempfile.mkdtemp(prefix="course-tests-"))
    for _name, _sub in _CONFIG_DIRS:
        os.environ.setdefault(_name, str(_sandbox / _sub))
    os.environ.setdefault("JUPYTER_PLATFORM_DIRS", "1")
    # every check in every notebook kernel appends a line here; read at the end of the session
    os.environ[RESULTS_ENV] = str(_sandbox / "check-results.jsonl")


_NOTEBOOKS: set[str] = set()  # the notebooks this session runs, whose checks the report at the end reads


def _notebook_of(nodeid: str) -> str | None:
    """``solutions/01_x.ipynb`` for a cell of that notebook (nbval's ``solutions/01_x.ipynb::Cell 3``), else None."""
    path = nodeid.split("::")[0]
    return path if path.endswith(".ipynb") else None


def pytest_configure(config):
    config.addinivalue_line("markers", "xdist_group(name): run these tests on one worker under --dist loadgroup")


def _shares_a_fixture(item) -> bool:
    """Does the test use a fixture built once for its module (or class), such as a grading or training run?"""
    definitions = getattr(item, "_fixtureinfo", None)
    definitions = definitions.name2fixturedefs.values() if definitions else []
    return any(defs and defs[-1].scope in ("module", "class", "package") for defs in definitions)


@pytest.hookimpl(tryfirst=True)  # before xdist's worker reads the groups (--dist loadgroup)
def pytest_collection_modifyitems(session, config, items):
    """xdist groups: one per notebook (its cells share a kernel, in order), and one per test module with a
    module-scoped fixture: the fixture is built once, not once per worker, and the module's tests never run
    beside each other (tests/test_grade.py looks for any live sandbox process after its grading run). The
    other tests are handed out one by one."""
    sharing = {item.nodeid.split("::")[0] for item in items if _shares_a_fixture(item)}
    for item in items:
        module = item.nodeid.split("::")[0]
        if (module.endswith(".ipynb") or module in sharing) and not any(item.iter_markers("xdist_group")):
            item.add_marker(pytest.mark.xdist_group(module.replace("/", "-")))
    # the order xdist hands them out in (make test passes --no-loadscope-reorder): the modules with a shared
    # fixture first (a grading run, training runs: the longest units), then the notebooks, then the rest
    items.sort(key=lambda item: 0 if item.nodeid.split("::")[0] in sharing else 1 if _notebook_of(item.nodeid) else 2)
    if not _IS_WORKER:
        _NOTEBOOKS.update(filter(None, (_notebook_of(item.nodeid) for item in items)))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node, ids):
    """Under xdist the controller collects nothing itself: it learns the notebooks from a worker's list."""
    _NOTEBOOKS.update(filter(None, map(_notebook_of, ids)))


def check_report_problems(notebooks, lines: list[str], exercises_of) -> list[str]:
    """What went wrong in the notebooks' check reports: every exercise of a notebook that ran must report
    once, 'pass' in solutions/ and 'not implemented' in notebooks/. ``notebooks`` are paths like
    ``solutions/01_x.ipynb``, ``lines`` the JSON lines of the results file, ``exercises_of(lesson)`` the
    exercise names of a lesson."""
    reported = {}
    for line in lines:
        record = json.loads(line)
        reported.setdefault((Path(record["folder"]).name, record["exercise"]), []).append(record["status"])
    problems = []
    for notebook in sorted(notebooks):
        path = Path(notebook)
        folder = path.parent.name
        if folder not in EXPECTED_STATUS:
            continue
        for name in exercises_of(path.stem):
            statuses = reported.get((folder, name))
            if statuses != [EXPECTED_STATUS[folder]]:
                problems.append(f"{folder}/{path.name}: {name} reported {statuses}, expected "
                                f"[{EXPECTED_STATUS[folder]!r}]")
    return problems


def _exercise_names(lesson: str) -> list[str]:
    from course_lib.notebook.checks import exercises
    try:
        return [exercise.name for exercise in exercises(lesson)]
    except ValueError:  # a lesson without exercises
        return []


def pytest_sessionfinish(session, exitstatus):
    """Once every notebook has run (in the controller under xdist): did each check report as expected?"""
    if _IS_WORKER or not _NOTEBOOKS:
        return
    results = Path(os.environ[RESULTS_ENV])
    lines = results.read_text(encoding="utf-8").splitlines() if results.exists() else []
    session.config.course_check_problems = check_report_problems(_NOTEBOOKS, lines, _exercise_names)
    if session.config.course_check_problems and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    problems = getattr(config, "course_check_problems", None)
    if problems is None:
        return
    if problems:
        terminalreporter.write_sep("=", "notebook checks reported wrongly", red=True)
        for problem in problems:
            terminalreporter.write_line(problem)
    else:
        terminalreporter.write_line(f"notebook checks: all reported as expected in "
                                    f"{len(_NOTEBOOKS)} notebook{'s' * (len(_NOTEBOOKS) != 1)}")


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
