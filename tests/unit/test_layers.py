"""Imports point downward: edge -> core -> upstreams -> policies, and nothing in the gateway reaches up.

Read from the source (no import runs), so a module that imports upward fails here with its name and
the import, before it becomes a cycle or a service locator.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# A package (or module), and the packages it must not import.
FORBIDDEN = {
    "policies": ("gateway", "gateway_tools"),
    "gateway.store": ("gateway.protocols", "gateway.upstreams", "gateway.core", "gateway.delivery", "gateway.edge",
                      "gateway.runtime"),
    "gateway.protocols": ("gateway.store", "gateway.upstreams", "gateway.core", "gateway.delivery", "gateway.edge",
                          "gateway.runtime"),
    "gateway.upstreams": ("gateway.core", "gateway.delivery", "gateway.edge", "gateway.runtime"),
    "gateway.reporting": ("gateway.core", "gateway.delivery", "gateway.edge", "gateway.runtime"),
    "gateway.core": ("gateway.delivery", "gateway.edge", "gateway.runtime"),
    "gateway.delivery": ("gateway.edge", "gateway.runtime"),
    "gateway": ("gateway_tools",),
}
COMPOSITION = {"gateway.edge.app"}  # builds the routes from the runtime: the one edge module that imports it
# The command line offers simulate, drill and demo beside serve: it loads those tools lazily, inside the
# command that runs them (tests/e2e/test_serve_imports.py checks that serve never loads them).
TOOL_COMMANDS = {"gateway.cli"}


def _modules() -> list[tuple[str, Path]]:
    found = []
    for package in ("gateway", "policies"):
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found.append((".".join(parts[:-1] if parts[-1] == "__init__" else parts), path))
    return found


def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
            names.extend(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


@pytest.mark.parametrize(("module", "path"), _modules(), ids=[m for m, _ in _modules()])
def test_no_module_imports_a_layer_above_its_own(module: str, path: Path) -> None:
    upward = []
    for package, forbidden in FORBIDDEN.items():
        if not _within(module, package) or (package == "gateway" and module in TOOL_COMMANDS):
            continue
        for name in _imports(path):
            if any(_within(name, f) and not _within(name, package) for f in forbidden):
                upward.append(name)
    if module.startswith("gateway.edge") and module not in COMPOSITION:
        upward.extend(name for name in _imports(path) if _within(name, "gateway.runtime"))
    assert not upward, f"{module} imports upward: {sorted(set(upward))}"


def test_no_route_looks_the_gateway_up_per_request() -> None:
    """Handlers get their parts when the routes are built, never from `request.app.state`."""
    readers = []
    for module, path in _modules():
        if not _within(module, "gateway.edge") or module in COMPOSITION:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr == "state" and \
                    isinstance(node.value, ast.Attribute) and node.value.attr == "app":
                readers.append(f"{module}:{node.lineno}")
    assert readers == []


def test_the_layer_rules_catch_an_upward_import(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("from gateway.edge.rest import RestApi\nimport gateway.runtime\n", encoding="utf-8")
    assert _imports(probe) == ["gateway.edge.rest", "gateway.edge.rest.RestApi", "gateway.runtime"]
