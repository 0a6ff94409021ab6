"""Every checker both ways: it passes the reference, fails plausible wrong answers, and spots the stub.

WRONG lists, for every registered exercise, at least one mistake students really make. A new
exercise without an entry here fails ``test_every_exercise_has_wrong_answers``.
"""
import pytest
import torch
from einops import rearrange

from course_lib.exercises import evaluate, exercises


def _stub(*args, **kwargs):
    raise NotImplementedError()


WRONG = {
    "uint8_to_float": {
        "divides by 256": lambda x: x.permute(0, 3, 1, 2).float() / 256,
        "keeps channels last": lambda x: x.float() / 255,
        "forgets to scale": lambda x: x.permute(0, 3, 1, 2).float(),
        "reshapes instead of permuting": lambda x: x.reshape(x.shape[0], x.shape[3], x.shape[1], x.shape[2]).float() / 255,
    },
    "patchify": {
        "channels first inside a patch": lambda x, p: rearrange(x, "b c (h p1) (w p2) -> b (h w) (c p1 p2)", p1=p, p2=p),
        "column-major patch order": lambda x, p: rearrange(x, "b c (h p1) (w p2) -> b (w h) (p1 p2 c)", p1=p, p2=p),
        "plain reshape": lambda x, p: x.reshape(x.shape[0], -1, p * p * x.shape[1]),
    },
    "unpatchify": {
        "width and height swapped": lambda t, p, h, w: rearrange(t, "b (w h) (p1 p2 c) -> b c (h p1) (w p2)", h=h // p, p1=p, p2=p),
        "channels first inside a patch": lambda t, p, h, w: rearrange(t, "b (h w) (c p1 p2) -> b c (h p1) (w p2)", h=h // p, p1=p, p2=p),
        "plain reshape": lambda t, p, h, w: t.reshape(t.shape[0], -1, h, w),
    },
    "nearest_centroid": {
        "largest dot product": lambda x, c: (x @ c.T).argmax(1),
        "farthest centroid": lambda x, c: torch.cdist(x, c).argmax(1),
        "forgets the ||c||^2 term": lambda x, c: ((x ** 2).sum(1, keepdim=True) - 2 * x @ c.T).argmin(1),
        "returns distances": lambda x, c: torch.cdist(x, c).min(1).values,
    },
}

ALL = [e.name for e in exercises()]


def test_every_exercise_has_wrong_answers():
    missing = sorted(set(ALL) - set(WRONG))
    assert not missing, f"add plausible wrong answers for: {missing}"


@pytest.mark.parametrize("name", ALL)
def test_reference_passes(name):
    from course_lib.exercises import get_exercise
    result = evaluate(name, get_exercise(name).reference)
    assert result.status == "pass", result.reason


@pytest.mark.parametrize("name", ALL)
def test_stub_is_not_implemented(name):
    assert evaluate(name, _stub).status == "not implemented"


@pytest.mark.parametrize("name,mistake", [(n, m) for n in WRONG for m in WRONG[n]])
def test_plausible_wrong_answer_fails(name, mistake):
    result = evaluate(name, WRONG[name][mistake])
    assert result.status == "fail", f"{name} passed a wrong answer: {mistake}"
    assert result.reason.startswith("case ")


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("seed", [1, 2])
def test_fresh_cases_still_separate_right_from_wrong(name, seed):
    from course_lib.exercises import get_exercise
    assert evaluate(name, get_exercise(name).reference, seed=seed).status == "pass"
    for mistake, wrong in WRONG.get(name, {}).items():
        assert evaluate(name, wrong, seed=seed).status == "fail", mistake
