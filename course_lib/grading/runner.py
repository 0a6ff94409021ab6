"""What runs inside the sandbox: one submitted notebook, in quick mode, graded as its checks run.

Started by :mod:`course_lib.grading.sandbox` as ``python /grading/runner.py /grading/job.json`` with
the stubbed course_lib copy first on the path. It imports nothing from the grader, and the grader
trusts nothing it sends: student code runs in this same process, so everything is read as data.

1. drop root (when started as root) to the sandbox's own user, in a keyring of its own, then cap
   processes, memory, file size;
2. load the fresh cases the grader drew (``torch.load(weights_only=True)``: the grader's own file);
3. replace ``check`` (``course_lib.notebook.checks``, where notebooks import it from): the grading
   check keeps the function it receives, calls it at once on the fresh cases (with a time limit) and
   sends its outputs (JSON, arrays as ``.npy``) to the grader, once per exercise and only from this
   process (a forked copy is silent and ends when it returns here); then it hands the function back;
4. run every code cell with IPython (magics work), each with a time limit; a cell that raises is
   reported and the next cell runs, so a later crash never loses an earlier exercise;
5. the references of the graded exercises, and the library functions that give the same answers,
   are stubs in this copy (see ``sandbox.stubbed_copy``): called while an exercise is graded they
   are recorded and raise; called by the notebook's other cells they run the student's own function.

Events (one JSON object a line, outputs as bytes after theirs) go to stdout, a pipe the grader
reads with a size cap: the sandbox writes no file outside itself.
"""
from __future__ import annotations

import json
import os
import resource
import signal
import sys
from pathlib import Path
from typing import Any, Callable

MODULE_NAME = "_course_grading_runner"  # the name the stubs look the runner up by


class ExerciseTimeout(BaseException):
    """Raised by the alarm; a BaseException so that `except Exception` in student code lets it through."""


class ReferenceAbsent(RuntimeError):
    """A graded exercise's course_lib reference was called while that exercise was being graded."""


class State:
    job: dict = {}
    cases: dict[str, list] = {}
    kept: dict[str, Callable] = {}  # exercise -> the function its check received
    calls: dict[str, int] = {}
    current: str | None = None  # the exercise being called on fresh cases
    attempts: set[str] = set()  # references called while `current` ran
    channel: int = -1
    pid: int = -1  # the runner's own process: a forked copy is never heard
    shell: Any = None
    notebook: dict = {}


def emit(payload: bytes = b"", **message: Any) -> None:
    """One JSON line on the channel to the grader, then ``payload`` (its length is in the line)."""
    if os.getpid() != State.pid:
        return  # a forked copy of the runner says nothing
    data = (json.dumps({**message, "bytes": len(payload)}) + "\n").encode() + payload
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})  # no alarm inside a message
    try:
        while data:
            data = data[os.write(State.channel, data):]
    except OSError:
        pass  # a student who closed our channel only loses their own report
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


# -- 1. privileges and limits --------------------------------------------------------------------

def confine(job: dict) -> None:
    """Before any student code: become the sandbox's own user (when started as root), then cap resources."""
    if job["uid"] is not None and os.getuid() == 0:  # its own uid: the process cap counts only its processes
        os.setgroups([])
        os.setresgid(job["uid"], job["uid"], job["uid"])
        os.setresuid(job["uid"], job["uid"], job["uid"])
    mb = 1 << 20
    for limit, value in ((resource.RLIMIT_NPROC, job["max_processes"]), (resource.RLIMIT_DATA, job["memory_mb"] * mb),
                         (resource.RLIMIT_FSIZE, job["file_mb"] * mb), (resource.RLIMIT_CORE, 0)):
        hard = resource.getrlimit(limit)[1]
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(limit, (value, value))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a file over the cap fails to write, it does not kill us
    import ctypes

    number = {"x86_64": 250, "aarch64": 219}.get(os.uname().machine)  # keyctl(2)
    if number is not None:  # a keyring of our own, and the user's left empty
        ctypes.CDLL(None).syscall(number, 1, None)  # KEYCTL_JOIN_SESSION_KEYRING: a new anonymous one
        for ring in (-4, -5):  # KEYCTL_CLEAR the user and user-session keyrings
            ctypes.CDLL(None).syscall(number, 7, ring)


# -- 2. cases and outputs as plain data ------------------------------------------------------------

def load_cases(torch: Any, exercises: Any) -> dict[str, list]:
    raw = torch.load(State.job["cases"], weights_only=True)
    return {name: [exercises.Case(tuple(c["args"]), dict(c["kwargs"]), c["label"]) for c in cases]
            for name, cases in raw.items()}


