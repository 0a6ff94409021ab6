import json

import numpy as np
import pytest
import torch

from course_lib.notebook import checks, exercises  # noqa: F401  (checks registers every lesson)
from course_lib.notebook.exercises import Case, Exercise, check, compare_outputs, evaluate


def test_unknown_exercise_lists_the_known_ones():
    with pytest.raises(ValueError, match="known exercises: .*patchify"):
        evaluate("patchfy", lambda x: x)
    with pytest.raises(ValueError, match="lessons with exercises"):
        exercises.exercises("99_nothing")


def test_pass_returns_the_students_function(capsys):
    from course_lib.tokenizers.patches import patchify

    def mine(images, patch_size):
        return patchify(images, patch_size)

    assert check("patchify", mine) is mine
    assert capsys.readouterr().out.startswith("PASS patchify")


def test_fail_prints_case_and_hint_and_returns_the_reference(capsys):
    def wrong(images, patch_size):
        return images.flatten(2)

    used = check("patchify", wrong)
    out = capsys.readouterr().out
    assert out.startswith("FAIL patchify: case 1 (images=tensor (1, 1, 4, 4), patch_size=2): patches: ")
    assert "hint:" in out and "use the course_lib reference" in out and "run that cell, then this one again" in out
    assert max(len(line) for line in out.splitlines()) <= exercises.WIDTH
    assert used is not wrong and used.__course_reference__ == "patchify"
    images = torch.rand(1, 3, 4, 4)
    assert torch.equal(used(images, 2), exercises.get_exercise("patchify").reference(images, 2))


def test_stub_is_not_implemented(capsys):
    def stub(images, patch_size):
        raise NotImplementedError()

    used = check("patchify", stub)
    out = capsys.readouterr().out
    assert out.startswith("NOT IMPLEMENTED patchify")
    said = " ".join(out.split())  # unwrapped: where to write, and what to run again
    assert "write the body of `def patchify(...)` in the cell above" in said and "then this one again" in said
    assert used.__course_reference__ == "patchify"


def test_errors_and_non_functions_fail():
    result = evaluate("patchify", lambda images, patch_size: 1 / 0)
    assert result.status == "fail" and "ZeroDivisionError" in result.reason
    result = evaluate("patchify", None)
    assert result.status == "fail" and "expected a function" in result.reason


def test_inputs_are_copied_so_in_place_edits_do_not_leak():
    def edits_input(images):
        images.zero_()
        return images.permute(0, 3, 1, 2).float()

    assert evaluate("uint8_to_float", edits_input).status == "fail"
    ref = exercises.get_exercise("uint8_to_float")
    case = ref.make_cases(torch.Generator().manual_seed(0))[0]
    before = case.args[0].clone()
    ref.call(edits_input, case)
    assert torch.equal(case.args[0], before)


def test_results_are_recorded_in_memory_and_in_the_results_file(tmp_path, monkeypatch, capsys):
    path = tmp_path / "results.jsonl"
    monkeypatch.setenv("COURSE_RESULTS_FILE", str(path))
    before = len(exercises.results())
    check("uint8_to_float", lambda images: images.permute(0, 3, 1, 2).float() / 255)
    check("uint8_to_float", lambda images: images)
    assert [r.status for r in exercises.results()[before:]] == ["pass", "fail"]
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(l["exercise"], l["status"], l["lesson"]) for l in lines] == [
        ("uint8_to_float", "pass", "00_welcome"), ("uint8_to_float", "fail", "00_welcome")]


def test_check_seed_changes_the_cases(monkeypatch):
    ex = exercises.get_exercise("patchify")
    a = ex.make_cases(torch.Generator().manual_seed(0))
    b = ex.make_cases(torch.Generator().manual_seed(1))
    assert not torch.equal(a[0].args[0], b[0].args[0])
    monkeypatch.setenv("COURSE_CHECK_SEED", "5")
    assert check("patchify", ex.reference) is ex.reference


@pytest.mark.parametrize("got,expected,fragment", [
    (torch.zeros(2, 3), torch.zeros(3, 2), "expected shape (3, 2)"),
    (torch.zeros(2), torch.tensor([0.0, 1.0]), "max abs difference 1"),
    (torch.tensor([0, 2]), torch.tensor([0, 1]), "values differ at (1,)"),
    ([1, 2], torch.zeros(2), "expected a tensor"),
    (torch.tensor([float("nan")]), torch.tensor([1.0]), "NaN"),
    ((torch.zeros(1),), (torch.zeros(1), torch.zeros(1)), "sequence of 2"),
    ({"a": 1.0}, {"a": 2.0}, "a: expected 2"),
    (torch.tensor(1.0), torch.tensor(2.0), "expected 2, got 1"),
    (np.zeros(2), np.ones(2), "max abs difference"),
    ("x", 1.0, "expected a number"),
    (3.0, 3.5, "expected 3.5"),
    ("a", "b", "expected 'b'"),
])
def test_compare_outputs_explains_mismatches(got, expected, fragment):
    assert fragment in compare_outputs(got, expected)


def test_compare_outputs_accepts_matches():
    assert compare_outputs(torch.ones(3) + 1e-7, torch.ones(3)) is None
    assert compare_outputs(torch.tensor(2.0), 2.0) is None
    assert compare_outputs((1, torch.zeros(2)), [1, torch.zeros(2)]) is None
    assert compare_outputs({"k": np.ones(2)}, {"k": np.ones(2)}) is None


def test_registry_rejects_a_name_in_two_lessons():
    ex = exercises.get_exercise("patchify")
    clash = Exercise(name="patchify", lesson="other", reference=ex.reference, make_cases=lambda g: [Case()], hint="")
    with pytest.raises(ValueError, match="registered twice"):
        exercises.register(clash)


def test_cases_name_their_arguments_and_hide_the_checks_own():
    case = Case((torch.zeros(2, 3), torch.tensor([1, 2]), 0.5, "cosine"), {"_upstream": torch.zeros(1), "seed": 3},
                names=("x", "keep"))
    assert case.describe() == "x=tensor (2, 3), keep=tensor [1, 2], argument 3=0.5, argument 4='cosine', seed=3"
    assert Case((1,), label="one whole decoding").describe() == "one whole decoding"


def test_outputs_are_named_one_per_item_or_by_a_template():
    ex = exercises.get_exercise("interpolant")
    assert ex.differ((torch.zeros(2), torch.ones(2)), (torch.zeros(2), torch.zeros(2))).startswith("velocity: ")
    assert ex.differ(torch.zeros(2), (torch.zeros(2), torch.zeros(2))).startswith("expected 2 outputs (x_t, velocity)")
    counts = exercises.get_exercise("mask_count")
    assert counts.differ([3, 2, 0], [3, 1, 0]) == "masked count after step=1: expected 1, got 2"
    assert exercises.get_exercise("mask_count").make_cases(torch.Generator())[0].names == ("n", "steps", "schedule")
