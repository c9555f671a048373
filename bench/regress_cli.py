"""The `bench regress` command: options, inputs, the machine-class baseline (find or record), output.
The gate itself is bench/regress.py."""

from __future__ import annotations

import json
import math
import signal
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from bench.options import Finite
from bench.regress import EXIT_HARNESS, EXIT_PASS, GateConfig, GateError, GateReport, Item, evaluate
from bench.regress_rerun import bench_rerun
from bench.rows import Row
from bench.supervise import clean_stale_tmp, interrupt_on


# --- output (table and summary) ---------------------------------------------------------------------------------
def _num(v: Any) -> str:
    from bench.tables import fmt_value

    return "null" if v is None else fmt_value(v)


def _pct(x: float | None) -> str:
    if x is None or x != x:
        return ""
    return f"{100 * x:+.2g}%" if 0 < abs(100 * x) < 0.1 else f"{100 * x:+.1f}%"


def render(rep: GateReport, fmt: str = "terminal", verbose: bool = False) -> str:
    from bench.tables import render as render_table

    header = [
        "plugin",
        "case",
        "metric",
        "kind",
        "baseline",
        "current",
        "unit",
        "change",
        "p",
        "min effect",
        "verdict",
        "note",
    ]
    quiet = ("same", "not gated")  # listed with -v; the summary counts them
    shown = [i for i in rep.items if verbose or fmt == "csv" or not (i.verdict in quiet and not i.reruns)]
    body = [
        [
            i.plugin,
            i.case,
            i.metric,
            i.kind + (f" ({i.part})" if i.part else ""),
            _num(i.base),
            _num(i.cur),
            i.unit[:24],
            _pct(i.change),
            "" if i.p is None else f"{i.p:.2g}",
            "" if i.threshold is None or i.threshold != i.threshold else f"{100 * i.threshold:.1f}%",
            i.verdict + ("" if i.outcome != "regression" else " [REGRESSION]"),
            i.note[: 160 if fmt != "csv" else 2000],
        ]
        for i in shown
    ]
    return render_table(header, body, fmt) if body else ""


def _counts(items: list[Item]) -> str:
    counts: dict[str, int] = {}
    for i in items:
        counts[i.verdict] = counts.get(i.verdict, 0) + 1
    return ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) or "none"


def summary(rep: GateReport, base_desc: str, cur_desc: str, idents: dict[str, str] | None = None) -> str:
    idents = idents or {}
    lines = [f"regress: baseline {base_desc}", f"         current  {cur_desc}"]
    lines += [f"  {k} identity: {v}" for k, v in idents.items()]
    lines += [f"  {m}" for m in rep.messages]
    det = [i for i in rep.items if i.kind == "deterministic"]
    tim = [i for i in rep.items if i.kind == "timing"]
    lines.append(
        f"  compared {rep.compared_rows} matched rows: {len(det)} deterministic and {len(tim)} timing metrics; "
        + _counts(rep.items)
    )
    port = [i for i in det if i.part == "portable"]
    bound = [i for i in det if i.part == "machine-bound"]
    if det:
        lines.append(f"  portable (exact on every machine; against the baseline): {len(port)} metrics: {_counts(port)}")
    if bound:
        flagged = sum(1 for i in bound if i.why_part.startswith("flagged"))
        lines.append(
            f"  machine-bound ({flagged} flagged portable=false, {len(bound) - flagged} unflagged measured floats "
            f"treated as machine-bound: portable only under one numerics id): {len(bound)} metrics: {_counts(bound)}"
        )
        if rep.machine_baseline:
            lines.append(f"    machine-class baseline: {rep.machine_baseline}")
        by: dict[str, Counter[str]] = {}
        for i in bound:
            by.setdefault(i.against or f"not compared: {i.verdict}", Counter())[i.metric] += 1
        for against, names in sorted(by.items()):
            listed = ", ".join(f"{k} x{v}" if v > 1 else k for k, v in sorted(names.items()))
            lines.append(f"    {against}: {sum(names.values())} ({listed})")
    if tim:
        lines.append(f"  timing: {len(tim)} metrics: {_counts(tim)}")
    for i in rep.by_outcome("regression"):
        what = {"invalid": "INVALID", "missing": "MISSING", "failed": "FAILED", "slower": "SLOWER"}.get(
            i.verdict, "CHANGED"
        )
        if i.kind == "status":
            lines.append(f"  {what} {i.plugin} {i.case}: {i.note}")
            continue
        unit = f" {i.unit}" if i.unit and len(i.unit) < 12 else ""
        lines.append(
            f"  {what} {i.plugin} {i.case}: {i.metric} {_num(i.base)} -> {_num(i.cur)}{unit}"
            + (
                (f" ({_pct(i.change)} worse)" if i.better else f" ({_pct(i.change)})")
                if i.change is not None and i.change == i.change
                else ""
            )
            + f"; {i.note}"
        )
    for i in rep.by_outcome("ambiguous"):
        lines.append(
            f"  {i.verdict.upper()} {i.plugin} {i.case}: {i.metric}"
            + (f" {_pct(i.change)}" if i.change is not None else "")
            + f"; {i.note}"
        )
    word = {0: "PASS", 1: "FAIL: regression", 2: "INCONCLUSIVE: ambiguous or unstable", 3: "HARNESS ERROR"}
    lines.append(f"result: {word[rep.exit_code]} (exit {rep.exit_code})")
    return "\n".join(lines)


