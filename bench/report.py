"""`bench report RESULTS... -o DIR`: DIR/report.md (PNG files beside it) and DIR/report.html
(self-contained: the same PNGs embedded as base64 data URIs; no external links).

The sections come from the installed plugins (Plugin.report(rows, out_dir) -> list[Section]):
each plugin draws its own plots into DIR and gives the tables under them; the core knows no
plugin or metric. A plugin whose rows are present but which returns no section is listed under
"Plots skipped" with its rows' statuses; one whose report fails is a section saying so, never a
lost report. Then the claims table (bench claims) for the same rows, with what each verdict
rests on. Everything copied from rows is escaped (markdown and HTML).
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click

from bench.contract import Section
from bench.rows import Row
from bench.tables import md_escape

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;color:#222}
h1{margin-bottom:.2em} h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;font-size:12px;margin:.6em 0 1.2em} th,td{border:1px solid #ccc;padding:3px 6px;vertical-align:top;text-align:left}
th{background:#f3f3f3} img{max-width:100%;height:auto;border:1px solid #eee} figcaption{font-size:13px;color:#555}
.v-holds{background:#e3f6e3} .v-fails{background:#fbe0e0} .v-reported{background:#eef2fb} .v-not-measured-here{background:#f6f6f6;color:#666}
.note{color:#666;font-size:13px}
"""


def _md_table(header: list[str], body: list[list[str]]) -> str:
    from tabulate import tabulate

    return tabulate(
        [[md_escape(c) for c in line] for line in body],
        headers=[md_escape(h) for h in header],
        tablefmt="github",
        disable_numparse=True,
    )


LONG_CELL = 200  # characters of a table cell shown before the rest folds away (HTML)


