"""The package's import graph is layered: no module imports one that (indirectly) imports it
back, and only the command line reaches the command modules (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "agent" / "appsight"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Each appsight module and the appsight modules it imports (at any depth of its code)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                candidates = [target] + [f"{target}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                candidates = [alias.name for alias in node.names]
            else:
                continue
            found.update(c for c in candidates if c in modules and c != name)
        graph[name] = found
    return graph


def test_the_graph_is_read() -> None:
    graph = import_graph()
    assert "appsight.commands.flows" in graph["appsight.commands"]
    assert "appsight.pipeline" in graph["appsight.batch"]


def test_no_import_cycles() -> None:
    graph = import_graph()
    done: set[str] = set()
    cycles: list[list[str]] = []

    def visit(name: str, path: list[str]) -> None:
        for target in sorted(graph[name]):
            if target in path:
                cycles.append([*path[path.index(target):], target])
            elif target not in done:
                visit(target, [*path, target])
        done.add(name)

    for name in sorted(graph):
        if name not in done:
            visit(name, [name])
    assert cycles == []


def test_only_the_command_line_imports_the_commands() -> None:
    graph = import_graph()
    outside = {name: sorted(t for t in targets if t.startswith(("appsight.commands",
                                                                  "appsight.cli")))
               for name, targets in graph.items()
               if not name.startswith(("appsight.commands", "appsight.cli", "appsight.__main__"))}
    assert {name: targets for name, targets in outside.items() if targets} == {}
