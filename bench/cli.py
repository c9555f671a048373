"""The `bench` command line (click). Errors map to exit codes in one place (BenchGroup): a
bench.errors.BenchError exits with its own code and one line on stderr, never a traceback."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import click

from bench.contract import PROFILES, RESERVED_FLAGS
from bench.errors import BenchError, UsageError
from bench.options import Finite

RUN_OPTIONS = RESERVED_FLAGS  # the names a plugin flag may not take (checked by discovery)
STARTED = time.time()  # `bench run --deadline S` counts from here, the command's own start-up included


class BenchGroup(click.Group):
    """Turns known error types into clean messages and exit codes, never a traceback; click's own
    usage errors become one line too."""

    def main(
        self,
        args: Any = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, False, **extra)
        except click.ClickException as e:
            hint = ""
            if isinstance(e, click.UsageError) and e.ctx is not None:
                hint = f" (see `{e.ctx.command_path} --help`)"
            click.echo(f"error: {e.format_message()}{hint}", err=True)
            sys.exit(e.exit_code)
        except click.Abort:
            click.echo("aborted", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BenchError as e:
            click.echo(f"error: {e}", err=True)
            ctx.exit(e.exit_code)
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)
        except MemoryError:  # what was written before stays (rows are on disk as each case ends)
            click.echo("error: out of memory: the inputs are too large for this machine's memory", err=True)
            ctx.exit(3)
        except BrokenPipeError:  # `bench show ... | head`: the reader left; not an error of ours
            try:
                sys.stdout = open(os.devnull, "w")
            except OSError:
                pass
            ctx.exit(0)
        except Exception as e:  # an internal failure: say so plainly; BENCH_DEBUG=1 shows the traceback
            if os.environ.get("BENCH_DEBUG"):
                raise
            click.echo(f"internal error: {type(e).__name__}: {e} (set BENCH_DEBUG=1 for the traceback)", err=True)
            ctx.exit(3)


def out_path(value: str | None) -> Path | None:
    """--out as given: an empty string is refused by name (Path('') would read as '.', a folder)."""
    if value is None:
        return None
    if not value.strip():
        raise click.BadParameter("an empty path; name a result file (e.g. --out results/runs/mine.jsonl)")
    return Path(value)


class RunCommand(click.Command):
    """`bench run`: a repeated option of its own would silently keep its last value: refused."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        own = {f"--{n}" for n in RESERVED_FLAGS} - {"--plugin"}
        seen: set[str] = set()
        for a in args:
            if a == "--":
                break
            name = a.split("=", 1)[0]
            if name in own:
                if name in seen:
                    raise click.UsageError(f"{name} given twice", ctx)
                seen.add(name)
        return super().parse_args(ctx, args)


@click.group(cls=BenchGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="llm-blocks-bench", prog_name="bench")
def main() -> None:
    """bench: measure the building blocks of LLM training and inference."""


def _profile_default() -> str:
    import torch

    return "gpu" if torch.cuda.is_available() else "quick"


