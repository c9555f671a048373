"""Plugin parameters: parse CLI flags against a Params dataclass and expand the case grid."""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import math
import typing
from typing import Any

from bench.contract import Plugin, choices_of, help_of, params_fields
from bench.errors import UsageError

__all__ = ["UsageError", "describe_params", "expand_grid", "flag_name", "make_params", "parse_flags", "parse_value"]


MAX_INT = 2**53  # integer flags: exact as floats (9.0e15), far beyond any count a case can hold


def flag_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def _field_type(plugin: Plugin, f: dataclasses.Field) -> type:
    hints = typing.get_type_hints(plugin.Params)
    t = hints.get(f.name, str)
    origin = typing.get_origin(t)
    if origin is typing.Union or str(origin) == "types.UnionType":
        args = [a for a in typing.get_args(t) if a is not type(None)]
        t = args[0] if args else str
    return t if t in (int, float, bool, str) else str


def parse_value(plugin: Plugin, f: dataclasses.Field, text: str) -> Any:
    t = _field_type(plugin, f)
    allowed = choices_of(f)
    text = text.strip()
    try:
        if t is bool:
            low = text.lower()
            if low in ("1", "true", "yes", "on"):
                v: Any = True
            elif low in ("0", "false", "no", "off"):
                v = False
            else:
                raise ValueError
        elif t is int:
            # accept 7.5e9-style integers (parameter counts) when they are whole
            fv = float(text)
            if not fv.is_integer() or abs(fv) > MAX_INT:  # 1e200 would overflow every float formula after it
                raise ValueError
            v = int(fv)
        elif t is float:
            v = float(text)
            if not math.isfinite(v):  # nan/inf would switch limits off or poison every figure
                raise ValueError
        else:
            v = text
    except ValueError:
        hint = f"; allowed: {', '.join(map(str, allowed))}" if allowed else ""
        raise UsageError(
            f"{flag_name(f.name)}: {text!r} is not a valid {'finite number' if t is float else t.__name__}"
            + (f" (a whole number, |n| <= 2^53 = {MAX_INT:.2g})" if t is int else "")
            + hint
        ) from None
    if allowed is not None and v not in allowed:
        raise UsageError(
            f"{flag_name(f.name)}: {text!r} is not allowed; allowed values: " + ", ".join(map(str, allowed))
        )
    return v


def parse_flags(plugin: Plugin, args: list[str]) -> dict[str, list[Any]]:
    """['--stage', '3', '--seq=512,1024'] -> {'stage': [3], 'seq': [512, 1024]}.

    Comma-separated values expand the grid. Booleans accept `--flag` alone.
    """
    fields = {flag_name(f.name): f for f in params_fields(plugin)}
    out: dict[str, list[Any]] = {}
    i = 0
    while i < len(args):
        tok = args[i]
        if not tok.startswith("--"):
            raise UsageError(f"unexpected argument {tok!r}; plugin parameters are flags like --name VALUE")
        name, eq, val = tok.partition("=")
        f = fields.get(name)
        if f is None:
            close = difflib.get_close_matches(name, list(fields), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise UsageError(
                f"unknown flag {name} for plugin {plugin.name}{hint}; its flags: "
                + (", ".join(sorted(fields)) or "none")
            )
        if not eq:
            if _field_type(plugin, f) is bool and (i + 1 >= len(args) or args[i + 1].startswith("--")):
                val = "true"
            elif i + 1 >= len(args):
                raise UsageError(f"{name} needs a value")
            else:
                i += 1
                val = args[i]
        if f.name in out:
            raise UsageError(f"{name} given twice; give several values as one list: {name} A,B")
        parts = [p for p in val.split(",") if p.strip() != ""]
        if not parts:
            raise UsageError(f"{name} needs a value")
        out[f.name] = [parse_value(plugin, f, p) for p in parts]
        i += 1
    return out


def make_params(plugin: Plugin, values: dict[str, Any]) -> Any:
    known = {f.name for f in params_fields(plugin)}
    unknown = set(values) - known
    if unknown:  # a plugin's own grid names a field it does not have: a plugin bug
        raise ValueError(f"plugin {plugin.name}: grid names unknown parameters {sorted(unknown)}")
    return plugin.Params(**values)


def expand_grid(plugin: Plugin, profile: str, overrides: dict[str, list[Any]]) -> list[Any]:
    """The profile's cases with every overridden field replaced by each given value.

    `--seq 512,1024` on a grid of 4 backends gives 8 cases; `--stage 3` on a grid of
    stages 0-3 gives the stage-3 cases only. Duplicates are dropped, order kept.
    """
    base = plugin.grid(profile) or [{}]
    keys = list(overrides)
    combos = list(itertools.product(*(overrides[k] for k in keys))) or [()]
    seen: set[tuple] = set()
    cases: list[Any] = []
    for partial in base:
        for combo in combos:
            vals = dict(partial)
            vals.update(zip(keys, combo))
            p = make_params(plugin, vals)
            key = tuple(sorted(dataclasses.asdict(p).items(), key=lambda kv: kv[0]))
            key = tuple((k, repr(v)) for k, v in key)
            if key not in seen:
                seen.add(key)
                cases.append(p)
    return cases


def describe_params(plugin: Plugin) -> list[dict[str, str]]:
    rows = []
    for f in params_fields(plugin):
        c = choices_of(f)
        rows.append(
            {
                "flag": flag_name(f.name),
                "type": _field_type(plugin, f).__name__,
                "default": repr(f.default) if f.default is not dataclasses.MISSING else "",
                "allowed": ", ".join(map(str, c)) if c else "any",
                "help": help_of(f),
            }
        )
    return rows
