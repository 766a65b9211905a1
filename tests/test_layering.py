"""The structure is checked by tools, not by review: import-linter's contracts (pyproject.toml), no import cycle
among tlab's modules, ruff's lint. A change that breaks the layering fails here, and so in CI."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _tool(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed (pip install -e '.[test]')")
    return found


def test_import_contracts_hold():
    done = subprocess.run([_tool("lint-imports"), "--config", str(ROOT / "pyproject.toml")], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "broken" in done.stdout and " 0 broken" in done.stdout, done.stdout[-2000:]


def test_no_import_cycle_among_tlab_modules():
    import grimp

    graph = grimp.build_graph("tlab")
    modules = sorted(m for m in graph.modules if m != "tlab")
    cycles = []
    for module in modules:
        for imported in graph.find_modules_directly_imported_by(module):
            if imported == "tlab" or imported == module or imported.startswith(module + "."):
                continue  # the package root (version) and a package's own submodules are not cycles
            back = graph.find_shortest_chain(importer=imported, imported=module)
            if back and not module.startswith(imported + "."):
                cycles.append(" -> ".join([module, *back]))
    assert not cycles, "import cycles:\n" + "\n".join(sorted(set(cycles)))


def test_ruff_is_clean():
    done = subprocess.run([_tool("ruff"), "check", "tlab", "tests", "scripts"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout[-4000:]


def test_no_loop_function_over_80_lines():
    import ast

    for name in ("train.py", "checkpoints.py", "faults.py", "runtime.py"):
        tree = ast.parse((ROOT / "tlab" / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                assert length <= 80, f"tlab/{name}: {node.name} is {length} lines"
