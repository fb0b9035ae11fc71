"""The emulator's modules import each other without a cycle (read from the source, not by running it)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[3] / "emulator"


def _local_imports(module: Path) -> set[str]:
    """Sibling modules `module` imports anywhere in its body, function-level imports included."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:
                found.add(node.module.split(".")[0])
            elif node.level == 1:
                found.update(alias.name for alias in node.names)
            elif node.level == 0 and node.module and node.module.startswith("emulator."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(
                alias.name.split(".")[1]
                for alias in node.names
                if alias.name.startswith("emulator.")
            )
    return found


def _graph() -> dict[str, set[str]]:
    modules = {path.stem: path for path in PACKAGE.glob("*.py")}
    return {
        name: {dep for dep in _local_imports(path) if dep in modules and dep != name}
        for name, path in modules.items()
        if name not in {"__init__", "__main__"}
    }


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> list[str] | None:
        if name in path:
            return [*path[path.index(name) :], name]
        if name in done:
            return None
        for dep in sorted(graph.get(name, ())):
            found = visit(dep, [*path, name])
            if found:
                return found
        done.add(name)
        return None

    for name in sorted(graph):
        found = visit(name, [])
        if found:
            return found
    return None


def test_emulator_modules_import_without_a_cycle() -> None:
    assert _cycle(_graph()) is None, " -> ".join(_cycle(_graph()) or [])


def test_app_and_control_share_state_rather_than_each_other() -> None:
    graph = _graph()
    assert "app" not in graph["control"]
    assert {"state"} <= graph["control"]
    assert {"state", "control"} <= graph["app"]


def test_cycle_check_finds_a_cycle() -> None:
    assert _cycle({"app": {"control"}, "control": {"app"}}) == ["app", "control", "app"]


def test_control_imports_first_in_a_fresh_interpreter() -> None:
    result = subprocess.run(
        [sys.executable, "-c", "import emulator.control, emulator.app"],
        cwd=PACKAGE.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
