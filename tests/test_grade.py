"""The instructor grader: the lesson 01 fixture set and its attacks end to end, the sandbox, the files."""
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
import threading
import time
import warnings
from pathlib import Path

import nbformat
import pytest
import torch
from nbformat.v4 import new_code_cell, new_notebook

from course_lib import grading
from course_lib.notebook.checks import exercises, get_exercise
from course_lib.notebook.exercises import Case, Exercise
from course_lib.grading import __main__ as cli
from course_lib.grading import report, sandbox, users
from course_lib.tools.nbtools import make_student, read

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = ROOT / "solutions"
FIXTURES = ROOT / "tests" / "fixtures" / "grading"
BUDGET_S = 180  # the lesson 01 set and its attacks on 2 cores (the old grader took 95 s for the first 10)
SHM_NAME = f"course-grading-escape-{os.getpid()}"
needs_bwrap = pytest.mark.skipif(sandbox.bwrap() is None, reason=sandbox.INSTALL_HINT)


def _fixture_module(name: str):
    spec = importlib.util.spec_from_file_location(f"grading_{name}", FIXTURES / "lesson01" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


V01, ATTACKS = _fixture_module("variants"), _fixture_module("attacks")


def _digest(folder: Path) -> str:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink())
    return hashlib.sha256(b"".join(str(p).encode() + p.read_bytes() for p in files)).hexdigest()


