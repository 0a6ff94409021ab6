"""The grader's protocol and limits: what comes back is bounded data, limits hold, no answer is reachable.

The fast tests read forged streams and check the files; the slow ones (marked) grade the attack
notebooks of tests/fixtures/grading/protocol end to end, and walk every library function on every
exercise inside the sandbox's course_lib copy.
"""
from __future__ import annotations

import csv
import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch

from course_lib import grading
from course_lib.grading import __main__ as cli
from course_lib.grading import limits, report, runner, sandbox, users
from course_lib.notebook.checks import get_exercise
from course_lib.tools.nbtools import read

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = ROOT / "solutions"
FIXTURES = ROOT / "tests" / "fixtures" / "grading" / "protocol"
needs_bwrap = pytest.mark.skipif(sandbox.bwrap() is None, reason=sandbox.INSTALL_HINT)
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="the sandbox users and cgroups need root")
spec = importlib.util.spec_from_file_location("grading_protocol", FIXTURES / "submissions.py")
SUBS = importlib.util.module_from_spec(spec)
spec.loader.exec_module(SUBS)


def _lesson_file(lesson: str) -> Path:
    return next(p for p in sorted(SOLUTIONS.glob("*.ipynb"))
                if read(p).metadata.get("course", {}).get("lesson") == lesson)


def _place(base: Path, name: str, lesson: str, nb) -> Path:
    """nbgrader's layout: submitted/<student>/<assignment>/<notebook>."""
    path = base / "submitted" / name / lesson / f"{name}.ipynb"
    path.parent.mkdir(parents=True)
    path.write_text(nbformat.writes(nb), encoding="utf-8")
    return path


def _rows(path: Path) -> dict[tuple[str, str], dict]:
    return {(Path(r["submission"]).stem, r["exercise"]): r for r in csv.DictReader(path.open(encoding="utf-8"))}


# -- reading what comes back ---------------------------------------------------------------------------

def _result(name: str, outputs: list, extra: bytes = b"", **head) -> bytes:
    arrays: list = []
    results = [{"output": runner.encode(o, arrays)} for o in outputs]
    blobs = []
    for array in arrays:
        import io

        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=False)
        blobs.append(buffer.getvalue())
    payload = json.dumps({"results": results, "attempts": [], "arrays": [len(b) for b in blobs], **head}).encode()
    payload += b"\n" + b"".join(blobs) + extra
    return json.dumps({"end": name, "bytes": len(payload)}).encode() + b"\n" + payload


def test_results_round_trip_as_json_and_npy(tmp_path):
    outputs = [torch.arange(6).reshape(2, 3), (torch.ones(2, dtype=torch.bfloat16), 3, [1.5, None]),
               {"weight": np.float32(2.0), "flag": True}, np.eye(2)]
    events, decoded, problem = report.read_back(b'{"start": "x", "bytes": 0}\n' + _result("x", outputs), tmp_path / "r")
    assert problem == "" and events[0] == {"start": "x", "bytes": 0} and not (tmp_path / "r").exists()
    got = [r["output"] for r in decoded["x"]["results"]]
    assert torch.equal(got[0], outputs[0]) and got[1][0].dtype == torch.bfloat16 and got[1][1:] == (3, [1.5, None])
    assert got[2] == {"weight": 2.0, "flag": True} and isinstance(got[3], np.ndarray) and (got[3] == np.eye(2)).all()


def test_forged_streams_cost_their_own_rows_only(tmp_path):
    import io

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (10**6, 10**6)})
    blob = header.getvalue() + b"\0" * 8  # a header that claims 8 TB
    head = {"results": [{"output": {"tensor": 0, "dtype": "float64"}}], "attempts": [], "arrays": [len(blob)]}
    payload = json.dumps(head).encode() + b"\n" + blob
    huge = json.dumps({"end": "a", "bytes": len(payload)}).encode() + b"\n" + payload
    pickled = io.BytesIO()
    torch.save([[[]] * 10] * 10, pickled)
    forged = json.dumps({"end": "b", "bytes": len(pickled.getvalue())}).encode() + b"\n" + pickled.getvalue()
    stream = (b"[" * 100_000 + b"\n" + huge + forged
              + _result("c", [1.0]) + _result("c", [1.0]) + b"{}\n" * 2_000_000)
    started = time.monotonic()
    events, decoded, problem = report.read_back(stream, tmp_path / "r")
    assert time.monotonic() - started < 30 and not (tmp_path / "r").exists()
    assert "unreadable" in decoded["a"] and "unreadable" in decoded["b"] and decoded["c"] == {"duplicate": True}
    assert "more events" in problem and len(events) <= 5_000
    for name, why in (("a", "could not be read back"), ("c", "more than one result")):
        assert why in report.read_outcome(decoded[name], name, events, None).problem[1]