@main.command("list")
@click.option("--plugin", "only", default=None, help="Show one plugin in full: parameters, claims, what it measures.")
def list_cmd(only: str | None) -> None:
    """Installed plugins, one line each (whether it can run here, cases per profile, claims);
    --plugin NAME: its parameters and allowed values."""
    from bench.discovery import discover, get_plugin
    from bench.params import describe_params
    from bench.tables import Footnotes, clip, rich_text, term_width, wrap

    width = term_width()
    notes = Footnotes()  # why a plugin cannot be used or is not available here, in full, below the table
    found = discover()
    if only and only not in found:
        get_plugin(only, found)  # unknown name -> exit 2 with the closest names
    body: list[list[str]] = []
    for name, f in found.items():
        if only and name != only:
            continue
        if f.plugin is None:
            problem = f"{name} [{f.dist}: {f.target}] cannot be used: {f.load_error}"
            body.append([name, f"cannot be used [{notes.ref(problem)}]", "", "", f"{f.dist}: {f.target}"])
            continue
        p = f.plugin
        try:
            why = p.available(p.Params())
            counts = "/".join(str(len(p.grid(pr))) for pr in PROFILES)
        except Exception as e:  # a plugin's own bug: one line, the others still listed
            body.append([name, f"broken [{notes.ref(f'{name}: {type(e).__name__}: {e}')}]", "", "", ""])
            continue
        if not only:
            here = "yes" if not why else f"no [{notes.ref(f'{name}: {why}')}]"
            body.append([name, here, counts, str(len(p.claims)), p.description])
            continue
        click.echo(
            wrap(
                f"{name}  [{f.dist}: {f.target}]  " + ("available here" if not why else f"not available here: {why}"),
                width,
            )
        )
        click.echo(wrap(p.description, width, "  "))
        click.echo(wrap(f"cases per profile: {', '.join(f'{pr}: {len(p.grid(pr))}' for pr in PROFILES)}", width, "  "))
        if p.claims:
            click.echo(wrap(f"claims: {', '.join(c.id for c in p.claims)}", width, "  "))
        extra = p.describe()
        if extra:
            click.echo(wrap(extra, width, "  "))
        rows = describe_params(p)
        if rows:
            header = list(rows[0].keys())
            click.echo(rich_text(header, [list(r.values()) for r in rows], width, wrap={3, 4}))
    if only and body:  # the one plugin asked for could not be loaded
        click.echo(notes.render(width, "problem"))
    elif body:
        header = ["plugin", "runs here", "cases " + "/".join(PROFILES), "claims", "what it measures"]
        used = sum(max(len(h), *(len(r[i]) for r in body)) + 2 for i, h in enumerate(header[:4]))
        body = [[*r[:4], clip(r[4], max(width - used, 20))] for r in body]
        click.echo(rich_text(header, body, width))
        if notes.items:
            click.echo(notes.render(width))
        click.echo(clip("bench list --plugin NAME: its parameters (flags of `bench run`), claims and notes", width))


def build_plan(
    plugins: tuple[str, ...],
    run_all: bool,
    profile: str | None,
    plugin_args: tuple[str, ...],
    machine: bool = True,
) -> tuple[list[str], str, list[tuple[Any, list[Any]]]]:
    """`bench run`'s plugins, profile and case plan [(plugin, cases)], every case validated (UsageError).
    machine=False: a plan for other machines (`bench slurm`): refusals about this machine are not made."""
    from bench.discovery import discover, get_plugin
    from bench.params import expand_grid, parse_flags

    found = discover()
    if run_all and plugins:
        raise UsageError("--all runs every plugin: give --all or --plugin NAME, not both")
    if run_all:
        if plugin_args:
            raise UsageError("plugin flags need a single --plugin, not --all")
        names = [n for n, f in found.items() if f.plugin is not None]
    elif plugins:
        names = list(dict.fromkeys(plugins))
    else:
        raise UsageError(f"name a plugin with --plugin NAME (installed: {', '.join(found) or 'none'}), or --all")
    if len(names) > 1 and plugin_args:
        raise UsageError("plugin flags need a single --plugin")
    profile = profile or _profile_default()
    # Parse and validate everything before anything launches.
    plan = []
    for name in names:
        p = get_plugin(name, found)
        overrides = parse_flags(p, list(plugin_args))
        cases = expand_grid(p, profile, overrides)
        plan.append((p, _valid_cases(p, cases, profile, bool(overrides), machine)))
    return names, profile, plan


