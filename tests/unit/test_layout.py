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


def imports_gunicorn(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import) and any(alias.name.split(".")[0] == "gunicorn" for alias in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "gunicorn":
            return True
    return False


def test_only_the_hosting_modules_import_gunicorn():
    """The worker holds gunicorn's private state; the CLI and the access log use its public classes, and
    plain_http its limits. The application reads what the worker knows from environ keys."""
    importers = sorted(module for module, path in MODULES.items() if imports_gunicorn(path))
    assert importers == [
        "torch_serving.access_log",
        "torch_serving.cli",
        "torch_serving.plain_http",
        "torch_serving.worker",
    ]


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


def test_every_native_error_is_exported_and_answered():
    """ext/errors.h lists the native errors once: each is a class of the package, and each that the
    request path lets through (all but the executor's deadline, which the runner answers 504) has its
    HTTP answer."""
    from torch_serving import _native
    from torch_serving.errors import answer_for

    native_errors = {
        name for name in _native.__all__ if isinstance(getattr(_native, name), type) and name.endswith("Error")
    }
    assert {"DecodeError", "DeadlineError", "EncodeError", "ServeError"} <= native_errors
    assert native_errors <= set(torch_serving.__all__)
    for name in sorted(native_errors - {"ServeError", "DeadlineError"}):
        error = getattr(torch_serving, name)
        assert issubclass(error, torch_serving.ServeError)
        answer = answer_for(error("what went wrong"))
        assert answer is not None, name
        assert answer.detail == "what went wrong"
    assert issubclass(torch_serving.DecodeError, ValueError)


def native_unit_graph() -> dict[str, set[str]]:
    """ext/'s translation units (a header and its source are one) and the units each includes."""
    graph: dict[str, set[str]] = {}
    for path in sorted((PACKAGE.parent / "ext").glob("*.[hc]*")):
        included = {
            line.split('"')[1].rsplit(".", 1)[0]
            for line in path.read_text().splitlines()
            if line.startswith('#include "')
        }
        graph.setdefault(path.stem, set()).update(included - {path.stem})
    for units in list(graph.values()):
        for unit in units:
            graph.setdefault(unit, set())
    return graph


def test_no_native_include_cycle():
    graph = native_unit_graph()
    assert {"v2", "v2_request", "v2_binding", "v2_response", "schema", "script_module"} <= set(graph)
    assert "v2" in graph["v2_binding"] and "schema" in graph["script_module"]
    assert cycles(graph) == []
