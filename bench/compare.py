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
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from bench.errors import UsageError
from bench.regress import Side
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


def _plugins() -> dict[str, Any]:
    from bench.discovery import discover

    return {n: f.plugin for n, f in discover().items() if f.plugin}


def _defining(plugins: dict[str, Any], r: Row) -> list[str]:
    """The parameters and labels that define r's case (the plugin's case_keys; all of them by default)."""
    p = plugins.get(r.plugin)
    names = p.case_keys(r.kind, r.params, r.labels) if p is not None else None
    return list(dict.fromkeys(names if names is not None else [*r.params, *r.labels]))


def paired(inputs: list[Input], plugins: dict[str, Any]) -> tuple[list[dict[str, Side]], dict[str, dict[str, Any]]]:
    """Per input: pairing key -> Side, and key -> the fields it pairs on. A key holds the plugin,
    the kind and the case's defining fields that every input's rows of that plugin and kind have
    (a field an older file lacks is not used, so older files pair too)."""

    def fields_of(r: Row) -> set[str]:
        return {*r.params, *r.labels}

    present: dict[tuple[str, str], list[set[str]]] = {}
    for inp in inputs:
        names: dict[tuple[str, str], set[str]] = {}
        for r in inp.rows:
            names.setdefault((r.plugin, r.kind), set()).update(fields_of(r))
        for pk, n in names.items():
            present.setdefault(pk, []).append(n)
    common = {pk: set.intersection(*ns) for pk, ns in present.items()}
    out: list[dict[str, Side]] = []
    fields: dict[str, dict[str, Any]] = {}
    for inp in inputs:
        g: dict[str, Side] = {}
        for r in inp.rows:
            f = {k: r.get(k) for k in _defining(plugins, r) if k in common[(r.plugin, r.kind)]}
            key = json.dumps({"plugin": r.plugin, "kind": r.kind, "case": f}, sort_keys=True, default=str)
            fields.setdefault(key, f)
            if key in g:
                g[key].rows.append(r)
                g[key].row = r
            else:
                g[key] = Side(r, [r])
        out.append(g)
    return out, fields


def speed_metric(names: Sequence[str], plugin_normalised: Sequence[str] = ()) -> str | None:
    """The metric a row's speed ratio uses: the first throughput (higher is better; not a
    normalised share like mfu), else the first timing."""
    from bench.regress_rules import _HIGHER, is_timing_name

    skip = {*CORE_NORMALISED, *plugin_normalised}
    thr = [m for m in names if _HIGHER.search(m) and m not in skip and "speedup" not in m]
    return thr[0] if thr else next((m for m in names if is_timing_name(m)), None)


def _speed(side: Row, other: Row, m: str) -> float | None:
    """other's speed over side's in metric m (>1: other is faster)."""
    from bench.regress_rules import is_timing_name
    from bench.tables import num

    a, b = num(side.value(m)), num(other.value(m))
    if not a or not b or a <= 0 or b <= 0:
        return None
    return a / b if is_timing_name(m) else b / a


def _unpaired_reason(f: dict[str, Any], others: list[dict[str, Any]]) -> list[str] | None:
    """Why a case of one input has no partner in another: the fields in which the nearest case
    there differs (None: that input has no rows of this plugin and kind)."""
    if not others:
        return None
    best = max(others, key=lambda o: sum(o.get(k) == v for k, v in f.items()))
    return [k for k, v in f.items() if best.get(k) != v]