@main.command(
    "run",
    cls=RunCommand,
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "allow_interspersed_args": True},
)
@click.option("--plugin", "plugins", multiple=True, help="Plugin to run (repeat for several). See `bench list`.")
@click.option("--all", "run_all", is_flag=True, help="Run every available plugin (the default suite).")
@click.option(
    "--profile",
    type=click.Choice(PROFILES),
    default=None,
    help="Case grid: quick (CPU/CI), full, gpu. Default: gpu with CUDA, else quick.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    callback=lambda ctx, param, v: out_path(v),
    default=None,
    help="Result file (JSON lines; appended). Default: results/runs/<device>-<what>-<run id>.jsonl",
)
@click.option(
    "--timeout", type=Finite(1, 86400), default=None, help="Per-case time limit in seconds (default: the plugin's)."
)
@click.option(
    "--deadline",
    type=Finite(1, 7 * 86400),
    default=None,
    help="Seconds from now by which the whole run ends: cases are cut to fit, those that cannot start are skipped rows.",
)
@click.option(
    "--plan",
    "plan_only",
    is_flag=True,
    help="Print every case with an estimate of its time (stated assumptions); run nothing.",
)
@click.option("--seed", type=click.IntRange(0, 2**31 - 1), default=0, show_default=True)
@click.option(
    "--threads",
    type=click.IntRange(min=1, max=4096),
    default=None,
    help="torch threads per process (default: cores / ranks).",
)
@click.option("--device", type=click.Choice(["auto", "cpu"]), default="auto", show_default=True)
@click.option(
    "--kernels",
    type=click.Choice(["native", "portable"]),
    default=None,
    help="CPU kernel set: native (the host's fastest) or portable (pinned to what every x86-64 host has, "
    "so fixed-seed figures match across hosts; slower; bench/kernels.py). Default: $BENCH_KERNELS, else native.",
)
@click.option(
    "--fixed-sizes",
    is_flag=True,
    help="No size probes: a case that would pick its size by timing this machine runs its smallest size "
    "(the same rows on every host; the CI gate's setting).",
)
@click.option(
    "--max-time",
    type=Finite(0.05, 3600),
    default=2.0,
    show_default=True,
    help="Time cap per timed measurement, seconds.",
)
@click.option(
    "--format", "fmt", type=click.Choice(["terminal", "markdown", "csv", "none"]), default="terminal", show_default=True
)
@click.option("--strict", is_flag=True, help="Exit 1 if any case ends oom/error/timeout.")
@click.option("--quiet", "-q", is_flag=True, help="No progress lines (the tables and the final line still print).")
@click.option("--detail", is_flag=True, help="Below the tables: the plugins' notes on how each figure was obtained.")
@click.option(
    "--nnodes",
    type=click.IntRange(1, 65536),
    default=1,
    show_default=True,
    help="Nodes every torchrun case spans: start the same `bench run` on each node (srun; see `bench slurm`).",
)
@click.option(
    "--nproc-per-node",
    type=click.IntRange(1, 1024),
    default=None,
    help="Ranks per node (default: the case's world size / --nnodes).",
)
@click.option(
    "--rdzv-endpoint",
    default=None,
    help="HOST:PORT of the first node, reachable from every node: its `bench run` hosts the run's store there and writes the result file.",
)
@click.option(
    "--rdzv-id", default=None, help="Rendezvous id (default: $SLURM_JOB_ID, else 'bench'); case C rendezvous as ID-C."
)
@click.option(
    "--rdzv-timeout",
    type=Finite(1, 86400),
    default=300.0,
    show_default=True,
    help="Seconds to wait for every node (to join the run, to reach each case).",
)
@click.option(
    "--all-nodes-local", is_flag=True, help="Testing: every node runs on this host (allows a loopback --rdzv-endpoint)."
)
@click.argument("plugin_args", nargs=-1, type=click.UNPROCESSED)
def run_cmd(
    plugins: tuple[str, ...],
    run_all: bool,
    profile: str | None,
    out: Path | None,
    timeout: float | None,
    deadline: float | None,
    plan_only: bool,
    seed: int,
    threads: int | None,
    device: str,
    kernels: str | None,
    fixed_sizes: bool,
    max_time: float,
    fmt: str,
    strict: bool,
    quiet: bool,
    detail: bool,
    nnodes: int,
    nproc_per_node: int | None,
    rdzv_endpoint: str | None,
    rdzv_id: str | None,
    rdzv_timeout: float,
    all_nodes_local: bool,
    plugin_args: tuple[str, ...],
) -> None:
    """Run plugins' cases; plugin parameters are flags: bench run --plugin fsdp --stage 3 --seq 512,1024"""
    from bench import kernels as kernel_sets

    try:  # first: every case process inherits the kernel set's variables, and torch has computed nothing yet
        kernel_sets.apply(kernels)
    except ValueError as e:
        raise UsageError(str(e)) from None
    from bench.results import check_writable
    from bench.runner import Interrupted, RunOptions, default_out, new_run_id, run_plugin
    from bench.tables import render_rows

    names, profile, plan = build_plan(plugins, run_all, profile, plugin_args)
    from bench import rendezvous

    ncfg = rendezvous.check_options(nnodes, nproc_per_node, rdzv_endpoint, rdzv_id, rdzv_timeout, all_nodes_local, plan)
    if plan_only:
        import torch

        from bench import plan as planner

        # the gpu profile is planned for a GPU wherever the plan is made (a CPU machine checks it too)
        dev = "cuda" if profile == "gpu" or (torch.cuda.is_available() and device != "cpu") else "cpu"
        planned = [c for p, cases in plan for c in planner.plan(p, cases, dev, timeout)]
        click.echo(f"plan: profile {profile} on {dev}")
        click.echo(planner.render(planned, deadline))
        return
    run_id = new_run_id()
    what = names[0] if len(names) == 1 else "suite"
    if out is not None:
        check_writable(out)
    nodes = None
    if ncfg is not None:  # several nodes: join the run's rendezvous; the writer's run id is everyone's
        nodes = rendezvous.start(ncfg, plan, profile, run_id, say=lambda m: click.echo(m, err=True))
        run_id = nodes.run_id
    out = out if out is not None else default_out(run_id, what)
    check_writable(out)
    from bench.supervise import clean_stale_tmp

    for d in clean_stale_tmp():  # left by a bench run / regress killed with SIGKILL
        click.echo(f"removed {d}: the temporary folder of a bench process that is gone", err=True)
    opts = RunOptions(
        profile=profile,
        out=out,
        timeout_s=timeout,
        seed=seed,
        threads=threads,
        max_time_s=max_time,
        device=device,
        fixed_sizes=fixed_sizes,
        run_id=run_id,
        deadline=STARTED + deadline if deadline else None,
        nodes=nodes,
    )
    total = sum(len(c) for _, c in plan)
    import torch

    from bench import plan as planner
    from bench.progress import Progress, hms

    dev = "cuda" if torch.cuda.is_available() and device != "cpu" else "cpu"
    estimates = [c.total_s for p, cases in plan for c in planner.plan(p, cases, dev, timeout)]
    opts.reporter = Progress(sys.stderr, total, estimates, quiet=quiet)
    opts.reporter.say(
        f"run {run_id}: {total} cases ({', '.join(f'{p.name}: {len(c)}' for p, c in plan)}), profile {profile}, "
        f"estimated {hms(sum(estimates))} (`--plan`: per case)"
    )
    opts.reporter.say(
        f"writing {opts.out if nodes is None or nodes.writes else 'no rows here (the node hosting the store writes them)'}"
    )
    rows: list[Any] = []
    walls: list[tuple[str, float, int]] = []
    interrupted = False
    t0 = time.time()
    for p, cases in plan:  # what each plugin's parameters mean: `bench list --plugin NAME`
        t = time.time()
        try:
            run_plugin(p, cases, opts, on_row=rows.append)  # rows as they land: an interrupt keeps them here too
        except (Interrupted, KeyboardInterrupt) as e:
            click.echo(f"\ninterrupted: {e}; finished rows (and their summary) are kept in {opts.out}", err=True)
            interrupted = True
        walls.append((p.name, time.time() - t, len(cases)))
        if interrupted:
            break
    if nodes is not None:
        nodes.close()
        if not nodes.writes:
            click.echo(
                f"this node writes no rows: the node hosting {nodes.cfg.endpoint} ({nodes.hosts.get(nodes.writer_index, '?')}) "
                "wrote every rank's rows to its --out",
                err=True,
            )
    if fmt != "none" and rows:
        pm = {p.name: p.table_metrics for p, _ in plan if p.table_metrics}
        click.echo(render_rows(rows, fmt, plugin_metrics=pm, detail=detail))
    bad = [r for r in rows if r.failed]
    if not quiet:
        walls_text = ", ".join(f"{name} {secs:.1f} s ({n} case{'' if n == 1 else 's'})" for name, secs, n in walls)
        from bench.tables import term_width, wrap

        click.echo(wrap(f"wall time: {time.time() - t0:.1f} s in all; {walls_text}", term_width()), err=True)
    click.echo(f"{len(rows)} rows written to {opts.out}" + (f"; {len(bad)} failed" if bad else ""), err=True)
    if interrupted:
        sys.exit(130)
    if strict and bad:
        sys.exit(1)


