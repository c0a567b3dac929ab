"""The package's import structure, read from its source: no import cycle among
torch_serving's modules, and no module imports the worker that hosts the
application (the worker tells it what it knows through torch_serving.environ)."""

from __future__ import annotations

import ast
from pathlib import Path

import torch_serving

PACKAGE = Path(torch_serving.__file__).parent
MODULES = {f"torch_serving.{path.stem}": path for path in PACKAGE.glob("*.py") if path.stem != "__init__"}


def imported_modules(path: Path) -> set[str]:
    """The torch_serving modules ``path`` imports, anywhere in it (functions too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        else:
            continue
        found |= {name for name in names if name in MODULES}
    return found


def import_graph() -> dict[str, set[str]]:
    return {module: imported_modules(path) for module, path in MODULES.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each cycle found by a depth-first walk, as the modules along it."""
    found, done, stack = [], set(), []

    def visit(module: str) -> None:
        if module in stack:
            found.append([*stack[stack.index(module) :], module])
            return
        if module in done:
            return
        stack.append(module)
        for imported in sorted(graph[module]):
            visit(imported)
        stack.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)
    return found


def test_the_graph_is_read():
    graph = import_graph()
    assert "torch_serving.envelope" in graph["torch_serving.worker"]
    assert "torch_serving.environ" in graph["torch_serving.app"]


def test_a_cycle_is_found():
    # The cycle of issue 22: app -> quick -> v2 -> repository -> cli -> app.
    graph = {"app": {"quick"}, "quick": {"v2"}, "v2": {"repository"}, "repository": {"cli"}, "cli": {"app"}}
    assert cycles(graph) == [["app", "quick", "v2", "repository", "cli", "app"]]


def test_no_import_cycle():
    assert cycles(import_graph()) == []


def test_no_module_imports_the_worker():
    importers = sorted(module for module, imported in import_graph().items() if "torch_serving.worker" in imported)
    assert importers == []


def test_the_stub_matches_the_compiled_module():
    """mypy.stubtest compares torch_serving/_C.pyi, written by hand, with the module pybind11 builds."""
    import subprocess
    import sys

    from tests.models import REPO

    script = (
        "import sys, torch\n"  # the extension needs torch's libraries loaded first
        "from mypy.stubtest import main\n"
        "sys.argv = ['stubtest', 'torch_serving._C', '--mypy-config-file', 'tests/stubtest/mypy.ini',"
        " '--allowlist', 'tests/stubtest/allowlist.txt']\n"
        "sys.exit(main())\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
