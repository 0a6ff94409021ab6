"""Reading a submitted notebook without running it: its lesson, its exercise code, its points.

Everything here is static (``ast`` on the cell sources), so it is safe on any file a student sends:

1. :func:`load` reads the notebook (a broken file raises :class:`SubmissionError` with a short reason),
2. :func:`identify_lesson` takes the lesson from the metadata (``course.lesson``), else from the
   exercise functions the cells define,
3. :func:`program_for` cuts out what the grader runs for one exercise: the cell that defines it,
   preceded by only the imports and top-level definitions of earlier cells that the cell needs
   (never the check cells, never a training loop it does not use),
4. :func:`reference_use` says when that code calls or hands back the course_lib reference,
5. :func:`solution_points` reads the points from the nbgrader metadata of the SOLUTION notebook.
"""
from __future__ import annotations

import ast
import builtins
import importlib.util
import json
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import nbformat

from course_lib.notebook.checks import exercises
from course_lib.notebook.exercises import Exercise

MAX_NOTEBOOK_BYTES = 20_000_000
CONTEXT_FILE = "<submission context>"


class SubmissionError(ValueError):
    """A submission the grader cannot use; the message is the reason shown in its rows."""


@dataclass
class Cell:
    """One code cell: its index in the notebook, its Python source (magics rewritten) and its tree."""

    index: int
    source: str
    tree: ast.Module | None
    error: str = ""  # why the source does not parse
    grade_id: str = ""

    @property
    def number(self) -> int:
        """The cell's number as people count them: 1 for the first cell, markdown included."""
        return self.index + 1

    @property
    def filename(self) -> str:
        return f"<submission cell #{self.number}>"


@dataclass
class Program:
    """What the grader executes for one exercise: context code, then the exercise's own cell."""

    context: str
    cell: Cell


def load(path: Path) -> nbformat.NotebookNode:
    """The notebook at ``path``, or :class:`SubmissionError` saying why it cannot be read."""
    path = Path(path)
    if path.stat().st_size > MAX_NOTEBOOK_BYTES:
        raise SubmissionError(f"file is larger than {MAX_NOTEBOOK_BYTES // 1_000_000} MB")
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        json.loads(text)
    except ValueError as error:
        raise SubmissionError(f"not a readable notebook: invalid JSON ({_first_line(error)})") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # nbformat's notes on missing cell ids and the like
            nb = nbformat.reads(text, as_version=4)
        _check_structure(nb)
    except Exception as error:  # noqa: BLE001  (any broken file is one reason in its rows)
        raise SubmissionError(f"not a readable notebook: {_first_line(error)}") from None
    return nb


def _check_structure(nb: nbformat.NotebookNode) -> None:
    """What the grader relies on: a metadata dict and a list of cells, each a dict with a type."""
    if not isinstance(nb.get("metadata"), dict) or not isinstance(nb.get("cells"), list):
        raise ValueError("it has no metadata or no list of cells")
    for number, cell in enumerate(nb.cells, start=1):
        if not isinstance(cell, dict) or not isinstance(cell.get("cell_type"), str) \
                or not isinstance(cell.get("metadata", {}), dict):
            raise ValueError(f"cell #{number} is not a notebook cell")


def code_cells(nb: nbformat.NotebookNode) -> list[Cell]:
    """Every code cell, with IPython magics rewritten to plain Python and parsed once."""
    from IPython.core.inputtransformer2 import TransformerManager

    transformer, cells = TransformerManager(), []
    for index, raw in enumerate(nb.cells):
        if raw.get("cell_type") != "code" or not isinstance(raw.get("source"), str):
            continue
        meta = raw.get("metadata", {}).get("nbgrader", {})
        grade_id = str(meta.get("grade_id", "")) if isinstance(meta, dict) else ""
        try:
            source = transformer.transform_cell(raw.source)
            cells.append(Cell(index, source, ast.parse(source), grade_id=grade_id))
        except SyntaxError as error:
            cells.append(Cell(index, raw.source, None, f"SyntaxError: {error.msg} (line {error.lineno})", grade_id))
        except ValueError as error:
            cells.append(Cell(index, raw.source, None, f"ValueError: {_first_line(error)}", grade_id))
    return cells