def _valid_cases(p: Any, cases: list[Any], profile: str, flagged: bool, machine: bool = True) -> list[Any]:
    """The grid's cases the plugin accepts. A flag is applied to every case of the grid; where it makes
    sense for only some (--fault on a grid of simulated and real cases), the others are dropped and
    said so, reason by reason. Without flags, or when no case is left, the first reason is the error."""
    bad: dict[str, list[Any]] = {}
    keep = []
    for c in cases:
        try:
            why = p.validate(c)
        except (OverflowError, ZeroDivisionError) as e:  # a value beyond the plugin's formulas: a usage error
            why = f"a parameter value is out of range ({type(e).__name__}: {e})"
        if why and not machine and "this machine" in why:  # another machine's limits (bench slurm): not ours
            why = None
        if why:
            bad.setdefault(why, []).append(c)
        else:
            keep.append(c)
    if not bad:
        return cases
    reasons = sorted(bad.items(), key=lambda kv: -len(kv[1]))  # the most common reason first
    if not flagged:
        raise UsageError(f"{p.name}: {next(iter(bad))}")
    if not keep:
        why = "; ".join(f"{w} ({len(cs)} case{'s' if len(cs) > 1 else ''})" for w, cs in reasons[:2])
        more = f"; and {len(reasons) - 2} other reasons" if len(reasons) > 2 else ""
        raise UsageError(f"{p.name}: no case of the {profile} grid fits these flags: {why}{more}")
    from bench.runner import case_label

    for why, cs in reasons[:2]:
        click.echo(
            f"{p.name}: dropped {len(cs)} of {len(cases)} cases of the {profile} grid the flags do not fit: {why} "
            f"(e.g. {case_label(cs[0])})",
            err=True,
        )
    if len(reasons) > 2:
        n = sum(len(cs) for _, cs in reasons[2:])
        click.echo(f"{p.name}: dropped {n} more cases for {len(reasons) - 2} other reasons", err=True)
    return keep


