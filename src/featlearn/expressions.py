"""Derived values: arithmetic expressions of grid dimensions and earlier exponents.

A prefactor or exponent of an experiment may be a string such as ``"b_u"`` or
``"-a + max(1 - a - 2 * b_u, 0)"``: numbers, names, ``+ - * / **``,
parentheses and the functions ``min``, ``max``, ``abs``. Expressions are
parsed with :mod:`ast` and evaluated by walking the tree, never by ``eval``.
See ``docs/configuration.md`` (derived values).
"""

from __future__ import annotations

import ast
import functools
import operator
from collections.abc import Mapping

FUNCTIONS = {"min": min, "max": max, "abs": abs}
_BINARY_OPERATORS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
}
_UNARY_OPERATORS = {ast.USub: operator.neg, ast.UAdd: operator.pos}
_NODES = (
    ast.Expression,
    ast.BinOp,
    ast.UnaryOp,
    ast.Name,
    ast.Load,
    ast.Constant,
    ast.Call,
    *_BINARY_OPERATORS,
    *_UNARY_OPERATORS,
)


@functools.cache
def parse(expression: str) -> ast.Expression:
    """Parse a derived-value expression; only arithmetic, numbers, names and min/max/abs pass.

    Raises ``ValueError`` naming what is not allowed.
    """
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as error:
        raise ValueError(f"{expression!r} is not an arithmetic expression ({error.msg})") from None
    for node in ast.walk(tree):
        allowed = isinstance(node, _NODES)
        if isinstance(node, ast.Constant):
            allowed = isinstance(node.value, (int, float)) and not isinstance(node.value, bool)
        elif isinstance(node, ast.Call):
            allowed = isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS and not node.keywords
        if not allowed:
            raise ValueError(
                f"{expression!r}: only numbers, names, + - * / **, parentheses and {', '.join(FUNCTIONS)} "
                f"are allowed (found {ast.unparse(node) if isinstance(node, ast.expr) else type(node).__name__})"
            )
    return tree


def names(expression: str) -> set[str]:
    """The names a derived-value expression reads (raises ``ValueError`` if it is not one)."""
    tree = parse(expression)
    calls = {id(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}
    return {node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and id(node) not in calls}


def evaluate(expression: str, values: Mapping[str, float]) -> float:
    """Value of a derived-value expression with ``values`` bound (``KeyError`` names a missing one)."""

    def value(node: ast.expr) -> float:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            if node.id not in values:
                raise KeyError(f"{expression!r} reads {node.id!r}, which is not defined here")
            return values[node.id]
        if isinstance(node, ast.BinOp):
            return _BINARY_OPERATORS[type(node.op)](value(node.left), value(node.right))
        if isinstance(node, ast.UnaryOp):
            return _UNARY_OPERATORS[type(node.op)](value(node.operand))
        return FUNCTIONS[node.func.id](*(value(arg) for arg in node.args))

    return float(value(parse(expression).body))