def describe(rows: list[Row], paths: Sequence[Path]) -> str:
    fps = {r.device: r.machine_id for r in rows}
    runs = sorted({r.run_id for r in rows})
    return (
        ", ".join(map(str, paths))
        + f" ({len(rows)} rows; run {', '.join(runs[:3])}{' ...' if len(runs) > 3 else ''}; "
        + ", ".join(f"{k} [machine {v}]" for k, v in fps.items())
        + ")"
    )


def identity(rows: list[Row]) -> str:
    """The machine identity and kernel set of the rows' most common fingerprint, in words."""
    from bench.kernels import describe as kernels_text

    fps = Counter(json.dumps(r.fingerprint, sort_keys=True, default=str) for r in rows if r.fingerprint)
    if not fps:
        return "no fingerprint recorded"
    fp = json.loads(fps.most_common(1)[0][0])
    cpu, libs = fp.get("cpu"), fp.get("libs") or {}
    if not cpu:
        return (
            f"machine {fp.get('machine_id')} ({fp.get('cpu_model')}; fingerprint schema 1: model string only, "
            "no CPU features, kernel set or numerics id recorded)"
        )
    gpu = ", ".join(
        f"{g.get('name')} ({g.get('sm_count')} SMs, sm_{g.get('capability')})" for g in fp.get("gpus") or []
    )
    return (
        f"machine {fp.get('machine_id')} ({cpu.get('vendor')} family {cpu.get('family')} model {cpu.get('model')} "
        f"stepping {cpu.get('stepping')}, {cpu.get('arch')}: {' '.join(cpu.get('flags') or []) or 'no listed ISA flags'}; "
        f"{fp.get('cpus_usable')} of {fp.get('cpu_count')} cores usable; torch {libs.get('torch')}, "
        f"{libs.get('blas')} {libs.get('mkl')}, oneDNN {libs.get('onednn')}"
        + (f"; {gpu}, CUDA {fp.get('cuda')}, driver {fp.get('driver')}" if gpu else "")
        + f"); kernels {kernels_text(fp.get('kernels'))}; numerics {fp.get('numerics_id')}"
    )


