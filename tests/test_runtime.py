import pytest
import torch

from course_lib.engine import runtime
from course_lib.engine.seeding import rng_state, seed_everything, set_rng_state


def test_quick_mode_switch(monkeypatch):
    monkeypatch.setenv("COURSE_QUICK", "1")
    assert runtime.is_quick() and runtime.steps(1000, 12) == 12
    monkeypatch.setenv("COURSE_QUICK", "0")
    assert not runtime.is_quick() and runtime.steps(1000, 12) == 1000
    monkeypatch.delenv("COURSE_QUICK")
    assert not runtime.is_quick() and runtime.steps(1000) == 1000


def test_quick_default_is_a_few_dozen(monkeypatch):
    monkeypatch.setenv("COURSE_QUICK", "1")
    assert runtime.steps(5000) == 30
    assert runtime.steps(10) == 10


def test_bad_quick_value_and_bad_steps(monkeypatch):
    monkeypatch.setenv("COURSE_QUICK", "maybe")
    with pytest.raises(ValueError, match="COURSE_QUICK must be one of"):
        runtime.is_quick()
    monkeypatch.setenv("COURSE_QUICK", "1")
    for bad in (-1, 2.5, True, "10"):
        with pytest.raises(ValueError, match="non-negative int"):
            runtime.steps(bad)


def test_pick_device_prefers_available_and_rejects_unknown(monkeypatch):
    monkeypatch.delenv("COURSE_DEVICE", raising=False)
    expected = "cuda" if torch.cuda.is_available() else ("mps" if runtime._mps_available() else "cpu")
    assert runtime.pick_device().type == expected
    assert runtime.pick_device("cpu").type == "cpu"
    with pytest.raises(ValueError, match="choose one of"):
        runtime.pick_device("tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="not available"):
        runtime.pick_device("cuda")
    assert "torch" in runtime.describe()


def test_one_thread_policy_set_by_describe(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("COURSE_THREADS", raising=False)
        torch.set_num_threads(2)
        assert ", 1 CPU thread |" in runtime.describe() and torch.get_num_threads() == 1
        monkeypatch.setenv("COURSE_THREADS", "2")
        assert ", 2 CPU threads |" in runtime.describe() and torch.get_num_threads() == 2
        for bad in ("0", "two", "-1"):
            monkeypatch.setenv("COURSE_THREADS", bad)
            with pytest.raises(ValueError, match="COURSE_THREADS|positive int"):
                runtime.use_threads()
    finally:
        torch.set_num_threads(before)


def test_seeding_repeats_and_validates():
    seed_everything(3)
    a = torch.rand(4)
    seed_everything(3)
    assert torch.equal(a, torch.rand(4))
    with pytest.raises(ValueError, match="seed"):
        seed_everything(-1)
    with pytest.raises(ValueError, match="seed"):
        seed_everything("1")


def test_random_states_are_saved_and_restored():
    import random

    import numpy as np
    seed_everything(4)
    state = rng_state()
    first = (torch.rand(3), random.random(), np.random.rand())
    set_rng_state(state)
    assert (torch.equal(first[0], torch.rand(3)), first[1], first[2]) == (True, random.random(), np.random.rand())
