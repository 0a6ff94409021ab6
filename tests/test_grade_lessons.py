"""Every lesson as it lands, through the grader's sandbox: the instructor's solutions grade to full marks with
their notebooks run to the end, and the generated student notebooks grade as "not implemented".

Three tests (the solutions in two halves), so that the grading runs go to the two xdist workers side by side
(each grader leases its own sandbox users: users.leased_users).
"""
from __future__ import annotations

import csv
import shutil
from pathlib import Path

import nbformat
import pytest

from course_lib.grading import __main__ as cli
from course_lib.grading import sandbox
from course_lib.notebook.checks import exercises
from course_lib.tools.nbtools import make_student, read

SOLUTIONS = Path(__file__).resolve().parent.parent / "solutions"
needs_bwrap = pytest.mark.skipif(sandbox.bwrap() is None, reason=sandbox.INSTALL_HINT)


def _lessons() -> list[tuple[str, Path]]:
    """(lesson, solution notebook) for every lesson with exercises."""
    lessons = {e.lesson for e in exercises()}
    found = [(read(p).metadata.get("course", {}).get("lesson"), p) for p in sorted(SOLUTIONS.glob("*.ipynb"))]
    found = [(lesson, path) for lesson, path in found if lesson in lessons]
    assert {lesson for lesson, _ in found} == lessons
    return found


def _grade(folder: Path, out: Path, *options: str) -> list[dict]:
    assert cli.main([str(folder), "--out", str(out), *options]) == 0
    return list(csv.DictReader(out.open(encoding="utf-8")))


@pytest.mark.slow
@needs_bwrap
@pytest.mark.parametrize("half", [0, 1])
def test_every_solution_grades_to_full_marks_with_its_notebook_run_to_the_end(tmp_path, half):
    """The notebook column of the instructor's own solutions: full marks and "ran", caches and stubs included.
    This is the one run of the solutions in ``make test`` (nbval runs the student notebooks); the lessons
    alternate between two graders, so that the two xdist workers share the work."""
    lessons = _lessons()[half::2]
    for lesson, path in lessons:
        target = tmp_path / "submitted" / "instructor" / lesson / path.name
        target.parent.mkdir(parents=True)
        shutil.copyfile(path, target)
    rows = _grade(tmp_path / "submitted", tmp_path / "solutions.csv", "--timeout", "900", "--cell-timeout", "600")
    assert {r["lesson"] for r in rows} == {lesson for lesson, _ in lessons}
    for lesson, _ in lessons:
        assert sorted(r["exercise"] for r in rows if r["lesson"] == lesson) == sorted(e.name for e in exercises(lesson))
    for row in rows:
        assert (row["status"], row["points"], row["notebook"]) == ("pass", row["max_points"], "ran"), row


@needs_bwrap
def test_every_student_notebook_grades_as_not_implemented(tmp_path):
    """The stubs nbtools generates: every exercise of every lesson is reported "not implemented", none passes."""
    for lesson, path in _lessons():
        target = tmp_path / "submitted" / "student" / lesson / path.name
        target.parent.mkdir(parents=True)
        target.write_text(nbformat.writes(make_student(read(path))), encoding="utf-8")
    rows = _grade(tmp_path / "submitted", tmp_path / "students.csv", "--no-notebook-run")
    for lesson, _ in _lessons():
        mine = [r for r in rows if r["lesson"] == lesson]
        assert sorted(r["exercise"] for r in mine) == sorted(e.name for e in exercises(lesson))
        assert all(r["status"] == "not implemented" for r in mine), [(r["exercise"], r["reason"]) for r in mine]
