"""Layering like kopf's import-linter contracts: the runtime stands alone, den.api is the base."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"api": "den.api", "operator": "den.operator", "runtime": "den.runtime", "cli": "den.cli"}
FORBIDDEN = {
    "runtime": ("den.operator", "den.cli"),
    "api": ("den.operator", "den.runtime", "den.cli"),
    "operator": ("den.cli",),
}


def imported_modules(folder: Path) -> list[tuple[Path, str]]:
    found = []
    for file in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(file.read_text(), str(file))):
            if isinstance(node, ast.Import):
                found += [(file, alias.name) for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.append((file, node.module))
    return found


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_package_never_imports_the_layers_above_it(folder: str) -> None:
    bad = [
        f"{file.relative_to(ROOT)} imports {module}"
        for file, module in imported_modules(ROOT / folder)
        if module.startswith(FORBIDDEN[folder])
    ]
    assert not bad, "\n".join(bad)


def test_backends_never_import_each_other() -> None:
    backends = sorted((ROOT / "operator").glob("*_backend.py"))
    names = {f"den.operator.{p.stem}" for p in backends}
    bad = [
        f"{file.name} imports {module}"
        for file in backends
        for f, module in imported_modules(file.parent)
        if f == file and module in names - {f"den.operator.{file.stem}"}
    ]
    assert not bad, "\n".join(bad)
