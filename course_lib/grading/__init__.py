"""Grade submitted notebooks, each run once in its own sandbox: ``python -m course_lib.grading``.

For each submission:

1. find it without following links (a symbolic or hard link is refused with its own row), read it
   (at most 20 MB); its lesson is its assignment's (``--lesson``, else nbgrader's layout), and a
   notebook that claims another lesson (metadata, or the exercises it defines) gets 0 points;
2. draw fresh cases for the lesson's exercises from a seed drawn for this run (or ``--seed``, never
   the notebooks' seed 0) and compute the reference outputs here, with the real course_lib;
3. run the notebook in its sandbox (:mod:`.sandbox`, :mod:`.runner`): each exercise is graded on
   the fresh cases as its check cell receives it; the outputs come back as JSON and ``.npy`` arrays,
   read in a memory-capped child process (:mod:`.decode`), and are compared here (:mod:`.report`).
"""
from __future__ import annotations

import hashlib
import json
import os
import queue
import re
import secrets
import shutil
import stat
import sys
import threading
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from course_lib.notebook.checks import exercises
from course_lib.grading import limits, report, sandbox
from course_lib.grading.report import Outcome, Row
from course_lib.paths import ROOT

MAX_NOTEBOOK_BYTES = 20_000_000
NOT_RUN = "not run"


@dataclass
class Settings:
    timeout: float = 300.0
    cell_timeout: float = 120.0
    exercise_timeout: float = 30.0
    lesson: str | None = None
    seed: int | None = None  # None: drawn afresh for this run, never printed
    solutions: Path = ROOT / "solutions"
    jobs: int = 2
    memory_mb: int = 4096
    notebook_run: bool = True
    sandbox: bool = True
    max_processes: int = 64
    file_mb: int = 64
    tmp_mb: int = 512


@dataclass
class Submission:
    label: str
    path: Path
    refused: str = ""  # why the grader will not open it


def discover(paths: list[Path]) -> list[Submission]:
    """Every notebook named or inside a named folder, sorted; links are listed as refused, never followed."""
    found = []
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            for folder, dirs, files in os.walk(path):  # os.walk does not descend into linked folders
                dirs[:] = sorted(d for d in dirs if d != ".ipynb_checkpoints")
                for name in files + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
                    if name.endswith(".ipynb") or os.path.islink(os.path.join(folder, name)):
                        found.append(_submission(Path(folder) / name))
        elif os.path.lexists(path):
            found.append(_submission(path))
        else:
            raise FileNotFoundError(f"no such submission file or folder: {path}")
    if not found:
        raise FileNotFoundError(f"no .ipynb files in {[str(p) for p in paths]}")
    return sorted({s.label: s for s in found}.values(), key=lambda s: s.label)


def _submission(path: Path) -> Submission:
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode):
        return Submission(str(path), path, "refused: a symbolic link (the grader never follows links)")
    if not stat.S_ISREG(info.st_mode):
        return Submission(str(path), path, "refused: not a regular file")
    if info.st_nlink > 1:
        return Submission(str(path), path, "refused: a hard link to a file elsewhere")
    return Submission(str(path), path)