def build(
    inputs: list[Input],
    metrics: Sequence[str] | None = None,
    all_metrics: bool = False,
    plugin: str | None = None,
    long_headers: bool = False,
    preferred: dict[str, tuple[str, ...]] | None = None,
) -> list[tuple[str, list[str], list[list[str]], dict[str, Any]]]:
    """Tables, one per (plugin, kind): (caption, header, body, info). Rows pair on the case's
    defining fields (paired()). Input columns are headed A, B, ... (the legend above the tables
    names each), or 'A: <device> <run id>' with long_headers. info: const (fields equal in every
    row), one_sided (rows, and why by reason), speed (per paired row: B's speed over A's), lines
    (per body line: whether its case is in every input)."""
    from bench.regress import GateConfig, compare_samples, direction, is_timing_name
    from bench.tables import fmt_value

    plugins = _plugins()
    idx, fields = paired(inputs, plugins)
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
        fkeys = list(dict.fromkeys(f for k in keys for f in fields[k]))
        varying = [
            f for f in fkeys if len({json.dumps(fields[k].get(f), sort_keys=True, default=str) for k in keys}) > 1
        ]
        const = {f: fields[keys[0]].get(f) for f in fkeys if f not in varying}
        all_rows = [g[k].row for k in keys for g in idx if k in g]
        mnames = _metrics_for(all_rows, metrics, all_metrics, (preferred or {}).get(plug, ()))
        pnorm = plugins[plug].normalised if plug in plugins else ()
        header = [*varying, "metric [unit]"]
        for i, inp in enumerate(inputs):
            header.append(f"{inp.name}: {inp.label}" if long_headers else inp.name)
            if i:
                header.append(f"{inp.name}/A")
        header.append("only in")
        body: list[list[str]] = []
        in_all: list[bool] = []
        reasons: dict[str, int] = {}
        unpaired: dict[str, list[list[str] | None]] = {}  # "A" -> per row: the fields its nearest partner differs in
        speeds: list[tuple[str, float]] = []
        one_sided = 0
        for k in keys:
            have = [k in g for g in idx]
            only = "" if all(have) else ",".join(inp.name for inp, h in zip(inputs, have) if h)
            if only:
                one_sided += 1
                missing = next(i for i, h in enumerate(have) if not h)
                others = [fields[o] for o in idx[missing] if o in keys]
                unpaired.setdefault(only, []).append(_unpaired_reason(fields[k], others))
            case = [fmt_value(fields[k].get(f)) for f in varying]
            sides = [g.get(k, None) for g in idx]
            names = [m for m in mnames if any(s and m in s.row.metrics for s in sides)]
            if not only and sides[0] is not None and sides[1] is not None:
                a, b = sides[0].row, sides[1].row
                if a.ok and b.ok:
                    sm = speed_metric([m for m in mnames if m in a.metrics and m in b.metrics], pnorm)
                    sp = _speed(a, b, sm) if sm else None
                    if sp is not None and sm is not None:
                        speeds.append((sm, sp))
                else:
                    bad = "/".join(sorted({s.row.status for s in sides if s and not s.row.ok}))
                    why = f"paired, {bad} on one side"
                    reasons[why] = reasons.get(why, 0) + 1
            if not names:  # a row without the selected metrics (a failed case): show its status
                line = [*case, "status"]
                for i, s in enumerate(sides):
                    line.append(s.row.status if s else "-")
                    if i:
                        line.append("")
                body.append([*line, only])
                in_all.append(not only)
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
                in_all.append(not only)
        info = {
            "const": const,
            "one_sided": one_sided,
            "rows": len(keys),
            "reasons": reasons,
            "unpaired": unpaired,
            "speeds": speeds,
            "in_all": in_all,
            "plugin": plug,
            "kind": kind,
        }
        out.append((f"{plug}" + (" (summary)" if kind == "summary" else ""), header, body, info))
    return out


