"""The library's layers depend one way: a module imports only its own folder and the layers below it,
and no modules import each other in a cycle (the rule is written in the README's layout section)."""
from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "course_lib"

# lowest first; a folder (or top-level module) may import only folders of a lower rank and itself
LAYERS = [
    ("paths",),
    ("datasets", "engine"),
    ("tokenizers",),
    ("generators",),
    ("evaluation",),
    ("notebook",),
    ("tools",),
    ("train", "evaluate", "sample", "compress", "decompress"),  # `python -m course_lib.NAME` launchers
    ("grading",),
]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def module_name(path: Path, package: Path) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, package: Path) -> set[str]:
    """Every course_lib module ``path`` imports, at any depth of its code (absolute or relative)."""
    name, found = module_name(path, package), set()
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == package.name}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")[: len(name.split(".")) - node.level + (1 if is_package else 0)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module.split(".")[0] != package.name:
                continue
            found.add(module)
            found |= {f"{module}.{a.name}" for a in node.names if _is_module(package, f"{module}.{a.name}")}
    return found - {name}


def _is_module(package: Path, dotted: str) -> bool:
    relative = Path(*dotted.split(".")[1:])
    return (package / relative).with_suffix(".py").is_file() or (package / relative / "__init__.py").is_file()


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def problems(package: Path) -> list[str]:
    """Every import that goes up a layer or sideways into another folder, and every import cycle."""
    graph = {module_name(p, package): imports(p, package) for p in sorted(package.rglob("*.py"))}
    found = []
    for module, targets in graph.items():
        if module == package.name:
            continue
        if layer(module) not in RANK:
            found.append(f"{module} is in no layer; add {layer(module)!r} to LAYERS and to the README")
            continue
        for target in sorted(targets):
            own, other = layer(module), layer(target)
            if other and other != own and RANK.get(other, 99) >= RANK[own]:
                found.append(f"{module} imports {target}: layer {other!r} is not below {own!r}")
    return found + [f"import cycle: {' -> '.join(c)}" for c in _cycles(graph)]


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    cycles, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if nxt not in graph:
                continue
            if state.get(nxt) == "open":
                cycles.append(path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for node in graph:
        if node not in state:
            visit(node, [node])
    return cycles


def test_the_library_respects_its_layers():
    assert problems(PACKAGE) == []


def test_every_folder_has_a_layer():
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert folders <= set(RANK), f"folders without a layer: {sorted(folders - set(RANK))}"


def test_an_inverted_import_is_caught(tmp_path):
    copy = tmp_path / "course_lib"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    seeding = copy / "engine" / "seeding.py"
    seeding.write_text(seeding.read_text() + "\nfrom course_lib.tokenizers.tokenizer import build_tokenizer\n")
    assert problems(copy) == ["course_lib.engine.seeding imports course_lib.tokenizers.tokenizer: "
                              "layer 'tokenizers' is not below 'engine'"]


def test_a_cycle_inside_one_folder_is_caught(tmp_path):
    copy = tmp_path / "course_lib"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    kmeans = copy / "tokenizers" / "patches.py"
    kmeans.write_text(kmeans.read_text() + "\nfrom course_lib.tokenizers.kmeans import kmeans\n")
    found = problems(copy)
    assert len(found) == 1 and found[0].startswith("import cycle:") and "tokenizers.patches" in found[0]


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_is_over_350_lines(path):
    assert len(path.read_text().splitlines()) <= 350, "split it: one concept per module (README, layout)"


REGISTRY = "course_lib.tools.recipes"  # the one tools/ module the others may import (it lists the trainers)


def tools_problems(package: Path) -> list[str]:
    """Every tools/ module that imports another tools/ module other than the registry."""
    found = []
    for path in sorted((package / "tools").glob("*.py")):
        name = module_name(path, package)
        if name == REGISTRY:
            continue
        for target in sorted(imports(path, package)):
            if layer(target) == "tools" and target not in (REGISTRY, f"{package.name}.tools"):
                found.append(f"{name} imports {target}: tools are wiring; move what two of them need a layer down")
    return found


def test_tools_import_no_other_tool_but_the_registry():
    assert tools_problems(PACKAGE) == []


def test_a_tool_importing_a_tool_is_caught(tmp_path):
    copy = tmp_path / "course_lib"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    sample = copy / "tools" / "sample.py"
    sample.write_text(sample.read_text() + "\nfrom course_lib.tools.train_gpt import bits_per_token\n")
    assert tools_problems(copy) == ["course_lib.tools.sample imports course_lib.tools.train_gpt: tools are wiring; "
                                    "move what two of them need a layer down"]


@pytest.mark.parametrize("folder", ["solutions", "notebooks"])
def test_no_notebook_imports_the_tools(folder):
    import nbformat
    for path in sorted((PACKAGE.parent / folder).glob("*.ipynb")):
        code = "\n".join(c.source for c in nbformat.read(str(path), as_version=4).cells if c.cell_type == "code")
        assert "course_lib.tools" not in code, f"{path.name} imports course_lib.tools; notebooks use the library"