class _HarnessCommand(click.Command):
    """Usage errors exit 3 (a harness error), not click's 2, which here means 'ambiguous'."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as e:
            e.exit_code = EXIT_HARNESS
            raise


def _parse_tols(tols: tuple[str, ...]) -> dict[str, float]:
    out = {}
    for t in tols:
        name, eq, val = t.partition("=")
        try:
            if not eq or not name:
                raise ValueError
            rel = float(val)
            if not math.isfinite(rel) or rel < 0:  # nan would fail a file against itself; < 0 is no tolerance
                raise ValueError
            out[name.strip()] = rel
        except ValueError:
            err = click.BadParameter(
                f"{t!r}: expected NAME=REL, REL a finite number >= 0 (e.g. final_loss=1e-4)", param_hint="--tol"
            )
            err.exit_code = EXIT_HARNESS
            raise err from None
    return out


def _machine_baseline(
    folder: Path, baseline: tuple[Path, ...], brows: list[Row], crows: list[Row]
) -> tuple[list[Row] | None, str, Path | None, list[str]]:
    """(machine-class rows to gate against, what they are in words, a path to record to, messages)."""
    from bench import regress_machine as rm
    from bench.results import load_rows

    def cls(r: Row) -> str:  # the machine class of a row: its numerics id (schema 1: its machine id)
        v = r.fingerprint.get("numerics_id") or r.machine_id
        return str(v) if v else ""

    mine = Counter(cls(r) for r in crows if cls(r)).most_common(1)
    if not mine:
        return None, "", None, ["machine-bound metrics: the current rows carry no machine identity; not gated"]
    mid = mine[0][0]
    if any(cls(r) == mid for r in brows):
        return None, f"the baseline itself (recorded with these numerics, {mid})", None, []
    label = next(r.device for r in crows if cls(r) == mid)
    dig = rm.digest(list(baseline))
    path, stale = rm.find(folder, mid, dig)
    msgs = []
    if stale:
        msgs.append(
            f"ignored {len(stale)} stale machine-class baseline(s) of {mid}, recorded against another "
            "baseline: " + ", ".join(map(str, stale[:3]))
        )
    if path is None:
        return None, "", rm.file_for(folder, label, mid, dig), msgs
    rows = load_rows([path])
    return rows, f"{path} (numerics {mid}, recorded by an earlier gate run here)", None, msgs


def _record(rep: GateReport, path: Path, crows: list[Row]) -> None:
    from bench import regress_machine as rm

    bound = [i for i in rep.items if i.part == "machine-bound"]
    mid = next((str(r.fingerprint.get("numerics_id") or r.machine_id) for r in crows if r.machine_id), "?")
    if not bound:
        return
    if rep.exit_code != EXIT_PASS:
        rep.messages.append(
            f"machine-bound metrics: no baseline of machine {mid} yet, and none recorded because "
            f"this run did not pass (exit {rep.exit_code})"
        )
        return
    n = rm.record(path, crows)
    rep.machine_baseline = f"nothing yet: first run on machine {mid}; RECORDED {path} ({n} rows) as its baseline"
    rep.messages.append(
        f"RECORDED the machine-bound baseline of machine {mid}: {path} ({n} rows). Its {len(bound)} "
        "machine-bound metrics are not compared on this first run on this machine class; the next gate "
        "run in this checkout compares them against it. A CI run in a clean clone records it anew every time "
        "and commits nothing, so there they are never compared: commit the file to gate them from a clean clone."
    )


@click.command(
    "regress",
    cls=_HarnessCommand,
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "allow_interspersed_args": True},
)
@click.option(
    "--baseline",
    "baseline",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Baseline results: bench JSON lines, a folder of them, or a pytest-benchmark JSON file (repeatable).",
)
@click.option(
    "--current",
    "current",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Current results (same forms as --baseline; repeatable).",
)
@click.option(
    "--only",
    type=click.Choice(["all", "deterministic", "timing"]),
    default="all",
    show_default=True,
    help="Gate only deterministic metrics (CI against a committed baseline) or only timings.",
)
@click.option(
    "--ab",
    "ab_rev",
    default=None,
    metavar="REV",
    help="A/B mode (instead of --baseline/--current): check REV out beside this working tree, run the chosen "
    "cases of both interleaved on this machine (--plugin and its flags, --profile, --pairs, --deadline) and "
    "gate the A/B pairs (paired test; a slowdown >= --min-effect, default 2% here, confirmed by a fresh round).",
)
@click.option(
    "--plugin", "plugins", multiple=True, help="A/B mode: plugin whose cases run (repeatable; flags as in bench run)."
)
@click.option("--profile", default="quick", show_default=True, help="A/B mode: case grid (as bench run --profile).")
@click.option(
    "--pairs", type=click.IntRange(2, 200), default=8, show_default=True, help="A/B mode: A/B pairs (blocks) per case."
)
@click.option(
    "--deadline",
    type=Finite(1, 7 * 86400),
    default=None,
    help="A/B mode: seconds from now by which the whole comparison (checkout, runs, confirming round) ends.",
)
@click.option(
    "--threads", type=click.IntRange(1, 4096), default=None, help="A/B mode: torch threads per case (as bench run)."
)
@click.option(
    "--max-time",
    type=Finite(0.05, 3600),
    default=None,
    help="A/B mode: time cap per timed measurement, s (as bench run --max-time; default bench run's).",
)
@click.option("--metrics", default=None, help="Comma-separated metric names to gate (default: every gateable one).")
@click.option(
    "--machine-baselines",
    "machine_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder of machine-class baselines for machine-bound metrics (losses, overflow counts) when the "
    "baseline is from another machine: gated against this machine's file there, or, where none "
    "exists, this run's are recorded there (and said so).",
)
@click.option(
    "--alpha",
    type=Finite(0, 1, min_open=True),
    default=0.05,
    show_default=True,
    help="Mann-Whitney significance level for timings.",
)
@click.option(
    "--min-effect",
    type=Finite(0),
    default=None,
    help="Floor on the relative change of a timing's median (0.05 = 5%; default 0.05, with --ab 0.02 on the "
    "geometric-mean ratio of the pairs).",
)
@click.option(
    "--ci-k",
    type=Finite(0),
    default=2.0,
    show_default=True,
    help="Min effect >= this x hypot of the two medians' 95% CI half-widths.",
)
@click.option(
    "--iqr-k",
    type=Finite(0),
    default=1.0,
    show_default=True,
    help="Min effect >= this x the smaller IQR/median (measured noise).",
)
@click.option(
    "--fail-on-noisy",
    is_flag=True,
    help="A timing too noisy to gate (min effect above 50%) makes the gate inconclusive (exit 2); "
    "default: listed as 'not gated: could detect only a slowdown >= Y%' with a warning (a significant slowdown of at least Y% still fails).",
)
@click.option(
    "--rtol",
    type=Finite(0),
    default=1e-6,
    show_default=True,
    help="Relative tolerance of deterministic float metrics.",
)
@click.option(
    "--int-rtol",
    type=Finite(0),
    default=0.0,
    show_default=True,
    help="Relative tolerance of deterministic integer metrics (0: exact).",
)
@click.option("--tol", "tols", multiple=True, metavar="NAME=REL", help="Per-metric relative tolerance (repeatable).")
@click.option(
    "--confirm",
    type=click.IntRange(min=0),
    default=1,
    show_default=True,
    help="Confirming reruns a timing slowdown must survive before it fails (0: fail on first detection).",
)
@click.option(
    "--rerun-cmd",
    default=None,
    metavar="TEMPLATE",
    help="Shell command that reruns one case and appends its rows to {out}; placeholders {python} {plugin} "
    "{flags} {profile} {run_opts} {out}. Default: {python} -m bench.cli run --plugin {plugin} {flags} "
    "--profile {profile} {run_opts} --out {out}  ({run_opts}: --threads and --kernels as recorded).",
)
@click.option(
    "--allow-missing",
    is_flag=True,
    help="Baseline rows or metrics absent from the current results pass (default: rows exit 2, metrics 1).",
)
@click.option(
    "--format", "fmt", type=click.Choice(["terminal", "markdown", "csv"]), default="terminal", show_default=True
)
@click.option("-v", "--verbose", is_flag=True, help="List every verdict, not only the changes.")
@click.option(
    "--json",
    "json_out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write every verdict and the exit code as JSON here.",
)
@click.pass_context
def command(
    ctx: click.Context,
    baseline: tuple[Path, ...],
    current: tuple[Path, ...],
    ab_rev: str | None,
    plugins: tuple[str, ...],
    profile: str,
    pairs: int,
    deadline: float | None,
    threads: int | None,
    max_time: float | None,
    only: str,
    metrics: str | None,
    machine_dir: Path | None,
    alpha: float,
    min_effect: float | None,
    ci_k: float,
    iqr_k: float,
    fail_on_noisy: bool,
    rtol: float,
    int_rtol: float,
    tols: tuple[str, ...],
    confirm: int,
    rerun_cmd: str | None,
    allow_missing: bool,
    fmt: str,
    verbose: bool,
    json_out: Path | None,
) -> None:
    """Gate CURRENT against BASELINE: exit 0 pass, 1 regression, 2 ambiguous/unstable, 3 harness error.

    \b
    Deterministic metrics (bytes, FLOPs, fixed-seed losses) must be equal (integers exactly, floats
    within --rtol); portable ones (counts, formulas) against the baseline on any machine,
    machine-bound ones (losses, overflow counts) only against a baseline of this machine
    (--machine-baselines finds or records one). A timing regresses only when the raw samples differ
    significantly (Mann-Whitney p < --alpha) AND the median moved by at least max(--min-effect,
    --ci-k x CI, --iqr-k x IQR), and a rerun of the case (--confirm) shows it again; a timing too
    noisy to gate is listed, not failed (--fail-on-noisy). NaN, infinite or missing values fail.
    Timings of different machines (fingerprint machine_id) are never called regressions.
    CI against a committed baseline: --only deterministic --machine-baselines DIR.
    Inputs may be pytest-benchmark JSON files.

    \b
    A/B mode: bench regress --ab HEAD~1 --plugin precision --what cast [--pairs 8] [--deadline 600]
    runs REV (A) and this working tree (B) interleaved here and gates the pairs (Wilcoxon signed-rank
    on log ratios, geometric-mean ratio with its 95% CI), deterministic metrics too.
    """
    from bench.errors import UsageError
    from bench.pytest_benchmark_io import load_any
    from bench.results import ResultsError, check_creatable

    def usage(msg: str) -> None:
        click.echo(f"error: {msg}", err=True)
        sys.exit(EXIT_HARNESS)

    if ab_rev is None:
        if ctx.args or plugins:
            usage(f"plugin options need --ab REV: {' '.join([*(f'--plugin {p}' for p in plugins), *ctx.args])}")
        if not baseline or not current:
            usage("give --baseline FILE and --current FILE, or --ab REV (A/B mode)")
    elif baseline or current:
        usage("--ab REV runs both revisions itself: give it without --baseline/--current")

    if json_out is not None and not json_out.exists():
        try:  # before the gate runs (a rerun may take minutes): an output that cannot be written
            check_creatable(json_out, "--json")
        except UsageError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(EXIT_HARNESS)
    cfg = GateConfig(
        alpha=alpha,
        min_effect=0.05 if min_effect is None else min_effect,
        ab_min_effect=0.02 if min_effect is None else min_effect,
        ci_k=ci_k,
        iqr_k=iqr_k,
        rtol=rtol,
        int_rtol=int_rtol,
        tolerances=_parse_tols(tols),
        confirm=confirm,
        only=only,
        allow_missing=allow_missing,
        fail_on_noisy=fail_on_noisy,
        metrics=tuple(m.strip() for m in metrics.split(",") if m.strip()) if metrics else None,
    )
    if ab_rev is not None:
        from bench.regress_ab import run_ab

        rep, bdesc, cdesc = run_ab(ab_rev, plugins, list(ctx.args), profile, pairs, deadline, threads, max_time, cfg)
        _emit(rep, bdesc, cdesc, fmt, verbose, json_out)
    try:
        brows, crows = load_any(baseline), load_any(current)
        mrows, mdesc, record_to, mmsgs = (
            _machine_baseline(machine_dir, baseline, brows, crows) if machine_dir else (None, "", None, [])
        )
        with interrupt_on(signal.SIGTERM, signal.SIGHUP):  # a killed gate kills its rerun and removes its folder
            clean_stale_tmp()
            rerun = bench_rerun(rerun_cmd) if confirm > 0 else None
            rep = evaluate(brows, crows, cfg, rerun=rerun, machine_rows=mrows)
        rep.machine_baseline = mdesc
        rep.messages[:0] = mmsgs
        if record_to is not None and only != "timing":
            _record(rep, record_to, crows)
    except (ResultsError, GateError, OSError) as e:
        click.echo(f"error: {e}", err=True)
        click.echo("result: HARNESS ERROR (exit 3)", err=True)
        sys.exit(EXIT_HARNESS)
    idents = {"baseline": identity(brows), "current": identity(crows)}
    _emit(rep, describe(brows, baseline), describe(crows, current), fmt, verbose, json_out, idents)


def _emit(
    rep: GateReport,
    bdesc: str,
    cdesc: str,
    fmt: str,
    verbose: bool,
    json_out: Path | None,
    idents: dict[str, str] | None = None,
) -> None:
    """The table, the summary, the JSON file; exits with the gate's code."""
    table = render(rep, fmt, verbose)
    if table:
        click.echo(table)
    hidden = sum(1 for i in rep.items if i.verdict in ("same", "not gated") and not i.reruns)
    if hidden and not verbose and fmt != "csv":
        click.echo(f"({hidden} same / not-gated verdicts not listed; -v lists them)")
    click.echo(summary(rep, bdesc, cdesc, idents))
    if json_out:
        from bench.errors import UsageError
        from bench.results import write_atomic

        doc = {"exit_code": rep.exit_code, "messages": rep.messages, "items": [asdict(i) for i in rep.items]}
        try:
            write_atomic(json_out, json.dumps(doc, indent=1, default=str), "--json")
        except UsageError as e:  # the verdicts above stand; the gate could not record them
            click.echo(f"error: {e}", err=True)
            sys.exit(EXIT_HARNESS)
    sys.exit(rep.exit_code)
