"""The instructor grader: the lesson 01 fixture set end to end, the sandbox, the static reading, nbgrader."""
from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import nbformat
import pytest
import torch
from nbformat.v4 import new_code_cell, new_notebook

from course_lib.grading import grade
from course_lib.grading import submissions
from course_lib.grading.exercise_runner import Outcome
from course_lib.notebook.checks import exercises, get_exercise
from course_lib.tools.nbtools import make_student, read

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = ROOT / "solutions"
FIXTURES = ROOT / "tests" / "fixtures" / "grading"
BUDGET_S = 180  # the limit for the lesson 01 set on 2 cores


def _variants_module(lesson_dir: str):
    spec = importlib.util.spec_from_file_location(f"variants_{lesson_dir}", FIXTURES / lesson_dir / "variants.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


V01 = _variants_module("lesson01")


def _write_variants(folder: Path, escape: Path) -> None:
    folder.mkdir(parents=True)
    solution = read(SOLUTIONS / V01.SOLUTION)
    other = make_student(read(SOLUTIONS / V01.OTHER_LESSON))
    for name, nb in V01.variants(solution, make_student(solution), other, escape).items():
        (folder / f"{name}.ipynb").write_text(nb if isinstance(nb, str) else nbformat.writes(nb), encoding="utf-8")


def _grade(paths: list[Path], out: Path, *options: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "course_lib.grading.grade", *map(str, paths), "--out", str(out), *options]
    return subprocess.run(command, capture_output=True, text=True, timeout=550, cwd=ROOT)


def _digest(folder: Path) -> str:
    return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())).hexdigest()


@pytest.fixture(scope="module")
def graded_01(tmp_path_factory):
    """Grade the whole lesson 01 fixture set once, with the CLI, and time it."""
    base = tmp_path_factory.mktemp("grading01")
    escape = base / "escaped.txt"
    _write_variants(base / "submissions", escape)
    before = _digest(SOLUTIONS)
    started = time.monotonic()
    result = _grade([base / "submissions"], base / "grades.csv", "--lesson", V01.LESSON,
                    "--exercise-timeout", "5", "--cell-timeout", "40", "--timeout", "200")
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr[-3000:]
    rows = list(csv.DictReader((base / "grades.csv").open(encoding="utf-8")))
    return {"rows": rows, "base": base, "elapsed": elapsed, "stdout": result.stdout, "escape": escape,
            "solutions_before": before, "load": os.getloadavg()[0]}


def test_every_expected_row_is_there_with_its_status(graded_01):
    rows = {(Path(r["submission"]).stem, r["exercise"]): r for r in graded_01["rows"]}
    assert len(rows) == len(graded_01["rows"]) == sum(len(e) for e, _ in V01.EXPECTED.values())
    for variant, (expected, notebook) in V01.EXPECTED.items():
        for exercise, (status, reason) in expected.items():
            row = rows[(variant, exercise)]
            assert (row["status"], row["lesson"]) == (status, V01.LESSON), (variant, exercise, row)
            assert re.search(reason, row["reason"]), (variant, exercise, row["reason"])
            assert re.search(notebook, row["notebook"]), (variant, row["notebook"])


def test_points_come_from_the_solution_metadata(graded_01):
    points = submissions.solution_points(SOLUTIONS, V01.LESSON)
    for row in graded_01["rows"]:
        assert float(row["max_points"]) == points[row["exercise"]]
        assert float(row["points"]) == (points[row["exercise"]] if row["status"] == "pass" else 0)


def test_the_set_grades_within_budget(graded_01):
    elapsed, load, cores = graded_01["elapsed"], graded_01["load"], os.cpu_count() or 1
    print(f"lesson 01 fixture set graded in {elapsed:.0f} s (load average {load:.1f} on {cores} cores)")
    if elapsed > BUDGET_S and load > 1.5 * cores:
        warnings.warn(f"grading took {elapsed:.0f} s > {BUDGET_S} s, on a machine loaded {load:.1f} on {cores} cores")
        return
    assert elapsed <= BUDGET_S


def test_hostile_code_changed_nothing_outside(graded_01):
    assert not graded_01["escape"].exists()
    assert _digest(SOLUTIONS) == graded_01["solutions_before"]
    assert "10 submissions" in graded_01["stdout"]  # the summary table printed every submission


