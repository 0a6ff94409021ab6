"""Grade a folder of submitted notebooks: one row per submission x exercise, in a CSV and a JSON copy.

    python -m course_lib.grading.grade submissions/ --out grades.csv [--json grades.json] [--lesson L]
                               [--timeout S] [--exercise-timeout S] [--seed N] [--solutions DIR] [--jobs N]

For each submission, in its own temporary folder:

1. read it and find its lesson (notebook metadata ``course.lesson``, else the exercises it defines);
2. grade every exercise of the lesson in a sandboxed child (:mod:`course_lib.grading.exercise_runner`): the
   exercise cell, with only the imports and definitions it needs, is run on fresh cases drawn here
   with ``--seed`` (never the notebooks' seed 0); the outputs come back as data and are compared here
   with the exercise's own compare, against the reference computed here;
3. run the whole notebook with nbclient in quick mode (time limit, output cap) to record whether it runs.

Statuses: pass, fail (a wrong output), not implemented (raises NotImplementedError), error (missing
function, exception, crash or exit of the grading process, unreadable notebook, wrong lesson),
timeout (the exercise ran past --exercise-timeout), flagged (calls or returns the course_lib
reference, or tried to read the answer key: 0 points, for the instructor to look at).
"""
from __future__ import annotations

import argparse
import asyncio
import csv
import hashlib
import io
import json
import os
import re
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from course_lib.grading import exercise_runner
from course_lib.grading import sandbox
from course_lib.grading import submissions
from course_lib.notebook.checks import exercises
from course_lib.notebook.exercises import Exercise
from course_lib.engine.files import write_atomic
from course_lib.paths import ROOT

STATUSES = ("pass", "fail", "not implemented", "error", "timeout", "flagged")
COLUMNS = ("submission", "lesson", "exercise", "status", "points", "max_points", "reason", "notebook")
DEFAULT_SEED = 1_846_271  # any fixed value but 0, the seed the notebooks' own checks print


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
class Settings:
    timeout: float = 300.0
    cell_timeout: float = 120.0
    exercise_timeout: float = 30.0
    lesson: str | None = None
    seed: int = DEFAULT_SEED
    solutions: Path = ROOT / "solutions"
    jobs: int = 2
    memory_mb: int = 4096
    notebook_run: bool = True


