"""`bench claims`: every documented claim with what it expects, what was measured on each device,
and a verdict that says what it rests on.

The claims are declared by the plugins that judge them (Plugin.claims, bench.contract.Claim); the
core knows no claim, metric or formula of its own. Evidence comes from result rows
(row.evidence[claim id], attached by a plugin's summarize()); formula checks are computed by the
claim's own formula() from printed numbers.

Verdicts: holds | fails | reported (shown, no assertion) | not measured here (with what would
measure it). Each holds/fails says what it rests on:
  measured   evidence measured on that device, in that run
  simulated  evidence from simulation (fake process group / fake tensors)
  extrapolated  a formula carried beyond the points measured (e.g. a limit as Nd grows)
  published  arithmetic over numbers printed in papers and datasheets (validates nothing here)
  by construction  the harness's own code fixes the outcome (Claim.construction says how): counted
             apart from measured, since it could not have come out otherwise
Claims whose check is "parts" aggregate their parts: they are shown but not counted (the parts
are), so one error is one `fails`. A claim that fails is a finding, not an error: exit 0.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import click

from bench.checks import KIND_RANK, KINDS, check_value, combine, fmt, judge
from bench.contract import Check, Claim, Evidence, Figure, Row

__all__ = [
    "VERDICTS",
    "ClaimResult",
    "Outcome",
    "aggregate_counts",
    "check_value",
    "counts",
    "evaluate",
    "judge",
    "render",
    "summary",
    "table",
]

VERDICTS = ("holds", "fails", "reported", "not measured here")
NO_RESULTS = "no results"  # the device column when no result rows were given
FORMATS = ("terminal", "markdown", "csv")
KIND_OF_SOURCE = {
    "measured": "measured",
    "simulated": "simulated",
    "extrapolated": "extrapolated",
    "formula": "published",
    "published": "published",
}
# how the table names a known error, by whose error it is (Claim.error_in)
ERROR_LABEL = {
    "notes": "KNOWN ERROR IN THE NOTES",
    "notes figure": "KNOWN ERROR IN A FIGURE OF THE NOTES (an image, not its text)",
    "paper": "DISCREPANCY INSIDE THE PAPER (not the notes)",
}


@dataclass
class Outcome:
    verdict: str  # one of VERDICTS
    reason: str  # the numbers compared, or why nothing was measured
    figures: list[Figure] = field(default_factory=list)
    kind: str | None = None  # one of bench.checks.KINDS, for holds/fails

    def cell(self) -> str:
        head = f"{self.verdict} ({self.kind})" if self.kind and self.verdict in ("holds", "fails") else self.verdict
        return f"{head}: {self.reason}" if self.reason else head


@dataclass
class ClaimResult:
    claim: Claim
    owner: str  # the plugin that declares it ("" for evidence under an undeclared id)
    outcomes: dict[str, Outcome]  # device label -> outcome

    @property
    def id(self) -> str:
        return self.claim.id

    @property
    def counted(self) -> bool:
        """Aggregates of parts are shown, not counted: their parts carry the verdicts."""
        return self.claim.check.type != "parts"


# ---------------------------------------------------------------------------------------------
# Rows -> evidence per device

WHERE_SKIP = ("rank", "claim")


def _where(row: Row) -> str:
    """Which case a piece of evidence came from: the plugin and its non-default settings."""
    p = {**row.labels, **row.params}
    bits = [f"{k}={fmt(v)}" for k, v in p.items() if k not in WHERE_SKIP and v not in (None, "", 0, False)]
    return row.plugin + (f" {', '.join(bits[:6])}" if bits else "")


def gather(rows: Sequence[Row]) -> tuple[list[str], dict[tuple[str, str], list[tuple[Evidence, Row]]]]:
    """Device labels in order of appearance, and (device, claim id) -> [(evidence, row)], with
    identical evidence (e.g. the same figure on every rank) kept once."""
    devices: list[str] = []
    found: dict[tuple[str, str], list[tuple[Evidence, Row]]] = {}
    seen: set[str] = set()
    for r in rows:
        if r.device not in devices:
            devices.append(r.device)
        for cid, ev in r.evidence.items():
            key = json.dumps([r.device, cid, ev.to_json()], sort_keys=True, default=str)
            if key not in seen:
                seen.add(key)
                found.setdefault((r.device, cid), []).append((ev, r))
    return devices, found


def _not_measured(claim: Claim, owner: str, rows_here: list[Row], cpu_only_evidence: bool) -> Outcome:
    needs = claim.needs
    names = list(claim.plugins or (owner,))
    plugin = "/".join(names)
    if claim.requires == "cuda" and not any(r.is_cuda for r in rows_here):
        why = needs if needs.startswith("needs CUDA") else f"needs CUDA: {needs}"
        if cpu_only_evidence:
            why += " (evidence from CPU rows does not count)"
        return Outcome("not measured here", why)
    mine = [r for r in rows_here if r.plugin in names]
    if not rows_here:
        return Outcome("not measured here", f"no results given; {needs}")
    if not mine:
        return Outcome("not measured here", f"no {plugin} rows in these results; {needs}")
    cases = [r for r in mine if r.is_case]
    skipped = [r for r in cases if r.status == "skipped"]
    if skipped and len(skipped) == len(cases):
        msg = (skipped[0].message or "no reason given").strip()
        return Outcome("not measured here", f"{plugin} was skipped here: {msg}; {needs}")
    bad = [r for r in mine if r.failed]
    extra = f" ({len(bad)} of {len(mine)} rows ended {'/'.join(sorted({r.status for r in bad}))})" if bad else ""
    return Outcome("not measured here", f"{plugin} ran{extra} but attached no evidence for this claim; {needs}")


def _evidence_outcome(claim: Claim, evs: list[tuple[Evidence, Row]], detail_max: int | None = None) -> Outcome:
    parts, figures = [], []
    for ev, row in evs:
        v, reason = check_value(claim.check, ev, detail_max)
        kind = KIND_OF_SOURCE.get(ev.source, "measured")
        if len(evs) > 1:
            reason = f"{ev.source}, {_where(row)}: {reason}"
        parts.append((v, reason, kind))
        figures.append(Figure(ev.value, ev.unit, ev.source, ev.detail))
    v, reason, k = combine(parts)
    return Outcome(v, reason, figures, k if v in ("holds", "fails") else None)


def evaluate(
    rows: Sequence[Row], registry: Sequence[tuple[str, Claim]] | None = None, detail_max: int | None = None
) -> tuple[list[str], list[ClaimResult]]:
    """Every declared claim x every device in rows -> Outcome. Evidence under ids no installed
    plugin declares is shown too (reported), never dropped. detail_max shortens the plugins'
    detail text in reasons (the numbers compared always stay)."""
    if registry is None:
        from bench.discovery import all_claims

        registry = all_claims()
    devices, found = gather(rows)
    if not devices:
        devices = [NO_RESULTS]
    rows_by_dev: dict[str, list[Row]] = {d: [] for d in devices}
    for r in rows:
        rows_by_dev[r.device].append(r)
    out: list[ClaimResult] = []
    by_id: dict[str, ClaimResult] = {}
    judged_formula: dict[str, Outcome] = {}
    for owner, claim in registry:
        outcomes: dict[str, Outcome] = {}
        for dev in devices:
            evs = found.get((dev, claim.id), [])
            cpu_ev = False
            if claim.requires == "cuda":
                cpu_ev = bool(evs) and not any(r.is_cuda for _, r in evs)
                evs = [(e, r) for e, r in evs if r.is_cuda]
            if claim.check.type == "formula":
                if claim.id not in judged_formula:
                    judged_formula[claim.id] = _formula_outcome(claim)
                fo = judged_formula[claim.id]
                if evs:  # a plugin measured it too: both shown, any failure wins
                    eo = _evidence_outcome(Claim(**{**claim.__dict__, "check": Check("plugin")}), evs, detail_max)
                    v, reason, kind = combine(
                        [
                            (fo.verdict, f"formula: {fo.reason}", fo.kind),
                            (eo.verdict, f"evidence: {eo.reason}", eo.kind),
                        ]
                    )
                    outcomes[dev] = Outcome(v, reason, fo.figures + eo.figures, kind)
                else:
                    outcomes[dev] = fo
            elif claim.check.type == "parts":
                outcomes[dev] = Outcome("not measured here", "")  # filled in below, once the parts exist
            elif evs:
                outcomes[dev] = _evidence_outcome(claim, evs, detail_max)
            else:
                outcomes[dev] = _not_measured(claim, owner, rows_by_dev[dev], cpu_ev)
        if claim.construction:
            outcomes = {d: _by_construction(claim, o) for d, o in outcomes.items()}
        res = ClaimResult(claim, owner, outcomes)
        out.append(res)
        by_id[claim.id] = res
    for res in out:
        if res.claim.check.type == "parts":
            for dev in devices:
                res.outcomes[dev] = _parts_outcome([(pid, by_id[pid].outcomes[dev]) for pid in res.claim.check.parts])
    known = {c.id for _, c in registry}
    for cid in sorted({cid for (_, cid) in found} - known):
        claim = Claim(
            cid,
            "(evidence for an id no installed plugin declares)",
            "",
            "",
            "",
            Check("report"),
            "install the plugin that declares it",
            metric="",
        )
        outcomes = {
            dev: _evidence_outcome(claim, found[(dev, cid)], detail_max)
            if (dev, cid) in found
            else Outcome("not measured here", "no evidence on this device")
            for dev in devices
        }
        out.append(ClaimResult(claim, "", outcomes))
    return devices, out


def _by_construction(claim: Claim, o: Outcome) -> Outcome:
    """A holds/fails the harness's own code fixes: kind "by construction", and the reason says how."""
    if o.verdict not in ("holds", "fails"):
        return o
    return Outcome(o.verdict, f"by construction: {claim.construction}; {o.reason}", o.figures, "by construction")


