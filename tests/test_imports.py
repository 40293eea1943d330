"""The packages are floors, and code imports downward only: ``ticketlab/`` is the ground floor (schema, result
identity, database spec, registries, command-line helpers); ``masking/`` imports ``ticketlab/`` only; ``analysis/``
imports ``ticketlab/``, never ``experiments/``; ``experiments/`` never imports ``analysis/``, but in the workflow
commands that run a study and then its report (``WORKFLOWS``). No two files import each other, directly or round a
longer loop. Every import counts, those inside functions and ``importlib.import_module("a.b")`` too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("ticketlab", "masking", "analysis", "experiments")
# what each package may import of the others (its own modules always)
MAY_IMPORT = {"ticketlab": set(), "masking": {"ticketlab"}, "analysis": {"ticketlab"},
              "experiments": {"ticketlab", "masking"}}
WORKFLOWS = {"experiments.study", "experiments.questions"}  # run a study, then its report: they import analysis
HEAVY = {"torch", "sacred", "pandas", "numpy"}  # the ground floor imports none of them (analysis needs no torch)


def modules(root: Path) -> dict[str, Path]:
    """Module name -> file of every Python file of the packages under ``root``."""
    found = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imported(path: Path, known: dict[str, Path]) -> list[tuple[str, int]]:
    """(name, line) of everything ``path`` imports, anywhere in it: a module of ``known`` when it is one (``from
    masking import models`` is ``masking.models``, not the package), else the name as written."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                out.append((full if full in known else node.module, node.lineno))
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) == \
                "import_module" and node.args and isinstance(node.args[0], ast.Constant):
            out.append((node.args[0].value, node.lineno))
    return out


def owner(name: str, known: dict[str, Path]) -> str | None:
    """The module of ``known`` that an imported name is (or is in), else None (the standard library, a package)."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def violations(root: Path = ROOT) -> list[str]:
    """One line per import that runs up a floor or sideways, and per loop of files that import each other."""
    known = modules(root)
    edges: dict[str, set[str]] = {name: set() for name in known}
    found = []
    for name, path in known.items():
        package = name.split(".")[0]
        for target_name, line in imported(path, known):
            where = f"{path.relative_to(root)}:{line}"
            if package == "ticketlab" and target_name.split(".")[0] in HEAVY:
                found.append(f"{where}: the ground floor imports {target_name}")
            target = owner(target_name, known)
            if target is None or target == name:
                continue
            edges[name].add(target)
            other = target.split(".")[0]
            if other != package and other not in MAY_IMPORT[package] and name not in WORKFLOWS:
                found.append(f"{where}: {name} imports {target} ({package}/ may import "
                             f"{', '.join(sorted(MAY_IMPORT[package])) or 'nothing'} of the other packages)")
    return found + [f"files that import each other: {' -> '.join(loop)}" for loop in loops(edges)]


def loops(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one file (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(edges[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return out


def test_the_packages_import_downward_only_and_no_files_import_each_other():
    assert violations() == []


@pytest.mark.parametrize("files,expected", [
    ({"ticketlab/schema.py": "from experiments import sweep\n"}, "ticketlab.schema imports experiments.sweep"),
    ({"masking/models.py": "def f():\n    import analysis.query\n"}, "masking.models imports analysis.query"),
    ({"analysis/query.py": "import importlib\nimportlib.import_module('experiments.dbspec')\n"},
     "analysis.query imports experiments.dbspec"),
    ({"experiments/sweep.py": "from analysis import report\n"}, "experiments.sweep imports analysis.report"),
    ({"ticketlab/cli.py": "import torch\n"}, "the ground floor imports torch"),
    ({"masking/models.py": "from masking import resnet\n", "masking/resnet.py": "from masking.models import X\n"},
     "files that import each other: masking.models -> masking.resnet"),
    ({"analysis/a.py": "import analysis.b\n", "analysis/b.py": "import analysis.c\n",
      "analysis/c.py": "from analysis import a\n"}, "files that import each other: analysis.a -> analysis.b -> "
                                                    "analysis.c"),
])
def test_the_walk_finds_each_kind_of_violation(tmp_path, files, expected):
    """The walk on a planted tree: each import up a floor, sideways or round a loop is found and named."""
    for package in PACKAGES:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "experiments" / "study.py").write_text("from analysis import report\n")  # a workflow: allowed
    (tmp_path / "experiments" / "dbspec.py").write_text("")
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    for name in ("experiments/sweep.py", "analysis/report.py", "analysis/query.py", "masking/models.py"):
        if not (tmp_path / name).exists():
            (tmp_path / name).write_text("")
    found = violations(tmp_path)
    assert len(found) == 1 and expected in found[0], found
