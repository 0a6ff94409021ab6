"""Execute every solution notebook in full mode into a build folder, with HTML copies and wall times.

    python -m course_lib.tools.build_course --out build/course [--quick] [--only 01_patch_tokenization]

Executed notebooks are build products: they never go back into git. ``times.md`` in the output
folder is the table of per-notebook wall times that the README's notebook map quotes.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbconvert import HTMLExporter

from course_lib.engine import runtime
from course_lib.engine.files import write_atomic
from course_lib.notebook.nbfiles import dumps, read
from course_lib.paths import ROOT


def execute(path: Path, timeout: int = 1800) -> tuple[nbformat.NotebookNode, float]:
    """Run one notebook top to bottom in its own folder; return it with outputs and the wall time (s)."""
    nb = read(path)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    client.execute()
    return nb, time.perf_counter() - start


def build(solutions: Path, out: Path, only: list[str] | None = None) -> list[tuple[str, float]]:
    """Execute the notebooks, write ``NAME.ipynb`` and ``NAME.html`` to ``out``, return (name, seconds)."""
    paths = sorted(solutions.glob("*.ipynb"))
    if only:
        unknown = set(only) - {p.stem for p in paths}
        if unknown:
            raise ValueError(f"unknown notebooks {sorted(unknown)}; choose from {[p.stem for p in paths]}")
        paths = [p for p in paths if p.stem in only]
    times = []
    for path in paths:
        print(f"running {path.name} ...", flush=True)
        nb, seconds = execute(path)
        write_atomic(out / path.name, dumps(nb))
        html, _ = HTMLExporter().from_notebook_node(nb, resources={"metadata": {"name": path.stem}})
        write_atomic(out / f"{path.stem}.html", html)
        times.append((path.stem, seconds))
        print(f"  {seconds:.0f} s", flush=True)
    return times


def times_table(times: list[tuple[str, float]]) -> str:
    mode = "quick" if runtime.is_quick() else "full"
    device = runtime.pick_device().type
    lines = [f"# Notebook wall times ({mode} mode, {device}, {os.cpu_count()} CPU cores, {platform.machine()})", "",
             "| notebook | seconds |", "|---|---:|"]
    lines += [f"| {name} | {seconds:.0f} |" for name, seconds in times]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_lib.tools.build_course", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "course")
    parser.add_argument("--solutions", type=Path, default=ROOT / "solutions")
    parser.add_argument("--only", nargs="*", help="notebook names without .ipynb")
    parser.add_argument("--quick", action="store_true", help="quick mode (COURSE_QUICK=1)")
    args = parser.parse_args(argv)
    if args.quick:
        os.environ[runtime.QUICK_ENV] = "1"
    times = build(args.solutions, args.out, args.only)
    table = times_table(times)
    write_atomic(args.out / "times.md", table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
