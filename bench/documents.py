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

The claims are judged by the same engine as the built-in ones (bench.claims.evaluate): each becomes
a bench.contract.Claim, and each matching row carries its Evidence (the measured value, the
expected value computed for that row), so verdicts, what they rest on, "not measured here" (with
the `bench run` command that would measure it) and the device columns are the engine's. Every
matching row (ranks, repeats, devices) is judged on its own; case rows are used where any match,
else the plugin's summary rows. Any error in a file exits 2 naming the file and the claim.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import expr
from bench.checks import check_value, fmt
from bench.contract import Check, Claim, Evidence, Figure, Judged, Plugin, Row
from bench.errors import UsageError

if TYPE_CHECKING:  # pragma: no cover
    from bench.claims import ClaimResult

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["DocClaim", "DocError", "Document", "attach", "judge", "load", "render"]

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
        if choices is not None and not any(_same(v, c) for c in choices):
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


# ---------------------------------------------------------------------------------------------
# Rows -> the engine's claims and evidence


@dataclass
class Attached:
    claims: list[tuple[str, Claim]]  # (owner, claim) for the engine's registry
    rows: list[Row]  # the given rows, those that match a claim carrying its evidence (+ fit rows)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    return str(a) == str(b)


def _matches(r: Row, sel: dict[str, Any], defaults: dict[str, Any]) -> bool:
    for k, v in sel.items():
        rv = r.get(k)
        if rv is None:
            rv = defaults.get(k)
        if rv is None or not _same(rv, v):
            return False
    return True


def _candidates(rows: Sequence[Row], c: DocClaim, sel: dict[str, Any], defaults: dict[str, Any]) -> list[Row]:
    """Rows of the plugin that match and carry the metric: the case rows if any, else summary rows."""
    got = [
        r
        for r in rows
        if r.plugin == c.plugin and r.ok and r.value(c.metric) is not None and _matches(r, sel, defaults)
    ]
    cases = [r for r in got if r.is_case]
    return cases or got


def _env(r: Row, values: dict[str, float]) -> dict[str, float]:
    env: dict[str, float] = {}
    for src in (r.params, r.labels):
        for k, v in src.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                env[k] = float(v)
    for k in r.metrics:
        n = r.number(k)
        if n is not None:
            env[k] = n
    return {**env, **values}


def _flags(sel: dict[str, Any]) -> str:
    return "".join(f" --{k.replace('_', '-')} {str(v).lower() if isinstance(v, bool) else v}" for k, v in sel.items())


def _needs(c: DocClaim, defaults: dict[str, Any]) -> str:
    sel = {k: v for k, v in c.select.items() if k not in ROW_LABELS}
    if c.kind == "ratio":
        for k in sorted(set(c.ratio_of) | set(c.ratio_to)):
            vals = [d[k] for d in (c.ratio_of, c.ratio_to) if k in d]
            sel[k] = ",".join(dict.fromkeys(str(v).lower() if isinstance(v, bool) else str(v) for v in vals))
    if c.kind == "fit":
        d = defaults.get(c.fit)
        if isinstance(d, (int, float)) and not isinstance(d, bool) and d > 0:
            sel[c.fit] = ",".join(f"{x:g}" for x in (d, 2 * d, 4 * d))
    what = f"rows of {c.plugin} with {', '.join(f'{k}={v}' for k, v in c.select.items()) or 'any parameters'}"
    return f"run `bench run --plugin {c.plugin}{_flags(sel)}` ({what})"


def _claim_of(doc: Document, c: DocClaim, check: Check, unit: str, needs: str) -> Claim:
    exp = c.expected_text or "-"
    if c.kind == "ratio":
        exp = f"{c.metric} {_sel_text(c.ratio_of)} / {_sel_text(c.ratio_to)} = {exp}"
    elif c.kind == "fit":
        exp = f"{c.metric} ~ {c.fit}^k, k = {exp}"
    elif unit and c.expected_text:
        exp += f" {unit}"
    return Claim(
        id=c.id,
        claim=f'"{c.quote}" ({c.where})',
        source=f"{doc.title} ({doc.source}), {c.where}",
        expected=exp,
        tolerance=c.tolerance,
        check=check,
        needs=needs,
        metric=c.metric,
        unit=unit,
        plugins=(c.plugin,) if c.plugin else (),
    )