def test_json_copy_matches_the_csv(graded_01):
    data = json.loads((graded_01["base"] / "grades.json").read_text())
    assert [{k: str(v) if not isinstance(v, float) else f"{v:g}" for k, v in r.items()} for r in data["rows"]] \
        == graded_01["rows"]
    correct = next(t for t in data["totals"] if t["submission"].endswith("correct.ipynb"))
    assert correct["points"] == correct["max_points"] > 0


def test_regrading_gives_the_same_bytes_and_infers_lessons(tmp_path):
    """Without --lesson: a notebook with no metadata, an unknown one, a broken one; twice, same files."""
    folder = tmp_path / "subs"
    folder.mkdir()
    solution = read(SOLUTIONS / V01.SOLUTION)
    keep = [c for c in solution.cells if c.cell_type == "code" and "nbgrader" in c.metadata]
    setup = new_code_cell("import torch\nfrom einops import rearrange\nfrom course_lib.notebook.checks import check")
    peek = new_code_cell("import os\ntry:\n    os.kill(os.getppid(), 0)  # the grader\nexcept PermissionError:\n"
                         f"    pass\nopen({str(SOLUTIONS / V01.SOLUTION)!r}).read()")  # the kernel's guard refuses both
    (folder / "tiny.ipynb").write_text(nbformat.writes(new_notebook(cells=[setup, *keep, peek])))
    (folder / "unknown.ipynb").write_text(nbformat.writes(new_notebook(cells=[new_code_cell("print(1)")])))
    (folder / "broken.ipynb").write_text('{"cells": [')
    outputs = []
    for run in ("a", "b"):  # in this process: the second run reuses the forkserver, as a long class would
        assert grade.main([str(folder), "--out", str(tmp_path / f"{run}.csv"), "--timeout", "120"]) == 0
        outputs.append(((tmp_path / f"{run}.csv").read_bytes(), (tmp_path / f"{run}.json").read_bytes()))
    assert outputs[0] == outputs[1]
    rows = list(csv.DictReader(outputs[0][0].decode().splitlines()))
    tiny = [r for r in rows if r["submission"].endswith("tiny.ipynb")]
    assert {(r["lesson"], r["status"]) for r in tiny} == {(V01.LESSON, "pass")} and len(tiny) == 3
    assert tiny[0]["notebook"].startswith(f"error in cell #{len(keep) + 2}: PermissionError: course grader sandbox: "
                                          f"reading the course's own files is not allowed (solutions/{V01.SOLUTION})")
    assert tiny[0]["notebook"].endswith("; sandbox refused: signalling other processes is not allowed (os.kill); "
                                        f"reading the course's own files is not allowed (solutions/{V01.SOLUTION})")
    for name, reason in (("unknown", "define no known lesson"), ("broken", "invalid JSON")):
        (row,) = [r for r in rows if r["submission"].endswith(f"{name}.ipynb")]
        assert (row["lesson"], row["exercise"], row["status"]) == ("", "", "error") and reason in row["reason"]


def test_every_lesson_solution_passes_and_its_student_notebook_is_not_implemented(tmp_path):
    """Every lesson as it lands: its solution and its stubs, through the sandboxed child (no notebook runs)."""
    lessons, pairs = {e.lesson for e in exercises()}, []
    for path in sorted(SOLUTIONS.glob("*.ipynb")):
        if read(path).metadata.get("course", {}).get("lesson") in lessons:
            solution, student = tmp_path / "solutions" / path.name, tmp_path / "students" / path.name
            for target, nb in ((solution, read(path)), (student, make_student(read(path)))):
                target.parent.mkdir(exist_ok=True)
                target.write_text(nbformat.writes(nb), encoding="utf-8")
            pairs.append((solution, student))
    assert len(pairs) >= 2
    out = tmp_path / "lessons.csv"
    assert grade.main([str(p) for pair in pairs for p in pair] + ["--out", str(out), "--no-notebook-run"]) == 0
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    for solution, student in pairs:
        lesson = read(solution).metadata["course"]["lesson"]
        for path, status in ((solution, "pass"), (student, "not implemented")):
            mine = [r for r in rows if r["submission"] == str(path)]
            assert sorted(r["exercise"] for r in mine) == sorted(e.name for e in exercises(lesson))
            assert all(r["status"] == status for r in mine), [(r["exercise"], r["reason"]) for r in mine]


