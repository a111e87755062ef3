"""Imports point downward: edge -> core -> upstreams -> policies, and nothing in the gateway reaches up.

Read from the source (no import runs), so a module that imports upward fails here with its name and
the import, before it becomes a cycle or a service locator. Every import counts: inside functions and
`TYPE_CHECKING` blocks, relative ones (`from ..edge import rest`), and `importlib.import_module` /
`__import__` of a literal name. Every module is under a rule but the composition's top (`TOP`).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

_LAYERS = ("gateway.protocols", "gateway.store", "gateway.upstreams", "gateway.reporting", "gateway.core",
           "gateway.delivery", "gateway.edge", "gateway.runtime", "gateway.cli", "gateway.workers")
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
    "gateway.edge": ("gateway.cli", "gateway.workers"),  # and the runtime: COMPOSITION, below
    # The leaves everything may use: they use none of the layers (config reads PEMs with protocols).
    "gateway.errors": ("gateway.config", "gateway.tasks", "gateway.telemetry", *_LAYERS),
    "gateway.tasks": ("gateway.config", "gateway.errors", "gateway.telemetry", *_LAYERS),
    "gateway.telemetry": ("gateway.config", "gateway.tasks", *_LAYERS),
    "gateway.config": ("gateway.tasks", "gateway.telemetry", *[p for p in _LAYERS if p != "gateway.protocols"]),
    "gateway": ("gateway_tools",),
}
# What builds and runs the rest, so may import any of it (not gateway_tools: see TOOL_COMMANDS).
TOP = {"gateway", "gateway.runtime", "gateway.cli", "gateway.workers"}
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


def _imports(path: Path, module: str) -> list[str]:
    """Absolute names `module` (the file at `path`) imports, relative imports resolved against it."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = ".".join([*package[:len(package) - node.level + 1], *([node.module] if node.module else [])]) \
                if node.level else node.module
            if base:
                names.append(base)
                names.extend(f"{base}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str) and _dotted(node.func) in _DYNAMIC:
            names.append(node.args[0].value)
    return names


_DYNAMIC = {"importlib.import_module", "import_module", "__import__"}


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


@pytest.mark.parametrize(("module", "path"), _modules(), ids=[m for m, _ in _modules()])
def test_no_module_imports_a_layer_above_its_own(module: str, path: Path) -> None:
    upward = []
    for package, forbidden in FORBIDDEN.items():
        if not _within(module, package) or (package == "gateway" and module in TOOL_COMMANDS):
            continue
        for name in _imports(path, module):
            if any(_within(name, f) and not _within(name, package) for f in forbidden):
                upward.append(name)
    if module.startswith("gateway.edge") and module not in COMPOSITION:
        upward.extend(name for name in _imports(path, module) if _within(name, "gateway.runtime"))
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
    assert _imports(probe, "gateway.core.probe") == ["gateway.edge.rest", "gateway.edge.rest.RestApi",
                                                     "gateway.runtime"]


def test_the_layer_rules_catch_relative_and_dynamic_imports(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("import importlib\nfrom ..edge.rest import RestApi\nfrom . import loop\n"
                     "def late():\n    return importlib.import_module('gateway.runtime')\n", encoding="utf-8")
    assert sorted(_imports(probe, "gateway.core.probe")) == sorted([
        "importlib", "gateway.edge.rest", "gateway.edge.rest.RestApi", "gateway.core", "gateway.core.loop",
        "gateway.runtime"])
    init = tmp_path / "__init__.py"
    init.write_text("from .. import errors\nfrom .dialects import sms\n", encoding="utf-8")
    assert _imports(init, "gateway.core") == ["gateway", "gateway.errors", "gateway.core.dialects",
                                              "gateway.core.dialects.sms"]


@pytest.mark.parametrize(("module", "path"), _modules(), ids=[m for m, _ in _modules()])
def test_every_module_is_under_a_layer_rule(module: str, path: Path) -> None:
    """A new package or top-level module is placed in the layers, not left free to import anything."""
    ruled = [p for p in FORBIDDEN if p != "gateway" and _within(module, p)]
    assert module in TOP or module.startswith("policies") or ruled, f"{module}: add it to FORBIDDEN (or TOP)"
