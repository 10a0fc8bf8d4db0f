"""Helpers the Snakemake workflow uses to build its DAG (no stage logic here).

Snakemake's ``code`` rerun trigger sees only a rule's own shell command, not
the Python modules it runs. :func:`code_version` hashes the source of a
featlearn module together with every featlearn module it imports, directly
or not, so a rule that passes it as a ``param`` reruns exactly when code it
runs has changed.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any


_PACKAGE_ROOT = Path(__file__).resolve().parent


@functools.cache
def _source_path(module: str) -> Path | None:
    """The source file of a featlearn module, found without importing it."""
    parts = module.split(".")
    if parts[0] != "featlearn":
        return None
    base = _PACKAGE_ROOT.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _module_level_nodes(tree: ast.Module) -> Iterator[ast.AST]:
    """The nodes of ``tree`` outside function bodies: what runs when the module is imported."""
    pending: list[ast.AST] = [tree]
    while pending:
        node = pending.pop()
        yield node
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            pending.extend(ast.iter_child_nodes(node))


@functools.cache
def _direct_imports(module: str, module_level_only: bool = False) -> frozenset[str]:
    """featlearn modules imported by ``module`` (parents included, as Python runs their __init__).

    With ``module_level_only``, only the imports that run when the module is
    imported, not those inside functions.
    """
    path = _source_path(module)
    if path is None:
        return frozenset()
    found: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    for node in _module_level_nodes(tree) if module_level_only else ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        for name in names:
            if name.split(".")[0] != "featlearn":
                continue
            parts = name.split(".")
            for end in range(1, len(parts) + 1):
                candidate = ".".join(parts[:end])
                if _source_path(candidate) is not None:
                    found.add(candidate)
    found.discard(module)
    return frozenset(found)


def module_closure(module: str) -> list[str]:
    """``module`` and every featlearn module it imports, transitively, sorted."""
    seen: set[str] = set()
    pending = [module]
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        pending.extend(_direct_imports(current))
    return sorted(seen)


#: Modules every rule runs through. The CLI imports each stage lazily, inside its
#: handler, and a stage's change must not rerun the other stages: only what the
#: entry points import at module level (e.g. featlearn.io, which writes every
#: output) counts for every rule.
ENTRY_POINTS = ("featlearn.cli", "featlearn.__main__")


def entry_point_modules() -> set[str]:
    """The entry points and every featlearn module they import at module level, transitively."""
    found = set(ENTRY_POINTS)
    for entry_point in ENTRY_POINTS:
        for imported in _direct_imports(entry_point, module_level_only=True) - set(ENTRY_POINTS):
            found.update(module_closure(imported))
    return found


def code_version(*modules: str) -> str:
    """Short SHA-256 of the sources a rule runs.

    That is ``modules``, everything they import from featlearn, and the
    command-line entry points with their module-level imports (without their
    lazy imports of other stages).
    """
    digest = hashlib.sha256()
    for name in sorted({m for module in modules for m in module_closure(module)} | entry_point_modules()):
        path = _source_path(name)
        if path is None:
            raise ValueError(f"no Python source for module {name!r}")
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def as_json(value: Any) -> str:
    """A configuration section as canonical JSON: a builtin-typed, order-independent param."""
    return json.dumps(value, sort_keys=True)