@main.command("summarize")
@click.argument("results", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    callback=lambda ctx, param, v: out_path(v),
    default=None,
    help="Append the summary rows here (default: to each input file).",
)
@click.option("--force", is_flag=True, help="Also for runs that already have summary rows (they are added again).")
def summarize_cmd(results: tuple[Path, ...], out: Path | None, force: bool) -> None:
    """Rebuild the plugins' summary rows (fits, ratios, claim evidence) from the case rows of a
    result file -- e.g. one cut short by an interrupt or a deadline."""
    from bench.discovery import discover
    from bench.results import ResultsError, append_rows, check_writable, read_rows, resolve
    from bench.runner import RunOptions, summary_rows

    found = discover()
    files = resolve(results)
    if out is not None:
        check_writable(out)
    written = 0
    nrows = 0
    for f in files:
        rows = read_rows(f)
        nrows += len(rows)
        dest = out or f
        if rows:
            check_writable(dest)
        groups: dict[tuple[str, str], list[Any]] = {}
        for r in rows:
            groups.setdefault((r.run_id, r.plugin), []).append(r)
        for (run_id, name), rs in groups.items():
            if any(not r.is_case for r in rs) and not force:
                click.echo(f"{f}: run {run_id} {name} already has summary rows (--force adds them again)", err=True)
                continue
            fp = found.get(name)
            if fp is None or fp.plugin is None:
                click.echo(f"{f}: run {run_id}: plugin {name} is not usable here; not summarized", err=True)
                continue
            opts = RunOptions(profile=rs[0].profile, run_id=run_id, out=dest)
            new = summary_rows(fp.plugin, rs, opts)
            for r in new:  # the summary describes the machine that measured the cases
                r.fingerprint = rs[0].fingerprint
            append_rows(dest, new)
            written += len(new)
            click.echo(
                f"{f}: run {run_id} {name}: {len(new)} summary rows from {sum(r.is_case for r in rs)} case rows -> {dest}",
                err=True,
            )
    if not nrows:
        raise ResultsError(f"{', '.join(map(str, results))}: no result rows")
    click.echo(f"{written} summary rows written")


