"""Safe arithmetic formulas for claims written as data (bench/documents.py, docjudge.py): "16 * n_params",
"(2 + 2 + K) * psi / nd / 1e9", "min(a, b) ** 0.5".

The grammar is small on purpose and is enforced on Python's own parse tree (`ast`), never eval():
  numbers, names, + - * / **, unary + -, parentheses, and calls of min(a, b, ...), max(a, b, ...),
  log(x) (natural) or log(x, base). Anything else (attributes, subscripts, comparisons, strings,
  lambdas, keyword arguments, other calls) is refused when the formula is parsed, with the reason.
Values are floats; an overflow, a division by zero or the log of a non-positive number is a
FormulaError when evaluated (the claim's evidence says so), never a crash.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

__all__ = ["Formula", "FormulaError", "parse"]

_BINOPS: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.Pow: lambda a, b: a**b,
}
_FUNCS: dict[str, tuple[int, int]] = {"min": (2, 64), "max": (2, 64), "log": (1, 2)}  # (fewest, most) arguments
MAX_LENGTH = 500  # characters: a claim's formula, not a program


class FormulaError(ValueError):
    """A formula outside the grammar, or one that cannot be evaluated for these values."""


@dataclass(frozen=True)
class Formula:
    text: str
    tree: ast.Expression
    names: frozenset[str]  # the names it reads (function names excluded)

    def __call__(self, env: Mapping[str, float]) -> float:
        """The value for these names (floats); FormulaError when a name is missing or the arithmetic fails."""
        missing = sorted(self.names - set(env))
        if missing:
            raise FormulaError(f"{self.text!r}: no value for {', '.join(missing)}")
        try:
            v = _eval(self.tree.body, env)
        except (ArithmeticError, ValueError, TypeError) as e:  # ZeroDivisionError, OverflowError, math domain, complex
            raise FormulaError(f"{self.text!r}: {e}") from None
        if isinstance(v, complex) or not math.isfinite(v):
            raise FormulaError(f"{self.text!r} is not a finite real number here ({v})")
        return v


def parse(text: str) -> Formula:
    """The formula, checked against the grammar (FormulaError says what is not allowed)."""
    if not isinstance(text, str) or not text.strip():
        raise FormulaError("an empty formula")
    if len(text) > MAX_LENGTH:
        raise FormulaError(f"a formula of {len(text)} characters (at most {MAX_LENGTH})")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as e:
        raise FormulaError(f"{text!r} is not a formula: {e.msg}") from None
    names: set[str] = set()
    for node in ast.walk(tree):
        why = _refuse(node)
        if why:
            raise FormulaError(f"{text!r}: {why} (allowed: numbers, names, + - * / **, parentheses, min max log)")
        if isinstance(node, ast.Name) and node.id not in _FUNCS:
            names.add(node.id)
    return Formula(text.strip(), tree, frozenset(names))


def _refuse(node: ast.AST) -> str | None:
    if isinstance(node, (ast.Expression, ast.Load)) or type(node) in _BINOPS:
        return None
    if isinstance(node, (ast.UAdd, ast.USub, ast.BinOp)):
        return None
    if isinstance(node, ast.UnaryOp):
        return None if isinstance(node.op, (ast.UAdd, ast.USub)) else "only unary + and - are allowed"
    if isinstance(node, ast.Constant):
        ok = isinstance(node.value, (int, float)) and not isinstance(node.value, bool)
        return None if ok else f"the constant {node.value!r} is not a number"
    if isinstance(node, ast.Name):
        return None
    if isinstance(node, ast.Call):
        fn = node.func.id if isinstance(node.func, ast.Name) else None
        if fn not in _FUNCS:
            return f"calls {ast.unparse(node.func)}() (only min, max, log)"
        lo, hi = _FUNCS[fn]
        if node.keywords or not lo <= len(node.args) <= hi or any(isinstance(a, ast.Starred) for a in node.args):
            return f"{fn}() takes {lo} to {hi} plain arguments"
        return None
    return f"{type(node).__name__.lower()} is not allowed"


def _eval(node: ast.expr, env: Mapping[str, float]) -> float:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return float(node.value)
    if isinstance(node, ast.Name):
        return float(env[node.id])
    if isinstance(node, ast.UnaryOp):
        v = _eval(node.operand, env)
        return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.BinOp):
        return _BINOPS[type(node.op)](_eval(node.left, env), _eval(node.right, env))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        args = [_eval(a, env) for a in node.args]
        if node.func.id == "min":
            return min(args)
        if node.func.id == "max":
            return max(args)
        return math.log(*args)
    raise FormulaError(f"cannot evaluate {ast.unparse(node)}")  # unreachable after parse()
