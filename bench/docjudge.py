"""Judging a document's claims (bench/documents.py reads and checks the files) with the claims engine.

Each document claim becomes a bench.contract.Claim; each result row that matches it carries its
Evidence (the value of the metric, and the expected value the claim's formula gives for that row),
so that bench.claims.evaluate judges them exactly as the built-in claims: verdicts, what they rest
on, "not measured here" with the `bench run` command that would measure them, one column per
device, several pieces of evidence counted ("1 of 2 hold"). Case rows are used where any match,
else the plugin's summary rows. Ratios attach to the numerator's row; fitted exponents to a summary
row built here per group (rows that differ only in the fitted parameter, per device). Published
arithmetic is a formula check (rests on "published").
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from bench import expr
from bench.checks import check_value, fmt
from bench.contract import Check, Claim, Evidence, Figure, Judged, Row
from bench.documents import ROW_LABELS, DocClaim, DocError, Document, convert, same_value, unit_word

if TYPE_CHECKING:  # pragma: no cover
    from bench.claims import ClaimResult

__all__ = ["Attached", "attach", "judge", "render"]

# ---------------------------------------------------------------------------------------------
# Rows -> the engine's claims and evidence


@dataclass
class Attached:
    claims: list[tuple[str, Claim]]  # (owner, claim) for the engine's registry
    rows: list[Row]  # the given rows, those that match a claim carrying its evidence (+ fit rows)


def _matches(r: Row, sel: dict[str, Any], defaults: dict[str, Any]) -> bool:
    for k, v in sel.items():
        rv = r.get(k)
        if rv is None:
            rv = defaults.get(k)
        if rv is None or not same_value(rv, v):
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


def render(
    devices: Sequence[str],
    groups: Sequence[tuple[Document, Sequence[ClaimResult]]],
    fmt_name: str,
    detail: bool = False,
) -> str:
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
        else:  # the terminal: one line per claim within the width (bench.claims.render_terminal)
            from bench.tables import term_width, wrap

            width = term_width()
            title = wrap(f"{doc.title}: {doc.source} (claims: {doc.path})", width)
            head = f"{title}\n{'=' * min(max(map(len, title.splitlines())), width)}"
            tail = "\n".join(wrap(line, width) for line in engine.summary(devices, res).splitlines())
            parts.append(f"{head}\n\n{engine.render_terminal(devices, res, detail, width)}\n\n{tail}")
            continue
        parts.append(f"{head}\n\n{engine.render(devices, res, fmt_name)}\n\n{tail}")
    return "\n\n".join(parts)