def _formula_outcome(claim: Claim) -> Outcome:
    assert claim.check.formula is not None
    try:
        j = claim.check.formula()
    except Exception as e:  # a broken formula is a finding about the plugin, never a crash
        return Outcome("reported", f"formula failed: {type(e).__name__}: {e}")
    kind = "published" if j.verdict in ("holds", "fails") else None
    return Outcome(j.verdict, j.reason, list(j.figures), kind)


def _parts_outcome(parts: list[tuple[str, Outcome]]) -> Outcome:
    judged = [(pid, o) for pid, o in parts if o.verdict in ("holds", "fails")]
    failing = [(pid, o) for pid, o in judged if o.verdict == "fails"]
    kinds = [o.kind for _, o in (failing or judged) if o.kind]
    kind = min(kinds, key=lambda k: KIND_RANK[k]) if kinds else None
    figures = [f for _, o in judged for f in o.figures]
    if failing:
        return Outcome("fails", "; ".join(f"{pid} fails: {o.reason}" for pid, o in failing), figures, kind)
    if judged and len(judged) == len([p for p in parts if p[1].verdict != "reported"]):
        return Outcome("holds", "; ".join(f"{pid}: {o.reason}" for pid, o in judged), figures, kind)
    reason = "; ".join(f"{pid}: {o.verdict} ({o.reason})" for pid, o in parts if o.verdict == "not measured here")
    return Outcome("not measured here", reason)


