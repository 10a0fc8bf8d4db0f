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


@functools.cache
def _direct_imports(module: str) -> frozenset[str]:
    """featlearn modules imported by ``module`` (parents included, as Python runs their __init__)."""
    path = _source_path(module)
    if path is None:
        return frozenset()
    found: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
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


#: Modules every rule runs through (their own source only: the CLI imports each
#: stage lazily, and a stage's change must not rerun the other stages).
ENTRY_POINTS = ("featlearn.cli", "featlearn.__main__")


def code_version(*modules: str) -> str:
    """Short SHA-256 of the sources a rule runs.

    That is ``modules``, everything they import from featlearn, and the
    command-line entry points (without their lazy imports of other stages).
    """
    digest = hashlib.sha256()
    for name in sorted({m for module in modules for m in module_closure(module)} | set(ENTRY_POINTS)):
        path = _source_path(name)
        if path is None:
            raise ValueError(f"no Python source for module {name!r}")
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def as_json(value: Any) -> str:
    """A configuration section as canonical JSON: a builtin-typed, order-independent param."""
    return json.dumps(value, sort_keys=True)