def _sel_text(sel: dict[str, Any]) -> str:
    return "[" + ", ".join(f"{k}={v}" for k, v in sel.items()) + "]"


def _check(c: DocClaim, tol_scale: float = 1.0) -> Check:
    kind, a, b = c.tol
    if kind == "rel":
        return Check("rel", tol=a)
    if kind == "abs":
        return Check("abs", tol=a * tol_scale)
    return Check("range", lo=a, hi=b)


def _evidence(
    c: DocClaim, value: Any, unit: str, source: str, expected: float | None, why: str, detail: str
) -> Evidence:
    """One row's evidence: a range tolerance bounds value / expected, so that ratio is the value judged."""
    if why:
        return Evidence(value, unit, source, f"{detail}; expected {c.expected_text}: {why}".lstrip("; "))
    # check_value cites the numbers compared; the detail says which row and which formula gave the expected one
    shown = f"expected {c.expected_text}" if expected is not None and c.expected_text else ""
    if c.tol[0] == "range" and expected is not None:
        if not isinstance(value, (int, float)) or isinstance(value, bool) or expected == 0:
            return Evidence(value, unit, source, f"{detail}; {shown}: no ratio to judge".lstrip("; "))
        text = f"{detail}; {fmt(value)}{' ' + unit if unit else ''} / {shown} = {fmt(expected)}".lstrip("; ")
        return Evidence(value / expected, "x expected", source, text)
    return Evidence(value, unit, source, "; ".join(x for x in (detail, shown) if x), expected)


def _expected(c: DocClaim, env: dict[str, float], scale: float) -> tuple[float | None, str]:
    if c.expected is None:
        return None, ""
    try:
        return c.expected(env) * scale, ""
    except expr.FormulaError as e:
        return None, str(e)


def _runs_on(rows: Sequence[Row], device: str) -> int:
    return len({r.run_id for r in rows if r.device == device})


def _row_tag(r: Row, runs: int = 1) -> str:
    """Which row: its rank, and its run where the matching rows come from several (repeats), so that
    the engine keeps each row's evidence apart (it keeps identical evidence once)."""
    bits = [f"run {r.run_id}"] if runs > 1 else []
    bits += [f"rank {r.labels['rank']}"] if "rank" in r.labels else []
    return ", ".join(bits)


def attach(docs: Sequence[Document], rows: Sequence[Row]) -> Attached:
    """Each document claim as the engine's Claim, and its evidence on the rows that match it.
    A unit that does not convert to the metric's is a DocError (exit 2)."""
    from bench.discovery import discover

    if not docs:
        return Attached([], list(rows))
    plugins = {n: f.plugin for n, f in discover().items() if f.plugin is not None}
    out_rows = list(rows)
    index = {id(r): i for i, r in enumerate(out_rows)}
    extra: list[Row] = []
    claims: list[tuple[str, Claim]] = []

    def add(r: Row, cid: str, ev: Evidence) -> None:
        i = index[id(r)]
        cur = out_rows[i]
        out_rows[i] = dataclasses.replace(cur, evidence={**cur.evidence, cid: ev})

    for doc in docs:
        for c in doc.claims:
            if c.kind == "published":
                scale = convert(1.0, c.tol_unit, c.unit) or 1.0
                check = Check("formula", formula=partial(_published, c, _check(c, scale)))
                claims.append(("", _claim_of(doc, c, check, c.unit, "nothing: arithmetic over printed figures")))
                continue
            plugin = plugins[c.plugin]
            defaults = {f.name: f.default for f in dataclasses.fields(plugin.Params)}
            needs = _needs(c, defaults)
            try:
                if c.kind == "row":
                    unit, check = _attach_rows(c, rows, defaults, add)
                elif c.kind == "ratio":
                    unit, check = "x", _check(c)
                    _attach_ratio(c, rows, defaults, add)
                else:
                    unit, check = "exponent", _check(c)
                    extra += _fit_rows(c, rows, defaults)
            except ValueError as e:
                raise DocError(f"{doc.path}: claim {c.id}: {e}") from None
            claims.append((c.plugin, _claim_of(doc, c, check, unit, needs)))
    return Attached(claims, out_rows + extra)


