"""The grader's command line.

    python -m course_lib.grading SUBMISSIONS... --out grades.csv [--json grades.json] [--lesson L]
        [--timeout S] [--cell-timeout S] [--exercise-timeout S] [--seed N] [--solutions DIR] [--jobs N]
        [--memory-mb MB] [--no-notebook-run] [--no-sandbox]

Exit code 0 whenever grading completed, however the students did; 1 when the grader itself failed on
a submission (its rows say ``grader error``); 2 for a bad command line or a missing bubblewrap.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from course_lib.notebook.checks import exercises
from course_lib.grading import Grader, Settings, discover, report, sandbox, users
from course_lib.paths import ROOT


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m course_lib.grading",
                                description="Grade submitted notebooks, each in its own sandbox.")
    p.add_argument("submissions", nargs="+", type=Path, help="notebooks, or folders searched for .ipynb")
    p.add_argument("--out", type=Path, required=True, help="the CSV to write")
    p.add_argument("--json", type=Path, help="the JSON copy (default: --out with .json)")
    p.add_argument("--lesson", help="grade every submission as this lesson (e.g. 01_patch_tokenization)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds for a submission's whole run")
    p.add_argument("--cell-timeout", type=float, default=120.0, help="seconds per notebook cell")
    p.add_argument("--exercise-timeout", type=float, default=30.0, help="seconds per exercise on its fresh cases")
    p.add_argument("--seed", type=int, help="seed of the fresh cases (not 0; default: drawn for this run, so "
                   "pass one to get the same files again)")
    p.add_argument("--solutions", type=Path, default=ROOT / "solutions", help="where the points come from")
    p.add_argument("--jobs", type=int, default=2, help="submissions graded at the same time")
    p.add_argument("--memory-mb", type=int, default=4096, help="memory cap per student process")
    p.add_argument("--no-notebook-run", action="store_true", help="stop each notebook after its last check")
    p.add_argument("--no-sandbox", action="store_true",
                   help="run without bubblewrap's isolation (every row says so); for machines without it")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.seed == 0:
        parser().error("--seed 0 is the seed the notebooks' own checks print their cases with; choose another")
    if args.lesson:
        try:
            exercises(args.lesson)
        except ValueError as error:
            parser().error(str(error))  # an unknown lesson, with the list of known ones
    if not args.no_sandbox and sandbox.bwrap() is None:
        print(sandbox.INSTALL_HINT, file=sys.stderr)
        return 2
    settings = Settings(args.timeout, args.cell_timeout, args.exercise_timeout, args.lesson, args.seed,
                        args.solutions, max(1, args.jobs), args.memory_mb, not args.no_notebook_run,
                        not args.no_sandbox)
    started = time.monotonic()
    try:
        found = discover(args.submissions)
    except FileNotFoundError as error:
        parser().error(str(error))
    try:
        with tempfile.TemporaryDirectory(prefix="course-grade-", ignore_cleanup_errors=True) as tmp, \
                users.leased_users(settings.jobs if settings.sandbox else 0) as uids:
            grader = Grader(settings, Path(tmp), uids)
            rows = grader.grade_all(found)
    except users.NoUsers as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.no_sandbox:
        for row in rows:
            row.notebook = f"NOT SANDBOXED (--no-sandbox); {row.notebook}"
    report.write_csv(rows, args.out)
    json_path = args.json or args.out.with_suffix(".json")
    report.write_json(rows, json_path)
    print(report.summary(rows))
    print(f"graded in {time.monotonic() - started:.0f} s; wrote {args.out} and {json_path}")
    return 1 if grader.internal_errors else 0


if __name__ == "__main__":
    sys.exit(main())
