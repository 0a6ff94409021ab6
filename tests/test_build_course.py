import nbformat

from course_lib.tools import build_course


def test_build_executes_writes_html_and_times(tmp_path, monkeypatch):
    solutions, out = tmp_path / "solutions", tmp_path / "out"
    solutions.mkdir()
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import os\nprint(os.getcwd())")])
    nbformat.write(nb, str(solutions / "07_demo.ipynb"))
    monkeypatch.setenv("COURSE_QUICK", "1")
    assert build_course.main(["--solutions", str(solutions), "--out", str(out)]) == 0
    executed = nbformat.read(str(out / "07_demo.ipynb"), as_version=4)
    assert executed.cells[0].outputs[0]["text"].strip() == str(solutions), "notebooks run in their own folder"
    assert "07_demo" in (out / "07_demo.html").read_text()
    times = (out / "times.md").read_text()
    assert "quick mode" in times and "| 07_demo |" in times
    assert not any(p.name.endswith(".tmp") for p in out.iterdir())


def test_unknown_notebook_is_named(tmp_path):
    import pytest
    (tmp_path / "a.ipynb").write_text(nbformat.writes(nbformat.v4.new_notebook()))
    with pytest.raises(ValueError, match="unknown notebooks"):
        build_course.build(tmp_path, tmp_path / "out", only=["b"])