def _html_table(header: list[str], body: list[list[str]], verdict_cols: Sequence[int] = ()) -> str:
    out = ["<table><thead><tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in header) + "</tr></thead><tbody>"]
    for line in body:
        cells = []
        for i, c in enumerate(line):
            cls = ""
            if i in verdict_cols:
                cls = f' class="v-{re.sub(r"[^a-z]+", "-", str(c).lower()).strip("-")}"'
            text = str(c)
            if len(text) > LONG_CELL:  # a reason two screens long: its start, the rest on a click
                cut = text[:LONG_CELL].rsplit(" ", 1)[0]
                cell = f"<details><summary>{html.escape(cut)} …</summary>{html.escape(text)}</details>"
            else:
                cell = html.escape(text)
            cells.append(f"<td{cls}>{cell}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def _anchor(text: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-") or "section"


def plugin_sections(rows: Sequence[Row], out_dir: Path) -> tuple[list[Section], list[str]]:
    """Every installed plugin's sections for these rows, and a line for each plugin that drew none."""
    from bench.discovery import discover

    sections: list[Section] = []
    skipped: list[str] = []
    for name, found in discover().items():
        mine = [r for r in rows if r.plugin == name]
        if found.plugin is None:
            if mine:
                skipped.append(f"{name}: {len(mine)} rows, but the plugin cannot load here: {found.load_error}")
            continue
        try:
            got = found.plugin.report(list(rows), out_dir)
        except Exception as e:  # one plugin's failure must not cost the report
            got = [
                Section(f"{name} (report failed)", f"{name}-failed", notes=[f"report failed: {type(e).__name__}: {e}"])
            ]
        sections.extend(got)
        if not got and mine:
            st = ", ".join(sorted({r.status for r in mine}))
            skipped.append(f"{name}: {len(mine)} rows ({st}) but none with what its report draws")
    known = set(discover())
    for name in sorted({r.plugin for r in rows} - known):
        skipped.append(f"{name}: rows of a plugin that is not installed here")
    return sections, skipped


def headline(rows: Sequence[Row], devices: Sequence[str], results: Sequence[Any]) -> list[str]:
    """The findings first: per device the claims holding and failing (with the failing ids), then per
    plugin its cases by status and its fastest case in its first throughput metric (or time)."""
    from bench.claims import counts
    from bench.compare import speed_metric
    from bench.discovery import discover
    from bench.regress_rules import is_timing_name
    from bench.tables import fmt_value, num, short_unit

    out = []
    for d in devices:
        c = counts(d, results)
        fails = [r.id for r in results if r.counted and r.outcomes[d].verdict == "fails"]
        n = sum(sum(v.values()) for v in c.values())
        out.append(
            f"claims on {d}: {sum(c['holds'].values())} of {n} hold, {sum(c['fails'].values())} fail"
            + (f" ({', '.join(fails)})" if fails else "")
            + f", {sum(c['reported'].values())} reported, {sum(c['not measured here'].values())} not measured here"
        )
    found = discover()
    for name in dict.fromkeys(r.plugin for r in rows):
        cases = [r for r in rows if r.plugin == name and r.is_case]
        if not cases:
            continue
        st = ", ".join(f"{sum(r.status == s for r in cases)} {s}" for s in dict.fromkeys(r.status for r in cases))
        f = found.get(name)
        pref = list(f.plugin.table_metrics) if f and f.plugin else []
        names = list(dict.fromkeys([*pref, *(k for r in cases for k in r.metrics)]))
        m = speed_metric(names, f.plugin.normalised if f and f.plugin else ())
        text = f"{name}: {len(cases)} cases ({st})"
        vals = [(num(r.value(m)), r) for r in cases if m and r.ok and num(r.value(m)) is not None]
        if m and vals:
            best = (min if is_timing_name(m) else max)(vals, key=lambda x: x[0] or 0.0)
            r = best[1]
            fields = {**r.params, **r.labels}
            vary = [k for k in fields if k != "rank" and len({json.dumps(x.get(k), default=str) for x in cases}) > 1]
            where = ", ".join(f"{k}={fmt_value(fields[k])}" for k in vary)
            unit = short_unit(r.metrics[m].unit)
            text += f"; best {m}: {fmt_value(best[0])} {unit} ({r.device}" + (f"; {where[:160]})" if where else ")")
        out.append(text)
    return out


def build(
    rows: Sequence[Row], out_dir: Path, sources: Sequence[str] = (), documents: Sequence[Any] = ()
) -> dict[str, Any]:
    """Write report.md, report.html and the PNGs into out_dir; returns what was written. documents
    (bench.documents.Document): their claims follow the built-in ones, each under its title."""
    from bench import claims as claims_mod
    from bench import docjudge as docs_mod

    out_dir.mkdir(parents=True, exist_ok=True)
    sections, skipped = plugin_sections(rows, out_dir)
    seen: dict[str, int] = {}
    for s in sections:  # anchors unique and safe
        a = _anchor(s.anchor)
        seen[a] = seen.get(a, 0) + 1
        s.anchor = a if seen[a] == 1 else f"{a}-{seen[a]}"
    devices, results, doc_groups = docs_mod.judge(documents, rows)
    doc_anchors = [f"claims-{_anchor(d.title)}-{i}" for i, (d, _) in enumerate(doc_groups, 1)]
    c_header, c_body = claims_mod.table(devices, results, "csv")
    verdict_cols = [i for i, h in enumerate(c_header) if h.startswith("verdict")]
    counts = claims_mod.summary(devices, results)
    run_ids = sorted({r.run_id for r in rows})
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    meta = [
        f"results: {', '.join(sources) or '-'}",
        f"devices: {', '.join(devices)}",
        f"runs: {', '.join(run_ids) or '-'}; {len(rows)} rows",
        f"generated {when}",
    ]

    head = headline(rows, devices, results)

    # markdown (PNG files beside it); every text from rows escaped
    md = ["# bench report", ""] + [f"- {md_escape(m)}" for m in meta] + [""]
    md += ["## Headline", ""] + [f"- {md_escape(x)}" for x in head] + [""]
    for s in sections:
        md += [f"## {md_escape(s.title)}", ""]
        if s.png:
            md += [f"![{md_escape(s.title)}]({s.png})", ""]
        if s.caption:
            md += [md_escape(s.caption), ""]
        for n in s.notes:
            md += [f"> {md_escape(n)}", ""]
        for title, h, b in s.tables:
            if title:
                md += [f"**{md_escape(title)}**", ""]
            md += [_md_table(h, b), ""]
    if skipped:
        md += ["## Plots skipped", ""] + [f"- {md_escape(s)}" for s in skipped] + [""]
    md += [
        "## Claims",
        "",
        "```",
        counts.replace("```", "'''"),
        "```",
        "",
        claims_mod.render(devices, results, "markdown"),
        "",
    ]
    if doc_groups:
        md += [docs_mod.render(devices, doc_groups, "markdown"), ""]
    (out_dir / "report.md").write_text("\n".join(md))

    # html (self-contained: images as data URIs)
    h = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>bench report</title>",
        f"<style>{CSS}</style></head><body>",
        "<h1>bench report</h1>",
        "<ul>" + "".join(f"<li>{html.escape(m)}</li>" for m in meta) + "</ul>",
        '<h2 id="headline">Headline</h2>',
        "<ul>" + "".join(f"<li>{html.escape(x)}</li>" for x in head) + "</ul>",
    ]
    toc = (
        [(s.anchor, s.title) for s in sections]
        + ([("skipped", "Plots skipped")] if skipped else [])
        + [("claims", "Claims")]
        + [(a, d.title) for a, (d, _) in zip(doc_anchors, doc_groups)]
    )
    h.append(
        "<nav><strong>Contents</strong><ul>"
        + "".join(f'<li><a href="#{a}">{html.escape(t)}</a></li>' for a, t in toc)
        + "</ul></nav>"
    )
    for s in sections:
        h.append(f'<h2 id="{s.anchor}">{html.escape(s.title)}</h2>')
        if s.png and (out_dir / s.png).is_file():
            data = base64.b64encode((out_dir / s.png).read_bytes()).decode()
            h.append(
                f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(s.title)}">'
                f"<figcaption>{html.escape(s.caption)}</figcaption></figure>"
            )
        elif s.caption:
            h.append(f"<p>{html.escape(s.caption)}</p>")
        for n in s.notes:
            h.append(f'<p class="note">{html.escape(n)}</p>')
        for title, hh, b in s.tables:
            if title:
                h.append(f"<h3>{html.escape(title)}</h3>")
            h.append(_html_table(hh, b))
    if skipped:
        h.append(
            '<h2 id="skipped">Plots skipped</h2><ul>' + "".join(f"<li>{html.escape(s)}</li>" for s in skipped) + "</ul>"
        )
    h.append('<h2 id="claims">Claims</h2>')
    h.append(f'<pre class="note">{html.escape(counts)}</pre>')
    h.append(_html_table(c_header, c_body, verdict_cols))
    for a, (d, res) in zip(doc_anchors, doc_groups):
        d_header, d_body = claims_mod.table(devices, res, "csv")
        h.append(f'<h2 id="{a}">{html.escape(d.title)}</h2><p class="note">{html.escape(d.source)}</p>')
        h.append(f'<pre class="note">{html.escape(claims_mod.summary(devices, res))}</pre>')
        h.append(_html_table(d_header, d_body, verdict_cols))
    h.append("</body></html>")
    (out_dir / "report.html").write_text("\n".join(h))
    return {
        "md": out_dir / "report.md",
        "html": out_dir / "report.html",
        "pngs": [out_dir / s.png for s in sections if s.png],
        "skipped": skipped,
    }


