"""The exercise check: run a student's function against the course_lib reference on small cases.

Every exercise in the course is a function. The cell after it calls :func:`check`, which

1. builds a few small cases from a seeded generator (the grader draws fresh ones with another seed),
2. runs the reference and the student's function on copies of each case and compares the outputs,
3. prints ``PASS``, ``FAIL`` (the failing case with each argument by name, the output that differs by
   name, and a hint) or ``NOT IMPLEMENTED`` (with where to write the code and what to run again),
4. records the result (in memory, and as a JSON line in ``$COURSE_RESULTS_FILE`` when it is set),
5. hands back what the rest of the notebook should use: the student's function when it passes,
   otherwise the reference, with a visible note, so a student never dead-ends.

Lesson modules register their exercises with :func:`register`; ``course_lib.notebook.checks`` imports
them all and is what notebooks and the grader import (``from course_lib.notebook.checks import check``).
This module is the one place that words a verdict for every lesson: :meth:`Case.describe` names each
argument (``n=64, steps=32, schedule='cosine'``), :meth:`Exercise.differ` names each output
(``velocity: values differ ...``) and :func:`_message` says what to do next.
"""
from __future__ import annotations

import copy
import functools
import inspect
import json
import os
import textwrap
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

RESULTS_ENV = "COURSE_RESULTS_FILE"
CHECK_SEED_ENV = "COURSE_CHECK_SEED"
STATUSES = ("pass", "fail", "not implemented")
WIDTH = 100  # columns of a printed verdict: it fits a notebook cell


@dataclass
class Case:
    """One call of an exercise function: positional and keyword arguments, their names, an optional label.

    ``names`` are the positional arguments' names as the student's function calls them; :func:`register`
    fills them in from the exercise, so a case describes itself as ``data=tensor (5, 2), t=...``.
    A ``label`` replaces that description where the arguments are built by the exercise's ``run``.
    """

    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    label: str = ""
    names: tuple = ()

    def describe(self) -> str:
        if self.label:
            return self.label
        names = list(self.names) + [f"argument {i + 1}" for i in range(len(self.names), len(self.args))]
        parts = [f"{n}={_short(a)}" for n, a in zip(names, self.args)]
        # keyword arguments that start with "_" belong to the check (an upstream gradient), not the function
        parts += [f"{k}={_short(v)}" for k, v in self.kwargs.items() if not k.startswith("_")]
        return ", ".join(parts)


@dataclass(frozen=True)
class Exercise:
    """An exercise: its reference, how to draw cases, how to run and compare, a hint, and names.

    ``arguments`` names the positional arguments of a case (default: the reference's parameters);
    ``outputs`` names what the function returns: one name, one name per item of a returned tuple, or a
    template with ``{i}`` for a returned list (``"masked count after step={i}"``).
    """

    name: str
    lesson: str
    reference: Callable
    make_cases: Callable[[torch.Generator], list[Case]]
    hint: str
    run: Callable[[Callable, Case], Any] | None = None  # default: fn(*args, **kwargs)
    compare: Callable[[Any, Any], str | None] | None = None  # default: compare_outputs
    points: int = 1
    arguments: tuple | None = None
    outputs: str | tuple | None = None

    def __post_init__(self):
        if self.arguments is None:
            object.__setattr__(self, "arguments", _parameter_names(self.reference))
        object.__setattr__(self, "make_cases", _naming(self.make_cases, tuple(self.arguments)))

    def call(self, fn: Callable, case: Case) -> Any:
        case = copy.deepcopy(case)  # a function that edits its input in place must not spoil the next call
        if self.run is not None:
            return self.run(fn, case)
        return fn(*case.args, **case.kwargs)

    def differ(self, got: Any, expected: Any) -> str | None:
        """None when ``got`` matches ``expected``, else why not, naming the output that differs."""
        compare = self.compare or compare_outputs
        names = self.outputs
        if names is None:
            return compare(got, expected)
        if isinstance(names, str) and "{i}" not in names:
            problem = compare(got, expected)
            return None if problem is None else f"{names}: {problem}"
        if not isinstance(expected, (tuple, list)):
            raise TypeError(f"exercise {self.name!r} names several outputs {names!r}, but its reference "
                            f"returned {_short(expected)}")
        labels = [names.format(i=i) if isinstance(names, str) else names[i] for i in range(len(expected))]
        if not isinstance(got, (tuple, list)) or len(got) != len(expected):
            wanted = f"({', '.join(labels)})" if len(labels) <= 4 else f"a list of {len(labels)}"
            return f"expected {len(expected)} outputs {wanted}, got {_short(got)}"
        for label, g, e in zip(labels, got, expected):
            problem = compare(g, e)
            if problem is not None:
                return f"{label}: {problem}"
        return None


def _parameter_names(fn: Callable) -> tuple:
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return ()
    return tuple(p.name for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))


