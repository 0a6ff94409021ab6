"""Running a student's code where it can only hurt its own grade.

Two kinds of untrusted process use this module: the Jupyter kernel that runs a whole submission
(:func:`run_notebook`; the guard comes from an IPython startup file) and the grading child of
:mod:`course_lib.grading.exercise_runner`. In both:

- an audit hook (PEP 578, https://peps.python.org/pep-0578/; it cannot be removed once added) refuses
  to read the course's own files (solutions/, notebooks/, tests/, .git/; only course_lib/ and data/
  stay readable), to write or delete outside the sandbox folder, to start programs, and to signal
  other processes, and reports every refusal;
- resource limits cap memory and file size.

This stops honest mistakes and naive cheating; it is not a security boundary against ctypes or
native code (grade untrusted classes inside a container or as a separate user as well).
"""
from __future__ import annotations

import asyncio
import functools
import json
import os
import resource
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # the kernel imports this module at start-up: keep that light
    import nbformat

COURSE = Path(__file__).resolve().parent.parent
SANDBOX_ENV, REPORT_ENV, PRIVATE_ENV = "COURSE_SANDBOX", "COURSE_SANDBOX_REPORT", "COURSE_SANDBOX_PRIVATE"
STUDENT_FILE_PREFIX = "<submission"
_READABLE = ("course_lib", "data")  # inside the course checkout, only these folders stay readable
# programs that libraries start on their own (ctypes.util.find_library runs ldconfig when torch loads)
SAFE_PROGRAMS = frozenset({"ldconfig", "fc-list", "fc-match", "nvidia-smi", "uname"})
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
_CHANGES = {"os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.symlink", "os.link", "os.truncate",
            "os.chmod", "os.chown", "os.utime", "shutil.rmtree", "os.replace"}
_SPAWNS = {"subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "pty.spawn"}
_LISTS = {"os.listdir", "os.scandir", "glob.glob"}
_WATCHED = frozenset({"open", "os.kill", "os.killpg"} | _CHANGES | _SPAWNS | _LISTS)


class Guard:
    """The audit hook: allow, or report and raise PermissionError."""

    def __init__(self, root: Path, report: Callable[[dict], None], private: Path | None = None):
        self.root = os.path.realpath(root)
        self.private = os.path.realpath(private) if private else None  # the grading run's other folders
        self.report = report
        checkout = any((COURSE / marker).exists() for marker in ("solutions", "pyproject.toml", ".git"))
        self.course = str(COURSE) if checkout else None  # an installed course_lib has no answer key beside it
        self.readable = [os.path.join(str(COURSE), name) for name in _READABLE] + [sys.prefix, sys.base_prefix]

    def __call__(self, event: str, args: tuple) -> None:
        if event not in _WATCHED:
            return
        if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
            self._check_read(args[0])
            if (args[2] or 0) & _WRITE_FLAGS:
                self._check_write(args[0])
        elif event in _LISTS and isinstance(args[0], (str, bytes, os.PathLike)):
            self._check_read(_literal_prefix(os.fsdecode(args[0])))
        elif event in _CHANGES:
            for path in args:
                if isinstance(path, (str, bytes, os.PathLike)):
                    self._check_write(path)
        elif event in _SPAWNS and _program(event, args) not in SAFE_PROGRAMS:
            self._deny("spawn", f"starting other programs is not allowed ({_program(event, args) or event})")
        elif event == "os.killpg" or (event == "os.kill" and args[0] != os.getpid()):
            self._deny("signal", f"signalling other processes is not allowed ({event})")  # no pid: reruns match

    def _check_read(self, path: Any) -> None:
        full = _real(path)
        if not os.path.lexists(full):
            return  # nothing to leak (libraries probe many paths that do not exist)
        if self.course and _inside(full, self.course) and not self._course_readable(full):
            shown = os.path.relpath(full, self.course)
            self._deny("read", f"reading the course's own files is not allowed ({shown})")
        if self.private and _inside(full, self.private) and not _inside(full, self.root):
            self._deny("private", "reading other submissions' grading files is not allowed")

    def _course_readable(self, full: str) -> bool:
        if _inside(full, self.root) or any(_inside(full, ok) for ok in self.readable):
            return True
        relative = os.path.relpath(full, self.course)
        top = relative.split(os.sep)[0]
        # the checkout itself, its top-level files and package metadata say nothing about the answers
        return relative == "." or top.endswith(".egg-info") or (top == relative and os.path.isfile(full))

    def _check_write(self, path: Any) -> None:
        full = _real(path)
        if not _inside(full, self.root) and not full.startswith("/dev/"):
            self._deny("write", f"writing outside the submission folder is not allowed ({os.fsdecode(path)})")

    def _deny(self, kind: str, message: str) -> None:
        self.report({"violation": kind, "message": message})
        raise PermissionError(f"course grader sandbox: {message}")


def _program(event: str, args: tuple) -> str:
    """The program a spawn event starts ('' when it cannot be told, as for a shell command line)."""
    if event == "subprocess.Popen":
        executable, argv = args[0], args[1]
        first = executable or (argv[0] if isinstance(argv, (list, tuple)) and argv else "")
    elif event in ("os.exec", "os.posix_spawn"):
        first = args[0]
    elif event == "os.spawn":
        first = args[1]
    else:
        return ""
    return os.path.basename(os.fsdecode(first)) if isinstance(first, (str, bytes, os.PathLike)) else ""


def _literal_prefix(pattern: str) -> str:
    """The folder a glob pattern looks in: everything before its first wildcard."""
    cut = min((pattern.find(c) for c in "*?[" if c in pattern), default=-1)
    return pattern if cut < 0 else os.path.dirname(pattern[:cut]) or "."


def _real(path: Any) -> str:
    return os.path.realpath(os.fsdecode(path))


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def install(root: Path, report: Callable[[dict], None], memory_mb: int, private: Path | None = None,
            file_mb: int = 64) -> Guard:
    """Cap memory and file size, then add the audit hook (for the rest of this process's life)."""
    for limit, value in ((resource.RLIMIT_DATA, memory_mb << 20), (resource.RLIMIT_FSIZE, file_mb << 20),
                         (resource.RLIMIT_CORE, 0)):
        hard = resource.getrlimit(limit)[1]
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)  # never above the system's cap
        resource.setrlimit(limit, (value, value))
    guard = Guard(root, report, private)
    sys.addaudithook(guard)
    return guard


