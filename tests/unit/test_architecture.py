"""The import arrows of connector/ and scim/ obey the layers, and no module imports itself
back through others (no circle), counting imports inside functions too.

Layers, from the bottom: domain; ports; config (settings, mappings); services and
adapters side by side; the composition root (bootstrap); entry points (the CLI, the web
application, the worker hosting) and scim/. An arrow may only point down or within its
own layer (an adapter package only within itself).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

ALLOWED: dict[str, set[str]] = {
    "domain": {"domain"},
    "ports": {"domain", "ports"},
    "config": {"domain", "ports", "config"},
    "services": {"domain", "ports", "services"},
    "adapters": {"domain", "ports", "config"},  # plus its own package: see _allowed
    "bootstrap": {"domain", "ports", "config", "services", "adapters"},
    "entrypoints": {"domain", "ports", "config", "services", "bootstrap", "entrypoints", "scim"},
    "scim": {"domain", "ports", "config", "services", "bootstrap", "scim"},
}


def layer_of(module: str) -> str:
    """The layer a module of ours belongs to."""
    parts = module.split(".")
    if parts[0] == "scim":
        return "scim"
    second = parts[1] if len(parts) > 1 else ""
    if second in ("domain", "ports", "services", "adapters", "entrypoints", "bootstrap"):
        return second
    if second in ("settings", "mappings"):
        return "config"
    raise AssertionError(f"{module} belongs to no layer: place it in one")


def _allowed(source: str, target: str) -> bool:
    source_layer, target_layer = layer_of(source), layer_of(target)
    if source_layer == "adapters" and target_layer == "adapters":
        return source.split(".")[2] == target.split(".")[2]
    return target_layer in ALLOWED[source_layer]


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in ("connector", "scim"):
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            relative = path.relative_to(ROOT).with_suffix("")
            parts = list(relative.parts)
            if parts[-1] == "__init__":
                parts.pop()
            if len(parts) > 1:  # the bare packages hold nothing but a docstring
                found[".".join(parts)] = path
    return found


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The module of ours an import names (``a.b.c`` may be module ``a.b`` + name ``c``)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(module: str) -> Iterator[tuple[str, int]]:
    """Every module of ours that ``module`` imports, anywhere in it, with the line."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            target = _resolve(name)
            if target is not None and target != module:
                yield target, node.lineno


def test_every_module_has_a_layer() -> None:
    for module in MODULES:
        layer_of(module)


def test_arrows_point_down() -> None:
    wrong = sorted(
        {
            f"{module}:{line} imports {target} ({layer_of(module)} -> {layer_of(target)})"
            for module in MODULES
            for target, line in imports_of(module)
            if not _allowed(module, target)
        }
    )
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module in MODULES:
        targets = {t for t, _ in imports_of(module)}
        # A package's __init__ is imported with any of its modules: ignore that arrow.
        graph[module] = {t for t in targets if not module.startswith(t + ".")}
    return graph


def test_no_import_circle() -> None:
    graph = _graph()
    circles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                circles.append([*stack[stack.index(target) :], target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
    assert not circles, "import circles:\n" + "\n".join(" -> ".join(c) for c in circles)


@pytest.mark.parametrize(
    ("source", "target", "allowed"),
    [
        ("connector.services.users", "connector.adapters.sql.database", False),
        ("connector.adapters.sql.repositories", "connector.services.users", False),
        ("scim.storage", "connector.adapters.sql.tables", False),
        ("connector.adapters.keycloak.api", "connector.adapters.sql.tables", False),
        ("connector.domain.model", "connector.ports.store", False),
        ("connector.bootstrap", "connector.adapters.sql.database", True),
        ("connector.services.users", "connector.ports.store", True),
    ],
)
def test_the_rule_itself(source: str, target: str, allowed: bool) -> None:
    """The checker refuses what the layers forbid (a positive control for the tests above)."""
    assert _allowed(source, target) is allowed
