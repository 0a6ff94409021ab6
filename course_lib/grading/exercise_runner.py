"""Grading exercise functions in a sandboxed child process, on cases the notebook never printed.

The grader (:mod:`course_lib.grading.grade`) draws the cases and computes the reference outputs itself; the
child (forked from a forkserver that imported torch and course_lib once) only runs the student's code:

1. it arms tripwires on every exercise reference and installs the guard of :mod:`course_lib.grading.sandbox`;
2. for each exercise it executes the program (the cell and the context it needs), calls the function
   on the cases and sends the outputs back over a pipe as data (the grader reads them with
   ``torch.load(weights_only=True)``), between ``start`` and ``end`` markers;
3. each exercise has a deadline; a child that hangs, exits or is killed costs only the exercise it
   was running, and a new child picks up at the next one.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from course_lib.grading.sandbox import STUDENT_FILE_PREFIX, Limits, send_line, install, sandbox_env


class Tripwires:
    """Wrap every exercise reference in course_lib: a call from student code while armed is reported."""

    def __init__(self, send: Callable[[dict], None]):
        self.send, self.armed, self.sent = send, False, set()

    def install(self) -> None:
        from course_lib.notebook.checks import exercises

        for exercise in exercises():
            original = exercise.reference
            wire = self._wrap(original, exercise.name)
            for module in [m for n, m in list(sys.modules.items()) if n.startswith("course_lib") and m]:
                for attr, value in list(vars(module).items()):
                    if value is original:
                        setattr(module, attr, wire)
            object.__setattr__(exercise, "reference", wire)  # the check's fallback goes through it too

    def _wrap(self, original: Callable, name: str) -> Callable:
        def tripwire(*args, **kwargs):
            if self.armed and name not in self.sent and _student_on_stack():
                self.sent.add(name)  # once per exercise is enough; a loop must not flood the channel
                self.send({"trip": name})
            return original(*args, **kwargs)

        tripwire.__name__, tripwire.__doc__ = original.__name__, original.__doc__
        tripwire.__course_reference__ = name
        return tripwire


def _student_on_stack() -> bool:
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_code.co_filename.startswith(STUDENT_FILE_PREFIX):
            return True
        frame = frame.f_back
    return False


def child_main(channel: Any, args: dict) -> None:
    """Grade exercises ``start``.. of the job: for each, exec its program and call it on its cases.

    Runs in a process forked from the forkserver (torch and course_lib are already imported there).
    """
    import torch

    send, wires, registry, job, cases = _prepare(channel, args)
    install(Path(args["root"]), send, args["memory_mb"], Path(args["private"]))  # guarded from here on
    os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
    for index in sorted(cases):
        send({"start": index})
        wires.sent.clear()
        outcome = _run_exercise(job[index], cases[index], wires, registry)
        buffer = _saved(outcome, torch)
        send({"end": index, "bytes": len(buffer)}, buffer)
    send({"done": True})
    os._exit(0)  # threads the student started must not keep the child alive


def _prepare(channel: Any, args: dict) -> tuple:
    """Everything the child needs before student code runs: channel, tripwires, job and cases."""
    import torch

    from course_lib.notebook import checks as registry

    # 1. a process group of its own, so the grader kills it and whatever it starts in one go
    os.setsid()
    # 2. the report channel is a private fd; prints go to /dev/null (set-up errors to a log until then)
    fd = os.dup(channel.fileno())
    channel.close()
    devnull = os.open(os.devnull, os.O_RDWR)
    log = os.open(Path(args["job"], f"stderr_{args['start']}.txt"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    for target, source in ((0, devnull), (1, devnull), (2, log)):
        os.dup2(source, target)
    # 3. the sandbox's environment (quick mode, private config dirs), one thread as in the kernel
    os.environ.clear()
    os.environ.update(args["env"])
    torch.set_num_threads(1)
    # 4. tripwires on the references, and a check left in an exercise cell keeps the student's function
    send = lambda message, payload=b"": send_line(fd, message, payload)  # noqa: E731
    wires = Tripwires(send)
    wires.install()
    registry.check = lambda name, fn: fn
    # 5. the job and its cases, read before the guard hides the job folder
    job = json.loads(Path(args["job"], "job.json").read_text())
    cases = {i: torch.load(Path(args["job"], f"cases_{i}.pt"), weights_only=False)
             for i in range(args["start"], len(job))}
    os.chdir(args["root"])
    return send, wires, registry, job, cases


def _run_exercise(item: dict, cases: list, wires: Tripwires, registry: Any) -> dict:
    """Exec the program, then call the function on each case until one raises; outputs as data."""
    namespace = {"__name__": "__main__", "get_ipython": _NoIPython}
    for filename, code in item["program"]:
        try:
            exec(compile(code, filename, "exec"), namespace)  # noqa: S102  (running it is the point)
        except BaseException as error:  # noqa: BLE001
            return {"cell_error": _describe(error)}
    fn = namespace.get(item["name"])
    if fn is None:
        return {"missing": True}
    if getattr(fn, "__course_reference__", None) is not None:
        return {"reference": True}
    exercise = registry.get_exercise(item["name"])
    results = []
    for case in cases:
        wires.armed = True
        try:
            results.append({"output": _encode(exercise.call(fn, case), 0)})
        except BaseException as error:  # noqa: BLE001  (SystemExit included: it costs this case only)
            results.append({"raised": type(error).__name__, "message": _describe(error, with_type=False),
                            "not_implemented": isinstance(error, NotImplementedError)})
            break
        finally:
            wires.armed = False
    return {"results": results}


def _encode(value: Any, depth: int) -> Any:
    """Outputs as plain containers of tensors and numbers, which torch.load(weights_only=True) accepts."""
    import numpy as np
    import torch

    if depth > 20:
        return "<too deeply nested>"
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().clone()
    if isinstance(value, np.ndarray) and value.dtype != object:
        return {"__ndarray__": torch.from_numpy(np.ascontiguousarray(value))}
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (tuple, list)):
        items = [_encode(v, depth + 1) for v in list(value)[:10_000]]
        return tuple(items) if isinstance(value, tuple) else items
    if isinstance(value, dict):
        return {str(k): _encode(v, depth + 1) for k, v in list(value.items())[:10_000]}
    return f"<unsupported {type(value).__name__}>"


def _saved(outcome: dict, torch: Any) -> bytes:
    import io

    buffer = io.BytesIO()
    try:
        torch.save(outcome, buffer)
    except BaseException as error:  # noqa: BLE001
        buffer = io.BytesIO()
        torch.save({"cell_error": f"its outputs cannot be saved: {_describe(error)}"}, buffer)
    return buffer.getvalue()


def _describe(error: BaseException, with_type: bool = True) -> str:
    try:
        text = " ".join(str(error).split())[:300]
    except BaseException:  # noqa: BLE001  (a hostile __str__)
        text = "<unprintable>"
    return f"{type(error).__name__}: {text}" if with_type else text


class _NoIPython:
    """``get_ipython()`` for magics rewritten in exercise cells: magics do nothing while grading."""

    def __getattr__(self, name: str) -> Callable:
        return lambda *args, **kwargs: None


# -- the grader's side ------------------------------------------------------------------------------

@dataclass
class Outcome:
    """What the grading child said about one exercise; only the outputs' values are compared, by us."""

    kind: str = "error"  # results | cell_error | missing | reference | timeout | died | error
    detail: str = ""
    results: list = field(default_factory=list)
    trips: set = field(default_factory=set)
    violations: list = field(default_factory=list)


