"""One submission in its own operating-system sandbox, built with bubblewrap.

bubblewrap (``bwrap``, https://github.com/containers/bubblewrap; Debian's ``bubblewrap`` package)
puts a process in new mount, pid, ipc, uts and network namespaces without a daemon. Inside, the
submission sees only:

- the Python environment and the system libraries, read-only;
- ``/course/course_lib``: a copy of course_lib in which the references of the graded exercises
  are stubs (:func:`stubbed_copy`), and ``/course/data`` read-only (shipped checkpoints);
- ``/submission``: its own copy of the notebook, read-only; ``/grading``: the runner and the cases;
- ``/tmp``: an empty, size-capped tmpfs, the only place it can write. Its results come back on its
  stdout, a pipe that the grader reads with a size cap: it writes no file outside itself.

No network, no other submission, no ``solutions/``, tests or ``.git``. Its processes die with it
(``--die-with-parent``, and the pid namespace ends with its first process); the runner drops root
to a user of its own and caps processes, memory and file size; the grader kills it at a deadline.
"""
from __future__ import annotations

import ast
import functools
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import course_lib

INSTALL_HINT = ("bubblewrap (bwrap) is missing: install it with `sudo apt-get install bubblewrap` "
                "(or `make bwrap`), or pass --no-sandbox to grade without isolation")
UID_BASE = 1_950_000  # the sandbox's own users: one per concurrent slot, so process caps do not mix
SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64")
ETC = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "passwd", "group", "nsswitch.conf",
       "alternatives", "fonts")
RUNNER = Path(__file__).with_name("runner.py")
ADAPTERS = Path(__file__).with_name("adapters.py")  # copied beside the runner
DATA_DIR = "/tmp/data"  # the sandbox's $COURSE_DATA_DIR (course_lib.paths.data_dir)


def bwrap() -> str | None:
    """The bwrap program, or None when it is not installed."""
    return shutil.which("bwrap")


# -- the course_lib copy without any implementation of a graded answer ---------------------------

# exercise -> the library functions that give its answer besides its reference: those the reference
# wraps, and identical functions of other lessons. Each is a stub in the copy as well; outside grading
# it runs the student's own function through the runner's adapter of that name ("absent": it never
# runs, its only callers being stubs too). tests/test_grade.py walks the references' call graphs and
# every library function on every exercise's cases, so a function missing here fails a test.
EQUIVALENTS: dict[str, list[tuple[str, str, str]]] = {
    "nearest_centroid": [("course_lib.tokenizers.vq", "nearest_code", "codes_from_centroids")],
    "nearest_code": [("course_lib.tokenizers.kmeans", "nearest_centroid", "same")],
    "psnr": [("course_lib.evaluation.metrics", "mse", "mse_from_psnr")],
    "fsq_quantize": [("course_lib.tokenizers.fsq", "round_ste", "absent")],
    "codes_to_indices": [("course_lib.tokenizers.fsq", "_basis", "absent")],
    "indices_to_codes": [("course_lib.tokenizers.fsq", "_basis", "absent")],
    "hinge_losses": [("course_lib.tokenizers.discriminator", "hinge_d_loss", "d_side"),
                     ("course_lib.tokenizers.discriminator", "hinge_g_loss", "g_side")],
    "adaptive_weight": [("course_lib.tokenizers.discriminator", "adaptive_weight", "clamped"),
                        ("course_lib.tokenizers.discriminator", "_grad_at", "absent")],
    "perceptual_distance": [("course_lib.tokenizers.perceptual", "unit_normalize", "absent")],
    "sample_step": [("course_lib.generators.sampling", "sample_step", "library_sample_step"),
                    ("course_lib.generators.sampling", "filter_logits", "absent")],
    "cfg_logits": [("course_lib.generators.flow", "cfg_velocity", "same")],
    "mask_count": [("course_lib.generators.mask_schedule", "masked_after", "masked_after")],
    "cfg_velocity": [("course_lib.generators.sampling", "cfg_logits", "same")],
}


# a reference whose library signature has more than the exercise's: the runner's adapter to the student's
REFERENCE_ADAPTERS = {"perceptual_distance": "unit_weights", "fsq_quantize": "default_eps"}