@click.command("report")
@click.argument("results", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("report"),
    show_default=True,
    help="Folder for report.md, report.html and the PNGs.",
)
@click.option(
    "--claims",
    "docs",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="A document's claims as TOML (repeat for several): a section each, after the built-in claims.",
)
def command(results: tuple[Path, ...], out_dir: Path, docs: tuple[Path, ...]) -> None:
    """Markdown + self-contained HTML report with the plugins' plots and the claims table.

    RESULTS: result files or folders (default: the latest file under results/runs/).
    """
    from bench.errors import UsageError
    from bench.results import check_creatable, latest_or_given, load_rows

    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"-o {out_dir}: exists and is not a folder")
    if not out_dir.exists():
        check_creatable(out_dir, "-o")
    elif not os.access(out_dir, os.W_OK | os.X_OK):
        raise UsageError(f"-o {out_dir}: the folder is not writable")
    paths = latest_or_given(results)
    rows = load_rows(paths, nonempty=True)
    from bench.documents import load

    docs_loaded = load(docs, rows)
    try:
        written = build(rows, out_dir, [str(p) for p in paths], docs_loaded)
    except OSError as e:  # the disk filled, or the folder went away: one line, never a traceback
        raise UsageError(f"-o {out_dir}: writing the report failed ({e.strerror}: {e.filename})") from None
    for s in written["skipped"]:
        click.echo(f"skipped plot: {s}", err=True)
    click.echo(f"wrote {written['html']} and {written['md']} ({len(written['pngs'])} plots)")
