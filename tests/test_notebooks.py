"""The course's notebooks as files: in sync, free of outputs, and built the way the plan says.

The notebooks' execution is tested twice over: nbval runs the student notebooks (``make test`` runs ``pytest
--nbval-lax notebooks``), and the grader runs every solution to the end in its sandbox
(``tests/test_grade_lessons.py``); at the end of the session ``conftest.pytest_sessionfinish`` reads what every
check reported in the nbval runs (one report after all notebooks, whichever worker ran them; ``pytest
--nbval-lax solutions`` runs and checks the solutions the same way).
"""
import json
from pathlib import Path

import nbformat
import pytest

from conftest import check_report_problems
from course_lib.tools import nbtools
from course_lib.notebook.checks import exercises

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = sorted((ROOT / "solutions").glob("*.ipynb"))


def test_student_notebooks_are_generated_from_solutions_and_have_no_outputs():
    problems = nbtools.sync_problems(ROOT / "solutions", ROOT / "notebooks")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.stem)
def test_notebook_structure(path):
    nb = nbformat.read(str(path), as_version=4)
    lesson = nb.metadata["course"]["lesson"]
    assert lesson == path.stem, "the lesson in the metadata names the notebook"
    first_code = next(c for c in nb.cells if c.cell_type == "code")
    assert "runtime.describe()" in first_code.source and "seed_everything" in first_code.source
    solution_cells = [i for i, c in enumerate(nb.cells) if c.metadata.get("nbgrader", {}).get("solution")]
    names = [nb.cells[i].metadata["nbgrader"]["grade_id"] for i in solution_cells]
    assert sorted(names) == sorted(e.name for e in exercises(lesson)), "one solution cell per registered exercise"
    for i, name in zip(solution_cells, names):
        assert f"def {name}(" in nb.cells[i].source and nbtools.BEGIN in nb.cells[i].source
        check_cell = nb.cells[i + 1]
        assert check_cell.source.strip() == f'{name} = check("{name}", {name})', "the check follows the exercise"
        assert check_cell.metadata["nbgrader"]["locked"]


def test_the_check_report_wants_each_exercise_once_pass_in_solutions_and_not_implemented_in_notebooks():
    """The session-end report (conftest.pytest_sessionfinish) on made-up records: right, then each way wrong."""
    lessons = {"01_x": ["patchify", "unpatchify"], "00_welcome": []}
    ran = ["solutions/01_x.ipynb", "notebooks/01_x.ipynb", "solutions/00_welcome.ipynb", "other/01_x.ipynb"]

    def line(folder, exercise, status):
        return json.dumps({"folder": f"/course/{folder}", "exercise": exercise, "status": status})

    right = [line(folder, name, status) for folder, status in (("solutions", "pass"), ("notebooks", "not implemented"))
             for name in lessons["01_x"]]
    assert check_report_problems(ran, right, lessons.__getitem__) == []
    wrong = {"failed": [*right[1:], line("solutions", "patchify", "fail")],
             "missing": right[1:],
             "twice": [*right, right[0]],
             "student passed": [*right[:2], line("notebooks", "patchify", "pass"), right[3]]}
    for case, lines in wrong.items():
        problems = check_report_problems(ran, lines, lessons.__getitem__)
        assert len(problems) == 1 and "patchify" in problems[0], (case, problems)
    assert check_report_problems(["solutions/01_x.ipynb"], right[2:], lessons.__getitem__) != []
