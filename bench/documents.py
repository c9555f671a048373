"""Any document's claims as data: `bench claims --claims DOC.toml` (and `bench report --claims`).

One TOML file per document (a paper, a datasheet, a blog post, a team's capacity plan):

  [document]
  title = "..."                        # the heading its claims are shown under
  source = "citation or URL"

  [[claim]]
  id = "doc.ddp_16"                    # dotted lower-case words, unique (also against the built-in claims)
  quote = "the document's words, exactly"
  where = "p. 3"                       # page, section, figure or line
  plugin = "fsdp"                      # whose rows measure it (`bench list`)
  metric = "model_state_bytes"         # a metric the plugin declares, or that its given rows carry
  select = { stage = 0, world_size = 2 }   # parameters of the plugin (and `rank`) the rows must have
  expected = "16 * n_params"           # a number, or a formula over the row's parameters and metrics
  unit = "bytes"                       # the unit of `expected` (default: the metric's); converted to it
  tolerance = "1%"                     # "1%" | an absolute value with its unit ("0.05 GB") | "0.9..1.1"
  values = { K = 12 }                  # constants the formula may name

Other kinds of claim, by the key they carry:
  ratio = { of = { stage = 3 }, to = { stage = 0 } }   the metric of one selection over another's, row by row
                                       (rows paired on everything but the keys of/to set; expected: the ratio)
  fit = "seq"                          the fitted exponent k of metric ~ param^k (bench.fit, log-log least
                                       squares) over rows differing only in that parameter
  printed = 120  (or "120 GB")         published arithmetic: `expected` over `values` vs the printed figure;
                                       no plugin, no run needed (rests on "published")

A range tolerance bounds measured / expected (the value itself when there is no `expected`).
Formulas are bench.expr's small grammar (no eval). Units: bytes (B, KB, MB, GB, TB, KiB, MiB, GiB,
TiB) and time (s, ms, us, ns) convert within their family; any other unit must be written as the
metric gives it.

This module reads and checks the files: any error exits 2 naming the file and the claim.
bench/docjudge.py judges the claims with the same engine as the built-in ones (bench.claims).
"""

from __future__ import annotations

import dataclasses
import math
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import expr
from bench.contract import Plugin, Row
from bench.errors import UsageError

if TYPE_CHECKING:  # pragma: no cover
    pass

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["DocClaim", "DocError", "Document", "convert", "load", "same_value", "unit_word"]

CLAIM_KEYS = (
    "id",
    "quote",
    "where",
    "plugin",
    "metric",
    "select",
    "expected",
    "unit",
    "tolerance",
    "values",
    "ratio",
    "fit",
    "printed",
)
ROW_LABELS = ("rank",)  # labels a selection may name besides the plugin's parameters
# unit -> (family, size in the family's base unit)
UNITS: dict[str, tuple[str, float]] = {
    **{u: ("bytes", 1.0) for u in ("B", "byte", "bytes")},
    **{u: ("bytes", 10.0 ** (3 * i)) for i, u in enumerate(("KB", "MB", "GB", "TB"), 1)},
    **{u: ("bytes", 2.0 ** (10 * i)) for i, u in enumerate(("KiB", "MiB", "GiB", "TiB"), 1)},
    **{u: ("time", s) for u, s in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6), ("µs", 1e-6), ("ns", 1e-9))},
}


class DocError(UsageError):
    """A claims file that cannot be used: exit 2, naming the file and the claim."""


@dataclass(frozen=True)
class DocClaim:
    id: str
    quote: str
    where: str
    kind: str  # row | ratio | fit | published
    tolerance: str  # as written
    tol: tuple[str, float, float]  # ("rel", tol, 0) | ("abs", tol, 0) | ("range", lo, hi)
    tol_unit: str  # the unit of an absolute tolerance ("" unitless)
    expected_text: str = ""
    expected: expr.Formula | None = None
    unit: str = ""  # the unit of expected / printed ("": the metric's)
    plugin: str = ""
    metric: str = ""
    select: dict[str, Any] = field(default_factory=dict)
    values: dict[str, float] = field(default_factory=dict)
    ratio_of: dict[str, Any] = field(default_factory=dict)
    ratio_to: dict[str, Any] = field(default_factory=dict)
    fit: str = ""
    printed: float | None = None