def test_nan_and_infinity_never_match_a_finite_reference():
    exercise = get_exercise("mask_count")
    cases = exercise.make_cases(torch.Generator().manual_seed(3))
    expected = [exercise.call(exercise.reference, c) for c in cases]
    judge = lambda outputs: report.judge(report.Outcome([{"output": o} for o in outputs]), cases, expected,  # noqa
                                         exercise.differ, 5)
    assert judge(expected)[0] == "pass"
    for bad in (float("nan"), float("inf")):
        status, reason = judge([[bad] * len(e) for e in expected])
        assert status == "fail" and "NaN or infinity" in reason
    tensors = get_exercise("cfg_velocity")
    case = tensors.make_cases(torch.Generator().manual_seed(3))[:1]
    out = tensors.call(tensors.reference, case[0])
    assert report.judge(report.Outcome([{"output": out * float("nan")}]), case, [out], tensors.differ, 5)[0] == "fail"


def test_printed_text_is_escaped_and_csv_cells_are_inert(tmp_path):
    label = "/x/" + "s" * 60 + "/\x1b[2Jevil\u202e.ipynb"
    rows = [report.Row(label, "01", "patchify", "error", 0.0, 2.0, "=HYPERLINK(\"http://x\")\x1b[8m",
                       "-cmd|' /C calc'!A0"),
            report.Row("@SUM(1)", "01", "patchify", "pass", 2.0, 2.0, "+1", "ran")]
    text = report.summary(rows)
    assert not any(ord(c) < 32 and c != "\n" or c == "\u202e" for c in text)
    assert "...s" in text and "\\x1b[2Jevil\\u202e.ipynb" in text
    report.write_csv(rows, tmp_path / "g.csv")
    report.write_json(rows, tmp_path / "g.json")
    cells = [c for row in csv.reader((tmp_path / "g.csv").open(encoding="utf-8")) for c in row]
    assert not any(c[:1] in "=+-@" and c for c in cells)
    assert json.loads((tmp_path / "g.json").read_text())["rows"][0]["reason"] == rows[0].reason  # exact


def test_the_assignment_comes_from_the_layout_or_the_command_line(tmp_path):
    known = "01_patch_tokenization"
    assert grading.assignment(tmp_path / "submitted" / "ann" / known / "x.ipynb", None) == (known, "")
    assert grading.assignment(tmp_path / "submitted" / "ann" / "week1" / f"{known}.ipynb", None) == (known, "")
    assert grading.assignment(tmp_path / "x.ipynb", "08_maskgit") == ("08_maskgit", "")
    lesson, why = grading.assignment(tmp_path / "loose" / f"{known}.ipynb", None)
    assert lesson is None and "--lesson" in why


# -- no implementation of a graded answer where it is graded ---------------------------------------------

# what a reference may call besides itself and its stubbed equivalents: checks of its inputs, and the
# building blocks the exercise hands the student (mask_ratio: the hint says to use it; fsq.bound: the
# notebook plots it, and the exercise still rounds, passes gradients straight through and scales)
# -- the attack set, graded end to end --------------------------------------------------------------------

@pytest.fixture(scope="module")
def graded_attacks(tmp_path_factory):
    if sandbox.bwrap() is None:
        pytest.skip(sandbox.INSTALL_HINT)
    base = tmp_path_factory.mktemp("attacks")
    made = SUBS.lesson01(read(_lesson_file(SUBS.L01)), read(_lesson_file("00_welcome")))
    for name, nb in made.items():
        _place(base, name, SUBS.L01, nb)
    command = [sys.executable, "-m", "course_lib.grading", str(base / "submitted"), "--out", str(base / "g.csv"),
               "--exercise-timeout", "5", "--cell-timeout", "60", "--timeout", "45", "--memory-mb", "2000",
               "--jobs", "2"]
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=900)
    elapsed = time.monotonic() - started
    print(f"attack set ({len(made)} submissions) graded in {elapsed:.0f} s")
    print("\n".join(line for line in done.stderr.splitlines() if line.startswith("graded ")))
    return {"code": done.returncode, "stdout": done.stdout, "stderr": done.stderr, "rows": _rows(base / "g.csv"),
            "csv": (base / "g.csv").read_text(encoding="utf-8"), "base": base}


@pytest.mark.slow
@needs_bwrap
def test_each_attack_gets_its_row_and_the_honest_ones_full_marks(graded_attacks):
    assert graded_attacks["code"] == 0, graded_attacks["stderr"][-3000:]
    rows = graded_attacks["rows"]
    for name, expected in SUBS.EXPECTED.items():
        if name == "memfd" and not limits.available(64):
            continue  # no cgroups here: shared memory is not counted (the README says so)
        for exercise, (status, reason) in expected.items():
            row = rows[(name, exercise)]
            assert row["status"] == status and re.search(reason, row["reason"]), (name, exercise, row)
    for name in ("a_honest", "forks"):
        assert all(rows[(name, e)]["points"] == rows[(name, e)]["max_points"] for e in SUBS._EXERCISES)
    assert rows[("a_honest", "patchify")]["notebook"] == "ran"  # beside 40 spinning children, within its limit


