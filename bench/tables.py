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
    """A cell for a markdown table: pipes escaped, newlines flattened, and HTML and link syntax
    neutralised (markdown renders inline HTML and images: a `<script>` in a parameter value, or a
    quoted `![figure](path)` from a source, must stay text)."""
    s = plain(str(text)).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    s = s.replace("[", "\\[").replace("]", "\\]")
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
    rows: Sequence[Row], metrics: Sequence[str] | None = None, multi_device: bool = False
) -> tuple[list[str], list[list[str]]]:
    """Header and body for one group of rows (one plugin, one kind) in markdown or csv: every
    cell in full (the terminal's own layout is terminal_table)."""
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
            header.append(f"{k} {tag}")
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
    detail: bool = False,
) -> str:
    """All rows, one table per (plugin, kind), each with a caption. Terminal: the plugins' notes
    (how each figure was obtained) only with detail; markdown keeps them under each table."""
    groups: dict[tuple[str, str], list[Row]] = {}
    for r in rows:
        groups.setdefault((r.plugin, r.kind), []).append(r)
    if fmt == "terminal":
        return _render_terminal(groups, metrics, plugin_metrics, detail=detail)
    out = []
    for (plugin, kind), rs in groups.items():
        multi = len({r.device for r in rs}) > 1
        sel = metrics or (plugin_metrics or {}).get(plugin if kind == "case" else "")
        # summary rows have their own metrics: never filter them by the case preference
        header, body = build_table(rs, sel if kind == "case" else metrics, multi_device=multi)
        out.append(titled(caption(rs), render(header, body, fmt), fmt))
        notes = sorted({md_escape(n) if fmt == "markdown" else plain(n) for r in rs for n in r.notes})
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


# ---------------------------------------------------------------------------------------------
# Terminal tables that fit the terminal (rich lays them out; columns that do not fit are named
# below the table instead of wrapping every row into many screen lines).

NOISY_PCT = 20.0  # a timing whose noise part max(2 x CI95, IQR) (% of median; bench/regress_rules.py
# with ci_k=2, iqr_k=1) exceeds this is marked: a change under it cannot be told from noise
NOISY_MARK = "~"
_SI = ((1e15, 1e15, "P"), (1e12, 1e12, "T"), (1e9, 1e9, "G"), (1e6, 1e6, "M"), (1e5, 1e3, "k"))  # from, divisor


def term_width() -> int:
    """The terminal's width, or COLUMNS when set; 120 when neither is known (output to a file)."""
    import shutil

    return max(40, shutil.get_terminal_size((120, 24)).columns)


def short_num(v: Any) -> str:
    """One number format for terminal tables: 3 significant figures; 4-5 digit values as integers;
    k/M/G/T/P from 1e5 (26325200 -> 26.3M); e-notation below 1e-3."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if not isinstance(v, (int, float)):
        return fmt_value(v)
    x = float(v)
    if x != x or x in (math.inf, -math.inf):
        return str(x)
    a = abs(x)
    if a == 0:
        return "0"
    if a >= 1e18:  # beyond P: plain e-notation (fp32's max 3.4e+38)
        return f"{x:.3g}"
    for start, div, sfx in _SI:
        if a >= start:
            return f"{x / div:.3g}{sfx}"
    if isinstance(v, int) or a >= 1000:
        return f"{x:.0f}"
    if a >= 1e-3:
        return f"{x:.3g}"
    return f"{x:.2e}"


def short_unit(unit: str) -> str:
    """The unit a header can carry: '% of the fp32 matmul peak (0.2 TFLOP/s ...)' -> '%',
    'tokens/s (all ranks)' -> 'tokens/s'. The full text goes below the table once."""
    s = plain(unit).split(" (")[0].split(" of ")[0].strip()
    return s.split()[0] if len(s) > 12 and s.split() else s


def _split_name(name: str, width: int) -> str:
    """A long metric name broken at underscores onto lines of at most `width` characters."""
    if len(name) <= width:
        return name
    lines: list[str] = []
    for part in name.split("_"):
        if lines and len(lines[-1]) + 1 + len(part) <= width:
            lines[-1] += "_" + part
        else:
            lines.append(part if not lines else "_" + part)
    return "\n".join(lines)


class Footnotes:
    """Long texts of one command's output, each printed once below the tables: notes, skip and
    error messages (referenced from the table as [n]), full unit texts, columns left out."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def ref(self, text: str) -> int:
        t = plain(text).strip()
        if t not in self.items:
            self.items.append(t)
        return self.items.index(t) + 1

    def render(self, width: int, title: str = "notes") -> str:
        if not self.items:
            return ""
        out = [f"{title}:"]
        for i, t in enumerate(self.items, 1):
            tag = f"[{i}] "
            out.append(textwrap.fill(t, width, initial_indent=tag, subsequent_indent=" " * len(tag)))
        return "\n".join(out)


