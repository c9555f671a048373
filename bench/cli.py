"""The `bench` command line (click). User errors: one clear line on stderr, exit 2."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from bench.contract import PROFILES
from bench.params import UsageError

# Options of `bench run` itself; plugin parameters must not reuse these names.
RUN_OPTIONS = ("plugin", "all", "profile", "out", "timeout", "seed", "threads", "device", "max-time", "format", "strict")


class BenchGroup(click.Group):
    """Turns known error types into clean messages and exit codes, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        from bench.discovery import DiscoveryError
        from bench.results import ResultsError

        try:
            return super().invoke(ctx)
        except (UsageError, ResultsError, DiscoveryError) as e:
            click.echo(f"error: {e}", err=True)
            ctx.exit(2)
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)
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


@click.group(cls=BenchGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="bench")
def main() -> None:
    """bench: measure the building blocks of LLM training and inference."""


def _profile_default() -> str:
    import torch

    return "gpu" if torch.cuda.is_available() else "quick"


@main.command("list")
@click.option("--plugin", "only", default=None, help="Show one plugin only.")
def list_cmd(only: str | None) -> None:
    """Installed plugins, their parameters and allowed values, and whether they can run here."""
    from tabulate import tabulate

    from bench.discovery import discover, get_plugin
    from bench.params import describe_params

    found = discover()
    if only:
        get_plugin(only, found)  # unknown name -> exit 2 with the closest names
    for name, f in found.items():
        if only and name != only:
            continue
        if f.plugin is None:
            click.echo(f"{name}  [{f.dist}: {f.target}]\n  cannot load: {f.load_error}\n")
            continue
        p = f.plugin
        try:
            why = p.available(p.Params())
        except Exception as e:
            why = f"available() failed: {e}"
        state = "available here" if not why else f"not available here: {why}"
        counts = ", ".join(f"{pr}: {len(p.grid(pr))} cases" for pr in PROFILES)
        click.echo(f"{name}  [{f.dist}: {f.target}]  {state}\n  {p.description}\n  profiles: {counts}")
        extra = p.describe()
        if extra:
            click.echo("  " + extra.replace("\n", "\n  "))
        rows = describe_params(p)
        if rows:
            click.echo(tabulate([list(r.values()) for r in rows], headers=list(rows[0].keys()), tablefmt="simple"))
        click.echo("")