def _live_orphans() -> list[str]:
    """Live processes that the sandboxes started: the orphan's `sleep`, or a sandbox user's that no running
    grader holds (another test's grader may be running beside this one)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            words = (proc / "cmdline").read_bytes().split(b"\0")
            uid = int(re.search(r"^Uid:\s+(\d+)", (proc / "status").read_text(), flags=re.M).group(1))
        except (OSError, AttributeError):
            continue
        if ATTACKS.ORPHAN_SECONDS.encode() in words or (
                sandbox.UID_BASE <= uid < sandbox.UID_BASE + users.USERS and not users.is_leased(uid)):
            found.append(f"{proc.name}: {b' '.join(words).decode(errors='replace')}")
    return found


def _write_set(base: Path) -> dict[str, str]:
    """The old variants, the attacks, the honest variants and two links, in base/submissions."""
    folder = base / "submissions"
    folder.mkdir(parents=True)
    solution = read(SOLUTIONS / V01.SOLUTION)
    other = make_student(read(SOLUTIONS / V01.OTHER_LESSON))
    targets = {"victim": str(folder / "correct.ipynb"), "key": str(SOLUTIONS / V01.SOLUTION),
               "escape": str(base / "escaped.txt"), "planted": str(folder / "planted.ipynb"), "shm_name": SHM_NAME}
    made = {**V01.variants(solution, make_student(solution), other, base / "escaped.txt"),
            **ATTACKS.attacks(solution, targets)}
    for name, nb in made.items():
        (folder / f"{name}.ipynb").write_text(nb if isinstance(nb, str) else nbformat.writes(nb), encoding="utf-8")
    (folder / "symlink.ipynb").symlink_to(SOLUTIONS / V01.SOLUTION)  # 6/6 when the old grader followed it
    (folder / "linked_folder").symlink_to(SOLUTIONS, target_is_directory=True)
    return targets


def _grade_piped(paths: list[Path], out: Path, *options: str) -> dict:
    """Run the command line as `grade ... | cat` would: when does the pipe close, after the grader exits?"""
    command = [sys.executable, "-m", "course_lib.grading", *map(str, paths), "--out", str(out), *options]
    started = time.monotonic()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    closed, chunks = {}, []

    def drain(name, stream):
        chunks.append((name, stream.read()))
        closed[name] = time.monotonic()

    readers = [threading.Thread(target=drain, args=(n, s)) for n, s in (("out", proc.stdout), ("err", proc.stderr))]
    for reader in readers:
        reader.start()
    code = proc.wait(timeout=550)
    exited = time.monotonic()
    for reader in readers:
        reader.join(timeout=150)
    text = {name: data.decode(errors="replace") for name, data in chunks}
    return {"code": code, "elapsed": exited - started, "stdout": text.get("out", ""), "stderr": text.get("err", ""),
            "lag": max(closed.get(n, float("inf")) for n in ("out", "err")) - exited}


@pytest.fixture(scope="module")
def graded_01(tmp_path_factory):
    """Grade the whole lesson 01 set (variants, attacks, honest code, links) once, with the command line."""
    if sandbox.bwrap() is None:
        pytest.skip(sandbox.INSTALL_HINT)
    base = tmp_path_factory.mktemp("grading01")
    targets = _write_set(base)
    before = {"submissions": _digest(base / "submissions"), "solutions": _digest(SOLUTIONS),
              "git": subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True).stdout}
    result = _grade_piped([base / "submissions"], base / "grades.csv", "--lesson", V01.LESSON,
                          "--exercise-timeout", "5", "--cell-timeout", "30", "--timeout", "200")
    assert result["code"] == 0, result["stderr"][-3000:]
    rows = list(csv.DictReader((base / "grades.csv").open(encoding="utf-8")))
    return {**result, "rows": rows, "base": base, "targets": targets, "before": before,
            "orphans": _live_orphans(), "load": os.getloadavg()[0]}


def _expected_rows() -> dict[tuple[str, str], tuple[str, str, str]]:
    """(variant, exercise) -> (status, reason pattern, notebook pattern), the whole table."""
    table = {}
    for variant, (expected, notebook) in V01.EXPECTED.items():
        table |= {(variant, e): (status, reason, notebook) for e, (status, reason) in expected.items()}
    for variant, expected in ATTACKS.EXPECTED.items():
        table |= {(variant, e): (status, reason, "") for e, (status, reason) in expected.items()}
    refused = ("error", "refused: a symbolic link", V01.NOT_RUN)
    for link in ("symlink", "linked_folder"):
        table |= {(link, e.name): refused for e in exercises(V01.LESSON)}
    return table


def test_every_expected_row_is_there_with_its_status(graded_01):
    rows = {(Path(r["submission"]).stem, r["exercise"]): r for r in graded_01["rows"]}
    table = _expected_rows()
    assert len(graded_01["rows"]) == len(rows) == len(table)
    for key, (status, reason, notebook) in table.items():
        row = rows[key]
        assert (row["status"], row["lesson"]) == (status, V01.LESSON), (key, row)
        assert re.search(reason, row["reason"]), (key, row["reason"])
        assert re.search(notebook, row["notebook"]), (key, row["notebook"])


def test_attacks_earn_nothing_and_honest_code_earns_everything(graded_01):
    totals = {}
    for row in graded_01["rows"]:
        got, best = totals.get(Path(row["submission"]).stem, (0.0, 0.0))
        totals[Path(row["submission"]).stem] = (got + float(row["points"]), best + float(row["max_points"]))
    attacks = [name for name in ATTACKS.EXPECTED if not name.startswith("honest")]
    for name in [*attacks, "hostile", "cheater", "symlink", "linked_folder"]:
        assert totals[name] == (0, 6), name
    for name in ("honest_different", "honest_backends", "correct"):
        assert totals[name] == (6, 6), name


def test_fork_bomb_is_capped(graded_01):
    (row,) = [r for r in graded_01["rows"] if r["submission"].endswith("fork_bomb.ipynb")
              and r["exercise"] == "nearest_centroid"]
    children = int(re.search(r"got (\d+)", row["reason"]).group(1))
    assert children < 100  # it asked for 300


def test_points_come_from_the_solution_metadata(graded_01):
    points = report.solution_points(SOLUTIONS, V01.LESSON)
    for row in graded_01["rows"]:
        assert float(row["max_points"]) == points[row["exercise"]]
        assert float(row["points"]) == (points[row["exercise"]] if row["status"] == "pass" else 0)


def test_nothing_changed_outside_the_sandbox(graded_01):
    base, before = graded_01["base"], graded_01["before"]
    assert _digest(base / "submissions") == before["submissions"]  # the victim's notebook included
    assert _digest(SOLUTIONS) == before["solutions"]
    assert subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True).stdout == before["git"]
    for path in (graded_01["targets"]["escape"], graded_01["targets"]["planted"], f"/dev/shm/{SHM_NAME}"):
        assert not os.path.exists(path), path
    assert sorted(p.name for p in base.iterdir()) == ["grades.csv", "grades.json", "submissions"]


def test_no_process_outlives_the_grader_and_the_pipe_closes_at_once(graded_01):
    assert graded_01["orphans"] == []
    assert graded_01["lag"] < 1.0, graded_01["lag"]


def test_the_set_grades_within_budget(graded_01):
    elapsed, load, cores = graded_01["elapsed"], graded_01["load"], os.cpu_count() or 1
    print(f"lesson 01 set ({len(graded_01['rows']) // 3} submissions) graded in {elapsed:.0f} s "
          f"(load average {load:.1f} on {cores} cores)")
    if elapsed > BUDGET_S and load > 1.5 * cores:
        warnings.warn(f"grading took {elapsed:.0f} s > {BUDGET_S} s, on a machine loaded {load:.1f} on {cores} cores")
        return
    assert elapsed <= BUDGET_S


def test_json_copy_matches_the_csv(graded_01):
    data = json.loads((graded_01["base"] / "grades.json").read_text())
    assert [{k: report.inert(report.printable(v)) if not isinstance(v, float) else f"{v:g}" for k, v in r.items()}
            for r in data["rows"]] == graded_01["rows"]
    correct = next(t for t in data["totals"] if t["submission"].endswith("correct.ipynb"))
    assert correct["points"] == correct["max_points"] > 0


# -- re-grading, lessons, links ---------------------------------------------------------------------

def _tiny_solution() -> nbformat.NotebookNode:
    solution = read(SOLUTIONS / V01.SOLUTION)
    keep = [c for c in solution.cells if c.cell_type == "code" and "nbgrader" in c.metadata]
    setup = new_code_cell("import torch\nfrom einops import rearrange\nfrom course_lib.notebook.checks import check")
    return new_notebook(cells=[setup, *keep])  # no metadata: its lesson comes from what it defines


@needs_bwrap
def test_regrading_with_a_seed_gives_the_same_bytes(tmp_path):
    folder = tmp_path / "submitted" / "ann" / V01.LESSON  # nbgrader's layout names the assignment
    folder.mkdir(parents=True)
    (folder / "tiny.ipynb").write_text(nbformat.writes(_tiny_solution()))
    (folder / "unknown.ipynb").write_text(nbformat.writes(new_notebook(cells=[new_code_cell("print(1)")])))
    (folder / "broken.ipynb").write_text('{"cells": [')
    outputs = []
    for run in ("a", "b"):
        assert cli.main([str(folder), "--out", str(tmp_path / f"{run}.csv"), "--timeout", "120", "--seed", "7"]) == 0
        outputs.append(((tmp_path / f"{run}.csv").read_bytes(), (tmp_path / f"{run}.json").read_bytes()))
    assert outputs[0] == outputs[1]
    rows = list(csv.DictReader(outputs[0][0].decode().splitlines()))
    tiny = [r for r in rows if r["submission"].endswith("tiny.ipynb")]
    assert {(r["lesson"], r["status"], r["notebook"]) for r in tiny} == {(V01.LESSON, "pass", "ran")} and len(tiny) == 3
    # it claims no lesson: graded as its assignment
    unknown = [r for r in rows if r["submission"].endswith("unknown.ipynb")]
    assert [(r["lesson"], r["status"]) for r in unknown] == [(V01.LESSON, "error")] * 3
    assert all("no check of" in r["reason"] for r in unknown)
    broken = [r for r in rows if r["submission"].endswith("broken.ipynb")]  # keeps its exercises' maximum, 0 of 6
    assert [(r["lesson"], r["status"], r["points"]) for r in broken] == [(V01.LESSON, "error", "0")] * 3
    assert sum(float(r["max_points"]) for r in broken) == 6 and "not a readable notebook" in broken[0]["reason"]
    # outside the layout and without --lesson, its assignment is unknown: one row saying how to tell it
    loose = tmp_path / "loose.ipynb"
    loose.write_text(nbformat.writes(_tiny_solution()))
    assert cli.main([str(loose), "--out", str(tmp_path / "alone.csv")]) == 0
    (alone,) = list(csv.DictReader((tmp_path / "alone.csv").open(encoding="utf-8")))
    assert (alone["lesson"], alone["exercise"], alone["status"], alone["max_points"]) == ("", "", "error", "0")
    assert "--lesson" in alone["reason"]


def test_links_are_listed_as_refused_and_never_read(tmp_path):
    (tmp_path / "real.ipynb").write_text("{}")
    (tmp_path / "soft.ipynb").symlink_to(SOLUTIONS / V01.SOLUTION)
    os.link(tmp_path / "real.ipynb", tmp_path / "hard.ipynb")
    (tmp_path / "folder").symlink_to(SOLUTIONS, target_is_directory=True)
    found = {Path(s.label).name: s.refused for s in grading.discover([tmp_path])}
    assert found["soft.ipynb"].startswith("refused: a symbolic link")
    assert found["folder"].startswith("refused: a symbolic link")
    assert found["hard.ipynb"].startswith("refused: a hard link") and found["real.ipynb"].startswith("refused: a hard")
    assert len(found) == 4  # nothing from inside the linked folder
    with pytest.raises(OSError):
        grading.read_notebook(tmp_path / "soft.ipynb")


# -- the sandbox ---------------------------------------------------------------------------------------

_PROBE = '''import importlib, json, os, socket, sys
sys.path.insert(0, "/course")
import course_lib
patches = importlib.import_module(%(patches)r)  # where the registry says patchify lives
seen = {"course_lib": course_lib.__file__, "root": sorted(os.listdir("/")), "pid": os.getpid(),
        "stub": "absent_reference" in open(patches.__file__).read(),
        "kept": "def attention_cost" in open(patches.__file__).read(),
        "grading_copied": os.path.exists("/course/course_lib/grading"), "shm": os.listdir("/dev/shm"),
        "solutions": os.path.exists("/course/solutions") or os.path.exists(%(solutions)r),
        "checkout": sorted(os.listdir(%(root)r)) if os.path.isdir(%(root)r) else []}
try:
    socket.create_connection(("1.1.1.1", 53), timeout=3)
    seen["network"] = True
except OSError:
    seen["network"] = False
try:
    patches.patchify(None, 2)
except RuntimeError as error:
    seen["stub_raises"] = str(error)
seen["writable"] = []
for folder in ["/", "/grading", "/submission", "/course", "/usr", "/etc", %(python)r, "/dev/shm", "/tmp"]:
    try:
        open(os.path.join(folder, "planted"), "w").close()
        seen["writable"].append(folder)
    except OSError:
        pass
print(json.dumps(seen))
'''


@needs_bwrap
def test_the_sandbox_sees_only_its_own_world(tmp_path):
    course = sandbox.stubbed_copy(exercises(V01.LESSON), tmp_path / "course")
    box = sandbox.Box(tmp_path / "box", course)
    (box.path("grading") / "runner.py").write_text(_PROBE % {
        "solutions": str(SOLUTIONS), "root": str(ROOT), "python": sys.prefix,
        "patches": get_exercise("patchify").reference.__module__})
    uid = sandbox.UID_BASE if os.geteuid() == 0 else None
    finished = sandbox.run(sandbox.command(box, uid, 64), box, timeout=120)
    assert finished.code == 0, box.path("log.txt").read_text()[-2000:]
    seen = json.loads(finished.stream)
    assert seen["course_lib"] == "/course/course_lib/__init__.py"  # the copy, not the checkout
    assert seen["stub"] and seen["kept"] and not seen["grading_copied"]
    assert "absent while grading" in seen["stub_raises"]
    # a venv inside the checkout is mounted at its own path, so the checkout folder may exist, holding it alone
    assert not seen["solutions"] and set(seen["checkout"]) <= {".venv"} and not seen["network"]
    assert seen["shm"] == [] and seen["pid"] < 10  # its own /dev and its own pid namespace
    assert seen["writable"] == ["/dev/shm", "/tmp"]  # both vanish with it
    assert not any(p.name == "planted" for p in box.folder.rglob("*"))
    assert set(seen["root"]) <= {"usr", "bin", "sbin", "lib", "lib32", "lib64", "etc", "proc", "dev", "tmp",
                                 "course", "grading", "submission", "out", *Path(sys.prefix).parts[1:2],
                                 *Path(sys.base_prefix).parts[1:2]}


def test_stubs_follow_the_registry_wherever_the_reference_lives(tmp_path):
    """A reference in a sub-package is found by __module__ / __qualname__; the rest of its file stays."""
    from course_lib.datasets import imageset

    def copied(module: str) -> str:
        return (course / Path(*module.split("."))).with_suffix(".py").read_text()

    moved = Exercise("moved", "99_test", imageset.check_images, lambda g: [], hint="")
    course = sandbox.stubbed_copy([moved, get_exercise("patchify")], tmp_path / "course")
    assert "absent_reference('moved'" in copied(imageset.__name__) and "class ImageSet" in copied(imageset.__name__)
    patches = copied(get_exercise("patchify").reference.__module__)
    assert "absent_reference('patchify'" in patches and "def unpatchify" in patches
    assert "rearrange(images" not in patches.split("def patchify")[1].split("\ndef ")[0]
    assert not (course / "course_lib" / "grading").exists()
    outside = Exercise("outside", "99_test", torch.cdist, lambda g: [], hint="")
    with pytest.raises(ValueError, match="expected the reference"):
        sandbox.stubbed_copy([outside], tmp_path / "other")


def test_without_bwrap_the_grader_refuses_in_one_line(tmp_path):
    env = {**os.environ, "PATH": str(tmp_path)}  # no bwrap on this PATH
    command = [sys.executable, "-m", "course_lib.grading", str(tmp_path), "--out", str(tmp_path / "g.csv")]
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert result.returncode == 2 and not (tmp_path / "g.csv").exists()
    assert result.stderr.count("\n") == 1 and "apt-get install bubblewrap" in result.stderr


def test_a_sandbox_that_cannot_start_is_the_graders_error_not_the_students(tmp_path):
    fake = tmp_path / "bin" / "bwrap"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n")
    fake.chmod(0o755)
    (tmp_path / "tiny.ipynb").write_text(nbformat.writes(_tiny_solution()))
    env = {**os.environ, "PATH": f"{fake.parent}{os.pathsep}{os.environ['PATH']}"}
    command = [sys.executable, "-m", "course_lib.grading", str(tmp_path / "tiny.ipynb"),
               "--out", str(tmp_path / "g.csv"), "--lesson", V01.LESSON]
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert result.returncode == 1  # the grader failed, not the student
    rows = list(csv.DictReader((tmp_path / "g.csv").open(encoding="utf-8")))
    assert len(rows) == 3 and all(r["reason"].startswith("grader error: RuntimeError: the sandbox did not start "
                                                         "(bwrap: No permissions") for r in rows)
    assert sum(float(r["max_points"]) for r in rows) == 6


def test_no_sandbox_marks_every_row(tmp_path):
    (tmp_path / "tiny.ipynb").write_text(nbformat.writes(_tiny_solution()))
    out = tmp_path / "g.csv"
    assert cli.main([str(tmp_path / "tiny.ipynb"), "--out", str(out), "--no-sandbox", "--timeout", "120",
                     "--lesson", V01.LESSON]) == 0
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert len(rows) == 3 and all(r["notebook"].startswith("NOT SANDBOXED") and r["status"] == "pass" for r in rows)


# -- verdicts and files ------------------------------------------------------------------------------

def test_judge_turns_each_outcome_into_a_status():
    exercise = get_exercise("nearest_centroid")
    cases = exercise.make_cases(torch.Generator().manual_seed(grading.case_seed(7, exercise.name)))
    expected = [exercise.call(exercise.reference, c) for c in cases]
    judge = lambda outcome: report.judge(outcome, cases, expected, exercise.differ, 5)[0]  # noqa: E731
    Outcome = report.Outcome
    assert judge(Outcome([{"output": e} for e in expected])) == "pass"
    assert judge(Outcome([{"output": e + 1} for e in expected])) == "fail"
    assert judge(Outcome([{"raised": "NotImplementedError", "not_implemented": True}])) == "not implemented"
    assert judge(Outcome([{"raised": "KeyError: x"}])) == "error"
    assert judge(Outcome([{"timeout": True}])) == "timeout"
    assert judge(Outcome([{"output": e} for e in expected][:1])) == "error"  # stopped early
    assert judge(Outcome([{"output": e} for e in expected], attempts=["nearest_centroid"])) == "flagged"
    assert judge(Outcome(problem=("error", "the run exited"))) == "error"


def test_fresh_seeds_are_fixed_per_run_and_never_zero():
    assert grading.case_seed(1, "patchify") == grading.case_seed(1, "patchify") != grading.case_seed(2, "patchify")
    assert all(grading.case_seed(s, "patchify") != 0 for s in range(200))
    with pytest.raises(SystemExit):
        cli.main(["x.ipynb", "--out", "g.csv", "--seed", "0"])


def test_reasons_carry_no_temporary_paths_or_addresses(tmp_path):
    text = f"raised at <object at 0x7f3616ad18d0> in {tmp_path}/submission_3/x.py\nsecond line" + "x" * 500
    cleaned = report.clean(text, [str(tmp_path)])
    assert "0x7f" not in cleaned and str(tmp_path) not in cleaned and "\n" not in cleaned and len(cleaned) <= 300


def test_cases_travel_as_plain_data(tmp_path):
    """What the sandbox reads and writes needs no unpickling of objects: weights_only loads it."""
    grader = grading.Grader(grading.Settings(seed=5), tmp_path)
    info = grader.lesson(V01.LESSON)
    loaded = torch.load(info["cases_file"], weights_only=True)
    assert sorted(loaded) == sorted(e.name for e in exercises(V01.LESSON))
    first = get_exercise("patchify").make_cases(torch.Generator().manual_seed(grading.case_seed(5, "patchify")))[0]
    assert torch.equal(loaded["patchify"][0]["args"][0], first.args[0]) and isinstance(first, Case)


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