def stubbed_copy(exercises: list, target: Path) -> Path:
    """Copy course_lib to ``target/course_lib`` with each exercise's reference and equivalents as stubs.

    The reference is found through the registry (``__module__`` / ``__qualname__``), so the copy
    follows the library wherever its modules live. Returns the folder to put on ``PYTHONPATH``.
    """
    source = Path(course_lib.__file__).resolve().parent
    package = target / "course_lib"
    shutil.copytree(source, package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "grading"))
    by_file: dict[Path, dict[str, str]] = {}
    for exercise in exercises:
        adapter = REFERENCE_ADAPTERS.get(exercise.name)
        extra = f", adapter={adapter!r}" if adapter else ""
        stub = _STUB.format(name=exercise.name, function="{function}", extra=extra)
        by_file.setdefault(_copied_file(exercise.reference.__module__, source, package), {})[
            exercise.reference.__qualname__] = stub
        for module, qualname, adapter in EQUIVALENTS.get(exercise.name, []):
            extra = f", adapter={adapter!r}, own={f'{module}.{qualname}'!r}"
            by_file.setdefault(_copied_file(module, source, package), {}).setdefault(
                qualname, _STUB.format(name=exercise.name, function="{function}", extra=extra))
    for path, stubs in by_file.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for qualname, stub in stubs.items():
            _replace(tree, qualname, stub)
        path.write_text(ast.unparse(ast.fix_missing_locations(tree)) + "\n", encoding="utf-8")
    return target


def _copied_file(module: str, source: Path, package: Path) -> Path:
    spec = importlib.util.find_spec(module)
    origin = Path(spec.origin).resolve() if spec and spec.origin else None
    if origin is None or source not in origin.parents:
        raise ValueError(f"expected the reference module {module} to live in {source}, found it in {origin}")
    return package / origin.relative_to(source)


_STUB = '''
def {function}(*args, **kwargs):
    """Absent while grading: the course_lib reference of exercise `{name}`."""
    import sys
    runner = sys.modules.get("_course_grading_runner")
    if runner is None:
        raise RuntimeError("the course_lib reference of exercise `{name}` is absent while grading")
    return runner.absent_reference({name!r}, args, kwargs{extra})
'''


def _replace(tree: ast.Module, qualname: str, stub_text: str) -> None:
    """Swap the definition at ``qualname`` (``f`` or ``Class.f``) for the stub, in place."""
    body, parts = tree.body, qualname.split(".")
    for depth, part in enumerate(parts):
        found = [i for i, node in enumerate(body) if getattr(node, "name", None) == part
                 and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
        if not found or "<locals>" in parts:
            raise ValueError(f"expected a module-level definition of {qualname}, found none named {part!r}")
        if depth == len(parts) - 1:
            stub = ast.parse(stub_text.replace("{function}", part)).body[0]
            body[found[-1]] = stub
            return
        body = body[found[-1]].body


# -- the folders and the command of one sandbox --------------------------------------------------

@dataclass
class Box:
    """The host folders of one submission's sandbox, inside the grader's private temporary folder."""

    folder: Path
    course: Path  # the folder that holds the stubbed course_lib

    def __post_init__(self) -> None:
        for sub in ("grading", "submission", "tmp"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)

    def path(self, name: str) -> Path:
        return self.folder / name


@dataclass
class Finished:
    """How a run ended: exit code (None: killed at the deadline), seconds, and what it sent back."""

    code: int | None
    seconds: float
    stream: bytes
    overflow: bool = False  # it sent more than the cap: stopped there
    problem: str = ""  # what went wrong reading it back, if anything


def command(box: Box, uid: int | None, tmp_mb: int) -> list[str]:
    """The bwrap command line that runs the runner in ``box``."""
    binds = [("--ro-bind", str(box.course / "course_lib"), "/course/course_lib"),
             ("--ro-bind", str(box.path("grading")), "/grading"),
             ("--ro-bind", str(box.path("submission")), "/submission")]
    data = Path(course_lib.__file__).resolve().parent.parent / "data"
    if data.is_dir():
        binds.append(("--ro-bind", str(data), "/course/data"))
        # $COURSE_DATA_DIR in /tmp: downloads read-only, the token and latent caches writable beside
        # the cached files that exist (one file each), so a notebook that caches runs to its end
        for entry in sorted(data.iterdir()):
            if entry.name != "tokens":
                binds.append(("--ro-bind", str(entry), f"{DATA_DIR}/{entry.name}"))
        binds += [("--ro-bind", str(f), f"{DATA_DIR}/tokens/{f.name}") for f in sorted(data.glob("tokens/*.pt"))]
    args = [bwrap(), "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try",
            "--die-with-parent", "--new-session", "--clearenv", "--cap-drop", "ALL"]
    if uid is not None:  # root starts it: keep only what the runner needs to drop to its own user
        args += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:
        args += ["--unshare-user"]
    for path in SYSTEM:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    args += [a for name in ETC for a in ("--ro-bind-try", f"/etc/{name}", f"/etc/{name}")]
    # /tmp before the environment: a venv that lives under /tmp (a fresh clone there) is mounted on top
    size = ["--size", str(tmp_mb << 20)] if _has_option("--size") else []  # bubblewrap 0.7 and later
    args += ["--proc", "/proc", "--dev", "/dev", *size, "--perms", "1777", "--tmpfs", "/tmp",
             "--perms", "0755", "--dir", DATA_DIR, "--perms", "1777", "--dir", f"{DATA_DIR}/tokens"]
    for path in _python_dirs():
        args += _dirs_to(path) + ["--ro-bind", path, path]
    for kind, source, target in binds:
        args += _dirs_to(target) + [kind, source, target]
    args += ["--remount-ro", "/", "--chdir", "/tmp"]
    for key, value in environment("/tmp", "/course").items():
        args += ["--setenv", key, value]
    return args + [sys.executable, "-s", "-B", "/grading/runner.py", "/grading/job.json"]


@functools.lru_cache(maxsize=None)
def _has_option(option: str) -> bool:
    return option in subprocess.run([bwrap(), "--help"], capture_output=True, text=True).stdout


def _python_dirs() -> list[str]:
    """The environment's folders outside the system ones, outermost first, without repeats."""
    dirs = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix)}
    dirs |= {os.path.abspath(p) for p in (sys.prefix,)}  # a venv reached through a symlink
    dirs = {d for d in dirs if not any(d == s or d.startswith(s + "/") for s in SYSTEM)}
    return sorted(d for d in dirs if not any(d.startswith(o + "/") for o in dirs))