@main.command(
    "run",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "allow_interspersed_args": True},
)
@click.option("--plugin", "plugins", multiple=True, help="Plugin to run (repeat for several). See `bench list`.")
@click.option("--all", "run_all", is_flag=True, help="Run every available plugin (the default suite).")
@click.option("--profile", type=click.Choice(PROFILES), default=None, help="Case grid: quick (CPU/CI), full, gpu. Default: gpu with CUDA, else quick.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Result file (JSON lines; appended). Default: results/runs/<device>-<what>-<run id>.jsonl")
@click.option("--timeout", type=click.FloatRange(min=1), default=None, help="Per-case time limit in seconds (default: the plugin's).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="torch threads per process (default: cores / ranks).")
@click.option("--device", type=click.Choice(["auto", "cpu"]), default="auto", show_default=True)
@click.option("--max-time", type=click.FloatRange(min=0.05), default=2.0, show_default=True, help="Time cap per timed measurement, seconds.")
@click.option("--format", "fmt", type=click.Choice(["terminal", "markdown", "csv", "none"]), default="terminal", show_default=True)
@click.option("--strict", is_flag=True, help="Exit 1 if any case ends oom/error/timeout.")
@click.argument("plugin_args", nargs=-1, type=click.UNPROCESSED)
def run_cmd(plugins: tuple[str, ...], run_all: bool, profile: str | None, out: Path | None, timeout: float | None,
            seed: int, threads: int | None, device: str, max_time: float, fmt: str, strict: bool,
            plugin_args: tuple[str, ...]) -> None:  # fmt: skip
    """Run plugins' cases; plugin parameters are flags: bench run --plugin fsdp --stage 3 --seq 512,1024"""
    from bench.discovery import discover, get_plugin
    from bench.params import expand_grid, parse_flags
    from bench.runner import Interrupted, RunOptions, default_out, new_run_id, run_plugin
    from bench.tables import render_rows

    found = discover()
    if run_all:
        if plugin_args:
            raise UsageError("plugin flags need a single --plugin, not --all")
        names = [n for n, f in found.items() if f.plugin is not None]
    elif plugins:
        names = list(plugins)
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
        for c in cases:
            why = p.validate(c)
            if why:
                raise UsageError(f"{name}: {why}")
        plan.append((p, cases))
    run_id = new_run_id()
    what = names[0] if len(names) == 1 else "suite"
    opts = RunOptions(profile=profile, out=out or default_out(run_id, what), timeout_s=timeout, seed=seed,
                      threads=threads, max_time_s=max_time, device=device, run_id=run_id)  # fmt: skip
    total = sum(len(c) for _, c in plan)
    click.echo(f"run {run_id}: {total} cases ({', '.join(f'{p.name}: {len(c)}' for p, c in plan)}), "
               f"profile {profile}, writing {opts.out}", err=True)  # fmt: skip
    rows: list[dict[str, Any]] = []
    interrupted = False
    for p, cases in plan:
        extra = p.describe()
        if extra:
            click.echo(f"{p.name}: {extra}", err=True)
        try:
            run_plugin(p, cases, opts, on_row=rows.append)  # rows as they land: an interrupt keeps them here too
        except (Interrupted, KeyboardInterrupt) as e:
            click.echo(f"\ninterrupted: {e}; finished rows are kept in {opts.out}", err=True)
            interrupted = True
            break
    if fmt != "none" and rows:
        pm = {p.name: tuple(getattr(p, "table_metrics", ()) or ()) for p, _ in plan}
        click.echo(render_rows(rows, fmt, plugin_metrics={k: v for k, v in pm.items() if v}))
    bad = [r for r in rows if r["status"] in ("oom", "error", "timeout")]
    click.echo(f"{len(rows)} rows written to {opts.out}" + (f"; {len(bad)} failed" if bad else ""), err=True)
    if interrupted:
        sys.exit(130)
    if strict and bad:
        sys.exit(1)


def latest_result() -> Path:
    runs = sorted(Path("results/runs").glob("*.jsonl"), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise UsageError("no results yet: run `bench run --plugin NAME` first, or pass a result file")
    return runs[-1]


@main.command("show")
@click.argument("results", nargs=-1, type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["terminal", "markdown", "csv"]), default="terminal", show_default=True)
@click.option("--plugin", default=None, help="Only this plugin's rows.")
@click.option("--metrics", default=None, help="Comma-separated metric names to show.")
@click.option("--all-metrics", is_flag=True, help="Show every metric (default: the plugin's preferred columns).")
def show_cmd(results: tuple[Path, ...], fmt: str, plugin: str | None, metrics: str | None, all_metrics: bool) -> None:
    """Print result tables. RESULTS: files or folders (default: the latest run)."""
    from bench.discovery import discover
    from bench.results import load_rows
    from bench.tables import render_rows

    rows = load_rows(results or [latest_result()])
    if plugin:
        rows = [r for r in rows if r["plugin"] == plugin]
    if not rows:
        raise UsageError("no rows to show" + (f" for plugin {plugin!r}" if plugin else ""))
    pm: dict[str, Any] = {}
    if not all_metrics and not metrics:
        try:
            pm = {n: tuple(getattr(f.plugin, "table_metrics", ()) or ()) for n, f in discover().items() if f.plugin}
            pm = {k: v for k, v in pm.items() if v}
        except Exception:
            pm = {}
    sel = [m.strip() for m in metrics.split(",")] if metrics else None
    click.echo(render_rows(rows, fmt, metrics=sel, plugin_metrics=pm))


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
    from bench import claims, compare, regress, report

    for mod in (compare, regress, claims, report):
        main.add_command(mod.command)


_register()

if __name__ == "__main__":  # pragma: no cover
    main()