# ---------------------------------------------------------------------------------------------
# Tables


def table(
    devices: Sequence[str], results: Sequence[ClaimResult], fmt_name: str = "terminal"
) -> tuple[list[str], list[list[str]]]:
    """Header and body: one row per claim; per device a measured and a verdict column
    (csv: verdict, kind and reason apart)."""
    header = ["id", "claim", "expected"]
    for d in devices:
        sfx = f" ({d})"
        header.append(f"measured{sfx}")
        header += [f"verdict{sfx}", f"rests on{sfx}", f"reason{sfx}"] if fmt_name == "csv" else [f"verdict{sfx}"]
    body = []
    for res in results:
        c = res.claim
        exp = c.expected + (f" [{c.tolerance}]" if c.tolerance else "")
        claim_text = f"{ERROR_LABEL[c.error_in]}: {c.claim}" if c.known_error else c.claim
        if c.line is not None:
            claim_text += f' (notes line {c.line}: "{c.quote}")'
        if not res.counted:
            claim_text += " (aggregate of its parts; not counted)"
        line = [c.id, claim_text, exp]
        for d in devices:
            o = res.outcomes[d]
            line.append(
                "; ".join(f"{fmt(f.value)}{' ' + f.unit if f.unit else ''} ({f.source})" for f in o.figures) or "-"
            )
            line += [o.verdict, o.kind or "", o.reason] if fmt_name == "csv" else [o.cell()]
        body.append(line)
    return header, body