class Grader:
    """Grades submissions with one set of settings; caches cases, expected outputs and points per lesson."""

    def __init__(self, settings: Settings, workdir: Path):
        self.settings, self.workdir = settings, workdir
        self.limits = sandbox.Limits(workdir, settings.exercise_timeout, settings.timeout,
                                     settings.cell_timeout, memory_mb=settings.memory_mb)
        self._cases: dict[str, tuple[list, list]] = {}
        self._points: dict[str, dict[str, float]] = {}
        self.internal_errors = 0

    async def grade_all(self, paths: list[tuple[str, Path]]) -> list[Row]:
        gate = asyncio.Semaphore(self.settings.jobs)

        async def one(index: int, label: str, path: Path) -> list[Row]:
            async with gate:
                return await self.grade_safely(label, path, self.workdir / f"submission_{index}")

        batches = await asyncio.gather(*(one(i, label, path) for i, (label, path) in enumerate(paths)))
        return [row for batch in batches for row in batch]

    async def grade_safely(self, label: str, path: Path, folder: Path) -> list[Row]:
        try:
            return await self.grade(label, path, folder)
        except Exception as error:  # noqa: BLE001  (a grader bug costs this submission, loudly)
            self.internal_errors += 1
            import traceback

            traceback.print_exc()
            return self._failed(label, None, f"grader error: {type(error).__name__}: {error}")

    async def grade(self, label: str, path: Path, folder: Path) -> list[Row]:
        try:
            nb = submissions.load(path)
        except (submissions.SubmissionError, OSError) as error:
            return self._failed(label, None, str(error))
        cells = submissions.code_cells(nb)
        lesson, how = submissions.identify_lesson(nb, cells)
        wanted = self.settings.lesson
        if lesson is None or (wanted and lesson != wanted):
            reason = how if lesson is None else f"this is a notebook of lesson {lesson}, not {wanted}"
            return self._failed(label, lesson, reason)
        folder.mkdir(parents=True)
        started = time.monotonic()
        verdicts = await self._verdicts(lesson, cells, folder)
        checked = time.monotonic()
        ran = await sandbox.run_notebook(nb, path, folder / "notebook", self.limits) \
            if self.settings.notebook_run else "not run (--no-notebook-run)"
        print(f"graded {label}: exercises {checked - started:.0f} s, notebook {time.monotonic() - checked:.0f} s",
              file=sys.stderr)
        points = self.points(lesson)
        return [Row(label, lesson, name, status, points[name] if status == "pass" else 0.0, points[name],
                    self._clean(reason), self._clean(ran)) for name, (status, reason) in verdicts.items()]

    async def _verdicts(self, lesson: str, cells: list, folder: Path) -> dict[str, tuple[str, str]]:
        verdicts, programs, todo = {}, [], []
        for exercise in exercises(lesson):
            try:
                program = submissions.program_for(cells, exercise.name)
            except submissions.SubmissionError as error:
                verdicts[exercise.name] = ("error", str(error))
                continue
            flag = submissions.reference_use(cells, program, exercise)
            if flag:
                verdicts[exercise.name] = ("flagged", flag)
                continue
            todo.append((exercise, program))
            programs.append({"name": exercise.name, "program": [
                [submissions.CONTEXT_FILE, program.context], [program.cell.filename, program.cell.source]]})
        cases = [self.cases(exercise)[0] for exercise, _ in todo]
        outcomes = await exercise_runner.run_child(programs, cases, folder / "exercises", self.limits) if todo else []
        for (exercise, program), outcome in zip(todo, outcomes):
            verdicts[exercise.name] = judge(exercise, outcome, *self.cases(exercise), program.cell.number)
        return {e.name: verdicts[e.name] for e in exercises(lesson)}

    def cases(self, exercise: Exercise) -> tuple[list, list]:
        """Fresh cases for ``exercise`` and the reference's outputs on them, drawn once per run."""
        if exercise.name not in self._cases:
            seed = case_seed(self.settings.seed, exercise.name)
            cases = exercise.make_cases(torch.Generator().manual_seed(seed))
            self._cases[exercise.name] = (cases, [exercise.call(exercise.reference, c) for c in cases])
        return self._cases[exercise.name]

    def points(self, lesson: str) -> dict[str, float]:
        """Points per exercise: the solution notebook's nbgrader metadata, else the registry's default."""
        if lesson not in self._points:
            found = submissions.solution_points(self.settings.solutions, lesson) \
                if self.settings.solutions.is_dir() else {}
            missing = [e.name for e in exercises(lesson) if e.name not in found]
            if missing:
                print(f"note: no points for {missing} in the nbgrader metadata of {self.settings.solutions}; "
                      "using the default", file=sys.stderr)
            self._points[lesson] = {e.name: found.get(e.name, float(e.points)) for e in exercises(lesson)}
        return self._points[lesson]

    def _failed(self, label: str, lesson: str | None, reason: str) -> list[Row]:
        lesson = self.settings.lesson or lesson
        if lesson is None:
            return [Row(label, "", "", "error", 0.0, 0.0, self._clean(reason), "not run")]
        points = self.points(lesson)
        return [Row(label, lesson, e.name, "error", 0.0, points[e.name], self._clean(reason), "not run")
                for e in exercises(lesson)]

    def _clean(self, text: str) -> str:
        """One short line, without temporary paths or memory addresses, so re-runs give the same file."""
        for folder in {str(self.workdir), os.path.realpath(self.workdir)}:
            text = text.replace(folder, "<sandbox>")
        text = re.sub(r"0x[0-9a-fA-F]{6,}", "0x...", " ".join(str(text).split()))
        return text if len(text) <= 300 else text[:297] + "..."