@main.command("show")
@click.argument("results", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "--format", "fmt", type=click.Choice(["terminal", "markdown", "csv"]), default="terminal", show_default=True
)
@click.option("--plugin", default=None, help="Only this plugin's rows.")
@click.option("--metrics", default=None, help="Comma-separated metric names to show.")
@click.option("--all-metrics", is_flag=True, help="Show every metric (default: the plugin's preferred columns).")
@click.option("--detail", is_flag=True, help="Below the tables: the plugins' notes on how each figure was obtained.")
def show_cmd(
    results: tuple[Path, ...], fmt: str, plugin: str | None, metrics: str | None, all_metrics: bool, detail: bool
) -> None:
    """Print result tables. RESULTS: files or folders (default: the latest run)."""
    from bench.discovery import discover
    from bench.results import latest_or_given, load_rows
    from bench.tables import render_rows

    rows = load_rows(latest_or_given(results), nonempty=True, samples=False)  # a table shows no raw samples
    if plugin:
        rows = [r for r in rows if r.plugin == plugin]
    if not rows:
        raise UsageError("no rows to show" + (f" for plugin {plugin!r}" if plugin else ""))
    pm: dict[str, Any] = {}
    if not all_metrics and not metrics:
        pm = {n: f.plugin.table_metrics for n, f in discover().items() if f.plugin and f.plugin.table_metrics}
    sel = [m.strip() for m in metrics.split(",")] if metrics else None
    click.echo(render_rows(rows, fmt, metrics=sel, plugin_metrics=pm, detail=detail))


@main.command("env")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def env_cmd(as_json: bool) -> None:
    """The machine fingerprint recorded with every result row."""
    from bench.fingerprint import fingerprint

    fp = fingerprint()
    if as_json:
        click.echo(json.dumps(fp, indent=2, sort_keys=True))
        return
    for k, v in fp.items():
        click.echo(f"{k:14s} {json.dumps(v) if isinstance(v, (dict, list)) else v}")


def _register() -> None:
    # Each command lives in its own module and exposes `command`; heavy imports stay inside it.
    from bench import claims, compare, regress, report, slurm

    for mod in (compare, regress, claims, report, slurm):
        main.add_command(mod.command)


_register()

if __name__ == "__main__":  # pragma: no cover
    main()
