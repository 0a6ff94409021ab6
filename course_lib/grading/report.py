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
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nbformat

from course_lib.nbtools import write_atomic

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

    results: list = field(default_factory=list)  # {"output": ...} | {"raised": ..., "not_implemented": ...} | {"timeout": True}
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
        lines.append(f"{total.submission[-44:]:<44} {total.lesson:<24} {score:>7}  {results} | {mine[0].notebook}")
    counts = ", ".join(f"{s} {sum(r.status == s for r in rows)}" for s in STATUSES if any(r.status == s for r in rows))
    lines.append(f"{len(totals(rows))} submissions, {len(rows)} rows: {counts}")
    return "\n".join(lines)


def _number(value: float) -> str:
    return f"{value:g}"
