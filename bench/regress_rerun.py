"""Confirming reruns of the regression gate: a timing slowdown fails only when a fresh run of the
case shows it again (`bench run --plugin P --<param> <value> ...` through the real CLI, or a
--rerun-cmd template). A slowdown the rerun does not reproduce passes as noise; one the rerun
contradicts is "unstable"."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from bench.errors import HarnessError
from bench.regress_rules import GateConfig, TimingResult, compare_samples
from bench.rows import Row

if TYPE_CHECKING:  # pragma: no cover
    from bench.regress import Item, Side

Rerun = Callable[[Row], list[Row]]  # a baseline/current row -> fresh rows of its case


class GateError(HarnessError):
    """The gate cannot compare (no rows, nothing matches, a rerun that fails): exit 3."""


def confirm(
    items: list[Item], B: dict[str, Side], cfg: GateConfig, rerun: Rerun | None, why_not: str, msgs: list[str]
) -> None:
    """Rerun the cases whose timings came out slower; update their items in place."""
    from bench.regress import group

    slow = [i for i in items if i.kind == "timing" and i.verdict == "slower"]
    if not slow:
        return
    if cfg.confirm <= 0:
        for i in slow:
            i.note += "; not confirmed by a rerun (--confirm 0)"
        return
    if rerun is None:
        for i in slow:
            i.outcome = "ambiguous"
            i.note += f"; UNCONFIRMED: could not rerun ({why_not})"
        msgs.append(
            f"slowdowns could not be confirmed by a rerun ({why_not}); they count as ambiguous. "
            "Use --confirm 0 to fail on the first detection."
        )
        return
    by_case: dict[str, list[Item]] = {}
    for i in slow:
        by_case.setdefault(json.dumps([i.plugin, i.params, i.row_kind], sort_keys=True, default=str), []).append(i)
    for case_items in by_case.values():
        pending = list(case_items)
        if pending[0].row_kind != "case" or pending[0].plugin == "pytest-benchmark":
            for i in pending:
                i.outcome = "ambiguous"
                i.note += "; UNCONFIRMED: " + (
                    "summary rows cannot be rerun alone"
                    if i.row_kind != "case"
                    else "pytest-benchmark rows cannot be rerun by bench"
                )
            continue
        for attempt in range(cfg.confirm):
            got = group(rerun(B[pending[0].key].row))
            still = []
            for i in pending:
                first = i.change or 0.0  # a "slower" verdict always carries its change
                side = got.get(i.key)
                if side is None or side.row.status != "ok":
                    i.verdict, i.outcome = "unstable", "ambiguous"
                    i.note += f"; the rerun gave no usable row ({side.row.status if side else 'no matching row'})"
                    continue
                if side.machine != B[i.key].machine:
                    i.outcome = "ambiguous"
                    i.note += (
                        f"; UNCONFIRMED: the rerun ran on machine {side.machine}, the baseline on {B[i.key].machine}"
                    )
                    continue
                r = compare_samples(B[i.key].samples(i.metric), side.samples(i.metric), i.better or "lower", cfg)
                if rerun_decision(i, r, attempt, first, cfg.min_effect):
                    still.append(i)
            pending = still
            if not pending:
                break
        for i in pending:
            confirmed_note(i)


def rerun_decision(i: Item, r: TimingResult, attempt: int, first: float, floor: float) -> bool:
    """One confirming rerun's verdict r on a slowdown item i (updated in place): True while it stays
    slower; not reproduced (same, or ambiguous within the floor of the effect the user asked to
    gate, even where its own noise is too large to call it "same"): a pass; otherwise unstable."""
    i.reruns.append(r.change)
    if r.verdict == "slower":
        return True
    if r.verdict == "same" or (r.verdict == "ambiguous" and abs(r.change) < floor):
        i.verdict, i.outcome = "same", "pass"
        i.note = (
            f"slower at first ({100 * first:+.1f}%), not reproduced by rerun {attempt + 1} "
            f"({100 * r.change:+.1f}%, {r.why}): noise"
        )
    else:
        i.verdict, i.outcome = "unstable", "ambiguous"
        i.note = (
            f"slower at first ({100 * first:+.1f}%), rerun {attempt + 1}: {r.verdict} ({100 * r.change:+.1f}%, {r.why})"
        )
    return False


def confirmed_note(i: Item) -> None:
    i.outcome = "regression"
    i.note += "; confirmed by " + ", ".join(f"rerun {n + 1} ({100 * c:+.1f}%)" for n, c in enumerate(i.reruns))


def param_flags(params: dict[str, Any]) -> list[str]:
    """Case params -> `bench run` flags (--name value); None values keep the plugin's default."""
    out = []
    for k, v in params.items():
        if v is None:
            continue
        out += ["--" + k.replace("_", "-"), ("true" if v else "false") if isinstance(v, bool) else str(v)]
    return out