async def run_child(programs: list[dict], cases: list[list], folder: Path, limits: Limits) -> list[Outcome]:
    """Grade ``programs`` (name + code) on ``cases`` in children; a dead or stuck child costs one exercise."""
    import torch

    job, work = folder / "job", folder / "child"
    for path in (job, work):
        path.mkdir(parents=True, exist_ok=True)
    (job / "job.json").write_text(json.dumps(programs))
    for index, items in enumerate(cases):
        torch.save(items, job / f"cases_{index}.pt")
    env, outcomes, start = sandbox_env(work, limits.memory_mb), [Outcome() for _ in programs], 0
    while start < len(programs):
        start = await _one_child(start, job, work, env, limits, outcomes)
    return outcomes


_FORKSERVER: Any = None
PRELOAD = ["torch", "numpy", "einops", "course_lib.notebook.checks", "course_lib.grading.exercise_runner"]


def _context() -> Any:
    """A forkserver that imported torch and course_lib once: each child then starts in milliseconds."""
    global _FORKSERVER
    if _FORKSERVER is None:
        import multiprocessing

        _FORKSERVER = multiprocessing.get_context("forkserver")
        _FORKSERVER.set_forkserver_preload(PRELOAD)
    return _FORKSERVER


async def _one_child(start: int, job: Path, work: Path, env: dict, limits: Limits, outcomes: list) -> int:
    """Run one child from exercise ``start``; return where the next child has to start."""
    loop, context = asyncio.get_running_loop(), _context()
    reader, writer = context.Pipe(duplex=False)
    args = {"root": str(work), "job": str(job), "start": start, "memory_mb": limits.memory_mb,
            "private": str(limits.private), "env": env}
    proc = context.Process(target=child_main, args=(writer, args), name=f"grade-{job.parent.parent.name}")
    await loop.run_in_executor(None, proc.start)
    writer.close()
    stream = asyncio.StreamReader(limit=1 << 16)
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stream),
                                                open(reader.fileno(), "rb", buffering=0, closefd=False))
    current, expected, deadline = None, start, loop.time() + limits.setup_s
    try:
        while True:
            try:
                line = await asyncio.wait_for(stream.readline(), max(0.01, deadline - loop.time()))
            except asyncio.TimeoutError:
                waited = f"no answer within {limits.exercise_s if current is not None else limits.setup_s:g} s"
                return _stopped(outcomes, current, start, "timeout", waited + " (an endless loop?)")
            except ValueError:
                return _stopped(outcomes, current, start, "error", "it garbled the grader's report channel")
            if not line:
                code = await loop.run_in_executor(None, _exit_code, proc)
                return _stopped(outcomes, current, start, "died", _death(code, job / f"stderr_{start}.txt"))
            message = _parse(line)
            if message.get("start") == expected and current is None:
                current, deadline = expected, loop.time() + limits.exercise_s
            elif current is not None and isinstance(message.get("trip"), str):
                outcomes[current].trips.add(message["trip"])
            elif current is not None and "violation" in message:
                outcomes[current].violations.append(str(message.get("message"))[:300])
            elif current is not None and message.get("end") == current:
                size = int(message.get("bytes", -1))
                if not 0 <= size <= limits.max_output_bytes:
                    return _stopped(outcomes, current, start, "error", "its outputs are too large to read back")
                data = await asyncio.wait_for(stream.readexactly(size), max(0.01, deadline - loop.time()))
                _read_outcome(outcomes[current], data)
                current, expected, deadline = None, current + 1, loop.time() + limits.exercise_s
            elif message.get("done") and current is None:
                return len(outcomes)
    except (asyncio.TimeoutError, asyncio.IncompleteReadError):
        return _stopped(outcomes, current, start, "error", "its outputs could not be read back")
    finally:
        _kill_group(proc)
        transport.close()
        reader.close()
        await loop.run_in_executor(None, proc.join)