def headline(info: dict[str, Any], inputs: list[Input]) -> str:
    """One plugin's answer: B's speed over A's (geometric mean over the paired rows, and the metrics
    it rests on), then how many rows could not be paired and why."""
    import math

    from bench.tables import short_num

    a, b = inputs[0].name, inputs[1].name if len(inputs) > 1 else "?"
    sp = [x for _, x in info["speeds"]]
    what = f"{info['plugin']}" + (" summary" if info["kind"] == "summary" else "")
    if sp:
        g = math.exp(sum(math.log(x) for x in sp) / len(sp))
        used = ", ".join(dict.fromkeys(m for m, _ in info["speeds"]))
        faster = f"{b} {g:.3g}x as fast as {a}" + (f" ({a} {1 / g:.3g}x as fast as {b})" if g < 1 else "")
        text = (
            f"{what}: {faster}: geometric mean of the speed ratios ({used}) over {len(sp)} paired rows, "
            f"range {short_num(min(sp))}-{short_num(max(sp))}"
        )
    else:
        paired_n = info["rows"] - info["one_sided"]
        text = f"{what}: {paired_n} paired rows, none with a speed metric on both sides"
    why = [f"{n} {r}" for r, n in info["reasons"].items()]
    for only, diffs in info["unpaired"].items():
        if any(d is None for d in diffs):
            why.append(f"{len(diffs)} only in {only} (no such rows elsewhere)")
        else:
            fields = ", ".join(dict.fromkeys(f for d in diffs for f in d or ()))
            why.append(f"{len(diffs)} only in {only} (the nearest case elsewhere differs in {fields})")
    return text + ("; not compared: " + "; ".join(why) if why else "")


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
    detail: bool = False,
) -> str:
    from bench.tables import fmt_value, term_width, titled, wrap
    from bench.tables import render as render_table

    tables = build(inputs, metrics, all_metrics, plugin, long_headers=fmt == "csv", preferred=preferred_metrics())
    if not tables:
        raise UsageError("no rows to compare" + (f" for plugin {plugin!r}" if plugin else ""))
    if fmt == "terminal":
        return _render_terminal(inputs, tables, detail, term_width())
    parts = []
    if fmt != "csv":
        for inp in inputs:
            parts.append(
                f"{inp.name} = {inp.path}: {inp.label} ({len(inp.rows)} rows; machine "
                f"{', '.join(sorted(map(str, inp.machines)))})"
            )
        parts.append(machine_note(inputs))
        if fmt == "markdown":  # paths, device labels and run ids come from the inputs: text, never markup
            from bench.tables import md_escape

            parts = [md_escape(p) + "  " for p in parts]
        parts.append(
            "marks on timing ratios (raw samples, Mann-Whitney + min effect): + worse, - better, ~ within noise, ? undecided\n"
        )
        parts += [f"- {headline(info, inputs)}" for *_, info in tables] + [""]
    for cap, header, body, info in tables:
        const = ", ".join(f"{k}={fmt_value(v)}" for k, v in info["const"].items())
        caption = cap + (f" | fixed: {const}" if const else "")
        if info["one_sided"]:
            caption += f" | {info['one_sided']} of {info['rows']} rows not in every input (see 'only in')"
        parts.append(titled(caption, render_table(header, body, fmt), fmt))
    _ = wrap
    return "\n".join(parts)