def encode(value: Any, arrays: list, depth: int = 0) -> Any:
    """Outputs as JSON with arrays apart: {"tensor": i} / {"ndarray": i} point at the i-th .npy blob."""
    import numpy as np
    import torch

    if depth > 8 or len(arrays) > 64:
        return "<too deeply nested or too many arrays>"
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().as_subclass(torch.Tensor)
        wide = t.dtype in (torch.bfloat16, torch.float16)  # numpy has no bfloat16: sent as float32
        arrays.append(np.array((t.float() if wide else t).resolve_conj().resolve_neg().numpy(), order="C"))
        return {"tensor": len(arrays) - 1, "dtype": str(t.dtype).removeprefix("torch.")}
    if isinstance(value, np.ndarray) and value.dtype.kind in "biufc":
        arrays.append(np.array(value, order="C"))  # not ascontiguousarray: it makes a 0-d array 1-d
        return {"ndarray": len(arrays) - 1}
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or type(value) in (bool, int, float):
        return value if type(value) is not int or abs(value) < 1 << 63 else float(value)
    if type(value) is str:
        return value[:1000]
    if isinstance(value, (tuple, list)):
        items = [encode(v, arrays, depth + 1) for v in list(value)[:1000]]
        return {"tuple": items} if isinstance(value, tuple) else {"list": items}
    if isinstance(value, dict):
        return {"dict": [[str(k)[:100], encode(v, arrays, depth + 1)] for k, v in list(value.items())[:100]]}
    return f"<unsupported {type(value).__name__}>"


def describe(error: BaseException) -> str:
    try:
        text = " ".join(str(error).split())[:300]
    except BaseException:  # noqa: BLE001  (a hostile __str__)
        text = "<unprintable>"
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


# -- 3. the grading check ---------------------------------------------------------------------------

def grading_check(name: str, fn: Any) -> Any:
    """Keep ``fn``, grade it on the fresh cases now, and hand it back (the reference is absent here)."""
    if name in State.job["dead"]:
        return _ended_earlier(name)
    State.kept[name] = fn
    State.calls[name] = State.calls.get(name, 0) + 1
    if name in State.cases and name not in State.job["skip"] and State.calls[name] == 1:
        save(name, grade(name, fn))  # the first check only: one result per exercise
    return fn


def _ended_earlier(name: str) -> Callable:
    def ended(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"`{name}` ended an earlier run of this notebook: it is not called again")

    return ended


def grade(name: str, fn: Any) -> dict:
    from course_lib.notebook.checks import get_exercise

    exercise, results = get_exercise(name), []
    State.current, State.attempts = name, set()
    emit(start=name)
    cell_left = signal.getitimer(signal.ITIMER_REAL)[0]
    alarm(State.job["exercise_timeout"])
    try:
        for case in State.cases[name]:
            try:
                output = exercise.call(fn, case)
                _only_the_runner()
                results.append({"output": output})
            except ExerciseTimeout:
                results.append({"timeout": True})
                break
            except BaseException as error:  # noqa: BLE001  (SystemExit too: it costs this exercise only)
                _only_the_runner()
                results.append({"raised": describe(error), "not_implemented": isinstance(error, NotImplementedError)})
                break
    except ExerciseTimeout:  # the alarm fired between two cases
        results.append({"timeout": True})
    finally:
        alarm(0)
        State.current = None
        if cell_left:
            alarm(cell_left)  # the rest of the cell's own time
    return {"results": results, "attempts": sorted(State.attempts), "callable": callable(fn)}


def _only_the_runner() -> None:
    """A forked copy of the runner that returns from a student function ends here, silently."""
    if os.getpid() != State.pid:
        os._exit(0)


def save(name: str, outcome: dict) -> None:
    """One result: a JSON line (outputs with arrays apart), then each array as a .npy file's bytes."""
    import io

    import numpy as np

    arrays: list = []
    try:
        results = [{**r, "output": encode(r["output"], arrays)} if "output" in r else r for r in outcome["results"]]
        blobs = []
        for array in arrays:
            buffer = io.BytesIO()
            np.save(buffer, array, allow_pickle=False)
            blobs.append(buffer.getvalue())
        head = json.dumps({**outcome, "results": results, "arrays": [len(b) for b in blobs]}).encode() + b"\n"
    except Exception as error:  # noqa: BLE001
        blobs, head = [], json.dumps({"unsaved": describe(error), "attempts": outcome["attempts"]}).encode() + b"\n"
    emit(head + b"".join(blobs), end=name)


def absent_reference(name: str, args: tuple, kwargs: dict, adapter: str = "", own: str = "") -> Any:
    """What a stub does: record and raise while grading, else run the student's function (adapted).

    ``own``: the stubbed library function when it is not the reference itself but computes the same
    answer (the reference wraps it, or another lesson has it); ``adapter`` turns the student's
    function into that function's signature.
    """
    if State.current is not None:
        State.attempts.add(own or name)
        raise ReferenceAbsent(f"the course_lib reference of `{own or name}` is absent while grading")
    if adapter == "absent":
        raise ReferenceAbsent(f"`{own}` is absent while grading: it computes part of `{name}`'s answer")
    fn = State.kept.get(name) or _defined(name)
    if not callable(fn):
        raise ReferenceAbsent(f"the course_lib reference of `{own or name}` is absent while grading, "
                              f"and the notebook defines no `{name}` of its own yet")
    from adapters import ADAPTERS  # /grading/adapters.py, beside this file

    return ADAPTERS[adapter or "same"](fn)(*args, **kwargs)


