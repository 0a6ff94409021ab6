"""No library call gives a graded answer where graded outputs are computed: every reference's call graph is
stubbed or a declared helper, and a walk of every library function of the sandbox's course_lib, called as each
exercise calls the student's, finds none (its own module: the walks need no sandbox user and run on either
xdist worker, beside the end-to-end grading of test_grade_protocol)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from course_lib.grading import runner, sandbox
from course_lib.notebook.checks import exercises

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "grading" / "protocol"

# what a reference may call without a stub: input checks and what the notebooks plot directly, no answer
HELPERS = {"_check_patch_size", "_check_logits", "_check_feature_lists", "check_schedule", "check_steps",
           "_same_shape", "_as_tensor", "_check_last_dim", "_half_width", "_per_sample", "mask_ratio", "bound",
           "check_levels",
           # lesson 10: the resizing, the lookup of lesson 03 and the codes' contribution are given, not asked
           "resize", "nearest_code", "MultiScaleQuantizer.contribution", "MultiScaleQuantizer.phi", "phi_index",
           "Phi.forward",
           # and the modules its checks build from the plain data the cases travel as
           "Phi.__init__", "MultiScaleQuantizer.__init__", "MultiScaleConfig.__init__", "MultiScaleConfig.__post_init__",
           "MultiScaleConfig.num_tokens"}


def test_a_references_call_graph_is_stubbed_or_a_declared_helper():
    for exercise in exercises():
        called = set()

        def profile(frame, event, arg):
            if event == "call" and "course_lib" in frame.f_code.co_filename:
                called.add((frame.f_globals.get("__name__", ""), frame.f_code.co_qualname))

        case = exercise.make_cases(torch.Generator().manual_seed(1))[0]
        sys.setprofile(profile)
        try:
            exercise.call(exercise.reference, case)
        finally:
            sys.setprofile(None)
        stubbed = {(exercise.reference.__module__, exercise.reference.__qualname__)}
        stubbed |= {(m, q) for m, q, _ in sandbox.EQUIVALENTS.get(exercise.name, [])}
        for module, qualname in called:
            if module.startswith("course_lib.notebook") and (module, qualname) not in stubbed:
                continue  # the check machinery and the lesson's own run function (the exercise's, not its answer)
            if "<locals>" in qualname or qualname.split(".")[-1] in ("<listcomp>", "<genexpr>"):
                continue
            assert (module, qualname) in stubbed or qualname in HELPERS, (exercise.name, module, qualname)


def _walk(tmp_path: Path, lesson: str) -> dict:
    course = sandbox.stubbed_copy(exercises(lesson), tmp_path / "course")
    data = {}
    for exercise in exercises(lesson):
        cases = exercise.make_cases(torch.Generator().manual_seed(11))
        data[exercise.name] = (cases, [exercise.call(exercise.reference, c) for c in cases])
    torch.save(data, tmp_path / "expected.pt")
    env = {"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path), "COURSE_QUICK": "1",
           "MPLBACKEND": "agg", "MPLCONFIGDIR": str(tmp_path / "mpl")}
    done = subprocess.run([sys.executable, str(FIXTURES / "walk.py"), str(course), runner.__file__,
                           str(tmp_path / "expected.pt"), str(tmp_path / "found.json")],
                          capture_output=True, text=True, env=env, timeout=500)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads((tmp_path / "found.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("lesson", sorted({e.lesson for e in exercises()}))
def test_no_library_function_gives_a_graded_answer_in_the_sandbox(tmp_path, lesson):
    """Every function of the sandbox's course_lib, called as the exercise calls the student's, on its cases."""
    walked = _walk(tmp_path, lesson)
    assert walked["functions"] > 300 and walked["found"] == {}, walked["found"]


@pytest.mark.slow
def test_the_walk_finds_the_equivalents_when_they_are_not_stubbed(tmp_path, monkeypatch):
    """The walk can fail: without EQUIVALENTS, lesson 09's cfg_velocity is answered by lesson 07's cfg_logits."""
    monkeypatch.setattr(sandbox, "EQUIVALENTS", {})
    found = _walk(tmp_path, "09_flow_matching")["found"]
    assert "course_lib.generators.sampling.cfg_logits" in found["cfg_velocity"]