def _render_terminal(inputs: list[Input], tables: list[Any], detail: bool, width: int) -> str:
    """Within the terminal's width: the inputs, a headline per plugin (speed ratio, what did not
    pair), then per plugin one line per paired case: its speed metric in every input with the
    ratio, then the ratios of its other metrics as far as the width allows (rows found in one
    input only: --detail)."""
    from bench.tables import Footnotes, clip, fit_table, rich_text, short_num, wrap

    def cell(text: str) -> str:
        head, _, mark = text.partition(" ")
        try:
            return short_num(float(head)) + (f" {mark}" if mark else "")
        except ValueError:
            return text

    parts = [clip(f"{inp.name} = {inp.path}: {inp.label} ({len(inp.rows)} rows)", width) for inp in inputs]
    parts.append(wrap(machine_note(inputs), width))
    parts.append("\nheadline (speed: a throughput's ratio, or a time's inverse ratio):")
    parts += [wrap(headline(info, inputs), width, "  ")[2:] for *_, info in tables]
    notes = Footnotes()
    nin = len(inputs)
    ncols = nin * 2 - 1
    last = inputs[-1].name
    for cap, header, body, info in tables:
        nvar = len(header) - ncols - 2
        cases: dict[tuple[str, ...], list[list[str]]] = {}
        for b, ok in zip(body, info["in_all"]):
            if ok or detail:
                cases.setdefault((*b[:nvar], b[-1]), []).append(b)
        if not cases:
            continue
        extra: list[str] = []  # metrics shown as a ratio column of their own
        lines = []
        for case, bs in cases.items():
            names = [b[nvar].split(" [")[0] for b in bs]
            sm = speed_metric(names) or names[0]
            main = bs[names.index(sm)]
            line = {"case": " ".join(v for v in case[:-1] if v) or "-", "metric": main[nvar]}
            line.update({f"v{i}": cell(c) for i, c in enumerate(main[nvar + 1 : nvar + 1 + ncols])})
            for n, b in zip(names, bs):
                if n != sm and nin == 2:
                    extra += [n] if n not in extra else []
                    line[n] = cell(b[nvar + 3])
            line["only"] = case[-1]
            lines.append(line)
        hdr = [clip(", ".join(header[:nvar]) or "case", 40), "metric [unit]", *header[nvar + 1 : nvar + 1 + ncols]]
        keys = ["case", "metric", *(f"v{i}" for i in range(ncols))]
        if detail:
            hdr.append("only in")
            keys.append("only")
        hdr += [f"{n}\n{last}/A" for n in extra]
        keys += extra
        # the case column takes at most 40 characters (rich ends longer ones in an ellipsis)
        rows = [[clip(ln["case"], 40), *(ln.get(k, "") for k in keys[1:])] for ln in lines]
        kept, dropped = fit_table(hdr, rows, width, len(keys) - len(extra))
        if dropped:
            notes.ref(
                f"{cap}: ratios not shown at {width} columns: {', '.join(hdr[i].split(chr(10))[0] for i in dropped)}"
            )
        hdr = [hdr[i] for i in kept]
        rows = [[r[i] for i in kept] for r in rows]
        const = ", ".join(f"{k}={v}" for k, v in info["const"].items())
        title = f"== {cap}: {len(rows)} cases" + (f" | fixed: {const}" if const else "")
        right = set(range(2, len(hdr)))
        table = rich_text(hdr, rows, width, right=right, fixed=set(range(1, len(hdr))))
        parts.append("\n" + wrap(title, width) + "\n" + table)
    notes.ref(
        f"B/A etc.: the later input's value over A's; marks on timing ratios (raw samples, Mann-Whitney + "
        f"min effect): {', '.join(f'{v} {k}' for k, v in MARKS.items())}"
    )
    if not detail:
        notes.ref("cases in one input only are counted in the headline; --detail lists them")
    parts.append("\n" + notes.render(width))
    return "\n".join(parts)


def export(inputs: list[Input], out: Path) -> list[str]:
    """Each input as a pytest-benchmark file: OUT itself (one input, OUT ending .json) or OUT/NNNN_<label>.json."""
    from bench.pytest_benchmark_io import write_pytest_benchmark

    msgs = []
    single = len(inputs) == 1 and out.suffix == ".json"
    check_export(out, single)
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


def check_export(out: Path, single: bool) -> None:
    """Before anything is written: OUT can take the export (a new or pytest-benchmark .json file for one
    input, else a folder); an existing file of another kind is never overwritten."""
    from bench.pytest_benchmark_io import read_pb
    from bench.results import ResultsError, check_creatable

    flag = "--export-pytest-benchmark"
    if not out.exists():
        check_creatable(out, flag)
        return
    if not single:
        if not out.is_dir():
            raise UsageError(
                f"{flag} {out}: exists and is not a folder (several inputs are written as OUT/NNNN_<label>.json)"
            )
        if not os.access(out, os.W_OK | os.X_OK):
            raise UsageError(f"{flag} {out}: the folder is not writable")
        return
    try:
        ours = out.is_file() and read_pb(out) is not None
    except ResultsError:
        ours = False
    if not ours:
        raise UsageError(f"{flag} {out}: exists and is not a pytest-benchmark file; refusing to overwrite it")
    if not os.access(out, os.W_OK) or not os.access(out.parent, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {out}: not writable")


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
@click.option("--detail", is_flag=True, help="Terminal: also the rows found in one input only.")
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
    detail: bool,
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
    click.echo(render(ins, fmt, sel, all_metrics, plugin, detail))