def render(devices: Sequence[str], results: Sequence[ClaimResult], fmt_name: str = "terminal") -> str:
    header, body = table(devices, results, fmt_name)
    if fmt_name == "csv":
        import csv
        import io

        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(header)
        w.writerows(body)
        return buf.getvalue()
    from tabulate import tabulate

    from bench.tables import md_escape

    if fmt_name == "markdown":
        esc = [[md_escape(cell) for cell in line] for line in body]
        return tabulate(esc, headers=[md_escape(h) for h in header], tablefmt="github", disable_numparse=True)
    ndev = len(devices)
    widths = [27, 34, 30] + [28, 46] * ndev if ndev < 3 else [27, 24, 20] + [18, 30] * ndev
    return tabulate(body, headers=header, tablefmt="simple", disable_numparse=True, maxcolwidths=widths)


SHORT_KIND = {"measured": "meas", "simulated": "sim", "published": "pub"}
ORDER = {"fails": 0, "holds": 1, "reported": 2, "not measured here": 3}


def _verdict_cell(o: Outcome) -> str:
    if o.verdict in ("holds", "fails"):
        return o.verdict + (f" {SHORT_KIND.get(o.kind, o.kind)}" if o.kind else "")
    return "not measured" if o.verdict == "not measured here" else o.verdict


def _measured_cell(o: Outcome) -> str:
    from bench.tables import short_num

    if not o.figures:
        return "-"
    f = o.figures[0]
    text = f"{short_num(f.value)} {plain_unit(f.unit)}".strip()
    return text + (f" (+{len(o.figures) - 1})" if len(o.figures) > 1 else "")


def plain_unit(unit: str) -> str:
    from bench.tables import short_unit

    return short_unit(unit)


def render_terminal(
    devices: Sequence[str], results: Sequence[ClaimResult], detail: bool = False, width: int | None = None
) -> str:
    """One line per claim within the terminal's width: failures first, then holds, reported, not
    measured; per device the verdict with what it rests on and the first measured figure (+N more);
    the claim's statement clipped. Aggregates (not counted) apart below; with detail every reason."""
    from bench.tables import clip, plain, rich_text, term_width, wrap

    width = width or term_width()
    counted = [r for r in results if r.counted]
    aggregates = [r for r in results if not r.counted]

    def rank(r: ClaimResult) -> int:
        return min(ORDER[r.outcomes[d].verdict] for d in devices)

    counted = sorted(counted, key=rank)  # stable: the registry's order within a verdict
    names = {d: chr(ord("A") + i) if i < 26 else f"D{i}" for i, d in enumerate(devices)}
    header = ["id"]
    for d in devices:
        sfx = f" {names[d]}" if len(devices) > 1 else ""
        header += [f"verdict{sfx}", f"measured{sfx}"]
    header += ["expected", "claim"]

    def lines(rs: Sequence[ClaimResult]) -> list[list[str]]:
        out = []
        for r in rs:
            c = r.claim
            line = [c.id]
            for d in devices:
                o = r.outcomes[d]
                line += [_verdict_cell(o), clip(_measured_cell(o), 20 if len(devices) == 1 else 14)]
            exp = c.expected + (f" [{c.tolerance}]" if c.tolerance else "")
            text = ("[error in the notes] " if c.known_error else "") + c.claim
            out.append([*line, clip(exp, 22), plain(text)])
        return out

    def table(rs: Sequence[ClaimResult], sections: bool) -> str:
        body = lines(rs)
        fixed = sum(max(len(h), *(len(b[i]) for b in body)) + 2 for i, h in enumerate(header[:-1]))
        body = [[*b[:-1], clip(b[-1], max(width - fixed, 12))] for b in body]
        ends = {i for i in range(len(rs) - 1) if rank(rs[i]) != rank(rs[i + 1])} if sections else set()
        return rich_text(header, body, width, sections=ends, keep=1 + 2 * len(devices))

    out = [", ".join(f"{names[d]}: {d}" for d in devices)] if len(devices) > 1 else []
    out += [table(counted, True)] if counted else []
    if aggregates:
        out.append("\naggregates of their parts (shown, not counted: each part above carries its own verdict):")
        out.append(table(aggregates, False))
    if detail:
        out.append("\nreasons:")
        for r in [*counted, *aggregates]:
            for d in devices:
                o = r.outcomes[d]
                where = f" ({d})" if len(devices) > 1 else ""
                out.append(wrap(f"{r.id}{where}: {o.cell()}", width, "  ")[2:])
    return "\n".join(out)


def counts(device: str, results: Sequence[ClaimResult]) -> dict[str, dict[str, int]]:
    """verdict -> kind -> number of counted claims on one device."""
    out: dict[str, dict[str, int]] = {v: {} for v in VERDICTS}
    for r in results:
        if not r.counted:
            continue
        o = r.outcomes[device]
        k = o.kind or "-"
        out[o.verdict][k] = out[o.verdict].get(k, 0) + 1
    return out


