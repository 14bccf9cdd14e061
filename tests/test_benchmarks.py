"""Benchmarks are not run by the tests (they time things), but what they import must exist: an
import inside a benchmark's main() only fails when someone runs it, long after a rename."""

from __future__ import annotations

import ast
import importlib
import importlib.util
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def _defined(path: Path) -> set[str]:
    """Top-level names of a module file: functions, classes, assignments and imports."""
    names: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
    return names


@pytest.mark.parametrize("path", sorted(BENCHMARKS.glob("*.py")), ids=lambda path: path.name)
def test_every_name_a_benchmark_imports_exists(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.ImportFrom) or not node.module or node.level:
            continue
        sibling = BENCHMARKS / f"{node.module}.py"
        if sibling.exists():
            missing = {alias.name for alias in node.names} - _defined(sibling)
        elif node.module.split(".")[0] == "synpref":
            module = importlib.import_module(node.module)
            missing = {alias.name for alias in node.names if not hasattr(module, alias.name)
                       and importlib.util.find_spec(f"{node.module}.{alias.name}") is None}
        else:
            continue  # third-party peers (trl, rensa, datasketch) are the benchmarks' own installs
        assert not missing, f"{path.name}:{node.lineno}: from {node.module} import {', '.join(sorted(missing))}"