def _stopped(outcomes: list, current: int | None, start: int, kind: str, detail: str) -> int:
    if current is None:  # the child died before it began an exercise: the harness itself failed
        for outcome in outcomes[start:]:
            outcome.kind, outcome.detail = "error", f"the grading process failed to start ({detail})"
        return len(outcomes)
    outcomes[current].kind, outcomes[current].detail = kind, detail
    return current + 1


def _death(code: int, log: Path) -> str:
    if code < 0:
        return f"the grading process was killed by {signal.Signals(-code).name}"
    tail = log.read_bytes()[-300:].decode(errors="replace").strip().splitlines()
    return f"the grading process exited with code {code}" + (f": {tail[-1]}" if tail and code else "")


def _exit_code(proc: Any) -> int:
    proc.join()
    return proc.exitcode


def _kill_group(proc: Any) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        if proc.exitcode is None:
            proc.kill()  # it died before it could become a group leader


def _parse(line: bytes) -> dict:
    try:
        message = json.loads(line)
    except ValueError:
        return {}
    return message if isinstance(message, dict) else {}


def _read_outcome(outcome: Outcome, data: bytes) -> None:
    import io

    import torch

    try:
        saved = torch.load(io.BytesIO(data), weights_only=True)  # never unpickle what a student could forge
    except Exception as error:  # noqa: BLE001
        outcome.kind, outcome.detail = "error", f"its outputs could not be read back ({type(error).__name__})"
        return
    saved = saved if isinstance(saved, dict) else {}
    if isinstance(saved.get("results"), list):
        outcome.kind, outcome.results = "results", [_decode(r) for r in saved["results"] if isinstance(r, dict)]
    else:
        kind = next((k for k in ("cell_error", "missing", "reference") if k in saved), "error")
        outcome.kind, outcome.detail = kind, str(saved.get(kind, "unreadable outcome"))[:300]


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__ndarray__"} and hasattr(value["__ndarray__"], "numpy"):
            return value["__ndarray__"].numpy()
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_decode(v) for v in value)
    return value