# -- the sandbox -------------------------------------------------------------------------------------

def test_guard_refuses_answer_key_writes_outside_and_signals(tmp_path):
    root = tmp_path / "box"
    root.mkdir()
    script = textwrap.dedent(f"""
        import os, subprocess
        from pathlib import Path
        from course_lib.grading import sandbox
        seen = []
        sandbox.install(Path({str(root)!r}), seen.append, memory_mb=4096)
        def refused(action):
            try:
                action()
            except PermissionError as error:
                return "course grader sandbox" in str(error)
            return False
        assert refused(lambda: open({str(SOLUTIONS / V01.SOLUTION)!r}).read())
        assert refused(lambda: os.listdir({str(SOLUTIONS)!r}))
        assert refused(lambda: open({str(tmp_path / 'outside.txt')!r}, "w"))
        assert refused(lambda: os.kill(os.getppid(), 0))
        assert refused(lambda: subprocess.run(["true"]))
        Path({str(root / 'inside.txt')!r}).write_text("fine")  # its own folder stays writable
        open({str(ROOT / 'course_lib' / 'patches.py')!r}).read()  # the library stays readable
        assert [m["violation"] for m in seen] == ["read", "read", "write", "signal", "spawn"], seen
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=root)
    assert result.stdout.strip() == "ok", result.stderr[-2000:]
    assert not (tmp_path / "outside.txt").exists()


# -- reading a submission without running it -----------------------------------------------------------

def _notebook(*sources: str, lesson: str | None = None, grade_ids: dict[int, str] | None = None):
    cells = [new_code_cell(s) for s in sources]
    for index, grade_id in (grade_ids or {}).items():
        cells[index].metadata["nbgrader"] = {"grade_id": grade_id, "solution": True, "grade": False}
    return new_notebook(cells=cells, metadata={"course": {"lesson": lesson}} if lesson else {})


def test_lesson_from_metadata_else_from_the_exercises_it_defines():
    identify = lambda nb: submissions.identify_lesson(nb, submissions.code_cells(nb))[0]  # noqa: E731
    assert identify(_notebook("x = 1", lesson="00_welcome")) == "00_welcome"
    assert identify(_notebook("def patchify(i, p): pass\ndef unpatchify(*a): pass")) == V01.LESSON
    assert identify(_notebook("print(1)")) is None
    assert identify(_notebook("x = 1", lesson="99_unknown")) is None


def test_program_has_only_what_the_exercise_cell_needs():
    nb = _notebook("%matplotlib inline\nimport torch\nimport numpy as np\nfrom einops import rearrange\n"
                   "big = torch.zeros(10)\nSCALE = 2",
                   "def helper(x):\n    return x * SCALE",
                   "def patchify(images, patch_size):\n    return helper(rearrange(images, 'b c h w -> b h w c'))",
                   "patchify = check('patchify', patchify)", grade_ids={2: "patchify"})
    program = submissions.program_for(submissions.code_cells(nb), "patchify")
    assert program.cell.number == 3
    for needed in ("def helper", "SCALE = 2", "from einops import rearrange"):
        assert needed in program.context
    for unneeded in ("numpy", "big =", "check(", "matplotlib"):
        assert unneeded not in program.context


@pytest.mark.parametrize("source, flagged", [
    ("from course_lib.tokenizers.patches import patchify as ref\ndef patchify(i, p):\n    return ref(i, p)", True),
    ("import course_lib.tokenizers.patches as P\ndef patchify(i, p):\n    return P.patchify(i, p)", True),
    ("from course_lib import patches\npatchify = patches.patchify", True),
    ("import importlib\ndef patchify(i, p):\n    return importlib.import_module('x').f(i, p)", True),
    ("import sys\ndef patchify(i, p):\n    return vars(sys.modules['x'])['f'](i, p)", True),
    ("def patchify(i, p):\n    return unpatchify.__closure__[0].cell_contents(i, p)", True),
    ('def patchify(i, p):\n    """unlike course_lib.tokenizers.patches.patchify, my own"""\n    return i', False),
    ("def patchify(images, patch_size):\n    return patchify_helper(images)", False),
])
def test_reference_use_is_seen_in_the_source(source, flagged):
    nb = _notebook(source, grade_ids={0: "patchify"})
    cells = submissions.code_cells(nb)
    program = submissions.program_for(cells, "patchify")
    assert bool(submissions.reference_use(cells, program, get_exercise("patchify"))) is flagged


def test_missing_and_unparsable_exercises_say_so():
    cells = submissions.code_cells(_notebook("def patchify_v2(i, p): pass", "def unpatchify(:", grade_ids={
        0: "patchify", 1: "unpatchify"}))
    with pytest.raises(submissions.SubmissionError, match="missing: cell #1, the `patchify` exercise, defines no"):
        submissions.program_for(cells, "patchify")
    with pytest.raises(submissions.SubmissionError, match="cell #2 .* does not parse: SyntaxError"):
        submissions.program_for(cells, "unpatchify")


# -- verdicts and files ------------------------------------------------------------------------------

def test_judge_turns_each_outcome_into_a_status():
    exercise = get_exercise("nearest_centroid")
    cases = exercise.make_cases(torch.Generator().manual_seed(grade.case_seed(7, exercise.name)))
    expected = [exercise.call(exercise.reference, c) for c in cases]
    judge = lambda outcome: grade.judge(exercise, outcome, cases, expected, 20)[0]  # noqa: E731
    assert judge(Outcome("results", results=[{"output": e} for e in expected])) == "pass"
    assert judge(Outcome("results", results=[{"output": e + 1} for e in expected])) == "fail"
    assert judge(Outcome("results", results=[{"raised": "NotImplementedError", "not_implemented": True}])) \
        == "not implemented"
    assert judge(Outcome("results", results=[{"raised": "KeyError", "message": "x"}])) == "error"
    assert judge(Outcome("results", results=[{"output": e} for e in expected], trips={exercise.name})) == "flagged"
    assert judge(Outcome("timeout", "no answer")) == "timeout"
    assert judge(Outcome("died", "killed")) == "error"


def test_fresh_seeds_are_fixed_per_run_and_never_zero():
    assert grade.case_seed(1, "patchify") == grade.case_seed(1, "patchify") != grade.case_seed(2, "patchify")
    assert all(grade.case_seed(s, "patchify") != 0 for s in range(200))
    with pytest.raises(SystemExit):
        grade.main(["x.ipynb", "--out", "g.csv", "--seed", "0"])


def test_reasons_carry_no_temporary_paths_or_addresses(tmp_path):
    text = f"raised at <object at 0x7f3616ad18d0> in {tmp_path}/submission_3/x.py\nsecond line" + "x" * 500
    cleaned = grade.Grader(grade.Settings(), tmp_path)._clean(text)
    assert "0x7f" not in cleaned and str(tmp_path) not in cleaned and "\n" not in cleaned and len(cleaned) <= 300


# -- nbgrader ----------------------------------------------------------------------------------------

def test_nbgrader_generates_the_same_student_stubs(tmp_path):
    nbgrader = Path(sys.executable).parent / "nbgrader"
    if not nbgrader.exists():
        pytest.skip("nbgrader is not installed (pip install -e '.[dev]')")
    source = tmp_path / "source" / "lessons"
    shutil.copytree(SOLUTIONS, source, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    result = subprocess.run([str(nbgrader), "generate_assignment", "lessons", "--no-db", "--force",
                             f"--CourseDirectory.root={tmp_path}"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    for path in sorted(source.glob("*.ipynb")):  # the copies: solutions/ may change while this runs
        ours = make_student(read(path))
        theirs = nbformat.read(str(tmp_path / "release" / "lessons" / path.name), as_version=4)
        assert [c.source for c in theirs.cells] == [c.source for c in ours.cells], path.name
        # the same locks; beyond them nbgrader only adds nbgrader.cell_type and a checksum
        for index, (mine, generated) in enumerate(zip(ours.cells, theirs.cells)):
            for flag in ("editable", "deletable"):
                assert mine.metadata.get(flag, True) == generated.metadata.get(flag, True), (path.name, index, flag)
            for key, value in mine.metadata.get("nbgrader", {}).items():
                assert generated.metadata["nbgrader"][key] == value