def read_notebook(path: Path) -> dict:
    """The notebook as JSON, read without following links; ValueError with a short reason otherwise."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise ValueError("refused: not a regular file")
        data = f.read(MAX_NOTEBOOK_BYTES + 1)
    if len(data) > MAX_NOTEBOOK_BYTES:
        raise ValueError(f"file is larger than {MAX_NOTEBOOK_BYTES // 1_000_000} MB")
    try:
        import nbformat

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            nb = nbformat.reads(data.decode("utf-8", errors="replace"), as_version=4)
        if not isinstance(nb.get("metadata"), dict) or not all(isinstance(c, dict) for c in nb.get("cells", [])):
            raise ValueError("it has no metadata or no list of cells")
    except Exception as error:  # noqa: BLE001  (any broken file is one reason in its rows)
        raise ValueError(f"not a readable notebook: {_first_line(error)}") from None
    return nb


def assignment(path: Path, lesson: str | None) -> tuple[str | None, str]:
    """(lesson, '') the submission is graded as, or (None, why): ``--lesson``, else nbgrader's layout.

    In ``submitted/<student>/<assignment>/`` the assignment folder names the lesson, or the notebook
    keeps its released name (an assignment folder holding several lessons). Never the notebook's own word.
    """
    if lesson:
        return lesson, ""
    known = {e.lesson for e in exercises()}
    parts = Path(os.path.abspath(path)).parts
    at = max((i for i, part in enumerate(parts) if part == "submitted"), default=-1)
    if at >= 0 and len(parts) >= at + 4:
        for name in (parts[at + 2], Path(parts[-1]).stem):
            if name in known:
                return name, ""
    return None, ("its assignment is unknown: grade with --lesson, or from nbgrader's "
                  "submitted/<student>/<assignment>/ layout whose assignment (or notebook name) is a lesson")


def identify_lesson(nb: dict | None) -> str | None:
    """The lesson the notebook itself claims (metadata, else the exercises its cells define), or None."""
    course = nb.get("metadata", {}).get("course", {}) if nb else {}
    lesson = course.get("lesson") if isinstance(course, dict) else None
    if lesson:
        return str(lesson)[:60]
    sources = "\n".join(str(c.get("source", "")) for c in (nb or {}).get("cells", []) if c.get("cell_type") == "code")
    defined = set(re.findall(r"^\s*(?:def|class)\s+(\w+)", sources, flags=re.M))
    votes = Counter(e.lesson for e in exercises() if e.name in defined).most_common()
    if votes and (len(votes) == 1 or votes[0][1] > votes[1][1]):
        return votes[0][0]
    return None


class Grader:
    """Grades submissions with one set of settings; caches cases, expected outputs, points and stubs per lesson."""

    def __init__(self, settings: Settings, workdir: Path, users: list[int | None] | None = None):
        if settings.seed is None:
            settings.seed = secrets.randbits(31) | 1  # unpredictable: no table of answers can be made ahead
        self.settings, self.workdir = settings, workdir
        self._lessons: dict[str, dict] = {}
        self._points: dict[str, dict[str, float]] = {}
        self._lock = threading.Lock()
        self.internal_errors = 0
        # the whole sandbox: its processes' memory, shared memory and its /tmp
        self.memory_mb = settings.memory_mb + settings.tmp_mb
        self.cgroups = settings.sandbox and limits.available(self.memory_mb)
        if settings.sandbox and not self.cgroups and settings.jobs > 1:
            print("note: no writable cgroups here, so memory is capped per process (shared memory not counted) "
                  "and submissions are graded one at a time", file=sys.stderr)
            settings.jobs = 1
        self.slots: queue.Queue[int | None] = queue.Queue()  # the sandbox users (users.leased_users), one per job
        for user in (users or [None] * settings.jobs)[:settings.jobs]:
            self.slots.put(user)

    def grade_all(self, found: list[Submission]) -> list[Row]:
        """Every submission's rows, in order; all files are read before any student code runs."""
        readable = {}
        for index, submission in enumerate(found):
            if not submission.refused:
                try:
                    readable[index] = read_notebook(submission.path)
                except (OSError, ValueError) as error:
                    submission.refused = str(error) if isinstance(error, ValueError) else _first_line(error)
        with ThreadPoolExecutor(self.settings.jobs) as pool:
            batches = pool.map(lambda i: self.grade_safely(i, found[i], readable.get(i)), range(len(found)))
            return [row for batch in batches for row in batch]

    def grade_safely(self, index: int, submission: Submission, nb: dict | None) -> list[Row]:
        try:
            return self.grade(index, submission, nb)
        except Exception as error:  # noqa: BLE001  (a grader bug costs this submission, loudly)
            self.internal_errors += 1
            import traceback

            traceback.print_exc()
            lesson = assignment(submission.path, self.settings.lesson)[0]
            return self.failed(submission, lesson, f"grader error: {type(error).__name__}: {error}")

    def grade(self, index: int, submission: Submission, nb: dict | None) -> list[Row]:
        lesson, why = assignment(submission.path, self.settings.lesson)
        if nb is None or lesson is None:
            return self.failed(submission, lesson, submission.refused or why)
        claims = identify_lesson(nb)
        if claims is not None and claims != lesson:
            return self.failed(submission, lesson, f"this is a notebook of lesson {claims}, not {lesson}: 0 points")
        box = sandbox.Box(self.workdir / f"submission_{index}", self.lesson(lesson)["course"])
        self._prepare(box, nb, lesson)
        slot = self.slots.get()
        try:
            outcomes, (events, finished), seconds = self._runs(box, slot, [e.name for e in exercises(lesson)])
        finally:
            self.slots.put(slot)
        print(report.printable(f"graded {submission.label} in {seconds:.0f} s"), file=sys.stderr)
        points, info = self.points(lesson), self.lesson(lesson)
        rows, notebook = [], self._clean(report.notebook_verdict(events, finished, self.settings.timeout))
        for exercise in exercises(lesson):
            cases, expected = info["cases"][exercise.name]
            status, reason = report.judge(outcomes[exercise.name], cases, expected, exercise.differ,
                                          self.settings.exercise_timeout)
            rows.append(Row(submission.label, lesson, exercise.name, status,
                            points[exercise.name] if status == "pass" else 0.0, points[exercise.name],
                            self._clean(reason), notebook))
        return rows

    def _runs(self, box: sandbox.Box, slot: int | None, names: list[str]) -> tuple[dict[str, Outcome], tuple, float]:
        """Run; when the run dies while an exercise is graded, run again for the exercises it never reached.

        All runs together get ``--timeout`` seconds: a student who survives the alarm in every
        exercise spends their own time, not more of the grader's.
        Returns each exercise's outcome, the first run's (events, how it ended), and the seconds spent.
        """
        decided, first, seconds, dead = {}, None, 0.0, []
        for attempt in range(len(names)):
            if self.settings.timeout - seconds < 1:
                break
            finished = self._run(box, slot, sorted(decided), dead, self.settings.timeout - seconds)
            seconds += finished.seconds
            events, outputs, finished.problem = report.read_back(finished.stream, box.path(f"read_{attempt}"))
            if not events:
                _check_started(box)
            first = first or (events, finished)
            reached = [n for n in names if n not in decided and report.started(events, n)]
            died_in = [n for n in reached if n not in outputs]  # started, never sent back
            ended = any("notebook" in e for e in events) or not died_in or attempt == len(names) - 1
            for name in names:
                if name not in decided and (ended or name in reached):
                    decided[name] = report.read_outcome(outputs.get(name), name, events, finished)
            if len(decided) == len(names):
                break
            dead += died_in
        spent = Outcome(problem=("timeout", f"the submission's {self.settings.timeout:g} s ran out before this "
                                            "exercise was graded"))
        return {n: decided.get(n, spent) for n in names}, first, seconds

    def _prepare(self, box: sandbox.Box, nb: dict, lesson: str) -> None:
        import nbformat

        grading = box.path("grading")
        shutil.copyfile(sandbox.RUNNER, grading / "runner.py")
        shutil.copyfile(sandbox.ADAPTERS, grading / "adapters.py")
        shutil.copyfile(self.lesson(lesson)["cases_file"], grading / "cases.pt")
        for cache in sandbox.font_caches():
            shutil.copyfile(cache, grading / cache.name)
        text = nbformat.writes(nbformat.from_dict(nb))
        (box.path("submission") / "notebook.ipynb").write_text(text, encoding="utf-8")
        inside = self.settings.sandbox
        job = {"uid": None, "cell_timeout": self.settings.cell_timeout,
               "exercise_timeout": self.settings.exercise_timeout,
               "stop_after_checks": not self.settings.notebook_run, "memory_mb": self.settings.memory_mb,
               "max_processes": self.settings.max_processes, "file_mb": self.settings.file_mb,
               "notebook": "/submission/notebook.ipynb" if inside else str(box.path("submission") / "notebook.ipynb"),
               "cases": "/grading/cases.pt" if inside else str(grading / "cases.pt"),
               "grading": "/grading" if inside else str(grading)}
        (grading / "job.json").write_text(json.dumps(job))

    def _run(self, box: sandbox.Box, slot: int | None, skip: list[str], dead: list[str], timeout: float) -> sandbox.Finished:
        uid = slot if self.settings.sandbox else None
        job_file = box.path("grading") / "job.json"
        job_file.write_text(json.dumps({**json.loads(job_file.read_text()), "uid": uid, "skip": skip, "dead": dead}))
        if not self.settings.sandbox:
            args, env = sandbox.unsandboxed_command(box)
            return sandbox.run(args, box, timeout, env)
        group = limits.Cgroup.make(f"course-grading-{os.getpid()}-{box.folder.name}", self.memory_mb,
                                    self.settings.max_processes) if self.cgroups else None
        args = sandbox.command(box, uid, self.settings.tmp_mb)
        try:
            return sandbox.run(group.command(args) if group else args, box, timeout)
        finally:
            if group:
                group.remove()
            if uid is not None:
                limits.clear_keyrings(uid)  # the slot's user keyring is the kernel's, not the sandbox's

    def lesson(self, lesson: str) -> dict:
        """Per lesson, once: the stubbed course_lib copy, the fresh cases and the reference outputs."""
        with self._lock:
            if lesson not in self._lessons:
                self._lessons[lesson] = self._prepare_lesson(lesson)
        return self._lessons[lesson]

    def _prepare_lesson(self, lesson: str) -> dict:
        folder = self.workdir / f"lesson_{lesson}"
        course = sandbox.stubbed_copy(exercises(lesson), folder / "course")
        cases, plain = {}, {}
        for exercise in exercises(lesson):
            drawn = exercise.make_cases(torch.Generator().manual_seed(case_seed(self.settings.seed, exercise.name)))
            cases[exercise.name] = (drawn, [exercise.call(exercise.reference, c) for c in drawn])
            plain[exercise.name] = [{"args": c.args, "kwargs": c.kwargs, "label": c.describe()} for c in drawn]
        torch.save(plain, folder / "cases.pt")
        return {"course": course, "cases": cases, "cases_file": folder / "cases.pt"}

    def points(self, lesson: str) -> dict[str, float]:
        """Points per exercise: the solution notebook's nbgrader metadata, else the registry's default."""
        if lesson not in self._points:
            found = report.solution_points(self.settings.solutions, lesson) if self.settings.solutions.is_dir() else {}
            missing = [e.name for e in exercises(lesson) if e.name not in found]
            if missing:
                print(f"note: no points for {missing} in the nbgrader metadata of {self.settings.solutions}; "
                      "using the default", file=sys.stderr)
            self._points[lesson] = {e.name: found.get(e.name, float(e.points)) for e in exercises(lesson)}
        return self._points[lesson]

    def failed(self, submission: Submission, lesson: str | None, reason: str) -> list[Row]:
        """The rows of a submission that did not run: every exercise at 0 of its points, when the lesson is known."""
        if lesson is None:
            return [Row(submission.label, "", "", "error", 0.0, 0.0, self._clean(reason), NOT_RUN)]
        points = self.points(lesson)
        return [Row(submission.label, lesson, e.name, "error", 0.0, points[e.name], self._clean(reason), NOT_RUN)
                for e in exercises(lesson)]

    def _clean(self, text: str) -> str:
        return report.clean(text, [str(self.workdir), os.path.realpath(self.workdir)])


def _check_started(box: sandbox.Box) -> None:
    """A run that said nothing: when bubblewrap itself failed, that is the grader's problem, not the student's."""
    log = box.path("log.txt").read_bytes()[:2000].decode(errors="replace") if box.path("log.txt").exists() else ""
    problems = [line for line in log.splitlines() if line.startswith("bwrap:")]
    if problems:
        raise RuntimeError(f"the sandbox did not start ({problems[0]})")


def case_seed(seed: int, name: str) -> int:
    """The seed of one exercise's fresh cases: fixed per run and exercise, never the notebooks' 0."""
    value = int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:4], "big") & 0x7FFFFFFF
    return value or 1


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:200]
