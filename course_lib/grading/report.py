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
import re
import signal
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nbformat
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
            problem = differ(result["output"], expected[i])
        except Exception as error:  # noqa: BLE001  (an output the compare cannot even read)
            problem = f"output cannot be compared ({type(error).__name__})"
        if problem is not None:
            return "fail", f"{where}: {problem}"
    if len(outcome.results) < len(cases):
        return "error", f"stopped after {len(outcome.results)} of {len(cases)} cases"
    return "pass", f"{len(cases)} fresh cases match the reference"


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

def read_channel(stream: bytes) -> tuple[list[dict], dict[str, bytes]]:
    """The runner's events, and each exercise's saved outputs (the bytes after its ``end`` line).

    Lines that are not JSON objects are skipped; a forged or garbled stream only loses its own results.
    """
    events, outputs, at = [], {}, 0
    while at < len(stream):
        stop = stream.find(b"\n", at)
        stop = len(stream) if stop < 0 else stop
        try:
            event = json.loads(stream[at:stop])
        except ValueError:
            event = None
        at = stop + 1
        if not isinstance(event, dict):
            continue
        size = event.get("bytes", 0)
        if isinstance(size, int) and 0 < size <= len(stream) - at:
            if isinstance(event.get("end"), str):
                outputs[event["end"]] = stream[at:at + size]
            at += size
        events.append(event)
    return events, outputs


def started(events: list[dict], name: str) -> bool:
    return any(e.get("start") == name for e in events)


def read_outcome(saved: bytes | None, name: str, events: list[dict], finished) -> Outcome:
    """The outcome of exercise ``name`` from its saved outputs, else from how the run went."""
    crashed = _cell_problem(events, name)
    outcome = _saved_outcome(saved) if saved is not None else Outcome(problem=_why_no_outputs(name, events, finished))
    if crashed and not outcome.attempts:  # its own cell raised: as in Jupyter, that stops it
        return Outcome(problem=("error", crashed))
    return outcome


def _saved_outcome(saved: bytes) -> Outcome:
    try:
        data = torch.load(io.BytesIO(saved), weights_only=True)  # never unpickle what a student could forge
    except Exception as error:  # noqa: BLE001
        return Outcome(problem=("error", f"its outputs could not be read back ({type(error).__name__})"))
    data = data if isinstance(data, dict) else {}
    results = [_decode(r) for r in data.get("results", []) if isinstance(r, dict)]
    attempts = [str(a) for a in data.get("attempts", [])][:5]
    if "unsaved" in data:
        return Outcome(attempts=attempts, problem=("error", f"its outputs cannot be saved: {data['unsaved']}"))
    return Outcome(results, attempts)


def _why_no_outputs(name: str, events: list[dict], finished) -> tuple[str, str]:
    if finished.overflow:
        return "error", "the run sent back more than the grader reads: it was stopped"
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
    if finished.overflow:
        return f"stopped{where}: it sent back more than the grader reads"
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


def _decode(value):
    if isinstance(value, dict):
        if set(value) == {"__ndarray__"} and isinstance(value["__ndarray__"], torch.Tensor):
            return value["__ndarray__"].numpy()
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_decode(v) for v in value)
    return value


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
        writer.writerow([_number(v) if isinstance(v, float) else v for v in asdict(row).values()])
    write_atomic(path, buffer.getvalue())


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
        lines.append(f"{(total.submission if len(total.submission) <= 44 else '…' + total.submission[-43:]):<44} {total.lesson:<24} {score:>7}  {results} | {mine[0].notebook}")
    counts = ", ".join(f"{s} {sum(r.status == s for r in rows)}" for s in STATUSES if any(r.status == s for r in rows))
    lines.append(f"{len(totals(rows))} submissions, {len(rows)} rows: {counts}")
    return "\n".join(lines)


def _number(value: float) -> str:
    return f"{value:g}"