def identify_lesson(nb: nbformat.NotebookNode, cells: list[Cell]) -> tuple[str | None, str]:
    """(lesson, how it was found) or (None, why no lesson fits): metadata first, then exercise names."""
    known = sorted({e.lesson for e in exercises()})
    course = nb.get("metadata", {}).get("course", {})
    lesson = course.get("lesson") if isinstance(course, dict) else None
    if lesson:
        if lesson in known:
            return lesson, "notebook metadata"
        return None, f"its metadata names lesson {str(lesson)[:60]!r}, which has no exercises; known: {known}"
    defined = set().union(*(_bound_names(c.tree) for c in cells if c.tree is not None))
    votes = Counter(e.lesson for e in exercises() if e.name in defined).most_common()
    if not votes or (len(votes) > 1 and votes[0][1] == votes[1][1]):
        return None, "no course.lesson metadata and its cells define no known lesson's exercises"
    return votes[0][0], "the exercise functions it defines"


def find_cell(cells: list[Cell], name: str) -> Cell:
    """The cell that defines exercise ``name``: the one nbgrader calls ``name``, else the last definer."""
    tagged = [c for c in cells if c.grade_id == name]
    for cell in tagged:
        if cell.tree is None:
            raise SubmissionError(f"cell #{cell.number} (the `{name}` exercise) does not parse: {cell.error}")
        if name in _bound_names(cell.tree):
            return cell
    definers = [c for c in cells if c.tree is not None and name in _bound_names(c.tree)]
    if definers:
        return definers[-1]
    where = f"cell #{tagged[0].number}, the `{name}` exercise," if tagged else "no cell of the notebook"
    raise SubmissionError(f"missing: {where} defines no `{name}` (renamed or deleted?)")


def program_for(cells: list[Cell], name: str) -> Program:
    """The exercise cell plus the earlier imports and definitions it needs (transitively)."""
    cell = find_cell(cells, name)
    earlier = [(c.index, i, node) for c in cells if c.index < cell.index and c.tree is not None
               for i, node in enumerate(c.tree.body) if _is_context(node)]
    chosen = {key for key in earlier if _is_star_import(key[2])}
    needed, done = _free_names(cell.tree), set()
    while needed - done:
        want = (needed - done).pop()
        done.add(want)
        for key in reversed(earlier):  # the last binding before the exercise cell is the one it sees
            if want in _binds(key[2]):
                if key not in chosen:
                    chosen.add(key)
                    needed |= _free_names(ast.Module(body=[key[2]], type_ignores=[]))
                break
    context = "\n".join(_guarded(key[2]) for key in sorted(chosen, key=lambda k: k[:2]))
    return Program(context, cell)


def reference_use(cells: list[Cell], program: Program, exercise: Exercise) -> str | None:
    """Why ``program`` uses the course_lib reference of ``exercise`` (calls or returns it), else None."""
    ref = exercise.reference.__name__
    aliases, modules = _course_lib_bindings(cells, ref)
    if exercise.name in _defined_by_code(program.cell.tree):
        aliases.discard(exercise.name)  # inside its own def the name is the student's function
    trees = [program.cell.tree, ast.parse(program.context)]
    for node in (n for tree in trees for n in ast.walk(tree)):
        if isinstance(node, ast.Name) and node.id in aliases:
            return f"uses `{node.id}`, the course_lib reference {_qualname(exercise)}"
        if isinstance(node, ast.Attribute) and node.attr == ref and _root_name(node) in modules:
            return f"uses {ast.unparse(node)}, the course_lib reference {_qualname(exercise)}"
    for tree in trees:
        why = _introspection(tree)
        if why:
            return f"{why}, which can reach the course_lib reference"
    return None


