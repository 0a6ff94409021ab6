import nbformat
import pytest

from course_lib.tools import nbtools
from course_lib.tools.nbtools import MarkerError, make_student, strip_solution


def test_strip_solution_keeps_indentation_and_surroundings():
    source = "def f(x):\n    \"\"\"doc\"\"\"\n    ### BEGIN SOLUTION\n    y = x + 1\n    return y\n    ### END SOLUTION\n# after"
    assert strip_solution(source) == ("def f(x):\n    \"\"\"doc\"\"\"\n    # YOUR CODE HERE\n"
                                      "    raise NotImplementedError()\n# after")


def test_markdown_solution_becomes_answer_stub():
    assert strip_solution("Q?\n### BEGIN SOLUTION\nA.\n### END SOLUTION", markdown=True) == "Q?\nYOUR ANSWER HERE"


@pytest.mark.parametrize("source,fragment", [
    ("### BEGIN SOLUTION\nx", "never closed"),
    ("x\n### END SOLUTION", "without a matching"),
    ("### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION", "inside another"),
])
def test_unbalanced_markers_are_errors(source, fragment):
    with pytest.raises(MarkerError, match=fragment):
        strip_solution(source)


def _notebook():
    cell = nbformat.v4.new_code_cell("def f():\n    ### BEGIN SOLUTION\n    return 1\n    ### END SOLUTION")
    cell.metadata["nbgrader"] = {"solution": True, "grade": False, "grade_id": "f", "locked": False, "schema_version": 3}
    cell.outputs = [nbformat.v4.new_output("stream", text="hi")]
    cell.execution_count = 3
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# t"), cell])


def test_make_student_strips_outputs_and_keeps_metadata():
    nb = _notebook()
    student = make_student(nb)
    code = student.cells[1]
    assert code.outputs == [] and code.execution_count is None
    assert code.metadata["nbgrader"]["grade_id"] == "f"
    assert "raise NotImplementedError()" in code.source and "return 1" not in code.source
    assert nb.cells[1].outputs, "the source notebook is not modified"


def test_make_student_locks_checks_and_keeps_answers_editable():
    nb = _notebook()
    check = nbformat.v4.new_code_cell("check_f(f)")
    check.metadata["nbgrader"] = {"solution": False, "grade": False, "grade_id": "check_f", "locked": True,
                                  "schema_version": 3}
    nb.cells.append(check)
    markdown, answer, check = make_student(nb).cells
    assert check.metadata["editable"] is False and check.metadata["deletable"] is False
    assert "editable" not in answer.metadata and answer.metadata["deletable"] is False
    assert "editable" not in markdown.metadata and "deletable" not in markdown.metadata
    assert "editable" not in nb.cells[2].metadata, "the solution notebook stays unlocked"


def test_sync_problems_and_build(tmp_path):
    solutions, notebooks = tmp_path / "solutions", tmp_path / "notebooks"
    solutions.mkdir()
    nbformat.write(_notebook(), str(solutions / "a.ipynb"))
    problems = nbtools.sync_problems(solutions, notebooks)
    assert "a.ipynb: only in solutions/" in problems
    assert any("has outputs" in p for p in problems)
    nbtools.main(["strip", "--solutions", str(solutions), "--notebooks", str(notebooks)])
    nbtools.build_students(solutions, notebooks)
    assert nbtools.sync_problems(solutions, notebooks) == []
    (notebooks / "stale.ipynb").write_text((notebooks / "a.ipynb").read_text())
    (notebooks / "a.ipynb").write_text((notebooks / "a.ipynb").read_text().replace("YOUR CODE", "MY CODE"))
    problems = nbtools.sync_problems(solutions, notebooks)
    assert "notebooks/a.ipynb: differs from what solutions/a.ipynb generates" in problems
    assert "stale.ipynb: only in notebooks/" in problems
    assert nbtools.main(["check", "--solutions", str(solutions), "--notebooks", str(notebooks)]) == 1
    nbtools.build_students(solutions, notebooks)
    assert not (notebooks / "stale.ipynb").exists()


def test_unreadable_notebook_is_named(tmp_path):
    path = tmp_path / "bad.ipynb"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="bad.ipynb is not a readable notebook"):
        nbtools.read(path)


def test_write_atomic_leaves_no_temp_files(tmp_path):
    target = tmp_path / "x" / "out.txt"
    nbtools.write_atomic(target, "one")
    nbtools.write_atomic(target, "two")
    assert target.read_text() == "two" and [p.name for p in target.parent.iterdir()] == ["out.txt"]
