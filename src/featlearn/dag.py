"""Helpers the Snakemake workflow uses to build its DAG (no stage logic here).

Snakemake's ``code`` rerun trigger sees only a rule's own shell command, not
the Python it runs. :func:`code_version` hashes what ``featlearn COMMAND``
actually executes, so a rule that passes it as a ``param`` reruns exactly
when that code changes:

- of ``featlearn/cli.py``: its module-level statements, ``main`` and
  ``build_parser``, the command's handler ``_<command>`` and the helpers of
  ``cli.py`` the handler calls;
- every featlearn module those import, at module level or inside the
  handler and its helpers, with everything those modules import in turn
  (anywhere in them: a lazy import inside a stage module counts);
- the modules named explicitly (code a handler loads by name at run time,
  such as a figure's module).

Each source is hashed as its syntax tree without docstrings, so editing a
comment, a docstring or the layout reruns nothing, while editing a message
or any code does. The command line imports each stage inside its handler,
so editing one stage (or validation, which no simulation job runs) reruns
only the jobs that run it.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

_PACKAGE_ROOT = Path(__file__).resolve().parent
CLI = "featlearn.cli"
#: Functions of the command line every command runs.
_CLI_ENTRY_FUNCTIONS = ("main", "build_parser")


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


def _tree_source(module: str) -> str:
    path = _source_path(module)
    if path is None:
        raise ValueError(f"no Python source for module {module!r}")
    return path.read_text()


@functools.cache
def _tree(module: str) -> ast.Module:
    return ast.parse(_tree_source(module))


def _imported_modules(module: str, nodes: Iterable[ast.AST]) -> set[str]:
    """featlearn modules imported by the import statements among ``nodes`` (parents included)."""
    path = _source_path(module)
    package = module if path is not None and path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in nodes:
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                prefix = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(prefix + ([base] if base else []))
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] != "featlearn":
                continue
            # Importing a.b.c runs a/__init__, a/b/__init__ and a/b/c.
            found.update(
                ".".join(parts[:end]) for end in range(1, len(parts) + 1) if _source_path(".".join(parts[:end]))
            )
    found.discard(module)
    return found


def _executed(node: ast.AST) -> Iterator[ast.AST]:
    """``node`` and everything inside it, except ``if TYPE_CHECKING:`` blocks (they never run)."""
    yield node
    for child in ast.iter_child_nodes(node):
        test = child.test if isinstance(child, ast.If) else None
        if isinstance(test, ast.Name) and test.id == "TYPE_CHECKING":
            yield from (inner for branch in child.orelse for inner in _executed(branch))
        else:
            yield from _executed(child)


@functools.cache
def _direct_imports(module: str) -> frozenset[str]:
    """featlearn modules ``module`` imports anywhere in its source (where it may run)."""
    return frozenset(_imported_modules(module, _executed(_tree(module))))


def module_closure(modules: Iterable[str]) -> list[str]:
    """``modules`` and every featlearn module they import, transitively, sorted."""
    seen: set[str] = set()
    pending = list(modules)
    while pending:
        current = pending.pop()
        if current not in seen:
            seen.add(current)
            pending.extend(_direct_imports(current))
    return sorted(seen)


def _cli_functions(command: str) -> list[ast.FunctionDef]:
    """The functions of cli.py that ``featlearn COMMAND`` runs: entry functions, handler, its helpers."""
    functions = {node.name: node for node in _tree(CLI).body if isinstance(node, ast.FunctionDef)}
    handler = f"_{command.replace('-', '_')}"
    if handler not in functions:
        raise ValueError(f"featlearn.cli has no handler {handler} for command {command!r}")
    chosen = {name: functions[name] for name in _CLI_ENTRY_FUNCTIONS}
    # Follow calls from the handler only: build_parser names every handler.
    pending = [handler]
    while pending:
        name = pending.pop()
        if name in chosen:
            continue
        chosen[name] = functions[name]
        called = {node.id for node in ast.walk(functions[name]) if isinstance(node, ast.Name)}
        pending.extend(sorted(called & functions.keys() - chosen.keys()))
    return [chosen[name] for name in sorted(chosen)]


def _module_level(tree: ast.Module) -> Iterator[ast.AST]:
    """The statements of a module outside its functions, and everything inside them."""
    for node in tree.body:
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield from _executed(node)


def _strip_docstrings(tree: ast.Module) -> None:
    """Remove, in place, the docstrings of the module and of every class and function in it."""
    for inner in ast.walk(tree):
        body = getattr(inner, "body", None)
        if (
            isinstance(inner, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            inner.body = body[1:] or [ast.Pass()]


@functools.cache
def _statement_fingerprints(module: str) -> tuple[tuple[str | None, bytes], ...]:
    """Each top-level statement of ``module``: (its function's name, or None; its syntax tree
    without docstrings, positions or formatting)."""
    tree = ast.parse(_tree_source(module))  # a fresh tree: stripped in place
    _strip_docstrings(tree)
    return tuple(
        (node.name if isinstance(node, ast.FunctionDef) else None, ast.dump(node, include_attributes=False).encode())
        for node in tree.body
    )


@functools.cache
def code_version(command: str, *modules: str) -> str:
    """Short SHA-256 of what ``featlearn COMMAND`` runs, plus ``modules`` (see the module docstring).

    Cached: the workflow asks once per rule, and the sources do not change while it builds its DAG.
    """
    cli_tree = _tree(CLI)
    functions = _cli_functions(command)
    chosen = {function.name for function in functions}
    imported = _imported_modules(CLI, [*_module_level(cli_tree), *(n for f in functions for n in _executed(f))])
    digest = hashlib.sha256(CLI.encode() + b"\0")
    for name, fingerprint in _statement_fingerprints(CLI):
        if name is None or name in chosen:
            digest.update(fingerprint + b"\0")
    for module in module_closure({*imported, *modules}):
        digest.update(module.encode() + b"\0" + b"".join(f for _, f in _statement_fingerprints(module)) + b"\0")
    return digest.hexdigest()[:16]


def as_json(value: Any, *, ordered: bool = False) -> str:
    """A configuration section as JSON: a builtin-typed param.

    Keys are sorted (editing the order of keys in a file changes nothing)
    unless ``ordered``: an experiment's parameters keep their order, which is
    the order of its grid's dimensions.
    """
    return json.dumps(value, sort_keys=not ordered)
