"""Layering rules that are cheaper to check than to remember."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LEDGER = REPO / "service" / "ledger"


def _imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_nothing_outside_the_ledger_imports_asyncpg() -> None:
    offenders = []
    for root in ("service", "bench", "clients"):
        for path in sorted((REPO / root).rglob("*.py")):
            if path.is_relative_to(LEDGER):
                continue
            if any(m == "asyncpg" or m.startswith("asyncpg.") for m in _imported_modules(path)):
                offenders.append(str(path.relative_to(REPO)))
    assert offenders == [], "import the ledger's functions (e.g. is_unavailable) instead"


def test_the_scan_sees_an_asyncpg_import(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from asyncpg.pool import Pool\n    import asyncpg as pg\n")
    assert {"asyncpg.pool", "asyncpg"} <= _imported_modules(probe)
