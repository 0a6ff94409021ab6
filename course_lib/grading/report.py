"""The grader's verdicts and files: one row per submission x exercise, in a CSV and a JSON copy.

Statuses: pass, fail (a wrong output), not implemented (raises NotImplementedError), error (missing
function, exception, crash, unreadable or refused file, wrong lesson), timeout (past the exercise's
time limit), flagged (called a graded exercise's course_lib reference, which is absent while grading:
0 points, for the instructor to look at). Points come from the nbgrader metadata of the solution
notebooks, never from the submitted file. Both files are written atomically and are byte-identical
when the same files are graded again with the same options.
"""
from __future__ import annotations

import csv
import io
import json
import math
import re
import shutil
import signal
import subprocess
import sys
import unicodedata
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nbformat
import numpy as np
import torch

from course_lib.engine.files import write_atomic

STATUSES = ("pass", "fail", "not implemented", "error", "timeout", "flagged")
COLUMNS = ("submission", "lesson", "exercise", "status", "points", "max_points", "reason", "notebook")


@dataclass
class Row:
    submission: str
    lesson: str
    exercise: str
    status: str
    points: float
    max_points: float
    reason: str
    notebook: str


@dataclass
class Outcome:
    """What the sandbox said about one exercise: the outputs per case, or why there are none."""

    # per case: {"output": ...}, {"raised": ..., "not_implemented": ...} or {"timeout": True}
    results: list = field(default_factory=list)
    attempts: list = field(default_factory=list)  # references called while it was graded
    problem: tuple[str, str] | None = None  # (status, reason) when it never got to its cases


def judge(outcome: Outcome, cases: list, expected: list, differ, timeout: float) -> tuple[str, str]:
    """(status, reason) for one exercise; the outputs are compared here, against references computed here."""
    if outcome.attempts:
        names = ", ".join(f"`{a}`" for a in outcome.attempts)
        return "flagged", f"called the course_lib reference of {names}, which is absent while grading"
    if outcome.problem is not None:
        return outcome.problem
    for i, (result, case) in enumerate(zip(outcome.results, cases)):
        where = f"case {i + 1} ({case.describe()})"
        if result.get("timeout"):
            return "timeout", f"{where}: no answer within {timeout:g} s (an endless loop?)"
        if "output" not in result:
            if result.get("not_implemented"):
                return "not implemented", "raises NotImplementedError"
            return "error", f"{where}: raised {result.get('raised')}"
        try:
            problem = None if nonfinite(expected[i]) or not nonfinite(result["output"]) else \
                "output contains NaN or infinity where the reference has none"
            problem = problem or differ(result["output"], expected[i])
        except Exception as error:  # noqa: BLE001  (an output the compare cannot even read)
            problem = f"output cannot be compared ({type(error).__name__})"
        if problem is not None:
            return "fail", f"{where}: {problem}"
    if len(outcome.results) < len(cases):
        return "error", f"stopped after {len(outcome.results)} of {len(cases)} cases"
    return "pass", f"{len(cases)} fresh cases match the reference"


def nonfinite(value, depth: int = 0) -> bool:
    """Whether a decoded output holds NaN or infinity anywhere (a compare may read NaN as a match)."""
    if isinstance(value, torch.Tensor):
        return bool((value.is_floating_point() or value.is_complex()) and not torch.isfinite(value).all())
    if isinstance(value, np.ndarray):
        return value.dtype.kind in "fc" and not np.isfinite(value).all()
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, (list, tuple)) and depth < 12:
        return any(nonfinite(v, depth + 1) for v in value)
    if isinstance(value, dict) and depth < 12:
        return any(nonfinite(v, depth + 1) for v in value.values())
    return False


def clean(text: str, folders: list[str]) -> str:
    """One short line, without temporary folders or memory addresses, so re-runs give the same file."""
    text = " ".join(str(text).split())
    for folder in folders:
        text = text.replace(folder, "<sandbox>")
    text = re.sub(r"0x[0-9a-fA-F]{6,}", "0x...", text)
    return text if len(text) <= 300 else text[:297] + "..."


def solution_points(solutions: Path, lesson: str) -> dict[str, float]:
    """Points per exercise from the nbgrader metadata of the solution notebook of ``lesson``."""
    points = {}
    for path in sorted(Path(solutions).glob("*.ipynb")):
        nb = nbformat.read(str(path), as_version=4)
        if nb.metadata.get("course", {}).get("lesson", path.stem) != lesson:
            continue
        for cell in nb.cells:
            meta = cell.get("metadata", {}).get("nbgrader", {})
            if meta.get("solution") and meta.get("grade_id") and "points" in meta:
                points[meta["grade_id"]] = float(meta["points"])
    return points


