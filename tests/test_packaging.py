"""One dependency list: environment.yml installs this package, whose pins live in pyproject.toml."""
import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_environment_yml_parses_and_installs_this_package():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["name"] and "pip" in env["dependencies"]
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert pip == ["-e .[dev]"], "the pip section installs this package, so pyproject stays the one list"
    conda_names = {re.split(r"[=<> ]", d)[0] for d in env["dependencies"] if isinstance(d, str)}
    assert conda_names == {"python", "pip"}, "no package may be listed twice (conda and pyproject)"
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python"))
    low = _pyproject()["project"]["requires-python"].removeprefix(">=")
    assert tuple(map(int, python.split("=")[1].split("."))) >= tuple(map(int, low.split(".")))


def test_runtime_dependencies_are_pinned():
    deps = _pyproject()["project"]["dependencies"]
    names = {re.split(r"[=<>\[]", d)[0].lower() for d in deps}
    for required in ("torch", "torchvision", "jupyterlab", "ipywidgets", "matplotlib", "nbval", "lpips",
                     "einops", "tqdm", "scikit-image", "scikit-learn", "pillow", "nbformat", "nbclient"):
        assert required in names
    assert all("==" in d for d in deps), [d for d in deps if "==" not in d]
    assert "torch==2.14.1" in deps and "torchvision==0.29.1" in deps


def test_installed_versions_match_the_pins():
    from importlib.metadata import version
    for dep in _pyproject()["project"]["dependencies"]:
        name, pinned = dep.split("==")
        assert version(name) == pinned, f"{name}: installed {version(name)}, pyproject pins {pinned}"


def test_ci_runs_the_readme_test_command():
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    assert "make test" in (ROOT / "README.md").read_text() and "make lab" in (ROOT / "README.md").read_text()