def bench_rerun(
    template: str | None = None, workdir: Path | None = None, env: dict[str, str] | None = None, timeout: float = 1800
) -> Rerun:
    """A rerun through the real CLI: `python -m bench.cli run --plugin P <params as flags> --out TMP`.

    The case runs with the torch thread count its row recorded (metric "threads" -> --threads).
    template (--rerun-cmd): a shell command with {python} {plugin} {flags} {profile} {run_opts} {out}
    ({run_opts}: "--threads N" and "--kernels SET" as recorded, or nothing); it must append the case's rows to {out}.
    """

    if template:
        try:  # every placeholder known, the braces balanced: said now, not when a slowdown needs a rerun
            template.format(python="", plugin="", flags="", profile="", run_opts="", out="")
        except (KeyError, IndexError, ValueError) as e:
            raise GateError(
                f"--rerun-cmd {template!r}: {type(e).__name__} {e}; its placeholders are "
                "{python} {plugin} {flags} {profile} {run_opts} {out} (write {{ }} for a literal brace)"
            ) from None

    def run(row: Row) -> list[Row]:
        own = workdir is None
        # named with this pid: a folder left by a SIGKILLed gate is removed by the next run (supervise.clean_stale_tmp)
        wd = Path(tempfile.mkdtemp(prefix=f"bench-regress-{os.getpid()}-")) if own else Path(workdir)  # type: ignore[arg-type]
        wd.mkdir(parents=True, exist_ok=True)
        out = wd / f"rerun-{os.getpid()}-{len(list(wd.iterdir()))}.jsonl"
        try:
            return _run(row, out)
        finally:
            if own:
                shutil.rmtree(wd, ignore_errors=True)

    def _run(row: Row, out: Path) -> list[Row]:
        flags = param_flags(row.params)
        profile = row.profile or "quick"
        th = row.value("threads")
        run_opts = ["--threads", str(th)] if isinstance(th, int) and not isinstance(th, bool) and th > 0 else []
        kset = (row.fingerprint.get("kernels") or {}).get("set")
        if kset in ("native", "portable"):  # the kernel set the row ran with (bench.kernels)
            run_opts += ["--kernels", str(kset)]
        if template:
            cmd: Any = template.format(
                python=shlex.quote(sys.executable),
                plugin=shlex.quote(row.plugin),
                flags=" ".join(shlex.quote(f) for f in flags),
                profile=shlex.quote(profile),
                run_opts=" ".join(run_opts),
                out=shlex.quote(str(out)),
            )
            shell = True
        else:
            cmd = [
                sys.executable,
                "-m",
                "bench.cli",
                "run",
                "--plugin",
                row.plugin,
                *flags,
                "--profile",
                profile,
                *run_opts,
                "--out",
                str(out),
                "--format",
                "none",
            ]
            shell = False
        shown = cmd if isinstance(cmd, str) else " ".join(shlex.quote(c) for c in cmd)
        click.echo(f"regress: confirming rerun: {shown}", err=True)
        return run_bench_process(cmd, out, "the confirming rerun", timeout, shell=shell, env=env)

    return run


def run_bench_process(
    cmd: str | list[str],
    out: Path,
    what: str,
    timeout: float | None,
    *,
    shell: bool = False,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> list[Row]:
    """One `bench run` in its own process session (the confirming rerun, an A/B run): its rows from `out`.
    A time limit or Ctrl-C kills its whole tree; a failure is a GateError that names `what` and the command."""
    from bench.results import ResultsError, load_rows

    shown = cmd if isinstance(cmd, str) else " ".join(shlex.quote(c) for c in cmd)
    try:
        p = subprocess.Popen(
            cmd,
            shell=shell,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    except OSError as e:
        raise GateError(f"{what} failed to start: {e}") from None
    try:
        stdout, stderr = p.communicate(timeout=timeout)
    except BaseException as e:  # time limit or Ctrl-C: leave no case process behind
        from bench.supervise import kill_tree

        kill_tree(p.pid)
        if isinstance(e, subprocess.TimeoutExpired):
            raise GateError(f"{what} passed its time limit of {timeout:g} s: {shown}") from None
        raise
    if p.returncode != 0:
        tail = "\n".join((stderr or stdout).strip().splitlines()[-5:])
        raise GateError(f"{what} exited {p.returncode}: {shown}\n{tail}")
    try:
        return load_rows([out])
    except ResultsError as e:
        raise GateError(f"{what} wrote no readable results: {e}") from None