def _attach_rows(c: DocClaim, rows: Sequence[Row], defaults: dict[str, Any], add: Any) -> tuple[str, Check]:
    got = _candidates(rows, c, c.select, defaults)
    m_unit = ""
    for r in got:
        m = r.metric(c.metric)
        assert m is not None
        if unit_word(m.unit):
            m_unit = unit_word(m.unit)
            break
    scale = 1.0
    if c.unit and m_unit:
        s = convert(1.0, c.unit, m_unit)
        if s is None:
            raise ValueError(f"unit = {c.unit!r} does not convert to {c.metric}'s unit {m_unit!r}")
        scale = s
    tol_scale = 1.0
    if c.tol_unit:
        if m_unit:
            s = convert(1.0, c.tol_unit, m_unit)
            if s is None:
                raise ValueError(f"tolerance {c.tolerance!r} does not convert to {c.metric}'s unit {m_unit!r}")
            tol_scale = s
        elif c.unit:
            tol_scale = convert(1.0, c.tol_unit, c.unit) or 1.0
    for r in got:
        m = r.metric(c.metric)
        assert m is not None
        exp, why = _expected(c, _env(r, c.values), scale)
        tag = _row_tag(r, _runs_on(got, r.device))
        add(r, c.id, _evidence(c, m.value, m_unit or c.unit, m.source, exp, why, tag))
    return (m_unit or c.unit), _check(c, tol_scale)


def _pair_key(r: Row, varied: set[str]) -> str:
    both = {**r.params, **r.labels}
    return json.dumps(
        [r.device, r.kind, {k: v for k, v in both.items() if k not in varied}], sort_keys=True, default=str
    )


def _attach_ratio(c: DocClaim, rows: Sequence[Row], defaults: dict[str, Any], add: Any) -> None:
    varied = set(c.ratio_of) | set(c.ratio_to)
    tos: dict[str, Row] = {}
    for r in _candidates(rows, c, {**c.select, **c.ratio_to}, defaults):
        tos.setdefault(_pair_key(r, varied), r)
    ofs = _candidates(rows, c, {**c.select, **c.ratio_of}, defaults)
    for r in ofs:
        other = tos.get(_pair_key(r, varied))
        if other is None:
            continue
        m = r.metric(c.metric)
        assert m is not None
        a, b = r.number(c.metric), other.number(c.metric)
        tag = "; ".join(
            x
            for x in (
                _row_tag(r, _runs_on(ofs, r.device)),
                f"{c.metric} {fmt(a)} / {fmt(b)} {unit_word(m.unit)}".rstrip(),
            )
            if x
        )
        value = a / b if a is not None and b else None
        exp, why = _expected(c, _env(r, c.values), 1.0)
        add(r, c.id, _evidence(c, value, "x", m.source, exp, why, tag))