# -- what came back from the sandbox (student code could write any of it: read as data) ----------

DECODER = Path(__file__).with_name("decode.py")
DTYPES = {str(t).removeprefix("torch."): t for t in (torch.float32, torch.float64, torch.float16, torch.bfloat16,
                                                     torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8,
                                                     torch.bool, torch.complex64, torch.complex128)}


def read_back(stream: bytes, folder: Path, memory_mb: int = 1024) -> tuple[list[dict], dict[str, dict], str]:
    """The runner's events, each exercise's result and a problem ('' when none), decoded in a child process.

    The child (:mod:`.decode`) caps its own memory and reads with caps on every size, so a forged
    stream costs that child, never the grader; ``folder`` is removed before this returns.
    """
    folder.mkdir(parents=True)
    try:
        (folder / "stream.bin").write_bytes(stream)
        command = [sys.executable, "-s", "-B", str(DECODER), str(folder / "stream.bin"), str(folder), str(memory_mb)]
        done = subprocess.run(command, capture_output=True, timeout=120, env={"OPENBLAS_NUM_THREADS": "1"})
        if done.returncode != 0 or (folder / "decoded.json").stat().st_size > 64 << 20:
            return [], {}, f"what the run sent back could not be read (the reader {_death(done.returncode)})"
        data = json.loads((folder / "decoded.json").read_text())
        arrays = {int(p.stem): np.load(p, allow_pickle=False) for p in folder.glob("[0-9]*.npy")}
        outputs = {name: _rebuilt(head, arrays) for name, head in data["outputs"].items()}
        return data["events"], outputs, "it sent back more events than the grader reads" if data["flooded"] else ""
    except subprocess.TimeoutExpired:
        return [], {}, "what the run sent back could not be read in time"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _rebuilt(head: dict, arrays: dict) -> dict:
    if "results" not in head:
        return head  # duplicate, unreadable or unsaved
    try:
        first = head["first_array"]
        for result in head["results"]:
            if isinstance(result, dict) and "output" in result:
                result["output"] = _value(result["output"], arrays, first, 0)
    except (ValueError, KeyError, TypeError, IndexError) as error:
        return {"unreadable": f"{type(error).__name__}"}
    return head


def _value(spec, arrays: dict, first: int, depth: int):
    if depth > 10:
        raise ValueError("nested too deeply")
    if not isinstance(spec, dict):
        return spec
    if "tensor" in spec:
        return torch.from_numpy(arrays[first + int(spec["tensor"])].copy()).to(DTYPES[spec["dtype"]])
    if "ndarray" in spec:
        return arrays[first + int(spec["ndarray"])].copy()
    if "tuple" in spec or "list" in spec:
        items = [_value(v, arrays, first, depth + 1) for v in spec.get("tuple", spec.get("list"))]
        return tuple(items) if "tuple" in spec else items
    return {str(k): _value(v, arrays, first, depth + 1) for k, v in spec["dict"]}


def started(events: list[dict], name: str) -> bool:
    return any(e.get("start") == name for e in events)


def read_outcome(saved: dict | None, name: str, events: list[dict], finished) -> Outcome:
    """The outcome of exercise ``name`` from its saved outputs, else from how the run went."""
    crashed = _cell_problem(events, name)
    outcome = _saved_outcome(saved) if saved is not None else Outcome(problem=_why_no_outputs(name, events, finished))
    if crashed and not outcome.attempts:  # its own cell raised: as in Jupyter, that stops it
        return Outcome(problem=("error", crashed))
    return outcome


def _saved_outcome(saved: dict) -> Outcome:
    attempts = [str(a)[:100] for a in saved.get("attempts", [])][:5] if isinstance(saved.get("attempts"), list) else []
    if saved.get("duplicate"):
        return Outcome(attempts=attempts, problem=("error", "more than one result came back for this exercise "
                                                            "(the grader sends one: the others were forged)"))
    if "unreadable" in saved:
        return Outcome(problem=("error", f"its outputs could not be read back ({saved['unreadable']})"))
    if "unsaved" in saved:
        return Outcome(attempts=attempts, problem=("error", f"its outputs cannot be saved: {saved['unsaved']}"))
    results = saved.get("results")
    return Outcome([r for r in results if isinstance(r, dict)] if isinstance(results, list) else [], attempts)