@pytest.mark.slow
@needs_bwrap
def test_the_summary_and_csv_carry_no_escape_or_formula(graded_attacks):
    assert "\x1b" not in graded_attacks["stdout"] and "\x1b" not in graded_attacks["stderr"]
    assert "\\x1b[2J" in graded_attacks["stdout"]
    cells = [c for row in csv.reader(graded_attacks["csv"].splitlines()) for c in row]
    assert not any(c[:1] in "=+-@" and c for c in cells)


@pytest.mark.slow
@needs_bwrap
def test_time_limits_hold_per_submission(graded_attacks):
    seconds = {m.group(1): int(m.group(2)) for m in re.finditer(r"graded .*/(\w+)\.ipynb in (\d+) s",
                                                                graded_attacks["stderr"])}
    assert seconds["no_alarm"] <= 45 + 10, seconds  # three exercises that ignore the alarm: one --timeout


@pytest.mark.slow
@needs_bwrap
@as_root
def test_keyrings_are_empty_after_each_submission(tmp_path):
    solution = read(_lesson_file(SUBS.L01))
    plants = SUBS.small(solution, {}, setup_extra="\n" + SUBS.PLANT_KEY.format(key=SUBS.KEY))
    _place(tmp_path, "k1_plants", SUBS.L01, plants)
    _place(tmp_path, "k2_seeks", SUBS.L01, SUBS.small(solution, {"patchify": SUBS.SEEKS_KEY.format(key=SUBS.KEY)}))
    assert cli.main([str(tmp_path / "submitted"), "--out", str(tmp_path / "g.csv"), "--jobs", "1",
                     "--no-notebook-run"]) == 0
    rows = _rows(tmp_path / "g.csv")
    assert rows[("k2_seeks", "patchify")]["status"] == "pass", rows[("k2_seeks", "patchify")]
    probe = SUBS._KEYCTL.format() + f"print(_libc.syscall(_number[1], b'user', {SUBS.KEY!r}, None, 0) > 0)"
    for uid in range(sandbox.UID_BASE, sandbox.UID_BASE + 4):  # its user: the first free one, graders beside it
        seen = subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                               sys.executable, "-S", "-c", probe], capture_output=True, text=True, timeout=60)
        assert seen.stdout.strip() == "False", (uid, seen)


@pytest.mark.slow
@needs_bwrap
def test_library_equivalents_are_flagged_in_every_lesson(tmp_path):
    """Lesson 06's hinge via hinge_d_loss, 07's sample_step via sampling, 08's via masked_after, 09's via cfg_logits."""
    for lesson, (name, source) in SUBS.VIA_LIBRARY.items():
        _place(tmp_path, f"via_{lesson[:2]}", lesson, SUBS.small(read(_lesson_file(lesson)), {name: source}))
    _place(tmp_path, "nan_08", "08_maskgit", SUBS.small(read(_lesson_file("08_maskgit")), {}, before={
        "check_mask_count": SUBS.FORGED_NAN.format(name="mask_count")}))
    assert cli.main([str(tmp_path / "submitted"), "--out", str(tmp_path / "g.csv"), "--no-notebook-run"]) == 0
    rows = _rows(tmp_path / "g.csv")
    for lesson, (name, _) in SUBS.VIA_LIBRARY.items():
        row = rows[(f"via_{lesson[:2]}", name)]
        assert row["status"] == "flagged" and row["points"] == "0", row
    assert rows[("nan_08", "mask_count")]["status"] == "fail" and "NaN" in rows[("nan_08", "mask_count")]["reason"]


@as_root
def test_two_graders_at_once_lease_different_sandbox_users(tmp_path, monkeypatch):
    monkeypatch.setattr(users, "LEASES", tmp_path / "leases")
    with users.leased_users(2) as first, users.leased_users(2) as second:
        assert len(set(first + second)) == 4 and all(map(users.is_leased, first + second))
    assert not any(map(users.is_leased, first + second))  # given back when the block ends


@needs_bwrap
@as_root
def test_a_grader_without_free_users_refuses_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(users, "LEASES", tmp_path / "leases")
    monkeypatch.setattr(users, "USERS", 2)
    _place(tmp_path, "s", SUBS.L01, read(_lesson_file(SUBS.L01)))
    with users.leased_users(1):  # another grader holds one of the two
        assert cli.main([str(tmp_path / "submitted"), "--out", str(tmp_path / "g.csv"), "--jobs", "2"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: other graders on this machine hold 1 of the 2 sandbox users; grade with fewer --jobs or after "
        "they finish"]
    assert not (tmp_path / "g.csv").exists()


@as_root
def test_a_lease_folder_others_can_write_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(users, "LEASES", tmp_path / "leases")
    (tmp_path / "leases").mkdir(mode=0o777)
    (tmp_path / "leases").chmod(0o777)  # another user could plant links to root's files there
    with pytest.raises(users.NoUsers, match="no one else can write"):
        with users.leased_users(1):
            pass