def judge(exercise: Exercise, outcome: exercise_runner.Outcome, cases: list, expected: list,
          cell: int) -> tuple[str, str]:
    """(status, reason) for one exercise from what the child sent back, compared here."""
    reference = f"{exercise.reference.__module__}.{exercise.reference.__name__}"
    if outcome.kind == "reference" or exercise.name in outcome.trips:
        return "flagged", f"calls or returns the course_lib reference {reference}"
    reads = [v for v in outcome.violations if "course's own files" in v or "other submissions'" in v]
    if reads:
        return "flagged", f"tried to read the answer key or other submissions: {reads[0]}"
    if outcome.kind == "timeout":
        return "timeout", outcome.detail
    if outcome.kind == "cell_error":
        return "error", f"cell #{cell} raised {outcome.detail}"
    if outcome.kind == "missing":
        return "error", f"after cell #{cell} runs, `{exercise.name}` is not defined"
    if outcome.kind != "results":
        return "error", outcome.detail
    for i, (result, case) in enumerate(zip(outcome.results, cases)):
        where = f"case {i + 1} ({case.describe()})"
        if "output" not in result:
            if result.get("not_implemented"):
                return "not implemented", "raises NotImplementedError"
            return "error", f"{where}: raised {result.get('raised')}: {result.get('message')}"
        try:
            problem = exercise.differ(result["output"], expected[i])
        except Exception as error:  # noqa: BLE001  (an output the compare cannot even read)
            problem = f"output cannot be compared ({type(error).__name__})"
        if problem is not None:
            return "fail", f"{where}: {problem}"
    if len(outcome.results) < len(cases):
        return "error", f"stopped after {len(outcome.results)} of {len(cases)} cases"
    return "pass", f"{len(cases)} fresh cases match the reference"


def case_seed(seed: int, name: str) -> int:
    """The seed of one exercise's fresh cases: fixed per run and exercise, never the notebooks' 0."""
    value = int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:4], "big") & 0x7FFFFFFF
    return value or 1


# -- inputs and outputs ---------------------------------------------------------------------------

def discover(paths: list[Path]) -> list[tuple[str, Path]]:
    """(label, path) of every notebook named or inside a named folder, sorted, checkpoints skipped."""
    found = []
    for path in paths:
        if path.is_dir():
            found += [(str(p), p) for p in sorted(path.rglob("*.ipynb")) if ".ipynb_checkpoints" not in p.parts]
        elif path.exists():
            found.append((str(path), path))
        else:
            raise FileNotFoundError(f"no such submission file or folder: {path}")
    if not found:
        raise FileNotFoundError(f"no .ipynb files in {[str(p) for p in paths]}")
    return sorted(set(found))


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_lib.grading.grade", description=__doc__.split("\n")[0])
    parser.add_argument("submissions", nargs="+", type=Path, help="notebooks, or folders searched for .ipynb")
    parser.add_argument("--out", type=Path, required=True, help="the CSV to write")
    parser.add_argument("--json", type=Path, help="the JSON copy (default: --out with .json)")
    parser.add_argument("--lesson", help="grade every submission as this lesson (e.g. 01_patch_tokenization)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds for the whole-notebook run")
    parser.add_argument("--cell-timeout", type=float, default=120.0, help="seconds per cell of that run")
    parser.add_argument("--exercise-timeout", type=float, default=30.0, help="seconds per exercise function")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the fresh cases (not 0)")
    parser.add_argument("--solutions", type=Path, default=ROOT / "solutions", help="where the points come from")
    parser.add_argument("--jobs", type=int, default=2, help="submissions graded at the same time")
    parser.add_argument("--memory-mb", type=int, default=4096, help="memory cap per student process")
    parser.add_argument("--no-notebook-run", action="store_true", help="grade the exercises only (a quick regrade)")
    args = parser.parse_args(argv)
    if args.seed == 0:
        parser.error("--seed 0 is the seed the notebooks' own checks print their cases with; choose another")
    if args.lesson:
        try:
            exercises(args.lesson)
        except ValueError as error:
            parser.error(str(error))  # an unknown lesson, with the list of known ones
    settings = Settings(args.timeout, args.cell_timeout, args.exercise_timeout, args.lesson, args.seed, args.solutions,
                        max(1, args.jobs), args.memory_mb, not args.no_notebook_run)
    started = time.monotonic()
    try:
        paths = discover(args.submissions)
    except FileNotFoundError as error:
        parser.error(str(error))
    with tempfile.TemporaryDirectory(prefix="course-grade-", ignore_cleanup_errors=True) as tmp:
        grader = Grader(settings, Path(tmp))
        rows = asyncio.run(grader.grade_all(paths))
    write_csv(rows, args.out)
    json_path = args.json or args.out.with_suffix(".json")
    write_json(rows, json_path)
    print(summary(rows))
    print(f"graded in {time.monotonic() - started:.0f} s; wrote {args.out} and {json_path}")
    return 1 if grader.internal_errors else 0


if __name__ == "__main__":
    sys.exit(main())
