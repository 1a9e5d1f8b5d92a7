"""Imports flow one way (pipeline → jobs → nst_core; inside pipeline cli → report → run → cluster → store);
nst_core stays pure torch so it runs anywhere."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "nst_core": {"ray", "fsspec", "s3fs", "jobs", "pipeline", "pyarrow", "typer"},
    "jobs": {"ray", "pipeline"},
}


def imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_source_imports_respect_layers(package: str) -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(imported_roots(path) & FORBIDDEN[package])
        for path in (ROOT / package).rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_importing_a_package_loads_no_forbidden_module(package: str) -> None:
    modules = [f"{package}.{p.stem}" for p in (ROOT / package).glob("*.py") if p.stem != "__init__"]
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"print(sorted({{n.split('.')[0] for n in sys.modules}} & set({sorted(FORBIDDEN[package])!r})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


# -- pipeline/: four wings and the report, importing downward only -------------------------------------

WINGS = ("store", "cluster", "run", "report", "cli")
"""Lowest first: a module may import its own wing and the wings before it (and jobs, nst_core)."""

RAY_MODULES = {"pipeline/cluster/runtime.py", "pipeline/cluster/driver.py", "pipeline/cluster/execute.py", "pipeline/cluster/worker.py"}
"""The only modules that may import Ray; the scheduler, the outage policy and the records stay testable without it."""
MAX_FILE_LINES = 300
MAX_FUNCTION_LINES = 60


def pipeline_files() -> list[Path]:
    return sorted((ROOT / "pipeline").rglob("*.py"))


def wing_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "pipeline" and parts[1] in WINGS else None


def pipeline_imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return {m for m in found if m == "pipeline" or m.startswith("pipeline.")}


def test_every_pipeline_module_lives_in_a_wing() -> None:
    loose = [str(p.relative_to(ROOT)) for p in pipeline_files() if p.parent == ROOT / "pipeline" and p.name != "__init__.py"]
    assert loose == []


def test_wings_import_downward_only() -> None:
    offenders = {}
    for path in pipeline_files():
        own = wing_of(".".join(path.relative_to(ROOT).with_suffix("").parts))
        if own is None:
            continue
        upward = sorted(m for m in pipeline_imports(path) if (w := wing_of(m)) and WINGS.index(w) > WINGS.index(own))
        if upward:
            offenders[str(path.relative_to(ROOT))] = upward
    assert offenders == {}


def test_only_the_cluster_runtime_driver_and_worker_import_ray() -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for path in pipeline_files()
        if "ray" in imported_roots(path) and str(path.relative_to(ROOT)) not in RAY_MODULES
    ]
    assert offenders == []


def test_no_import_cycles_between_pipeline_modules() -> None:
    """Module-level imports only: a cycle there is what function-level imports used to hide."""
    graph: dict[str, set[str]] = {}
    for path in pipeline_files():
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        tree = ast.parse(path.read_text())
        graph[name] = {
            node.module
            for node in tree.body
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pipeline.")
        }
    seen: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        seen[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if seen.get(nxt) == 1:
                raise AssertionError(" -> ".join([*stack[stack.index(nxt):], nxt]))
            if nxt not in seen:
                visit(nxt, [*stack, nxt])
        seen[node] = 2

    for module in sorted(graph):
        if module not in seen:
            visit(module, [module])


def test_pipeline_files_and_functions_stay_small() -> None:
    big_files = {}
    long_functions = {}
    for path in sorted((ROOT / "pipeline").rglob("*")):
        if path.suffix in (".js", ".css") and len(path.read_text().splitlines()) > MAX_FILE_LINES:
            big_files[str(path.relative_to(ROOT))] = len(path.read_text().splitlines())
    for path in pipeline_files():
        text = path.read_text()
        rel = str(path.relative_to(ROOT))
        if len(text.splitlines()) > MAX_FILE_LINES:
            big_files[rel] = len(text.splitlines())
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long_functions[f"{rel}:{node.lineno} {node.name}"] = length
    assert big_files == {} and long_functions == {}
