"""The engine never imports the CLI or terminal styling (house rule, DESIGN.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENGINE_FILES = sorted(
    path
    for package in ("orchestrator", "providers")
    for path in (ROOT / package).rglob("*.py")
    if path != ROOT / "orchestrator" / "cli.py"
)
FORBIDDEN = ("rich", "orchestrator.cli")


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_the_engine_has_files_to_check():
    assert len(ENGINE_FILES) > 10


@pytest.mark.parametrize("path", ENGINE_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_engine_module_does_not_import_the_cli_or_rich(path):
    bad = {
        name
        for name in imported_modules(path)
        for forbidden in FORBIDDEN
        if name == forbidden or name.startswith(forbidden + ".")
    }
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_the_check_catches_a_forbidden_import(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("from rich.console import Console\nimport orchestrator.cli\n")
    assert {"rich.console", "orchestrator.cli"} <= imported_modules(sample)