def _dirs_to(path: str) -> list[str]:
    """Create the parents of a mount point world-traversable (bwrap makes them private)."""
    parts, args = Path(path).parts[1:-1], []
    for i in range(len(parts)):
        args += ["--perms", "0755", "--dir", "/" + "/".join(parts[: i + 1])]
    return args


def environment(home: str, course: str) -> dict[str, str]:
    """The whole environment of the notebook: quick mode, one thread, every config folder in ``home``."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": home, "TMPDIR": home,
           "PYTHONPATH": course, "COURSE_QUICK": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1", "MPLBACKEND": "agg", "JUPYTER_PLATFORM_DIRS": "1",
           "COURSE_DATA_DIR": f"{home}/data"}
    for key, sub in (("MPLCONFIGDIR", "mpl"), ("IPYTHONDIR", "ipython"), ("XDG_CACHE_HOME", "cache"),
                     ("JUPYTER_CONFIG_DIR", "jupyter"), ("JUPYTER_DATA_DIR", "jupyter-data"),
                     ("JUPYTER_RUNTIME_DIR", "jupyter-runtime")):
        env[key] = f"{home}/{sub}"
    return env


def unsandboxed_command(box: Box) -> tuple[list[str], dict[str, str]]:
    """The same run without isolation (``--no-sandbox``): host paths, the grader's own user."""
    env = environment(str(box.path("tmp")), str(box.course))
    del env["COURSE_DATA_DIR"]  # the checkout's own data/, as the notebooks see it
    grading = box.path("grading")
    return [sys.executable, "-s", "-B", str(grading / "runner.py"), str(grading / "job.json")], env


def run(args: list[str], box: Box, timeout: float, env: dict | None = None, cap: int = 32_000_000) -> Finished:
    """Run to the end or to ``timeout``, reading at most ``cap`` bytes of what it sends back."""
    started, chunks = time.monotonic(), []
    with open(box.path("log.txt"), "wb") as log:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log, env=env or {},
                                cwd=box.path("tmp"), start_new_session=True)
        reader = threading.Thread(target=_read, args=(proc, chunks, cap), daemon=True)
        reader.start()
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            _kill_group(proc.pid)
            proc.wait()
        reader.join(5.0)  # in the sandbox nothing outlives the run; without it an orphan may hold the pipe
    stream = b"".join(chunks)
    return Finished(code, time.monotonic() - started, stream[:cap], overflow=len(stream) > cap)


def _read(proc: subprocess.Popen, chunks: list, cap: int) -> None:
    size = 0
    while size <= cap:
        chunk = proc.stdout.read1(1 << 16)
        if not chunk:
            return
        chunks.append(chunk)
        size += len(chunk)
    _kill_group(proc.pid)  # over the cap: stop it


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # already gone


def font_caches() -> list[Path]:
    """matplotlib's font list from the grader's own cache: a fresh one takes seconds to build."""
    import matplotlib
    from matplotlib import font_manager  # noqa: F401  (builds the cache once)

    return sorted(Path(matplotlib.get_cachedir()).glob("fontlist-*.json"))