def aggregate_counts(device: str, results: Sequence[ClaimResult]) -> dict[str, int]:
    """verdict -> number of aggregates (parts claims) on one device: shown in the table, counted apart."""
    out: dict[str, int] = {}
    for r in results:
        if not r.counted:
            v = r.outcomes[device].verdict
            out[v] = out.get(v, 0) + 1
    return out


def summary(devices: Sequence[str], results: Sequence[ClaimResult], markdown: bool = False) -> str:
    """Per device: the counted claims by verdict and kind, then the aggregates apart, so that the
    footer's two counts add up to the table's rows (markdown: device labels escaped)."""
    from bench.tables import md_escape, plain

    def label(d: str) -> str:
        return md_escape(d) if markdown else plain(d).replace("\n", " ")

    lines = []
    n = sum(1 for r in results if r.counted)
    for d in devices:
        parts = []
        for v, by_kind in counts(d, results).items():
            total = sum(by_kind.values())
            kinds = [f"{by_kind[k]} {k}" for k in KINDS if by_kind.get(k)]
            parts.append(f"{total} {v}" + (f" ({', '.join(kinds)})" if kinds and v in ("holds", "fails") else ""))
        agg = aggregate_counts(d, results)
        line = f"{label(d)}: {n} claims: " + ", ".join(parts)
        if agg:
            line += f"; and {sum(agg.values())} aggregates of their parts, shown apart, not counted (" + ", ".join(
                f"{k} {v}" for v, k in agg.items()
            )
            line += f"): {len(results)} rows in all"
        lines.append(line)
        failing = [r.id for r in results if r.counted and r.outcomes[d].verdict == "fails"]
        if failing:
            lines.append(f"  failing on {label(d)}: {', '.join(failing)}")
    lines.append(
        "(meas/measured: on that device in that run; sim/simulated: fake tensors / process group; extrapolated: a "
        "formula beyond the points measured; pub/published: arithmetic over printed numbers; by construction: fixed "
        "by the harness's own code)"
    )
    return "\n".join(lines)


@click.command("claims")
@click.argument("results", nargs=-1, type=click.Path(path_type=Path))
@click.option("--format", "fmt_name", type=click.Choice(FORMATS), default="terminal", show_default=True)
@click.option(
    "--claims",
    "docs",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="A document's claims as TOML (repeat for several; see README): shown under its title instead of the built-in claims.",
)
@click.option(
    "--detail", is_flag=True, help="Terminal: every verdict's reason below the table (the report has them too)."
)
def command(results: tuple[Path, ...], fmt_name: str, docs: tuple[Path, ...], detail: bool) -> None:
    """Every documented claim: expected, measured (per device), verdict and what it rests on.

    RESULTS: result files or folders (default: the latest file under results/runs/; with none,
    the claims judged from published figures are still evaluated). Claims that fail are findings:
    exit 0.
    """
    from bench.results import latest_or_given, load_rows

    paths = latest_or_given(results, required=False)
    rows = load_rows(paths, nonempty=True, samples=False) if paths else []  # claims rest on evidence and metrics
    if not paths:
        click.echo("no results under results/runs/: only the claims judged from published figures", err=True)
    # the terminal shortens the plugins' detail text; markdown and csv keep all of it
    detail_max = 140 if fmt_name == "terminal" else None
    if docs:  # documents' claims (bench/documents.py, docjudge.py), judged by this engine in the same evaluation
        from bench import docjudge, documents

        devices, _, groups = docjudge.judge(documents.load(docs, rows), rows, detail_max)
        click.echo(docjudge.render(devices, groups, fmt_name, detail))
        return
    devices, res = evaluate(rows, detail_max=detail_max)
    if fmt_name == "terminal":
        from bench.tables import term_width, wrap

        click.echo(render_terminal(devices, res, detail))
        click.echo("\n" + "\n".join(wrap(line, term_width()) for line in summary(devices, res).splitlines()))
        if not detail:
            click.echo("reasons: --detail, or `bench report`")
        return
    click.echo(render(devices, res, fmt_name))
    if fmt_name == "markdown":  # device labels come from result rows: text, never markup
        click.echo("\n" + "  \n".join(summary(devices, res, markdown=True).splitlines()))
    elif fmt_name != "csv":
        click.echo("\n" + summary(devices, res))