def _naming(make_cases: Callable, names: tuple) -> Callable:
    """``make_cases`` whose cases carry the argument names (once: wrapping twice changes nothing)."""
    if getattr(make_cases, "__names__", None) == names:
        return make_cases

    @functools.wraps(make_cases)
    def named(generator: torch.Generator) -> list[Case]:
        cases = make_cases(generator)
        for case in cases:
            case.names = case.names or names
        return cases

    named.__names__ = names
    return named


@dataclass(frozen=True)
class CheckResult:
    exercise: str
    lesson: str
    status: str  # one of STATUSES
    reason: str
    cases: int

    @property
    def passed(self) -> bool:
        return self.status == "pass"


_REGISTRY: dict[str, Exercise] = {}
_RESULTS: list[CheckResult] = []


def register(exercise: Exercise) -> Exercise:
    """Add an exercise to the registry; names are unique across the course."""
    known = _REGISTRY.get(exercise.name)
    if known is not None and known.lesson != exercise.lesson:
        raise ValueError(f"exercise {exercise.name!r} is registered twice ({known.lesson}, {exercise.lesson})")
    _REGISTRY[exercise.name] = exercise
    return exercise


def get_exercise(name: str) -> Exercise:
    if name not in _REGISTRY:
        raise ValueError(f"unknown exercise {name!r}; known exercises: {sorted(_REGISTRY)} "
                         f"(import them from course_lib.notebook.checks, which registers every lesson's)")
    return _REGISTRY[name]


def exercises(lesson: str | None = None) -> list[Exercise]:
    """Every registered exercise, or those of one lesson (e.g. ``"01_patch_tokenization"``)."""
    found = [e for e in _REGISTRY.values() if lesson is None or e.lesson == lesson]
    if lesson is not None and not found:
        lessons = sorted({e.lesson for e in _REGISTRY.values()})
        raise ValueError(f"unknown lesson {lesson!r}; lessons with exercises: {lessons}")
    return found


def evaluate(name: str, fn: Any, seed: int = 0) -> CheckResult:
    """Run ``fn`` against the reference of exercise ``name`` on the cases drawn with ``seed``; print nothing."""
    exercise = get_exercise(name)
    cases = exercise.make_cases(torch.Generator().manual_seed(seed))
    if not callable(fn):
        return CheckResult(name, exercise.lesson, "fail", f"expected a function, got {type(fn).__name__}", 0)
    for i, case in enumerate(cases):
        expected = exercise.call(exercise.reference, case)
        try:
            got = exercise.call(fn, case)
        except NotImplementedError:
            return CheckResult(name, exercise.lesson, "not implemented", "raises NotImplementedError", i)
        except Exception as error:  # noqa: BLE001  (any error in student code is a failed case)
            reason = f"case {i + 1} ({case.describe()}): raised {type(error).__name__}: {error}"
            return CheckResult(name, exercise.lesson, "fail", reason, i)
        problem = exercise.differ(got, expected)
        if problem is not None:
            return CheckResult(name, exercise.lesson, "fail", f"case {i + 1} ({case.describe()}): {problem}", i)
    return CheckResult(name, exercise.lesson, "pass", f"{len(cases)} cases match the reference", len(cases))


def check(name: str, fn: Any) -> Callable:
    """Check a student's function, print the verdict, record it, and return what to use from here on."""
    exercise = get_exercise(name)
    seed = int(os.environ.get(CHECK_SEED_ENV, "0"))
    result = evaluate(name, fn, seed=seed)
    _record(result)
    print(_message(result, exercise))
    if result.passed:
        return fn
    return _fallback(exercise)


def results() -> list[CheckResult]:
    """Every check run in this process, in order."""
    return list(_RESULTS)