@dataclass(frozen=True)
class Document:
    path: Path
    title: str
    source: str
    claims: tuple[DocClaim, ...]


# ---------------------------------------------------------------------------------------------
# Reading and checking a file


def load(paths: Sequence[str | Path], rows: Sequence[Row] = ()) -> list[Document]:
    """Every file read and checked against the installed plugins (and the metrics the given rows
    carry); the first problem is a DocError naming the file and the claim."""
    from bench.discovery import all_claims, discover

    if not paths:
        return []
    found = discover()
    plugins = {n: f.plugin for n, f in found.items() if f.plugin is not None}
    ids: dict[str, str] = {c.id: f"the built-in claims ({owner})" for owner, c in all_claims(found)}
    row_metrics: dict[str, set[str]] = {}
    for r in rows:
        row_metrics.setdefault(r.plugin, set()).update(r.metrics)
    docs = []
    for p in map(Path, paths):
        if p.exists() and not p.is_file():  # a FIFO or a device would block or never end
            raise DocError(f"{p}: not a regular file")
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except OSError as e:
            raise DocError(f"{p}: cannot read the claims file: {e.strerror or e}") from None
        except UnicodeDecodeError:
            raise DocError(f"{p}: not a text file (UTF-8)") from None
        except tomllib.TOMLDecodeError as e:
            raise DocError(f"{p}: not valid TOML: {e}") from None
        docs.append(_document(p, data, plugins, row_metrics, ids))
    return docs


def _document(
    p: Path, data: dict[str, Any], plugins: dict[str, Plugin], row_metrics: dict[str, set[str]], ids: dict[str, str]
) -> Document:
    extra = sorted(set(data) - {"document", "claim"})
    if extra:
        raise DocError(f"{p}: unknown top-level key(s) {', '.join(extra)} (a file has [document] and [[claim]] tables)")
    doc = data.get("document")
    if not isinstance(doc, dict):
        raise DocError(f"{p}: no [document] table with its title and source")
    for k in ("title", "source"):
        if not isinstance(doc.get(k), str) or not doc[k].strip():
            raise DocError(f'{p}: [document] needs {k} = "..."')
    raw = data.get("claim")
    if not isinstance(raw, list) or not raw:
        raise DocError(f"{p}: no [[claim]] tables")
    claims = []
    for i, t in enumerate(raw, 1):
        name = t.get("id") if isinstance(t, dict) and isinstance(t.get("id"), str) else f"#{i}"
        try:
            if not isinstance(t, dict):
                raise ValueError("a claim must be a table ([[claim]])")
            c = _claim(t, plugins, row_metrics)
        except (ValueError, expr.FormulaError) as e:
            raise DocError(f"{p}: claim {name}: {e}") from None
        if c.id in ids:
            raise DocError(f"{p}: claim {c.id}: the id is already taken by {ids[c.id]}")
        ids[c.id] = str(p)
        claims.append(c)
    return Document(p, doc["title"].strip(), doc["source"].strip(), tuple(claims))


def _text(t: dict[str, Any], k: str) -> str:
    v = t.get(k)
    if not isinstance(v, str) or not v.strip():
        raise ValueError(f'needs {k} = "..." (text)')
    return v.strip()