def _why_no_outputs(name: str, events: list[dict], finished) -> tuple[str, str]:
    if finished.overflow:
        return "error", "the run sent back more than the grader reads: it was stopped"
    if finished.problem:
        return "error", finished.problem
    if started(events, name):
        if finished.code is None:
            return "timeout", "the whole run reached its time limit while this exercise ran"
        return "error", f"the run {_death(finished.code)} while this exercise ran"
    if _cell_problem(events, f"check_{name}"):
        return "error", f"its check did not run: {_cell_problem(events, f'check_{name}')} (renamed or deleted?)"
    if not any("notebook" in e for e in events):
        if finished.code is None:
            return "timeout", "the run reached its time limit before this exercise's check"
        return "error", f"the run {_death(finished.code)} before this exercise's check"
    return "error", f"no check of `{name}` ran (its check cell is missing?)"


def _cell_problem(events: list[dict], grade_id: str) -> str | None:
    """What went wrong in the cell with this nbgrader grade_id, if it raised."""
    for event in events:
        if event.get("grade_id") == grade_id and "cell_error" in event:
            return str(event.get("problem", ""))
    return None


def notebook_verdict(events: list[dict], finished, timeout: float) -> str:
    """How the notebook ran: the runner's own verdict, else where and how the run ended."""
    for event in events:
        if "notebook" in event:
            return str(event["notebook"])
    cells = [e["cell"] for e in events if isinstance(e.get("cell"), int)]
    where = f" in cell #{cells[-1]}" if cells else " before its first cell"
    if finished.overflow or finished.problem:
        return f"stopped{where}: " + (finished.problem or "it sent back more than the grader reads")
    if finished.code is None:
        return f"timeout: stopped after {timeout:g} s{where}"
    return f"the run {_death(finished.code)}{where}"


def _death(code: int | None) -> str:
    if code is not None and (code < 0 or code > 128):  # a signal: negative from Popen, 128 + N from bwrap
        number = -code if code < 0 else code - 128
        try:
            return f"was killed by {signal.Signals(number).name}"
        except ValueError:
            pass
    return f"exited with code {code}"


# -- files and the printed table -----------------------------------------------------------------

@dataclass
class Total:
    submission: str
    lesson: str
    points: float
    max_points: float


def totals(rows: list[Row]) -> list[Total]:
    out: dict[str, Total] = {}
    for row in rows:
        total = out.setdefault(row.submission, Total(row.submission, row.lesson, 0, 0))
        total.points += row.points
        total.max_points += row.max_points
    return list(out.values())


def write_csv(rows: list[Row], path: Path) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow([_number(v) if isinstance(v, float) else inert(printable(v)) for v in asdict(row).values()])
    write_atomic(path, buffer.getvalue())


def inert(cell: str) -> str:
    """A CSV cell a spreadsheet shows as text: a leading = + - @ (or tab, return) would make it a formula.

    OWASP's "CSV injection" advice: prefix such a cell with a single quote. The JSON keeps the exact
    text (its strings escape control characters themselves).
    """
    return "'" + cell if cell[:1] in ("=", "+", "-", "@", "\t", "\r") else cell


def printable(text: str) -> str:
    """Text for the terminal: control and format characters (escape codes, bidi overrides) as escapes."""
    return "".join(c if c == " " or unicodedata.category(c)[0] not in "CZ" else repr(c)[1:-1] for c in str(text))


def write_json(rows: list[Row], path: Path) -> None:
    data = {"columns": list(COLUMNS), "statuses": list(STATUSES),
            "totals": [asdict(t) for t in totals(rows)], "rows": [asdict(r) for r in rows]}
    write_atomic(path, json.dumps(data, indent=1, sort_keys=True) + "\n")


def summary(rows: list[Row]) -> str:
    """The table printed at the end: one line per submission, then the count of each status."""
    lines = [f"{'submission':<44} {'lesson':<24} {'score':>7}  results | notebook"]
    for total in totals(rows):
        mine = [r for r in rows if r.submission == total.submission]
        results = ", ".join(f"{r.exercise or '-'} {r.status}" for r in mine)
        score = f"{_number(total.points)}/{_number(total.max_points)}"
        name = printable(total.submission)
        name = name if len(name) <= 44 else "..." + name[-41:]
        lines.append(printable(f"{name:<44} {total.lesson:<24} {score:>7}  {results} | {mine[0].notebook}"))
    counts = ", ".join(f"{s} {sum(r.status == s for r in rows)}" for s in STATUSES if any(r.status == s for r in rows))
    lines.append(f"{len(totals(rows))} submissions, {len(rows)} rows: {counts}")
    return "\n".join(lines)


def _number(value: float) -> str:
    return f"{value:g}"