_INTROSPECTION_NAMES = {"__import__", "importlib", "inspect", "gc"}
_INTROSPECTION_ATTRS = {"__closure__", "__globals__", "cell_contents", "__wrapped__", "__code__"}


def _introspection(tree: ast.Module) -> str | None:
    """Dynamic imports and function introspection: no exercise needs them, hiding the reference does."""
    docstrings = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and "course_lib" in node.value \
                and id(node) not in docstrings:
            return "it names course_lib in a string (a dynamic import)"
        if isinstance(node, ast.Name) and node.id in _INTROSPECTION_NAMES:
            return f"it uses `{node.id}`"
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = {a.name.split(".")[0] for a in node.names} | {(node.module or "").split(".")[0]} \
                if isinstance(node, ast.ImportFrom) else {a.name.split(".")[0] for a in node.names}
            if names & _INTROSPECTION_NAMES:
                return f"it imports {sorted(names & _INTROSPECTION_NAMES)[0]}"
        if isinstance(node, ast.Attribute) and (node.attr in _INTROSPECTION_ATTRS or (
                node.attr == "modules" and isinstance(node.value, ast.Name) and node.value.id == "sys")):
            return f"it reads `{ast.unparse(node)}`"
    return None


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


# -- names a piece of code binds and needs --------------------------------------------------------

def _is_check_call(node: ast.AST) -> bool:
    value = getattr(node, "value", None)
    return isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "check"


def _is_context(node: ast.stmt) -> bool:
    kinds = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Assign,
             ast.AnnAssign)
    return isinstance(node, kinds) and not _is_check_call(node)


def _is_star_import(node: ast.stmt) -> bool:
    return isinstance(node, ast.ImportFrom) and any(a.name == "*" for a in node.names)


def _binds(node: ast.stmt) -> set[str]:
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return {(a.asname or a.name).split(".")[0] for a in node.names if a.name != "*"}
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {node.name}
    if isinstance(node, (ast.Assign, ast.AnnAssign)) and not _is_check_call(node):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        return {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
    return set()


def _bound_names(tree: ast.Module) -> set[str]:
    return set().union(*(_binds(node) for node in tree.body)) if tree.body else set()


def _defined_by_code(tree: ast.Module) -> set[str]:
    return {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}


def _free_names(tree: ast.Module) -> set[str]:
    loaded, stored = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (loaded if isinstance(node.ctx, ast.Load) else stored).add(node.id)
        elif isinstance(node, ast.arg):
            stored.add(node.arg)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            stored.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            stored |= _binds(node)
    return loaded - stored - set(dir(builtins))


def _guarded(node: ast.stmt) -> str:
    # a context line that fails (a missing package, a data file) must not hide the exercise itself
    body = "\n".join("    " + line for line in ast.unparse(node).splitlines())
    return f"try:\n{body}\nexcept Exception:\n    pass"


# -- how the notebook reaches course_lib ----------------------------------------------------------

def _course_lib_bindings(cells: list[Cell], ref: str) -> tuple[set[str], set[str]]:
    """Names bound to the reference function, and names bound to course_lib modules, in any cell."""
    aliases, modules = set(), set()
    for node in (n for c in cells if c.tree is not None for n in ast.walk(c.tree)):
        if isinstance(node, ast.Import):
            modules |= {(a.asname or a.name).split(".")[0] for a in node.names if a.name.startswith("course_lib")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("course_lib"):
            for alias in node.names:
                if alias.name == ref:
                    aliases.add(alias.asname or alias.name)
                elif _is_module(f"{node.module}.{alias.name}"):
                    modules.add(alias.asname or alias.name)
    return aliases, modules


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _root_name(node: ast.AST) -> str | None:
    while isinstance(node, ast.Attribute):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def _qualname(exercise: Exercise) -> str:
    return f"{exercise.reference.__module__}.{exercise.reference.__name__}"


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:200]