def _timing_spread(row: Row, name: str) -> tuple[float | None, bool]:
    """(CI95 half-width % of the median, noisy) for timing metric `name` (X_ms: X_ci95_pct, X_noise_pct)."""
    prefix = name.rsplit("_", 1)[0]
    ci = num(row.value(f"{prefix}_ci95_pct"))
    iqr = num(row.value(f"{prefix}_noise_pct"))
    spread = max(2 * (ci or 0.0), iqr or 0.0)
    return (ci if ci is not None else iqr), spread > NOISY_PCT


def fit_table(header: list[str], body: list[list[str]], width: int, keep: int) -> tuple[list[int], list[int]]:
    """Which columns fit `width` (one space between columns): the first `keep` always, then the
    others in order while they fit. Returns (kept indices, dropped indices)."""

    def w(i: int) -> int:
        return max([len(line) for line in header[i].split("\n")] + [len(r[i]) for r in body])

    kept = list(range(min(keep, len(header))))
    used = sum(w(i) for i in kept) + 2 * max(len(kept) - 1, 0)
    dropped = []
    for i in range(len(kept), len(header)):
        need = w(i) + 2
        if used + need <= width:
            kept.append(i)
            used += need
        else:
            dropped.append(i)
    return kept, dropped


def rich_text(
    header: list[str],
    body: list[list[str]],
    width: int,
    right: set[int] | None = None,
    wrap: set[int] | None = None,
    sections: set[int] | None = None,
    keep: int = 0,
    fixed: set[int] | None = None,
) -> str:
    """A plain-text table laid out by rich within `width`: one line per row (cells that still do
    not fit end in an ellipsis), except the columns in `wrap`, whose long cells wrap; a blank line
    after each row index in `sections`. The first `keep` columns and those in `fixed` are never narrowed."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    # SIMPLE_HEAD: a rule under the header, one space as the column divider; with one space of
    # padding on the right that is two spaces between columns (fit_table counts the same)
    t = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1, 0, 0), header_style="")
    for i, h in enumerate(header):
        w = bool(wrap and i in wrap)
        full = (
            max([len(x) for x in h.split("\n")] + [len(r[i]) for r in body])
            if i < keep or (fixed and i in fixed)
            else None
        )
        t.add_column(
            h,
            no_wrap=not w,
            overflow="fold" if w else "ellipsis",
            justify="right" if right and i in right else "left",
            min_width=full,
        )
    for i, r in enumerate(body):
        t.add_row(*r, end_section=bool(sections and i in sections))
    con = Console(file=io.StringIO(), width=width, color_system=None, force_terminal=False, highlight=False)
    con.print(t, markup=False, emoji=False)
    out = con.file.getvalue()  # type: ignore[attr-defined]
    return "\n".join(line.rstrip() for line in out.splitlines())


def terminal_table(
    rows: Sequence[Row], metrics: Sequence[str] | None, notes: Footnotes, width: int, multi_device: bool = False
) -> str:
    """One group of rows (one plugin, one kind) as a table within `width`: varying parameters,
    then metrics with the unit (and source) once in the header, a ± column after every timing
    (its 95% CI, % of the median) with a mark on noisy ones; long texts go to `notes`."""
    from bench.regress_rules import META_SUFFIXES, is_timing_name

    pkeys = list(dict.fromkeys(k for r in rows for k in r.params))
    varying = [k for k in pkeys if len({json.dumps(r.params.get(k), default=str) for r in rows}) > 1]
    lkeys = list(dict.fromkeys(k for r in rows for k in r.labels))
    mkeys = list(dict.fromkeys(k for r in rows for k in r.metrics if metrics is None or k in metrics))
    if metrics:
        mkeys = [m for m in metrics if m in mkeys]
    mkeys = [m for m in mkeys if not m.endswith(META_SUFFIXES) or (metrics and m in metrics)]
    mixed = [k for k in mkeys if len({r.metrics[k].source for r in rows if k in r.metrics}) > 1]
    by_row_src = bool(mixed)  # some columns are measured in some rows, simulated in others: a source column
    header = (["device"] if multi_device else []) + varying + lkeys
    show_status = any(r.status != "ok" or r.message for r in rows)
    header += ["status"] if show_status else []
    header += ["src"] if by_row_src else []
    keep = len(header)
    cols: list[tuple[str, str, bool]] = []  # (metric, header, is the ± column of that metric)
    right: set[int] = set()
    for k in mkeys:
        units = {short_unit(r.metrics[k].unit) for r in rows if k in r.metrics}
        full = {plain(r.metrics[k].unit) for r in rows if k in r.metrics} - units - {""}
        for u in sorted(full):
            notes.ref(f"{k} [{short_unit(u)}]: {u}")
        src = {_SRC.get(r.metrics[k].source, "?") for r in rows if k in r.metrics}
        unit = next(iter(units)) if len(units) == 1 else "(per cell)"
        tag = " ".join(t for t in (unit, next(iter(src)) if len(src) == 1 else "") if t)
        cols.append((k, _split_name(k, max(10, len(tag))) + (f"\n{tag}" if tag else ""), False))
        if is_timing_name(k) and any(num(r.value(f"{k.rsplit('_', 1)[0]}_ci95_pct")) is not None for r in rows):
            cols.append((k, "±\n%", True))
    header += [h for _, h, _ in cols]
    body = []
    for r in rows:
        line = [r.device] if multi_device else []
        line += [short_num(r.params.get(k)) for k in varying]
        line += [short_num(r.labels.get(k)) for k in lkeys]
        if show_status:
            line.append(r.status + (f" [{notes.ref(r.message)}]" if r.message else ""))
        if by_row_src:
            line.append("+".join(sorted({_SRC.get(m.source, "?") for k, m in r.metrics.items() if k in mixed})))
        for k, _, is_pm in cols:
            m = r.metrics.get(k)
            if is_pm:
                ci, noisy = _timing_spread(r, k)
                line.append("" if ci is None else f"{ci:.2g}{' ' + NOISY_MARK if noisy else ''}")
            elif m is None:
                line.append("")
            else:
                cell = short_num(m.value)
                if len({short_unit(x.metrics[k].unit) for x in rows if k in x.metrics}) > 1:
                    cell += f" {short_unit(m.unit)}"
                line.append(cell)
        body.append(line)
    for i, (k, _, _) in enumerate(cols):
        if all(num(r.value(k)) is not None for r in rows if k in r.metrics):
            right.add(keep + i)
    kept, dropped = fit_table(header, body, width, keep)
    if any(i >= keep and cols[i - keep][2] for i in kept):
        notes.ref(
            f"± is the 95% CI half-width of the timing's median, % of it (measured); {NOISY_MARK}: noisy timing "
            f"(2 x CI95 or the IQR above {NOISY_PCT:g}% of the median): a difference below that is not a finding"
        )
    if dropped:
        names = list(dict.fromkeys(cols[i - keep][0] for i in dropped if i >= keep))
        notes.ref(
            f"{rows[0].plugin} {'summary' if rows[0].kind == 'summary' else 'cases'}: {len(names)} more columns "
            f"than {width} characters hold: {', '.join(names)} (`bench show --metrics ...`, --format csv, or a wider terminal)"
        )
    hdr = [header[i] for i in kept]
    rb = [[line[i] for i in kept] for line in body]
    return rich_text(hdr, rb, width, {j for j, i in enumerate(kept) if i in right})


def _render_terminal(
    groups: Mapping[tuple[str, str], list[Row]],
    metrics: Sequence[str] | None,
    plugin_metrics: Mapping[str, Sequence[str]] | None,
    width: int | None = None,
    detail: bool = False,
) -> str:
    """Every group's table within the terminal's width; the notes of all tables once, below them
    (the plugins' own notes only with detail: they are counted otherwise)."""
    width = width or term_width()
    notes = Footnotes()
    held: list[str] = []
    out = []
    for (plugin, kind), rs in groups.items():
        multi = len({r.device for r in rs}) > 1
        sel = metrics or (plugin_metrics or {}).get(plugin if kind == "case" else "")
        table = terminal_table(rs, sel if kind == "case" else metrics, notes, width, multi)
        out.append(textwrap.fill("== " + caption(rs), width, subsequent_indent="   ") + "\n" + table + "\n")
        for r in rs:
            for n in r.notes:
                if detail:
                    notes.ref(n)
                elif plain(n).strip() not in held:
                    held.append(plain(n).strip())
    if held:
        notes.ref(f"{len(held)} notes from the plugins on how these figures were obtained: --detail shows them")
    text = notes.render(width)
    return "\n".join(out) + ("\n" + text + "\n" if text else "")


def clip(text: str, width: int) -> str:
    """One line of at most `width` characters (an ellipsis where it was cut)."""
    t = plain(text).replace("\n", " ")
    return t if len(t) <= width else t[: max(width - 1, 0)] + "…"


def wrap(text: str, width: int, indent: str = "") -> str:
    """A paragraph wrapped to `width`, every line indented."""
    return "\n".join(
        textwrap.fill(p, width, initial_indent=indent, subsequent_indent=indent) for p in plain(text).split("\n")
    )
