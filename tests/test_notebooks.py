"""The course's notebooks as files: in sync, free of outputs, and built the way the plan says.

The notebooks' execution is tested by nbval (``make test`` runs ``pytest --nbval-lax solutions
notebooks``); ``test_checks_reported_as_expected`` then reads what every check reported in those runs.
"""
import json
import os
from pathlib import Path

import nbformat
import pytest

from course_lib.tools import nbtools
from course_lib.notebook.checks import exercises

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = sorted((ROOT / "solutions").glob("*.ipynb"))
RESULTS_FILE = os.environ.get("COURSE_RESULTS_FILE")


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


def test_checks_reported_as_expected(request):
    """Runs last (see conftest): every exercise passed in solutions/ and was 'not implemented' in notebooks/."""
    notebooks = getattr(request.config, "course_notebooks", set())
    if not notebooks:
        pytest.skip("no notebook was executed in this session (run with --nbval-lax solutions notebooks)")
    records = Path(RESULTS_FILE).read_text().splitlines() if Path(RESULTS_FILE).exists() else []
    reported = {}
    for line in records:
        record = json.loads(line)
        reported.setdefault((Path(record["folder"]).name, record["exercise"]), []).append(record["status"])
    expected = {"solutions": "pass", "notebooks": "not implemented"}
    for path in sorted(p for p in notebooks if p.parent.name in expected):
        folder = path.parent.name
        for exercise in exercises(path.stem) if _has_exercises(path.stem) else []:
            statuses = reported.get((folder, exercise.name))
            assert statuses == [expected[folder]], f"{folder}/{path.name}: {exercise.name} reported {statuses}"


def _has_exercises(lesson: str) -> bool:
    try:
        exercises(lesson)
        return True
    except ValueError:
        return False