def _defined(name: str) -> Any:
    """The student's ``name`` before its check ran: defined already, else by running its exercise cell now.

    A notebook may use a library function that is stubbed (``dit.sample(cfg=...)`` calls the stub of
    cfg_velocity) before the exercise's cell: the student's own cell defines what the stub runs.
    """
    if State.shell is None:
        return None
    if not callable(State.shell.user_ns.get(name)):
        cell = next((c for c in State.notebook.get("cells", []) if _grade_id(c) == name), None)
        if cell is not None:
            source = cell.get("source", "")
            State.shell.run_cell("".join(source) if isinstance(source, list) else str(source), store_history=False,
                                 silent=True)
    return State.shell.user_ns.get(name)




# -- 4. the notebook ---------------------------------------------------------------------------------

def alarm(seconds: float) -> None:
    # after the deadline the alarm repeats, so a student's `except BaseException` cannot swallow it for good
    signal.setitimer(signal.ITIMER_REAL, seconds, 1.0 if seconds else 0)


def _on_alarm(signum: int, frame: Any) -> None:
    raise ExerciseTimeout()


def run_cells(notebook: dict) -> str:
    """Every code cell in order; the first problem is the notebook's verdict, the others are reported."""
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    config = Config()
    config.HistoryManager.enabled = False  # no history database, no saving thread
    shell = State.shell = InteractiveShell.instance(config=config)
    verdict, last_check = "ran", max(
        (i for i, c in enumerate(notebook["cells"]) if _grade_id(c) in {f"check_{n}" for n in State.cases}), default=-1)
    for index, cell in enumerate(notebook["cells"]):
        if State.job["stop_after_checks"] and index > last_check:
            return verdict if verdict != "ran" else "stopped after the last check (--no-notebook-run)"
        if cell.get("cell_type") != "code" or (verdict.startswith("timeout") and not _grade_id(cell)):
            continue  # after a timeout only the exercise and check cells run: a loop costs one cell's time
        source = cell.get("source", "")
        source = "".join(source) if isinstance(source, list) else str(source)
        emit(cell=index + 1)
        alarm(State.job["cell_timeout"])
        try:
            result = shell.run_cell(source, store_history=False, silent=True)
            error = result.error_before_exec or result.error_in_exec
        except ExerciseTimeout as timeout:  # raised outside the cell's own code
            error = timeout
        finally:
            alarm(0)
            _only_the_runner()
        if error is not None:
            problem = _problem(index + 1, error)
            emit(cell_error=index + 1, grade_id=_grade_id(cell), problem=problem)
            verdict = problem if verdict == "ran" else verdict
    return verdict


def _problem(number: int, error: BaseException) -> str:
    if isinstance(error, ExerciseTimeout):
        return f"timeout: cell #{number} ran past {State.job['cell_timeout']:g} s"
    if isinstance(error, SyntaxError):  # no file name: IPython's differ from run to run
        return f"cell #{number} does not parse: {type(error).__name__}: {error.msg} (line {error.lineno})"
    return f"error in cell #{number}: {describe(error)}"


def _grade_id(cell: dict) -> str:
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return str(meta.get("grade_id", "")) if isinstance(meta, dict) else ""


def main(job_path: str) -> None:
    State.job = job = json.loads(Path(job_path).read_text())
    State.pid = os.getpid()
    State.channel = os.dup(1)  # the grader reads our stdout; the notebook's prints go elsewhere
    confine(job)
    mpl = Path(os.environ["MPLCONFIGDIR"])
    mpl.mkdir(parents=True, exist_ok=True)
    for cache in Path(job["grading"]).glob("fontlist-*.json"):
        (mpl / cache.name).write_bytes(cache.read_bytes())
    import torch

    torch.set_num_threads(1)
    from course_lib.notebook import checks, exercises

    State.cases = load_cases(torch, exercises)
    sys.modules[MODULE_NAME] = sys.modules[__name__]
    exercises.check = checks.check = grading_check
    notebook = json.loads(Path(job["notebook"]).read_text(encoding="utf-8"))
    signal.signal(signal.SIGALRM, _on_alarm)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):  # the notebook's prints go nowhere
        os.dup2(devnull, fd)
    emit(ready=True)
    State.notebook = notebook
    verdict = run_cells(notebook)
    emit(notebook=verdict)
    os._exit(0)  # threads the student started must not keep the run alive


if __name__ == "__main__":
    main(sys.argv[1])
