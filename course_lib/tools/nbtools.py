"""Student notebooks from solution notebooks, the sync check, and the output check.

``solutions/`` is the single source. Each solution region sits between nbgrader markers; the student
copy replaces it with nbgrader's stub, indented like the ``### BEGIN SOLUTION`` line::

    ### BEGIN SOLUTION                 # YOUR CODE HERE
    return x.clamp(0, 1)        ->     raise NotImplementedError()
    ### END SOLUTION

Outputs and execution counts are stripped; cell metadata (nbgrader's included) is kept, and the
student copy is locked as nbgrader locks it: locked cells (the checks, given code) cannot be edited,
and no locked, solution or graded cell can be deleted.

Command line::

    python -m course_lib.tools.nbtools student   # regenerate notebooks/ from solutions/
    python -m course_lib.tools.nbtools check     # fail when notebooks/ is stale or any notebook has outputs
"""
from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import nbformat

from course_lib.engine.files import write_atomic
from course_lib.notebook.nbfiles import dumps, read
from course_lib.paths import ROOT

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
CODE_STUB = ("# YOUR CODE HERE", "raise NotImplementedError()")
MARKDOWN_STUB = "YOUR ANSWER HERE"


class MarkerError(ValueError):
    """A solution cell whose markers do not pair up."""


def strip_solution(source: str, markdown: bool = False) -> str:
    """Replace every BEGIN/END SOLUTION region of one cell's source with the stub."""
    lines, out, inside = source.split("\n"), [], False
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if stripped == BEGIN:
            if inside:
                raise MarkerError(f"line {number}: {BEGIN!r} inside another solution region")
            inside = True
            indent = line[: len(line) - len(line.lstrip())]
            out.extend([indent + MARKDOWN_STUB] if markdown else [indent + s for s in CODE_STUB])
        elif stripped == END:
            if not inside:
                raise MarkerError(f"line {number}: {END!r} without a matching {BEGIN!r}")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise MarkerError(f"{BEGIN!r} is never closed by {END!r}")
    return "\n".join(out)


def strip_outputs(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of ``nb`` without outputs or execution counts."""
    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        cell.metadata.pop("execution", None)
    return nb


def lock(cell: nbformat.NotebookNode) -> None:
    """Set the frontend's ``editable`` / ``deletable`` flags from the cell's nbgrader metadata."""
    grading = cell.metadata.get("nbgrader", {})
    if grading.get("locked") and not grading.get("solution"):
        cell.metadata["editable"] = False
    if grading.get("locked") or grading.get("solution") or grading.get("grade"):
        cell.metadata["deletable"] = False


def make_student(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The student version of a solution notebook."""
    nb = strip_outputs(nb)
    for index, cell in enumerate(nb.cells):
        lock(cell)
        if BEGIN in cell.source or END in cell.source:
            try:
                cell.source = strip_solution(cell.source, markdown=cell.cell_type == "markdown")
            except MarkerError as error:
                raise MarkerError(f"cell {index}: {error}") from None
    return nb


def has_outputs(nb: nbformat.NotebookNode) -> bool:
    return any(c.cell_type == "code" and (c.outputs or c.execution_count) for c in nb.cells)


def build_students(solutions: Path = ROOT / "solutions", notebooks: Path = ROOT / "notebooks") -> list[Path]:
    """Regenerate every student notebook; remove student notebooks whose solution is gone."""
    sources = sorted(Path(solutions).glob("*.ipynb"))
    if not sources:
        raise FileNotFoundError(f"no notebooks in {solutions}")
    written = []
    for source in sources:
        target = Path(notebooks) / source.name
        write_atomic(target, dumps(make_student(read(source))))
        written.append(target)
    for orphan in set(Path(notebooks).glob("*.ipynb")) - set(written):
        orphan.unlink()
    return written


def sync_problems(solutions: Path = ROOT / "solutions", notebooks: Path = ROOT / "notebooks") -> list[str]:
    """Every way in which the two folders disagree, or a notebook carries outputs; empty when all is well."""
    problems = []
    sources = {p.name: p for p in Path(solutions).glob("*.ipynb")}
    students = {p.name: p for p in Path(notebooks).glob("*.ipynb")}
    for name in sorted(set(sources) ^ set(students)):
        where = "solutions/" if name in sources else "notebooks/"
        problems.append(f"{name}: only in {where}")
    for name in sorted(set(sources) & set(students)):
        expected = dumps(make_student(read(sources[name])))
        if students[name].read_text(encoding="utf-8") != expected:
            problems.append(f"notebooks/{name}: differs from what solutions/{name} generates")
    for path in sorted([*sources.values(), *students.values()]):
        if has_outputs(read(path)):
            problems.append(f"{path.parent.name}/{path.name}: has outputs (strip them)")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_lib.tools.nbtools", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["student", "check", "strip"])
    parser.add_argument("--solutions", type=Path, default=ROOT / "solutions")
    parser.add_argument("--notebooks", type=Path, default=ROOT / "notebooks")
    args = parser.parse_args(argv)
    if args.command == "student":
        for path in build_students(args.solutions, args.notebooks):
            print(f"wrote {path}")
        return 0
    if args.command == "strip":
        for path in sorted(args.solutions.glob("*.ipynb")):
            nb = read(path)
            if has_outputs(nb):
                write_atomic(path, dumps(strip_outputs(nb)))
                print(f"stripped {path}")
        return 0
    problems = sync_problems(args.solutions, args.notebooks)
    for problem in problems:
        print(problem)
    if problems:
        print("run `make student` to regenerate notebooks/ from solutions/")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
