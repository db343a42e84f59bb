"""The code's shape: no import cycles, no sys.path edits, the type checker clean, the live panel's JavaScript valid."""

from __future__ import annotations

import ast
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ehflow_core", "dashboard")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, package: str) -> set[str]:
    """The modules of ``package`` that ``path`` imports, at the top or inside functions."""
    name = _module_name(path)
    here = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from .x import y, from . import x
                anchor = here.split(".")[: len(here.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # `from . import x` names a module
    modules = {_module_name(p) for p in (ROOT / package).glob("*.py")}
    return {m for m in found if m in modules and m != name}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (module -> modules it imports), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycle(package):
    """Every import of the package's own modules, at the top or deferred into a function, counts;
    the package's ``__init__`` is a module too (importing the package runs it)."""
    graph = {_module_name(p): _imports(p, package) for p in (ROOT / package).glob("*.py")}
    assert sum(map(len, graph.values())) > len(graph) // 2, "the import walker found almost no imports"
    assert _cycle(graph) is None, f"import cycle: {' -> '.join(_cycle(graph) or [])}"


def test_no_sys_path_edits_in_the_product():
    offenders = [
        str(p.relative_to(ROOT)) for pkg in PACKAGES for p in (ROOT / pkg).glob("*.py") if "sys.path" in p.read_text()
    ]
    assert offenders == []


@pytest.mark.slow
def test_the_type_checker_finds_nothing():
    from mypy import api

    stdout, stderr, status = api.run(["--config-file", str(ROOT / "pyproject.toml")])
    assert status == 0, stdout + stderr


def test_the_live_panels_javascript_is_valid():
    node = shutil.which("node")
    assert node, "node is missing: apt-get install -y nodejs (see .ci/run)"
    result = subprocess.run(
        [node, "--check", str(ROOT / "dashboard" / "live_panel.js")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


# The library's layers, lowest first: a module imports its own layer and the ones below, never above.
LAYERS = {
    "model": ("_checks", "_files", "config", "nets", "hamiltonian", "integrators", "distributions", "encoder", "flow",
              "symmetries", "evaluation", "targets", "walkthrough", "liouville"),
    "training": ("objectives", "optim", "run", "training", "ensemble", "checkpoint", "interrupts", "peer"),
    "pictures": ("snapshot", "raster", "figures", "lesson_figures"),
    "apps": ("reporting", "experiments", "sweep", "sweep_grid", "sweep_backends", "sweep_tables", "cli", "cli_args", "__main__",
             "ehflow_core"),
}  # fmt: skip


def test_the_librarys_lower_layers_never_import_the_upper_ones():
    """Model < training < pictures < apps (reports, experiments, sweeps, the command line): each
    module of ``ehflow_core`` is in exactly one layer, and imports nothing from a layer above."""
    level = {module: i for i, modules in enumerate(LAYERS.values()) for module in modules}
    upward = []
    for path in sorted((ROOT / "ehflow_core").glob("*.py")):
        name = _module_name(path).rpartition(".")[2] or "ehflow_core"
        assert name in level, f"ehflow_core/{path.name} is in no layer: add it to LAYERS"
        for imported in _imports(path, "ehflow_core"):
            other = imported.rpartition(".")[2] or "ehflow_core"
            if level[other] > level[name]:
                upward.append(f"{name} -> {other}")
    assert upward == []


def test_every_run_state_the_dashboard_names_is_one_of_the_protocols():
    """The run states are defined once (dashboard.protocol.STATES): every state the dashboard's code
    sets or compares is one of them, and the worker's are the server's less "queued" and "closed"."""
    import re

    from dashboard.protocol import ENDED, STATES, WORKER_STATES

    named = set()
    for path in (ROOT / "dashboard").glob("*.py"):
        text = path.read_text()
        named |= set(re.findall(r"state(?:, \w+\.message)? (?:==|!=|=) \"(\w+)\"", text))
        named |= set(re.findall(r"state=\"(\w+)\"", text))
    assert named and named <= set(STATES), sorted(named - set(STATES))
    assert set(WORKER_STATES) == set(STATES) - {"queued", "closed"} and set(ENDED) <= set(STATES)


def test_the_dashboard_uses_only_the_librarys_public_names():
    """The dashboard imports no private module or name of ehflow_core (``_files``, ``_checks``,
    ``_anything``): what it needs of the library is public, so the library may change the rest."""
    import ast

    private = []
    for path in sorted((ROOT / "dashboard").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ehflow_core"):
                parts = [*node.module.split("."), *(alias.name for alias in node.names)]
                private += [f"{path.name}: from {node.module} import {p}" for p in parts if p.startswith("_")]
            elif isinstance(node, ast.Import):
                private += [
                    f"{path.name}: import {a.name}" for a in node.names if "._" in a.name and "ehflow" in a.name
                ]
    assert private == []