def _record(result: CheckResult) -> None:
    _RESULTS.append(result)
    path = os.environ.get(RESULTS_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as f:
            # the folder tells apart runs of solutions/ and notebooks/ that share one results file
            f.write(json.dumps({**result.__dict__, "folder": os.getcwd()}) + "\n")
            f.flush()
            os.fsync(f.fileno())


def _message(result: CheckResult, exercise: Exercise) -> str:
    """The verdict as a student reads it, in lines of at most WIDTH columns."""
    name = exercise.name
    if result.status == "pass":
        return _wrap(f"PASS {name}: {result.reason}.")
    if result.status == "not implemented":
        lines = [f"NOT IMPLEMENTED {name}: `{name}` still raises NotImplementedError.",
                 f"next: write the body of `def {name}(...)` in the cell above, in place of "
                 f"`raise NotImplementedError()`; run that cell, then this one again."]
    else:
        lines = [f"FAIL {name}: {result.reason}", f"hint: {exercise.hint}",
                 f"next: fix `def {name}(...)` in the cell above, run that cell, then this one again."]
    lines.append(f"-> meanwhile the cells below use the course_lib reference for `{name}`.")
    return "\n".join([_wrap(lines[0])] + [_wrap(line, indent="  ") for line in lines[1:]])


def _wrap(text: str, indent: str = "") -> str:
    return textwrap.fill(text, WIDTH, initial_indent=indent, subsequent_indent=indent + "    ",
                         break_long_words=False, break_on_hyphens=False)


def _fallback(exercise: Exercise) -> Callable:
    @functools.wraps(exercise.reference)
    def reference(*args, **kwargs):
        return exercise.reference(*args, **kwargs)

    reference.__course_reference__ = exercise.name  # marks the stand-in so it is easy to spot
    return reference


# -- comparing outputs ------------------------------------------------------------------------------

def compare_outputs(got: Any, expected: Any, rtol: float = 1e-4, atol: float = 1e-5) -> str | None:
    """None when ``got`` matches ``expected`` (tensors, arrays, numbers, sequences, dicts), else why not."""
    if isinstance(expected, torch.Tensor):
        return _compare_tensors(got, expected, rtol, atol)
    if isinstance(expected, np.ndarray):
        if not isinstance(got, np.ndarray):
            return f"expected a numpy array, got {type(got).__name__}"
        return _compare_tensors(torch.from_numpy(got), torch.from_numpy(expected), rtol, atol)
    if isinstance(expected, (tuple, list)):
        if not isinstance(got, (tuple, list)) or len(got) != len(expected):
            return f"expected a sequence of {len(expected)} items, got {_short(got)}"
        for i, (g, e) in enumerate(zip(got, expected)):
            problem = compare_outputs(g, e, rtol, atol)
            if problem is not None:
                return f"item {i}: {problem}"
        return None
    if isinstance(expected, dict):
        if not isinstance(got, dict) or set(got) != set(expected):
            return f"expected a dict with keys {sorted(expected)}, got {_short(got)}"
        for key in expected:
            problem = compare_outputs(got[key], expected[key], rtol, atol)
            if problem is not None:
                return f"{key}: {problem}"
        return None
    if isinstance(expected, (int, float)) and not isinstance(expected, bool):
        if isinstance(got, torch.Tensor) and got.numel() == 1:
            got = got.item()
        if not isinstance(got, (int, float, np.number)) or isinstance(got, bool):
            return f"expected a number, got {_short(got)}"
        if abs(float(got) - float(expected)) > atol + rtol * abs(float(expected)):
            return f"expected {expected:.6g}, got {float(got):.6g}"
        return None
    return None if got == expected else f"expected {_short(expected)}, got {_short(got)}"


def _compare_tensors(got: Any, expected: torch.Tensor, rtol: float, atol: float) -> str | None:
    if not isinstance(got, torch.Tensor):
        return f"expected a tensor of shape {tuple(expected.shape)}, got {_short(got)}"
    if got.shape != expected.shape:
        return f"expected shape {tuple(expected.shape)}, got shape {tuple(got.shape)}"
    got, expected = got.detach().cpu(), expected.detach().cpu()
    if expected.dtype == torch.bool or not (expected.is_floating_point() or expected.is_complex()):
        mismatch = got != expected
        if mismatch.any():
            where = tuple(int(i) for i in mismatch.nonzero()[0])
            return f"values differ at {where}: expected {expected[where].item()}, got {got[where].item()}"
        return None
    got = got.to(expected.dtype)
    if torch.isnan(got).any() and not torch.isnan(expected).any():
        return "output contains NaN"
    diff = (got - expected).abs()
    bad = diff > atol + rtol * expected.abs()
    if bad.any() and expected.ndim == 0:
        return f"expected {expected.item():.5g}, got {got.item():.5g}"
    if bad.any():
        where = tuple(int(i) for i in bad.nonzero()[0])
        return (f"values differ: max abs difference {diff.max().item():.3g}; at {where} "
                f"expected {expected[where].item():.5g}, got {got[where].item():.5g}")
    return None


def _short(value: Any) -> str:
    """A short readable form: a tensor's shape (or its values, when it has a few), a list's items."""
    if isinstance(value, torch.Tensor):
        if value.ndim == 0:
            return _number(value.item())
        if value.ndim == 1 and len(value) <= 6:
            return "tensor [" + ", ".join(_number(v) for v in value.tolist()) + "]"
        return f"tensor {tuple(value.shape)}"
    if isinstance(value, np.ndarray):
        return f"array {value.shape}"
    if isinstance(value, torch.nn.Module):  # its class and settings, not its weights
        text = f"{type(value).__name__}({value.extra_repr()})"
        return text if len(text) <= 80 else text[:77] + "..."
    if isinstance(value, (list, tuple)) and any(isinstance(v, (torch.Tensor, np.ndarray)) for v in value):
        items = ", ".join(_short(v) for v in value)
        return f"[{items}]" if isinstance(value, list) else f"({items})"
    text = _number(value) if isinstance(value, float) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _number(value: Any) -> str:
    if not isinstance(value, float):
        return repr(value)
    text = f"{value:.4g}"
    return text if any(c in text for c in ".einf") else text + ".0"  # 1.0, not 1: a float stays a float