def _fit_rows(c: DocClaim, rows: Sequence[Row], defaults: dict[str, Any]) -> list[Row]:
    """One summary row per group of rows that differ only in the fitted parameter (per device)."""
    from bench.fit import fit_power_law

    groups: dict[str, list[Row]] = {}
    for r in _candidates(rows, c, c.select, defaults):
        x, y = r.get(c.fit), r.number(c.metric)
        if isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0 and y is not None and y > 0:
            groups.setdefault(_pair_key(r, {c.fit}), []).append(r)
    out = []
    for grp in groups.values():
        xs = [float(r.get(c.fit)) for r in grp]
        if len(set(xs)) < 2:
            continue
        ys = [float(r.number(c.metric) or 0.0) for r in grp]
        f = fit_power_law(xs, ys)
        first = grp[0]
        m = first.metric(c.metric)
        assert m is not None
        unit, src = unit_word(m.unit), m.source
        se = f"±{f.stderr:.2g}" if f.stderr == f.stderr else "(2 points: no error)"
        pts = ", ".join(f"{fmt(x)}: {fmt(y)}" for x, y in sorted(zip(xs, ys)))
        detail = f"{c.metric} ({unit}) at {c.fit} {pts}: k={f.exponent:.3f} {se}, R²={f.r2:.3f}"
        exp, why = _expected(c, dict(c.values), 1.0)
        ev = _evidence(c, f.exponent, "", src, exp, why, detail)
        params = {k: v for k, v in first.params.items() if k != c.fit}
        out.append(
            Row(
                run_id=first.run_id,
                plugin=first.plugin,
                params=params,
                labels=dict(first.labels),
                kind="summary",
                evidence={c.id: ev},
                fingerprint=first.fingerprint,
                file=first.file,
            )
        )
    return out


def _published(c: DocClaim, check: Check) -> Judged:
    """The document's arithmetic: expected over its values vs the printed figure (bench.checks' comparison)."""
    assert c.expected is not None and c.printed is not None
    exp, why = _expected(c, dict(c.values), 1.0)
    u = f" {c.unit}" if c.unit else ""
    if exp is None:
        return Judged("reported", f"expected {c.expected_text}: {why}")
    ev = _evidence(c, c.printed, c.unit, "formula", exp, "", "printed")
    verdict, reason = check_value(check, ev)
    fig = (Figure(exp, c.unit, "published", f"{c.expected_text} = {fmt(exp)}{u}"),)
    if verdict == "holds":
        return Judged("holds", reason, fig)
    return Judged("fails" if verdict == "fails" else "reported", reason, fig)


# ---------------------------------------------------------------------------------------------
# Judging and showing, under each document's title


def judge(
    docs: Sequence[Document], rows: Sequence[Row], detail_max: int | None = None
) -> tuple[list[str], list[ClaimResult], list[tuple[Document, list[ClaimResult]]]]:
    """(devices, the built-in claims' results, [(document, its claims' results)]): one evaluation by
    bench.claims.evaluate over the built-in claims and every document's."""
    from bench import claims as engine
    from bench.discovery import all_claims

    att = attach(docs, rows)
    devices, results = engine.evaluate(att.rows, list(all_claims()) + att.claims, detail_max)
    by_id = {r.id: r for r in results}
    mine = {c.id for _, c in att.claims}
    groups = [(d, [by_id[c.id] for c in d.claims]) for d in docs]
    return devices, [r for r in results if r.id not in mine], groups


def render(devices: Sequence[str], groups: Sequence[tuple[Document, Sequence[ClaimResult]]], fmt_name: str) -> str:
    """Each document's claims under its title, as the engine renders claims (csv: one table with a
    document column first)."""
    from bench import claims as engine

    if fmt_name == "csv":
        import csv
        import io

        buf = io.StringIO()
        w = csv.writer(buf)
        for i, (doc, res) in enumerate(groups):
            header, body = engine.table(devices, res, "csv")
            if i == 0:
                w.writerow(["document", *header])
            w.writerows([doc.title, *line] for line in body)
        return buf.getvalue()
    parts = []
    for doc, res in groups:
        if fmt_name == "markdown":
            from bench.tables import md_escape

            head = f"## {md_escape(doc.title)}\n\n{md_escape(doc.source)} (claims: `{doc.path}`)"
            tail = "```\n" + engine.summary(devices, res).replace("```", "'''") + "\n```"
        else:
            title = f"{doc.title}: {doc.source} (claims: {doc.path})"
            head = f"{title}\n{'=' * min(len(title), 120)}"
            tail = engine.summary(devices, res)
        parts.append(f"{head}\n\n{engine.render(devices, res, fmt_name)}\n\n{tail}")
    return "\n\n".join(parts)
