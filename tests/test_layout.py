"""The package's layering, checked from the source: what a newcomer should be able to rely on."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "gateway"


def modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path, ast.parse(path.read_text())


def test_no_underscore_name_is_used_across_modules():
    """``obj._name`` only on self/cls or on a class of the same module (private *modules*, the
    native twins and their switch, are imported by the one module that picks between them)."""
    offences = []
    for path, tree in modules():
        local_classes = {n.name for n in ast.walk(tree) if isinstance(n, ast.ClassDef)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                owner = node.value
                if isinstance(owner, ast.Name) and (owner.id in ("self", "cls") or owner.id in local_classes):
                    continue
                offences.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {ast.unparse(node)}")
    assert offences == []


def test_the_domain_never_imports_the_transport_and_imports_nothing_lazily_but_the_bot():
    """conversations/, routing/ and bot/ know nothing of sockets (no transport, no node), and no
    import hides in a function to get around a cycle (the one lazy import loads scikit-learn
    only for tenants that use the built-in bot). The command line, which nothing imports, loads
    each command's modules when it runs, so that ``kefu --version`` does not load the gateway."""
    lazy, upward = [], []
    for path, tree in modules():
        rel = str(path.relative_to(PACKAGE))
        domain = rel.startswith(("conversations/", "routing/", "bot/"))
        for node in ast.walk(tree):
            if rel != "cli.py" and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for inner in ast.walk(node):
                    if isinstance(inner, (ast.Import, ast.ImportFrom)):
                        lazy.append(f"{rel}:{inner.lineno}: {ast.unparse(inner)}")
            if domain and isinstance(node, ast.ImportFrom) and node.module:
                if "transport" in node.module or node.module.split(".")[-1] == "node":
                    upward.append(f"{rel}:{node.lineno}: {ast.unparse(node)}")
    assert upward == []
    assert [line.split(": ", 1)[1] for line in lazy] == ["from . import bot"], lazy
    importers = [str(path.relative_to(PACKAGE)) for path, tree in modules() for node in ast.walk(tree) if imports_cli(node)]
    assert importers == ["__main__.py"]  # no cycle can hide behind the command line's lazy imports


def imports_cli(node: ast.AST) -> bool:
    if isinstance(node, ast.ImportFrom):
        return (node.module or "").split(".")[-1] == "cli" or any(alias.name == "cli" for alias in node.names)
    return isinstance(node, ast.Import) and any(alias.name.split(".")[-1] == "cli" for alias in node.names)