def _number(v: Any, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ValueError(f"{what} must be a finite number, not {v!r}")
    return float(v)


def _quantity(v: Any, what: str) -> tuple[float, str]:
    """120 | "120 GB" | "0.05" -> (number, unit)."""
    if isinstance(v, str):
        m = re.fullmatch(r"\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(\S*)\s*", v)
        if not m:
            raise ValueError(f'{what} {v!r} is not a number with an optional unit (e.g. "0.05 GB")')
        return _number(float(m.group(1)), what), m.group(2)
    return _number(v, what), ""


def _tolerance(v: Any) -> tuple[tuple[str, float, float], str]:
    """The tolerance as written -> ((type, a, b), unit of an absolute one)."""
    if isinstance(v, str) and v.strip().endswith("%"):
        x = _quantity(v.strip()[:-1], "tolerance")[0]
        if x < 0:
            raise ValueError(f"tolerance {v!r} is negative")
        return ("rel", x / 100, 0.0), ""
    if isinstance(v, str) and ".." in v:
        lo_s, _, hi_s = v.partition("..")
        try:
            lo, hi = float(lo_s), float(hi_s)
        except ValueError:
            raise ValueError(f'tolerance {v!r}: a range is two numbers, e.g. "0.9..1.1"') from None
        if not lo <= hi:
            raise ValueError(f"tolerance {v!r}: the range's low end is above its high end")
        return ("range", lo, hi), ""
    if v is None:
        raise ValueError('needs a tolerance: "1%", an absolute value with its unit ("0.05 GB"), or a range "0.9..1.1"')
    x, unit = _quantity(v, "tolerance")
    if x < 0:
        raise ValueError(f"tolerance {v!r} is negative")
    if unit and unit not in UNITS:
        raise ValueError(f"tolerance {v!r}: unknown unit {unit!r} (known: {', '.join(UNITS)})")
    return ("abs", x, 0.0), unit


def _fields(plugin: Plugin) -> dict[str, dataclasses.Field[Any]]:
    return {f.name: f for f in dataclasses.fields(plugin.Params)}


def _selection(sel: Any, what: str, plugin_name: str, fields: dict[str, dataclasses.Field[Any]]) -> dict[str, Any]:
    if sel is None:
        return {}
    if not isinstance(sel, dict):
        raise ValueError(f"{what} must be a table of parameter = value, e.g. {{ stage = 0 }}")
    for k, v in sel.items():
        if k not in fields and k not in ROW_LABELS:
            raise ValueError(
                f"{what} names {k!r}, which is no parameter of {plugin_name} "
                f"(its parameters: {', '.join(fields)}; `bench list --plugin {plugin_name}`)"
            )
        if not isinstance(v, (bool, int, float, str)):
            raise ValueError(f"{what}: {k} = {v!r} is not a number, text or boolean")
        choices = fields[k].metadata.get("choices") if k in fields else None
        if choices is not None and not any(same_value(v, c) for c in choices):
            raise ValueError(f"{what}: {k} = {v!r} is not one of {', '.join(map(str, choices))}")
    return dict(sel)


def _claim(t: dict[str, Any], plugins: dict[str, Plugin], row_metrics: dict[str, set[str]]) -> DocClaim:
    extra = sorted(set(t) - set(CLAIM_KEYS))
    if extra:
        raise ValueError(f"unknown key(s) {', '.join(extra)} (a claim has: {', '.join(CLAIM_KEYS)})")
    cid = _text(t, "id")
    if not re.fullmatch(r"[a-z0-9_]+(\.[a-z0-9_]+)+", cid):
        raise ValueError(f'id {cid!r} is not dotted lower-case words (e.g. "zero_paper.ddp_16")')
    kinds = [k for k in ("ratio", "fit", "printed") if k in t]
    if len(kinds) > 1:
        raise ValueError(f"a claim is one kind: {' and '.join(kinds)} given together")
    kind = {"ratio": "ratio", "fit": "fit", "printed": "published"}[kinds[0]] if kinds else "row"
    tol, tol_unit = _tolerance(t.get("tolerance"))
    values = t.get("values") or {}
    if not isinstance(values, dict):
        raise ValueError("values must be a table of name = number")
    values = {str(k): _number(v, f"values.{k}") for k, v in values.items()}
    unit = t.get("unit", "")
    if not isinstance(unit, str):
        raise ValueError(f"unit must be text, not {unit!r}")
    exp_raw = t.get("expected")
    formula: expr.Formula | None = None
    if exp_raw is None:
        if tol[0] != "range":
            raise ValueError("needs expected = a number or a formula (only a range tolerance stands alone)")
    elif isinstance(exp_raw, str):
        formula = expr.parse(exp_raw)
    else:
        formula = expr.parse(repr(_number(exp_raw, "expected")))
    base: dict[str, Any] = {
        "id": cid,
        "quote": _text(t, "quote"),
        "where": _text(t, "where"),
        "kind": kind,
        "tolerance": str(t.get("tolerance")),
        "tol": tol,
        "tol_unit": tol_unit,
        "expected_text": "" if exp_raw is None else str(exp_raw),
        "expected": formula,
        "values": values,
    }
    if kind == "published":
        given = [k for k in ("plugin", "metric", "select") if k in t]
        if given:
            raise ValueError(f"a published claim (printed = ...) is arithmetic, with no {', '.join(given)}")
        if formula is None:
            raise ValueError("a published claim needs expected = the formula the printed figure is checked against")
        printed, p_unit = _quantity(t["printed"], "printed")
        if p_unit and unit and p_unit != unit:
            raise ValueError(f"printed is in {p_unit} but unit = {unit!r}")
        unit = p_unit or unit
        _names_known(formula, set(values), "values (a published claim reads no row)")
        _units_agree(tol_unit, unit, "the tolerance", "the printed figure")
        return DocClaim(**base, unit=unit, printed=printed)
    plugin_name = _text(t, "plugin")
    plugin = plugins.get(plugin_name)
    if plugin is None:
        import difflib

        close = difflib.get_close_matches(plugin_name, list(plugins), n=3, cutoff=0.4)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown plugin {plugin_name!r}{hint} (installed: {', '.join(plugins) or 'none'})")
    metric = _text(t, "metric")
    known = (
        set(plugin.metrics) | set(plugin.table_metrics) | set(plugin.normalised) | row_metrics.get(plugin_name, set())
    )
    if metric not in known:
        import difflib

        close = difflib.get_close_matches(metric, sorted(known), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(
            f"unknown metric {metric!r} of plugin {plugin_name}{hint} (a metric it declares, or that its rows "
            "in the given results carry)"
        )
    fields = _fields(plugin)
    clash = sorted(set(values) & (set(fields) | known))
    if clash:
        raise ValueError(f"values {', '.join(clash)} would hide the row's own {', '.join(clash)}: rename them")
    select = _selection(t.get("select"), "select", plugin_name, fields)
    extra_fields: dict[str, Any] = {}
    if kind == "ratio":
        r = t["ratio"]
        if not isinstance(r, dict) or set(r) != {"of", "to"}:
            raise ValueError("ratio = { of = { ... }, to = { ... } }: the two selections compared")
        of = _selection(r["of"], "ratio.of", plugin_name, fields)
        to = _selection(r["to"], "ratio.to", plugin_name, fields)
        if not of or not to or of == to:
            raise ValueError("ratio.of and ratio.to must each select something, and differ")
        extra_fields = {"ratio_of": of, "ratio_to": to}
        if tol_unit:
            raise ValueError(f"a ratio has no unit: tolerance {t['tolerance']!r} has {tol_unit!r}")
    if kind == "fit":
        x = t["fit"]
        if not isinstance(x, str) or x not in fields:
            raise ValueError(
                f"fit = {x!r} must name a parameter of {plugin_name} (its parameters: {', '.join(fields)})"
            )
        if x in select:
            raise ValueError(f"fit = {x!r} is also fixed by select: the fit needs several values of it")
        extra_fields = {"fit": x}
        if tol_unit:
            raise ValueError(f"an exponent has no unit: tolerance {t['tolerance']!r} has {tol_unit!r}")
    if formula is not None:
        scope = set(values) if kind == "fit" else set(values) | set(fields) | known | set(ROW_LABELS)
        _names_known(
            formula, scope, "values" if kind == "fit" else f"parameters and metrics of {plugin_name}, or values"
        )
    return DocClaim(**base, unit=unit, plugin=plugin_name, metric=metric, select=select, **extra_fields)


def _names_known(f: expr.Formula, scope: set[str], what: str) -> None:
    unknown = sorted(f.names - scope)
    if unknown:
        raise expr.FormulaError(f"expected {f.text!r} names {', '.join(unknown)}, which are not {what}")


def unit_word(unit: str) -> str:
    """A metric's unit as written ("MiB (profiler allocator events)") -> its first word ("MiB")."""
    return unit.split()[0] if unit.strip() else ""


def convert(x: float, frm: str, to: str) -> float | None:
    """x in unit frm expressed in unit to; None when they do not convert ("" is unitless: no conversion)."""
    if frm == to or not frm or not to:
        return x
    a, b = UNITS.get(frm), UNITS.get(to)
    if a is None or b is None or a[0] != b[0]:
        return None
    return x * a[1] / b[1]


def _units_agree(frm: str, to: str, what: str, against: str) -> None:
    if convert(1.0, frm, to) is None:
        raise ValueError(f"{what} is in {frm} but {against} is in {to}: they do not convert")


def same_value(a: Any, b: Any) -> bool:
    """A selection's value equals a row's (or a choice): booleans only equal booleans, numbers by value."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    return str(a) == str(b)