def install_from_env() -> None:
    """For a kernel's IPython startup file: sandbox root and report file come from the environment."""
    fd = os.open(os.environ[REPORT_ENV], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    memory = int(os.environ.get("COURSE_SANDBOX_MEMORY_MB", "4096"))
    private = os.environ.get(PRIVATE_ENV)
    install(Path(os.environ[SANDBOX_ENV]), lambda msg: send_line(fd, msg), memory, Path(private) if private else None)


def send_line(fd: int, message: dict, payload: bytes = b"") -> None:
    try:
        os.write(fd, json.dumps(message).encode() + b"\n" + payload)
    except OSError:
        pass  # a closed channel only loses this process's own reports


@dataclass
class Limits:
    """Time and memory limits of the untrusted processes of one grading run, and its private folder."""

    private: Path  # the grading run's temporary folder: no student process may read the others' parts
    exercise_s: float = 30.0
    notebook_s: float = 300.0
    cell_s: float = 120.0
    setup_s: float = 120.0
    memory_mb: int = 4096
    max_output_bytes: int = 50_000_000


# -- the environment of a sandboxed process -------------------------------------------------------

def sandbox_env(home: Path, memory_mb: int) -> dict[str, str]:
    """A small environment for an untrusted process: quick mode, every cache and config dir in ``home``."""
    env = {k: os.environ[k] for k in ("PATH", "LANG", "LC_ALL") if k in os.environ}
    dirs = {"HOME": "", "TMPDIR": "tmp", "MPLCONFIGDIR": "mpl", "IPYTHONDIR": "ipython", "XDG_CACHE_HOME": "cache",
            "JUPYTER_CONFIG_DIR": "jupyter/config", "JUPYTER_DATA_DIR": "jupyter/data",
            "JUPYTER_RUNTIME_DIR": "jupyter/runtime"}
    for key, sub in dirs.items():
        (home / sub).mkdir(parents=True, exist_ok=True)
        env[key] = str(home / sub)
    for cache in _font_caches():  # a fresh matplotlib would spend seconds rebuilding its font list
        (home / "mpl" / cache.name).write_bytes(cache.read_bytes())
    paths = ([str(COURSE)] if _needs_course_on_path() else []) + [
        p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env.update(JUPYTER_PLATFORM_DIRS="1", COURSE_QUICK="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONHASHSEED="0", PYTHONDONTWRITEBYTECODE="1", PYTHONPATH=os.pathsep.join(paths),
               COURSE_SANDBOX_MEMORY_MB=str(memory_mb), MPLBACKEND="agg")
    return env


@functools.lru_cache(maxsize=None)
def _needs_course_on_path() -> bool:
    """True when course_lib is importable only from the current folder (not installed, not editable)."""
    probe = [sys.executable, "-c", "import course_lib"]
    return subprocess.run(probe, cwd="/", env={"PATH": os.environ.get("PATH", "")}, capture_output=True).returncode != 0


def _font_caches() -> list[Path]:
    import matplotlib
    from matplotlib import font_manager  # noqa: F401  (builds the cache once, in the grader's own config)

    return sorted(Path(matplotlib.get_cachedir()).glob("fontlist-*.json"))


# -- a whole notebook in a guarded kernel -------------------------------------------------------------

STARTUP = "import course_lib.grading.sandbox as _guard\n_guard.install_from_env()\ndel _guard\n"
MAX_SIBLINGS_BYTES = 20_000_000


async def run_notebook(nb: nbformat.NotebookNode, path: Path, folder: Path, limits: Limits,
                       output_cap: int = 10_000_000) -> str:
    """Run every cell in quick mode in a copy of the submission's folder; say how it went, in a few words."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager

    root, home = folder / "sandbox", folder / "sandbox" / "home"
    cwd = _copy_folder(nb, Path(path), root / "submission")
    env = sandbox_env(home, limits.memory_mb)
    env.update({SANDBOX_ENV: str(root), REPORT_ENV: str(folder / "kernel_report.jsonl"),
                PRIVATE_ENV: str(limits.private)})
    startup = home / "ipython" / "profile_default" / "startup"
    startup.mkdir(parents=True)
    (startup / "00-course-sandbox.py").write_text(STARTUP)
    specs = folder / "kernels" / "course-grader"
    specs.mkdir(parents=True)
    (specs / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "course grader", "language": "python"}))
    km = AsyncKernelManager(kernel_name="course-grader", connection_file=str(folder / "connection.json"),
                            kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(specs.parent)]))
    client = _RunClient(nb, km=km, kernel_name="course-grader", timeout=limits.cell_s, startup_timeout=120,
                        allow_errors=False, shutdown_kernel="immediate", output_cap=output_cap)
    try:
        verdict = await client.run(env, cwd, limits.notebook_s)
    finally:
        if km.has_kernel:
            await km.shutdown_kernel(now=True)
    if client.stopped:  # what a stopped kernel managed to try before the kill is a race: leave it out
        return verdict
    return verdict + _refusals(folder / "kernel_report.jsonl")


def _refusals(report: Path) -> str:
    """What the guard refused during the run, in a few words (it is the student's own report file)."""
    messages = []
    if report.exists():
        for line in report.read_bytes()[:100_000].splitlines():
            try:
                message = str(json.loads(line).get("message"))
            except (ValueError, AttributeError):
                continue
            if message not in messages:
                messages.append(message)
    return f"; sandbox refused: {'; '.join(messages[:3])}" if messages else ""


def _copy_folder(nb: nbformat.NotebookNode, path: Path, target: Path) -> Path:
    """The notebook and its sibling files (not other notebooks, not sub-folders, at most 20 MB)."""
    import nbformat

    target.mkdir(parents=True)
    total = 0
    for sibling in sorted(path.parent.iterdir()):
        if sibling.is_file() and not sibling.is_symlink() and sibling.suffix != ".ipynb":
            total += sibling.stat().st_size
            if total <= MAX_SIBLINGS_BYTES:
                shutil.copyfile(sibling, target / sibling.name)
    nbformat.write(nb, str(target / path.name))
    return target


def _run_client_class() -> type:
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    class RunClient(NotebookClient):
        """nbclient that keeps no outputs, counts their size, and stops at a deadline or the output cap."""

        def __init__(self, nb: nbformat.NotebookNode, output_cap: int, **kwargs: Any):
            import nbformat

            super().__init__(nbformat.from_dict(nb), **kwargs)
            self.output_cap, self.output_bytes, self.cell, self.stopped = output_cap, 0, 0, False
            self.overflow: asyncio.Future | None = None

        async def run(self, env: dict, cwd: Path, timeout: float) -> str:
            self.overflow = asyncio.get_running_loop().create_future()
            task = asyncio.ensure_future(self.async_execute(env=env, cwd=str(cwd), stdin=subprocess.DEVNULL,
                                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            done, _ = await asyncio.wait({task, self.overflow}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if task not in done:
                self.stopped = True
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                if self.overflow in done:
                    return f"stopped in cell #{self.cell}: output over {self.output_cap // 1_000_000} MB"
                return f"timeout: stopped after {timeout:g} s in cell #{self.cell}"
            try:
                task.result()
            except CellTimeoutError:
                self.stopped = True
                return f"timeout: cell #{self.cell} ran past {self.timeout:g} s"
            except CellExecutionError as error:
                return f"error in cell #{self.cell}: {error.ename}: {error.evalue}"
            except DeadKernelError:
                return f"kernel died in cell #{self.cell} (it exited or was killed)"
            except Exception as error:  # noqa: BLE001  (a kernel that never started, a broken cell...)
                return f"could not run: {type(error).__name__}: {error}"
            return "ran"

        async def async_execute_cell(self, cell: Any, cell_index: int, *args: Any, **kwargs: Any) -> Any:
            self.cell = cell_index + 1
            return await super().async_execute_cell(cell, cell_index, *args, **kwargs)

        def output(self, outs: list, msg: dict, display_id: str | None, cell_index: int) -> None:
            content = msg.get("content", {})
            self.output_bytes += len(str(content.get("text", ""))) + sum(
                len(str(v)) for v in content.get("data", {}).values())
            if self.output_bytes > self.output_cap and self.overflow and not self.overflow.done():
                self.overflow.set_result(True)
            return None  # the grader keeps no outputs: a run is judged by whether it finishes

    return RunClient


def _RunClient(nb: nbformat.NotebookNode, **kwargs: Any) -> Any:  # noqa: N802  (nbclient imports lazily)
    return _run_client_class()(nb, **kwargs)
