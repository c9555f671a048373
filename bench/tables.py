"""Result rows -> tables (terminal, markdown, csv) through pandas + tabulate.

Every metric column header carries its unit and source: `time_ms [ms, measured]` (terminal
tables put the bracket on the lines under the name). Where rows of one column disagree on unit
or source, each cell carries its own instead.
"""

from __future__ import annotations

import io
import json
import math
import re
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from bench.rows import Row

FORMATS = ("terminal", "markdown", "csv")
_TAB = {"terminal": "simple", "markdown": "github"}
_SRC = {"measured": "meas", "simulated": "sim", "formula": "formula"}


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def plain(text: str) -> str:
    """Text from a row made safe for a terminal: control characters (escape sequences) removed."""
    return _CONTROL.sub("", text)


def md_escape(text: Any) -> str:
    """A cell for a markdown table: pipes escaped, newlines flattened, and HTML neutralised
    (markdown renders inline HTML: a `<script>` in a parameter value must stay text)."""
    s = plain(str(text)).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return s.replace("|", "\\|").replace("\n", " ")


def fmt_value(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if v != v:
            return "nan"
        if v == 0:
            return "0"
        a = abs(v)
        return f"{v:.4g}" if 1e-3 <= a < 1e6 else f"{v:.3e}"
    if isinstance(v, (list, dict)):
        return plain(json.dumps(v))
    return plain(str(v))


def build_table(
    rows: Sequence[Row], metrics: Sequence[str] | None = None, multi_device: bool = False, stacked: bool = False
) -> tuple[list[str], list[list[str]]]:
    """Header and body for one group of rows (one plugin, one kind). stacked: the unit and
    source go under the metric's name, wrapped (terminal tables stay narrow)."""
    pkeys: list[str] = []
    for r in rows:
        for k in r.params:
            if k not in pkeys:
                pkeys.append(k)
    # show parameters that vary; constant ones go to the caption
    varying = [k for k in pkeys if len({json.dumps(r.params.get(k), default=str) for r in rows}) > 1]
    lkeys: list[str] = []
    for r in rows:
        for k in r.labels:
            if k not in lkeys:
                lkeys.append(k)
    mkeys: list[str] = []
    for r in rows:
        for k in r.metrics:
            if k not in mkeys and (metrics is None or k in metrics):
                mkeys.append(k)
    if metrics:
        mkeys = [m for m in metrics if m in mkeys]
    units = {k: {json.dumps([r.metrics[k].unit, r.metrics[k].source]) for r in rows if k in r.metrics} for k in mkeys}
    header = (["device"] if multi_device else []) + varying + lkeys + ["status"]
    for k in mkeys:
        if len(units[k]) == 1:
            unit, src = json.loads(next(iter(units[k])))
            tag = f"[{unit + ', ' if unit else ''}{src}]"
            header.append(f"{k}\n" + textwrap.fill(tag, max(len(k), 24)) if stacked else f"{k} {tag}")
        else:
            header.append(k)
    any_msg = any(r.message for r in rows)
    if any_msg:
        header.append("message")
    body = []
    for r in rows:
        line = [r.device] if multi_device else []
        line += [fmt_value(r.params.get(k)) for k in varying]
        line += [fmt_value(r.labels.get(k)) for k in lkeys]
        line.append(r.status)
        for k in mkeys:
            m = r.metrics.get(k)
            if m is None:
                line.append("")
            elif len(units[k]) == 1:
                line.append(fmt_value(m.value))
            else:
                line.append(f"{fmt_value(m.value)} {plain(m.unit)} ({_SRC.get(m.source, '?')})".strip())
        if any_msg:
            line.append(plain(r.message)[:200])
        body.append(line)
    return header, body


def caption(rows: Sequence[Row]) -> str:
    if not rows:
        return ""
    r0 = rows[0]
    const = {k: v for k, v in r0.params.items() if all(r.params.get(k) == v for r in rows)}
    bits = ", ".join(f"{k}={fmt_value(v)}" for k, v in const.items())
    kind = "summary" if r0.kind == "summary" else "cases"
    return plain(f"{r0.plugin} ({kind}) on {r0.device}") + (f" | fixed: {bits}" if bits else "")


def render(header: list[str], body: list[list[str]], fmt: str = "terminal") -> str:
    if fmt == "csv":
        import pandas as pd

        buf = io.StringIO()
        pd.DataFrame(body, columns=header).to_csv(buf, index=False)
        return buf.getvalue()
    from tabulate import tabulate

    if fmt == "markdown":
        return tabulate(
            [[md_escape(c) for c in line] for line in body],
            headers=[md_escape(h) for h in header],
            tablefmt="github",
            disable_numparse=True,
        )
    return tabulate(body, headers=header, tablefmt=_TAB[fmt], disable_numparse=True)


def titled(caption_text: str, table: str, fmt: str = "terminal") -> str:
    """A rendered table under its caption, in the format's own way."""
    if fmt == "csv":
        return f"# {caption_text}\n{table}"
    if fmt == "markdown":
        return f"**{md_escape(caption_text)}**\n\n{table}\n"
    return f"== {caption_text}\n{table}\n"


def render_rows(
    rows: Iterable[Row],
    fmt: str = "terminal",
    metrics: Sequence[str] | None = None,
    plugin_metrics: Mapping[str, Sequence[str]] | None = None,
) -> str:
    """All rows, one table per (plugin, kind), each with a caption."""
    groups: dict[tuple[str, str], list[Row]] = {}
    for r in rows:
        groups.setdefault((r.plugin, r.kind), []).append(r)
    out = []
    for (plugin, kind), rs in groups.items():
        multi = len({r.device for r in rs}) > 1
        sel = metrics or (plugin_metrics or {}).get(plugin if kind == "case" else "")
        # summary rows have their own metrics: never filter them by the case preference
        header, body = build_table(
            rs, sel if kind == "case" else metrics, multi_device=multi, stacked=fmt == "terminal"
        )
        out.append(titled(caption(rs), render(header, body, fmt), fmt))
        notes = sorted({plain(n) for r in rs for n in r.notes})
        if notes and fmt != "csv":
            out.append("\n".join(f"  note: {n}" for n in notes) + "\n")
    return "\n".join(out)


def num(v: Any) -> float | None:
    """A finite float, or None (bools, strings that are not numbers, NaN/inf)."""
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, (int, float)):
        return float(v) if math.isfinite(float(v)) else None
    if isinstance(v, str):
        try:
            x = float(v)
        except ValueError:
            return None
        return x if math.isfinite(x) else None
    return None
