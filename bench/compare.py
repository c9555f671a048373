"""`bench compare A B [C...]`: result sets side by side -- across GPUs, machines and runs.

Rows match on plugin + params + labels + kind (Row.key). One line per matched row and metric;
one column group per input (labelled by device and run id), with the ratio to the first input.
Rows present in only some inputs are listed (column "only in"), never dropped. The metrics shown
by default are each plugin's table_metrics and its normalised ones (Plugin.normalised: bytes per
parameter, ratios), beside the core's normalised mfu (% of the device's dense peak) and pct_matmul
(% of the device's own measured matmul): those compare fairly across devices where raw times and
TFLOP/s do not.

A ratio of two timings with raw samples on both sides carries a mark from regress's rule
(Mann-Whitney p < 0.01 AND a change beyond the noise-adapted minimum effect):
  + worse, - better, ~ within noise, ? undecided.
Across different machines (fingerprint machine_id) this is a comparison, never a regression;
the output says so. `bench regress` is the gate.

Inputs are bench JSON lines (files or folders) or pytest-benchmark JSON files; one folder
holding several runs is split by run id. --export-pytest-benchmark writes each input in
pytest-benchmark's format (`pytest-benchmark compare FILE` reads it).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from bench.errors import UsageError
from bench.rows import Row

CORE_NORMALISED = ("mfu", "pct_matmul")  # bench/flops.py: % of the dense peak, % of the measured matmul
MARKS = {"slower": "+", "faster": "-", "same": "~", "ambiguous": "?"}


@dataclass
class Input:
    name: str  # A, B, C ...
    path: str
    rows: list[Row]

    @property
    def label(self) -> str:
        """Device label + run id, e.g. 'h100-80gb-hbm3 20250101-120000-ab12cd'."""
        devs = list(dict.fromkeys(r.device for r in self.rows))
        runs = list(dict.fromkeys(r.run_id for r in self.rows))
        run = runs[0] + (f"+{len(runs) - 1}" if len(runs) > 1 else "")
        return f"{'/'.join(devs[:2])} {run}"

    @property
    def machines(self) -> set[str | None]:
        return {r.machine_id for r in self.rows}


def load_inputs(paths: Sequence[Path]) -> list[Input]:
    from bench.pytest_benchmark_io import load_any

    loaded = [(str(p), load_any([p])) for p in paths]
    if len(loaded) == 1:  # one folder of several runs: one column group per run
        path, rows = loaded[0]
        runs = list(dict.fromkeys(r.run_id for r in rows))
        if len(runs) > 1:
            loaded = [(f"{path} (run {rid})", [r for r in rows if r.run_id == rid]) for rid in runs]
    return [Input(chr(ord("A") + i) if i < 26 else f"I{i}", p, rows) for i, (p, rows) in enumerate(loaded)]


def _numeric(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _metrics_for(
    sides: list[Row], wanted: Sequence[str] | None, all_metrics: bool, preferred: Sequence[str] = ()
) -> list[str]:
    from bench.regress import is_meta, samples_key

    present: list[str] = []
    for r in sides:
        for k, m in r.metrics.items():
            if k not in present and _numeric(m.value) and not is_meta(k):
                present.append(k)
    if wanted:
        return [m for m in wanted if m in present]
    if all_metrics:
        return present
    from bench.regress import is_timing_name

    # the plugin's own choice, then every timing with raw samples, then the core's normalised columns
    timed = [m for m in present if is_timing_name(m) and any(samples_key(r, m) for r in sides)]
    chosen = [m for m in dict.fromkeys([*preferred, *timed, *CORE_NORMALISED]) if m in present]
    return chosen or present


def preferred_metrics() -> dict[str, tuple[str, ...]]:
    """Per installed plugin: its table metrics, then its normalised ones (what compare shows by default)."""
    from bench.discovery import discover

    return {
        n: tuple(dict.fromkeys([*f.plugin.table_metrics, *f.plugin.normalised]))
        for n, f in discover().items()
        if f.plugin
    }


def normalised_names() -> list[str]:
    from bench.discovery import discover

    names = list(CORE_NORMALISED)
    for f in discover().values():
        names += [m for m in (f.plugin.normalised if f.plugin else ()) if m not in names]
    return names


def build(
    inputs: list[Input],
    metrics: Sequence[str] | None = None,
    all_metrics: bool = False,
    plugin: str | None = None,
    long_headers: bool = False,
    preferred: dict[str, tuple[str, ...]] | None = None,
) -> list[tuple[str, list[str], list[list[str]], dict[str, Any]]]:
    """Tables, one per (plugin, kind): (caption, header, body, info). Input columns are headed
    A, B, ... (the legend above the tables names each), or 'A: <device> <run id>' with long_headers."""
    from bench.regress import GateConfig, compare_samples, direction, group, is_timing_name
    from bench.tables import fmt_value

    idx = [group(inp.rows) for inp in inputs]
    order: list[str] = []
    for g in idx:
        order.extend(k for k in g if k not in order)
    groups: dict[tuple[str, str], list[str]] = {}
    for k in order:
        r = next(g[k].row for g in idx if k in g)
        if plugin and r.plugin != plugin:
            continue
        groups.setdefault((r.plugin, r.kind), []).append(k)
    cfg = GateConfig()
    out = []
    for (plug, kind), keys in groups.items():
        reps = [next(g[k].row for g in idx if k in g) for k in keys]
        pkeys = list(dict.fromkeys(p for r in reps for p in r.params))
        varying = [
            p for p in pkeys if len({json.dumps(r.params.get(p), sort_keys=True, default=str) for r in reps}) > 1
        ]
        const = {p: reps[0].params.get(p) for p in pkeys if p not in varying}
        lkeys = list(dict.fromkeys(lk for r in reps for lk in r.labels))
        all_rows = [g[k].row for k in keys for g in idx if k in g]
        mnames = _metrics_for(all_rows, metrics, all_metrics, (preferred or {}).get(plug, ()))
        header = varying + lkeys + ["metric [unit]"]
        for i, inp in enumerate(inputs):
            header.append(f"{inp.name}: {inp.label}" if long_headers else inp.name)
            if i:
                header.append(f"{inp.name}/A")
        header.append("only in")
        body: list[list[str]] = []
        one_sided = 0
        for k, rep in zip(keys, reps):
            have = [k in g for g in idx]
            only = "" if all(have) else ",".join(inp.name for inp, h in zip(inputs, have) if h)
            one_sided += bool(only)
            case = [fmt_value(rep.params.get(p)) for p in varying]
            case += [fmt_value(rep.labels.get(lk)) for lk in lkeys]
            sides = [g.get(k, None) for g in idx]
            names = [m for m in mnames if any(s and m in s.row.metrics for s in sides)]
            if not names:  # a row without the selected metrics (a failed case): show its status
                line = [*case, "status"]
                for i, s in enumerate(sides):
                    line.append(s.row.status if s else "-")
                    if i:
                        line.append("")
                body.append([*line, only])
                continue
            for m in names:
                ref = sides[0].row.metrics.get(m) if sides[0] else None
                unit = next((s.row.metrics[m].unit for s in sides if s and m in s.row.metrics), "")
                line = [*case, f"{m} [{unit}]" if unit and len(unit) <= 24 else m]
                a_val = ref.value if ref else None
                for i, s in enumerate(sides):
                    mm = s.row.metrics.get(m) if s else None
                    v = mm.value if mm else None
                    line.append(fmt_value(v) if s and s.row.ok else (s.row.status if s else "-"))
                    if i:
                        ratio = ""
                        if isinstance(v, (int, float)) and isinstance(a_val, (int, float)) and _numeric(v) and a_val:
                            ratio = f"{v / a_val:.3g}"
                            if is_timing_name(m) and sides[0] is not None and s is not None:
                                xa, xb = sides[0].samples(m), s.samples(m)
                                if xa and xb:
                                    tr = compare_samples(xa, xb, direction(m, mm) or "lower", cfg)
                                    ratio += " " + MARKS[tr.verdict]
                        line.append(ratio)
                body.append([*line, only])
        info = {"const": const, "one_sided": one_sided, "rows": len(keys)}
        out.append((f"{plug}" + (" (summary)" if kind == "summary" else ""), header, body, info))
    return out


def machine_note(inputs: list[Input]) -> str:
    ids = [inp.machines for inp in inputs]
    flat = set().union(*ids)
    if len(flat) <= 1:
        return (
            f"all inputs ran on one machine (machine_id {next(iter(flat), None)}): "
            "`bench regress --baseline A --current B` gates the differences"
        )
    return (
        "DIFFERENT MACHINES ("
        + "; ".join(f"{inp.name}: {', '.join(sorted(map(str, m)))}" for inp, m in zip(inputs, ids))
        + "): timing differences are a comparison across machines, not a regression. "
        "Compare across devices with the normalised columns: " + ", ".join(normalised_names()) + "."
    )


def render(
    inputs: list[Input],
    fmt: str = "terminal",
    metrics: Sequence[str] | None = None,
    all_metrics: bool = False,
    plugin: str | None = None,
) -> str:
    from bench.tables import fmt_value, titled
    from bench.tables import render as render_table

    parts = []
    if fmt != "csv":
        for inp in inputs:
            parts.append(
                f"{inp.name} = {inp.path}: {inp.label} ({len(inp.rows)} rows; machine "
                f"{', '.join(sorted(map(str, inp.machines)))})"
            )
        parts.append(machine_note(inputs))
        parts.append(
            "marks on timing ratios (raw samples, Mann-Whitney + min effect): + worse, - better, ~ within noise, ? undecided\n"
        )
    tables = build(inputs, metrics, all_metrics, plugin, long_headers=fmt == "csv", preferred=preferred_metrics())
    if not tables:
        raise UsageError("no rows to compare" + (f" for plugin {plugin!r}" if plugin else ""))
    for cap, header, body, info in tables:
        const = ", ".join(f"{k}={fmt_value(v)}" for k, v in info["const"].items())
        caption = cap + (f" | fixed: {const}" if const else "")
        if info["one_sided"]:
            caption += f" | {info['one_sided']} of {info['rows']} rows not in every input (see 'only in')"
        parts.append(titled(caption, render_table(header, body, fmt), fmt))
    return "\n".join(parts)


def export(inputs: list[Input], out: Path) -> list[str]:
    """Each input as a pytest-benchmark file: OUT itself (one input, OUT ending .json) or OUT/NNNN_<label>.json."""
    from bench.pytest_benchmark_io import write_pytest_benchmark

    msgs = []
    single = len(inputs) == 1 and out.suffix == ".json"
    for i, inp in enumerate(inputs, 1):
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", inp.label).strip("-")
        path = out if single else out / f"{i:04d}_{slug}.json"
        n, skipped = write_pytest_benchmark(inp.rows, path)
        msgs.append(
            f"wrote {path}: {n} benchmarks"
            + (
                f"; {skipped} rows without timing samples left out (pytest-benchmark holds timings only)"
                if skipped
                else ""
            )
        )
    return msgs


@click.command("compare")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--format", "fmt", type=click.Choice(["terminal", "markdown", "csv"]), default="terminal", show_default=True
)
@click.option(
    "--metrics",
    default=None,
    help="Comma-separated metric names (default: times, throughput, the normalised "
    "columns mfu/pct_matmul/bytes_per_param, memory, losses -- those present).",
)
@click.option("--all-metrics", is_flag=True, help="Every numeric metric.")
@click.option("--plugin", default=None, help="Only this plugin's rows.")
@click.option(
    "--export-pytest-benchmark",
    "export_to",
    type=click.Path(path_type=Path),
    default=None,
    metavar="OUT",
    help="Also write each input in pytest-benchmark's JSON format (stats from the raw samples, `data` "
    "kept): OUT/0001_<label>.json, ...; with one input, OUT may be a .json file. Read them with "
    "`pytest-benchmark compare OUT/*.json`.",
)
def command(
    inputs: tuple[Path, ...],
    fmt: str,
    metrics: str | None,
    all_metrics: bool,
    plugin: str | None,
    export_to: Path | None,
) -> None:
    """Compare result sets side by side: INPUTS are bench results (files/folders) or pytest-benchmark JSON files.

    \b
    Rows match on plugin + params + labels; one column group per input (device + run id) with the
    ratio to the first (A); rows missing from an input are listed in 'only in'. Different machines
    are compared, never called a regression (use `bench regress` on one machine to gate).
    """
    ins = load_inputs(inputs)
    for inp in ins:
        if not inp.rows:
            raise UsageError(f"{inp.path}: no rows")
    if export_to is not None:
        for m in export(ins, export_to):
            click.echo(m, err=True)
        if len(ins) < 2:
            return
    elif len(ins) < 2:
        raise UsageError("compare needs two or more inputs (or one folder holding several runs)")
    sel = [m.strip() for m in metrics.split(",") if m.strip()] if metrics else None
    click.echo(render(ins, fmt, sel, all_metrics, plugin))
