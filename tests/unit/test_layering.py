"""Layering like kopf's import-linter contracts: the runtime stands alone, den.api is the base,
the planner is pure, backends are independent, and litellm lives in one place."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = {
    "runtime": ("den.operator", "den.cli"),
    "api": ("den.operator", "den.runtime", "den.cli"),
    "operator": ("den.cli", "den.runtime"),
}
#: The one module allowed to import litellm: the model gateway's upstream. Nothing in the
#: agent, the operator or the CLI does.
LITELLM_HOMES = {"runtime/gateway/upstream.py"}
#: Modules of the operator that must stay free of any backend: pure data and decisions.
PURE = ("operator/plan.py", "operator/reconcile.py", "operator/backend.py", "operator/secrets.py",
        "operator/kubernetes_render.py")
BACKEND_LIBRARIES = ("docker", "kubernetes", "kopf")


def imports_of(file: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(file.read_text(), str(file))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
    return found


def imported_modules(folder: Path) -> list[tuple[Path, str]]:
    return [(file, module) for file in sorted(folder.rglob("*.py")) for module in imports_of(file)]


def backend_modules() -> set[str]:
    return {f"den.operator.{p.stem}" for p in (ROOT / "operator").glob("*_backend.py")}


def test_import_scanning_sees_lazy_imports_inside_functions(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    import litellm\n    from den.operator import docker_backend\n")
    assert imports_of(sample) == ["litellm", "den.operator"]


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_package_never_imports_the_layers_above_it(folder: str) -> None:
    bad = [
        f"{file.relative_to(ROOT)} imports {module}"
        for file, module in imported_modules(ROOT / folder)
        if module.startswith(FORBIDDEN[folder])
    ]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("path", PURE)
def test_the_planner_and_the_reconcile_loop_import_no_backend(path: str) -> None:
    file = ROOT / path
    bad = [m for m in imports_of(file)
           if m in backend_modules() or m.split(".")[0] in BACKEND_LIBRARIES]
    # `from den.operator import docker_backend` names the module as an alias: check those too.
    tree = ast.parse(file.read_text())
    bad += [f"den.operator.{a.name}" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
            and n.module == "den.operator" for a in n.names if f"den.operator.{a.name}" in backend_modules()]
    assert not bad, f"{path} imports {bad}"


def test_the_docker_backend_exists_so_the_backend_checks_are_not_vacuous() -> None:
    assert "den.operator.docker_backend" in backend_modules()


def test_backends_never_import_each_other() -> None:
    bad = []
    for module in sorted(backend_modules()):
        file = ROOT / "operator" / f"{module.rsplit('.', 1)[1]}.py"
        bad += [f"{file.name} imports {m}" for m in imports_of(file) if m in backend_modules() - {module}]
    assert not bad, "\n".join(bad)


def test_litellm_is_imported_only_where_the_model_is_called() -> None:
    found = {
        str(file.relative_to(ROOT))
        for folder in ("api", "operator", "runtime", "cli", "den")
        for file, module in imported_modules(ROOT / folder)
        if module.split(".")[0] == "litellm"
    }
    assert found <= LITELLM_HOMES, f"litellm imported outside its home: {sorted(found - LITELLM_HOMES)}"
    assert found, "the scan found no litellm import at all: the check has become vacuous"


def test_the_agents_code_never_imports_the_gateway_or_litellm() -> None:
    gateway = ROOT / "runtime" / "gateway"
    agent_files = [f for f in sorted((ROOT / "runtime").rglob("*.py")) if gateway not in f.parents]
    assert len(agent_files) > 20, "the scan found too few agent modules: the check has become vacuous"
    bad = [f"{file.relative_to(ROOT)} imports {module}" for file in agent_files for module in imports_of(file)
           if module.split(".")[0] == "litellm" or module.startswith("den.runtime.gateway")]
    assert not bad, "\n".join(bad)
