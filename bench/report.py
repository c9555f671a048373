"""`bench report RESULTS... -o DIR`: DIR/report.md (PNG files beside it) and DIR/report.html
(self-contained: the same PNGs embedded as base64 data URIs; no external links).

Plots (matplotlib, Agg), each with the table of what it shows underneath; a plot whose
plugin has no rows is skipped with a line saying so:
  memory        fsdp/ddp rows: per-rank model states (params/grads/optimizer bytes) + activations
                and temporaries at peak, stacked, per stage x world size; ZeRO formula marked
  attention     time_ms and extra_mib vs seq per backend, log-log, fitted slopes in the legend
  precision     samples["loss"] per step, one curve per dtype / scaler setting
  quantization  bytes_per_param and rel_error per scheme
  scaling       final_loss vs params (N) and tokens (D), log-log, fitted exponents
Then the claims table (bench claims) for the same rows.
Metric and parameter names are discovered from the rows (the names of the brief first).
"""
from __future__ import annotations

import base64
import html
import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import click

from bench.tables import fmt_value

Table = tuple[str, list[str], list[list[str]]]  # (title, header, body)


@dataclass
class Section:
    title: str
    anchor: str
    png: str | None = None  # file name inside the report folder
    caption: str = ""
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Row helpers (defensive: names are looked up, never assumed)


def _f(v: Any) -> float | None:
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


def metric(row: dict[str, Any], *names: str) -> float | None:
    """First numeric metric among names."""
    for n in names:
        m = (row.get("metrics") or {}).get(n)
        if isinstance(m, dict):
            v = _f(m.get("value"))
            if v is not None:
                return v
    return None


def metric_source(row: dict[str, Any], *names: str) -> str | None:
    for n in names:
        m = (row.get("metrics") or {}).get(n)
        if isinstance(m, dict):
            return m.get("source", "measured")
    return None


def field_of(row: dict[str, Any], *names: str) -> Any:
    """First present value among labels (a row's own refinement: format=fp16, scaler=on), then
    params (the case), then metrics."""
    for n in names:
        for where in ("labels", "params"):
            d = row.get(where) or {}
            if n in d and d[n] is not None:
                return d[n]
        m = (row.get("metrics") or {}).get(n)
        if isinstance(m, dict) and m.get("value") is not None:
            return m["value"]
    return None


def case_rows(rows: Sequence[dict[str, Any]], plugins: Sequence[str]) -> list[dict[str, Any]]:
    return [r for r in rows if r.get("plugin") in plugins and r.get("kind", "case") == "case" and r.get("status") == "ok"]


def device(row: dict[str, Any]) -> str:
    return str((row.get("fingerprint") or {}).get("label") or "?")


def varying(rows: Sequence[dict[str, Any]], exclude: Sequence[str] = ()) -> list[str]:
    """Params and labels (and the device, with several) whose values differ across rows."""
    keys: list[str] = []
    for r in rows:
        for where in ("params", "labels"):
            for k in (r.get(where) or {}):
                if k not in keys and k not in exclude:
                    keys.append(k)
    out = [k for k in keys if len({json.dumps(field_of(r, k), sort_keys=True, default=str) for r in rows}) > 1]
    if len({device(r) for r in rows}) > 1:
        out.insert(0, "device")
    return out


def label(row: dict[str, Any], keys: Sequence[str], label_only: Sequence[str] = ()) -> str:
    """k=v for keys; keys in label_only are read from the row's labels alone (a case param of the
    same name, e.g. scaler=both, does not describe a row labelled otherwise or not at all)."""
    bits = []
    for k in keys:
        if k in label_only:
            v = (row.get("labels") or {}).get(k)
        else:
            v = device(row) if k == "device" else field_of(row, k)
        if v is not None:
            bits.append(f"{k}={fmt(v)}")
    return ", ".join(bits) or "all"


def series_keys(rows: Sequence[dict[str, Any]], keys: Sequence[str], x: Callable[[dict[str, Any]], Any]) -> list[str]:
    """The keys that split rows into lines of a plot against x: a key whose every value comes
    with a single x (a preset name that fixes N, say) names points, not lines."""
    out = []
    for k in keys:
        xs_by_value: dict[str, set[str]] = {}
        for r in rows:
            v = device(r) if k == "device" else field_of(r, k)
            xs_by_value.setdefault(json.dumps(v, default=str), set()).add(json.dumps(x(r), default=str))
        if any(len(xs) > 1 for xs in xs_by_value.values()):
            out.append(k)
    return out


fmt = fmt_value  # one number format for every table (bench/tables.py)


def _sort_key(v: Any) -> tuple[int, float, str]:
    f = _f(v)
    return (0, f, "") if f is not None else (1, 0.0, str(v))


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _readable_log_y(ax: Any) -> None:
    """On a log y axis spanning under two decades, label ticks as plain numbers (3.2, not 3.2x10^0)."""
    from matplotlib.ticker import FuncFormatter

    lo, hi = ax.get_ylim()
    if lo > 0 and hi / lo < 100:
        f = FuncFormatter(lambda v, _: f"{v:.3g}")
        ax.yaxis.set_major_formatter(f)
        ax.yaxis.set_minor_formatter(f)
        ax.tick_params(axis="y", which="minor", labelsize=7)


def _save(fig: Any, out_dir: Path, name: str) -> str:
    fig.tight_layout()
    fig.savefig(out_dir / name, dpi=110)
    _plt().close(fig)
    return name


# ---------------------------------------------------------------------------------------------
# Plots


MEM_STATES = (("params_bytes", "parameters"), ("grads_bytes", "gradients"), ("optim_bytes", "optimizer state"))
MEM_PEAK = (("peak_activations_mib", "activations (at peak)"), ("peak_temporaries_mib", "temporaries (at peak)"))


def plot_memory(rows: Sequence[dict[str, Any]], out_dir: Path) -> list[Section]:
    rs = [r for r in case_rows(rows, ("fsdp", "ddp", "zero", "distributed"))
          if metric(r, "params_bytes", "grads_bytes", "optim_bytes", "model_state_bytes") is not None]  # fmt: skip
    if not rs:
        return []
    # one bar per config: the rank with the most model-state bytes (ranks differ by the greedy partition)
    configs: dict[str, dict[str, Any]] = {}
    for r in rs:
        key = json.dumps([r["plugin"], device(r), r.get("params"), {k: v for k, v in (r.get("labels") or {}).items() if k != "rank"}],
                         sort_keys=True, default=str)  # fmt: skip
        tot = sum(metric(r, m) or 0 for m, _ in MEM_STATES) or (metric(r, "model_state_bytes") or 0)
        if key not in configs or tot > configs[key]["_tot"]:
            configs[key] = {"row": r, "_tot": tot}
    chosen = [c["row"] for c in configs.values()]
    sections = []
    for src in ("measured", "simulated"):
        group = [r for r in chosen if (metric_source(r, "params_bytes", "model_state_bytes") or "measured") == src]
        if not group:
            continue
        keys = [k for k in varying(group, exclude=("rank",)) if k not in ("stage",)]
        keys = [k for k in ("world_size", "nproc") if k in keys] + [k for k in keys if k not in ("world_size", "nproc")]

        def stage_of(r: dict[str, Any]) -> Any:
            st = field_of(r, "stage")
            return 0 if st is None and r["plugin"] == "ddp" else st

        def ident(r: dict[str, Any], keys: list[str] = keys) -> str:
            st = stage_of(r)
            head = r["plugin"] + (f" stage {st}" if st is not None else "")
            vals = [(k, device(r) if k == "device" else field_of(r, k)) for k in keys]
            return ", ".join([head] + [f"{k}={fmt(v)}" for k, v in vals if v is not None])

        group.sort(key=lambda r: [_sort_key(stage_of(r))] + [_sort_key(device(r) if k == "device" else field_of(r, k)) for k in keys])
        fixed = {k: v for k, v in (group[0].get("params") or {}).items()
                 if k not in keys and k != "stage" and all((r.get("params") or {}).get(k) == v for r in group)}  # fmt: skip
        biggest = max(sum(metric(r, m) or 0 for m, _ in MEM_STATES) or (metric(r, "model_state_bytes") or 0) for r in group)
        unit, div = ("GB", 1e9) if biggest > 4 * 2**30 else ("MiB", 2**20)  # GB = 1e9 bytes, as in ZeRO Figure 1
        cats: list[tuple[str, list[float]]] = []
        for m, name in MEM_STATES:
            # ZeRO-1 partitions whole tensors: the largest partition where the plugin reports it
            names = (m + "_max_rank", m) if m == "optim_bytes" else (m,)
            vals = [(metric(r, *names) or 0) / div for r in group]
            if any(vals):
                cats.append((name, vals))
        if not cats:  # only a total
            cats.append(("model states", [(metric(r, "model_state_bytes") or 0) / div for r in group]))
        for m, name in MEM_PEAK:
            vals = [(metric(r, m) or 0) * 2**20 / div for r in group]
            if any(vals):
                cats.append((name, vals))
        plt = _plt()
        fig, ax = plt.subplots(figsize=(max(6.5, 1.1 * len(group) + 3), 4.6))
        xs = list(range(len(group)))
        bottom = [0.0] * len(group)
        for name, vals in cats:
            ax.bar(xs, vals, bottom=bottom, label=name)
            bottom = [b + v for b, v in zip(bottom, vals)]
        # the formula for what the bars show (at rest); stage 2's "during the step" figure is in the table
        formula = [(metric(r, "formula_rest_bytes", "formula_bytes") or 0) / div for r in group]
        if any(formula):
            ax.scatter([x for x, f in zip(xs, formula) if f], [f for f in formula if f], marker="_", s=900, linewidths=2,
                       color="black", zorder=3, label="ZeRO formula (model states at rest)")  # fmt: skip
        ax.set_xticks(xs)
        ax.set_xticklabels([ident(r).replace(", ", "\n") for r in group], fontsize=7)
        ax.set_ylabel(f"{unit} per rank")
        ax.set_title(f"Memory per rank by stage and world size ({src})")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), markerscale=0.4)
        name = _save(fig, out_dir, f"memory_{src}.png")
        step = [metric(r, "model_state_step_bytes") for r in group]
        show_step = any(v is not None for v in step)
        header = (["config"] + [f"{n} [{unit}]" for n, _ in cats] + [f"total [{unit}]", f"formula at rest [{unit}]"]
                  + ([f"model states during step [{unit}]", f"formula during step [{unit}]"] if show_step else []) + ["status"])  # fmt: skip
        body = []
        for i, r in enumerate(group):
            line = [ident(r)] + [fmt(v[i]) for _, v in cats] + [fmt(bottom[i]), fmt(formula[i]) if formula[i] else ""]
            if show_step:
                fs = metric(r, "formula_bytes")
                line += [fmt(step[i] / div) if step[i] is not None else "", fmt(fs / div) if fs is not None else ""]
            body.append(line + [r["status"]])
        sections.append(Section(
            f"Memory by stage and world size ({src})", f"memory-{src}", name,
            "Per rank (the rank with the most model-state bytes; optimizer state: the largest partition where reported): "
            "model states at rest, stacked with activations/temporaries at the step's peak where measured. Black tick: the "
            "ZeRO formula for the config run, at rest (torch keeps stage-2 parameters sharded at rest; the table gives the "
            f"during-the-step figures). Source: {src}."
            + (f" Fixed: {', '.join(f'{k}={fmt(v)}' for k, v in fixed.items())}." if fixed else ""),
            [("", header, body)],
        ))  # fmt: skip
    return sections


ATTN_SEQ = ("seq", "seq_len", "n", "seqlen")
ATTN_HEADS = ("heads", "n_heads", "num_heads")
ATTN_TIME = ("time_ms",)
ATTN_MEM = ("extra_mib", "peak_mib")


def _sweep_plot(rs: list[dict[str, Any]], out_dir: Path, xnames: tuple[str, ...], fname: str, xlabel: str,
                xbase: int) -> tuple[str, list[Table], str] | None:  # fmt: skip
    """time_ms and extra_mib vs x per series (every other varying setting), log-log, with fitted
    slopes; only series with >= 2 values of x are drawn. -> (png name, tables, "Fixed: ..." text)."""
    from bench.fit import fit_power_law

    have = [r for r in rs if _f(field_of(r, *xnames)) is not None]
    if not have:
        return None
    xkey = next(k for k in xnames if any(_f(field_of(r, k)) is not None for r in have))
    keys = series_keys(have, varying(have, exclude=(xkey, "rank")), lambda r: field_of(r, xkey))
    series: dict[str, list[dict[str, Any]]] = {}
    for r in have:
        series.setdefault(label(r, keys), []).append(r)
    series = {k: v for k, v in series.items() if len({_f(field_of(r, xkey)) for r in v}) >= 2}
    # name the lines by what differs among the drawn ones only (single points elsewhere made
    # causal/dtype/mode vary over all rows)
    drawn = [r for v in series.values() for r in v]
    if drawn:
        keys = series_keys(drawn, varying(drawn, exclude=(xkey, "rank")), lambda r: field_of(r, xkey))
        series = {}
        for r in drawn:
            series.setdefault(label(r, keys), []).append(r)
    panels = [n for n in (ATTN_TIME, ATTN_MEM) if any(metric(r, *n) is not None for v in series.values() for r in v)]
    if not series or not panels:
        return None
    mnames = [next(n for n in names if any(metric(r, n) is not None for v in series.values() for r in v)) for names in panels]
    plt = _plt()
    fig, axes = plt.subplots(1, len(mnames), figsize=(6.4 * len(mnames), 5.0), squeeze=False)
    fits: list[list[str]] = []
    for ax, mname in zip(axes[0], mnames):
        unit = ""
        for lab, srs in sorted(series.items()):
            # the median where a point was measured more than once
            by_x: dict[float, list[float]] = {}
            for r in srs:
                y = metric(r, mname)
                if y is not None and y > 0:
                    by_x.setdefault(_f(field_of(r, xkey)), []).append(y)
                    unit = unit or ((r.get("metrics") or {}).get(mname, {}).get("unit") or "")
            xs = sorted(by_x)
            ys = [sorted(by_x[x])[len(by_x[x]) // 2] for x in xs]
            if not xs:
                continue
            legend = lab
            if len(xs) >= 2:
                try:
                    fit = fit_power_law(xs, ys)
                    legend += f" (slope {fit.exponent:.2f})"
                    se = "" if math.isnan(fit.stderr) else f"{fit.stderr:.2f}"
                    fits.append([lab, mname, f"{fit.exponent:.3f}", se, f"{fit.r2:.3f}", str(fit.n)])
                except ValueError:
                    pass
            ax.plot(xs, ys, marker="o", label=legend)
        ax.set_xscale("log", base=xbase)
        ax.set_yscale("log")
        _readable_log_y(ax)
        ax.set_xlabel(xlabel)
        short = unit.split(" ")[0] if unit else ""
        ax.set_ylabel(f"{mname} [{short}]" if short else mname)
        ax.set_title(f"attention {mname} vs {xkey} (log-log)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6)
    name = _save(fig, out_dir, fname)
    data_body = []
    for lab, srs in sorted(series.items()):
        for r in sorted(srs, key=lambda r: _sort_key(field_of(r, xkey))):
            data_body.append([lab, fmt(field_of(r, xkey))] + [fmt(metric(r, m)) for m in mnames])
    tables: list[Table] = []
    if fits:
        tables.append(("Fitted slopes (log-log least squares)", ["series", "metric", "slope", "stderr", "R^2", "points"], fits))
    tables.append(("Data", ["series", xkey] + mnames, data_body))
    p0 = drawn[0].get("params") or {}
    fixed = ", ".join(f"{k}={fmt(v)}" for k, v in p0.items()
                      if k != xkey and k not in keys and all((r.get("params") or {}).get(k) == v for r in drawn))  # fmt: skip
    return name, tables, f" Fixed: {fixed}." if fixed else ""


def plot_attention(rows: Sequence[dict[str, Any]], out_dir: Path) -> list[Section]:
    rs = case_rows(rows, ("attention",))
    out = []
    got = _sweep_plot(rs, out_dir, ATTN_SEQ, "attention.png", "sequence length n", 2)
    if got:
        out.append(Section("Attention: time and memory vs sequence length", "attention", got[0],
                           "One line per backend/setting; the slope of a log-log line is the exponent in n "
                           "(naive attention memory ~2, fused kernels ~1). Memory: extra bytes above the inputs." + got[2],
                           got[1]))  # fmt: skip
    got = _sweep_plot(rs, out_dir, ATTN_HEADS, "attention_heads.png", "attention heads H", 2)
    if got:
        out.append(Section("Attention: time and memory vs head count", "attention-heads", got[0],
                           "Head-count sweeps at fixed sequence length (attn.heads: report only)." + got[2], got[1]))  # fmt: skip
    return out


def _smooth(xs: Sequence[float], k: int) -> list[float]:
    """Trailing moving average over k steps (the first points average what exists)."""
    out, acc = [], 0.0
    for i, x in enumerate(xs):
        acc += x
        if i >= k:
            acc -= xs[i - k]
        out.append(acc / min(i + 1, k))
    return out


def plot_precision(rows: Sequence[dict[str, Any]], out_dir: Path) -> list[Section]:
    """Loss per step per format (and scaler); beside it, each curve's difference from the fp32
    curve of the same run settings in %, smoothed, which is what prec.bf16_training is about."""
    rs = [r for r in case_rows(rows, ("precision",)) if len((r.get("samples") or {}).get("loss") or []) >= 2]
    if not rs:
        return []
    keys = varying(rs, exclude=("rank",))
    lonly = sorted({k for r in rs for k in (r.get("labels") or {})})
    keys = [k for k in lonly if k in keys] + [k for k in keys if k not in lonly]  # format, scaler first
    rs.sort(key=lambda r: label(r, keys, lonly))
    curves = [(label(r, keys, lonly), r, [float(x) for x in r["samples"]["loss"] if x is not None]) for r in rs]

    def fmt_of(r: dict[str, Any]) -> Any:
        return (r.get("labels") or {}).get("format", field_of(r, "dtype", "precision"))

    def same_run(a: dict[str, Any], b: dict[str, Any]) -> bool:  # the same settings but the format
        def settings(r: dict[str, Any]) -> dict[str, Any]:
            return {k: v for k, v in (r.get("params") or {}).items() if k not in ("dtype", "precision", "format", "scaler")}

        return settings(a) == settings(b) and device(a) == device(b)

    refs = [(r, loss) for _, r, loss in curves if fmt_of(r) == "fp32"]
    plt = _plt()
    fig, axes = plt.subplots(1, 2 if refs else 1, figsize=(13.0 if refs else 7.5, 4.6), squeeze=False)
    ax = axes[0][0]
    body = []
    k = max(1, min(10, len(curves[0][2]) // 10))
    for lab, r, loss in curves:
        ax.plot(range(1, len(loss) + 1), loss, label=lab, linewidth=1.1)
        final = metric(r, "final_loss")
        ref = next((rl for rr, rl in refs if same_run(rr, r) and len(rl) == len(loss)), None)
        diff = ""
        if ref is not None and fmt_of(r) != "fp32":
            d = [100.0 * (a / b - 1.0) for a, b in zip(loss, ref) if b]
            axes[0][1].plot(range(1, len(d) + 1), _smooth(d, k), label=lab, linewidth=1.1)
            diff = f"{_smooth(d, k)[-1]:+.2f}"
        body.append([lab, str(len(loss)), fmt(loss[0]), fmt(loss[-1]), fmt(final) if final is not None else "", diff])
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title("Precision: loss curves (same model, text and seed)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    if refs:
        a2 = axes[0][1]
        a2.axhline(0.0, color="black", linewidth=0.8)
        for y in (-2.0, 2.0):
            a2.axhline(y, color="grey", linewidth=0.8, linestyle="--")
        a2.set_xlabel("step")
        a2.set_ylabel(f"loss vs fp32 [%] ({k}-step moving average)")
        a2.set_title("Difference from the fp32 curve (dashed: ±2%)")
        a2.grid(True, alpha=0.3)
        if a2.get_legend_handles_labels()[0]:
            a2.legend(fontsize=7)
    name = _save(fig, out_dir, "precision_loss.png")
    header = ["series", "steps", "first loss", "last loss", "final_loss metric", f"last vs fp32 [%, {k}-step avg]"]
    return [Section("Precision: loss curves", "precision", name,
                    "samples['loss'] per step of each training case; right: each curve against the fp32 curve of the "
                    "same settings (training loss; prec.bf16_training compares the final validation loss).",
                    [("", header, body)])]  # fmt: skip


def plot_quantization(rows: Sequence[dict[str, Any]], out_dir: Path) -> list[Section]:
    """Per scheme: bytes/param (scales counted) and output error vs fp32 (bars), and the time
    ratio to the unquantized layer per batch size where the rows carry one (quant.int8_speed)."""
    rs = [r for r in case_rows(rows, ("quantization",)) if metric(r, "bytes_per_param", "rel_error") is not None]
    if not rs:
        return []
    # the per-batch rows of one case repeat its bytes and error: one bar per case
    cases: dict[str, list[dict[str, Any]]] = {}
    for r in rs:
        cases.setdefault(json.dumps([device(r), r.get("params")], sort_keys=True, default=str), []).append(r)
    reps = [v[0] for v in cases.values()]
    keys = [k for k in varying(reps, exclude=("rank", "batch"))]
    reps.sort(key=lambda r: label(r, keys))
    labs = [label(r, keys) for r in reps]
    panels = [m for m in ("bytes_per_param", "rel_error") if any(metric(r, m) is not None for r in reps)]
    speed = {label(v[0], keys): sorted((_f(field_of(r, "batch")), metric(r, "time_ratio")) for r in v
                                       if _f(field_of(r, "batch")) and metric(r, "time_ratio"))
             for v in cases.values()}  # fmt: skip
    speed = {k: v for k, v in speed.items() if len(v) >= 2}
    plt = _plt()
    # bars side by side on top, the speed lines across the bottom
    mosaic = [panels or ["none"]] + ([["speed"] * max(1, len(panels))] if speed else [])
    width = max(7.0, min(18.0, 0.55 * len(reps) * max(1, len(panels)) + 3))
    fig, axd = plt.subplot_mosaic(mosaic, figsize=(width, 5.0 * len(mosaic)))
    for m in panels:
        ax = axd[m]
        idx = [i for i, r in enumerate(reps) if metric(r, m) is not None]
        vals = [metric(reps[i], m) for i in idx]
        bars = ax.bar(range(len(idx)), vals, color="tab:blue" if m == "bytes_per_param" else "tab:red")
        ax.bar_label(bars, labels=[fmt(v) for v in vals], fontsize=7)
        ax.set_xticks(range(len(idx)))
        ax.set_xticklabels([labs[i].replace(", ", "\n") for i in idx], fontsize=7, rotation=30, ha="right")
        pos = [v for v in vals if v > 0]
        if m == "rel_error" and pos and max(pos) / min(pos) > 20:
            ax.set_yscale("symlog", linthresh=min(pos))  # the fp32 reference's error is 0
        unit = next(((reps[i].get("metrics") or {}).get(m, {}).get("unit", "") for i in idx), "")
        ax.set_ylabel(m + (f" [{unit.split(' (')[0]}]" if unit and len(unit.split(" (")[0]) < 30 else ""))
        ax.set_title(f"Quantization: {m}")
        ax.grid(True, axis="y", alpha=0.3)
    if speed:
        ax = axd["speed"]
        if len(speed) > 10:
            ax.set_prop_cycle(color=plt.get_cmap("tab20").colors)
        for lab, pts in sorted(speed.items()):
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=lab, linewidth=1.1)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        _readable_log_y(ax)
        ax.set_xlabel("batch (rows of the layer input)")
        ax.set_ylabel("time / unquantized layer time [x]")
        ax.set_title("Quantization: time ratio by batch (1 = as fast)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    name = _save(fig, out_dir, "quantization.png")
    extra = [m for m in ("x_fp16", "bits_per_param", "scale_bytes_per_param", "logits_rel_error") if any(metric(r, m) is not None for r in reps)]
    header = ["scheme"] + panels + extra
    body = [[labs[i]] + [fmt(metric(r, m)) for m in panels + extra] for i, r in enumerate(reps)]
    tables: list[Table] = [("", header, body)]
    if speed:
        batches = sorted({p[0] for v in speed.values() for p in v})
        sbody = [[lab] + [fmt(dict(pts).get(b)) for b in batches] for lab, pts in sorted(speed.items())]
        tables.append(("Time ratio to the unquantized layer, by batch", ["scheme"] + [f"batch {b:g}" for b in batches], sbody))
    return [Section("Quantization: bytes per parameter, error and speed", "quantization", name,
                    "Per scheme: bytes per parameter (codes + scales + tables) and output error vs the fp32 reference; "
                    "time of the quantized layer over the unquantized one per batch size.", tables)]  # fmt: skip


SCALE_N = ("params", "n_params", "N")
SCALE_D = ("tokens", "n_tokens", "D")
SCALE_SHAPE = ("shape", "preset", "model")


def _scale_num(r: dict[str, Any], names: Sequence[str]) -> float | None:
    """N or D of a scaling row: the metric first (a case's `tokens` param is 0 on isoFLOP runs)."""
    v = metric(r, *names)
    if not v:
        v = _f(field_of(r, *names))
    return v or None


def _budget(r: dict[str, Any]) -> str:
    """The line a training run belongs to in loss-vs-N: its isoFLOP budget C, or its fixed D."""
    p = r.get("params") or {}
    b = str(p.get("budget") or "").replace(" ", "")  # the scaling plugin's "C=3e10" / "D=1.6e6"
    if b.upper().startswith("C="):
        return f"C={b[2:]} FLOP (isoFLOP)"
    if b.upper().startswith("D="):
        return f"D={b[2:]} tokens"
    c, d = _f(p.get("compute")), _f(p.get("tokens"))
    if c:
        return f"C={c:.3g} FLOP (isoFLOP)"
    if d:
        return f"D={d:.3g} tokens"
    return "all"


def plot_scaling(rows: Sequence[dict[str, Any]], out_dir: Path) -> list[Section]:
    """Loss vs N (one line per compute budget or fixed D; power-law fits on fixed-D lines, the
    minimum marked on isoFLOP lines) and loss vs D (one line per model shape)."""
    from bench.fit import fit_power_law

    rs = [r for r in case_rows(rows, ("scaling",)) if metric(r, "final_loss", "loss") is not None and _scale_num(r, SCALE_N)]
    if not rs:
        return []
    plt = _plt()
    by_budget: dict[str, list[dict[str, Any]]] = {}
    for r in rs:
        by_budget.setdefault(_budget(r), []).append(r)
    by_shape: dict[str, list[dict[str, Any]]] = {}
    for r in rs:
        shape = field_of(r, *SCALE_SHAPE)
        by_shape.setdefault(str(shape if shape is not None else f"N={_scale_num(r, SCALE_N):.3g}"), []).append(r)
    by_shape = {k: v for k, v in by_shape.items() if len({_scale_num(r, SCALE_D) for r in v} - {None}) >= 2}
    panels = [("N", by_budget)] + ([("D", by_shape)] if by_shape else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(6.4 * len(panels), 4.8), squeeze=False)
    fits: list[list[str]] = []
    optima: list[list[str]] = []
    for ax, (axis, series) in zip(axes[0], panels):
        names = SCALE_N if axis == "N" else SCALE_D
        for lab, srs in sorted(series.items()):
            pts = sorted((_scale_num(r, names), metric(r, "final_loss", "loss"), r) for r in srs if _scale_num(r, names))
            pts = [(x, y, r) for x, y, r in pts if y and y > 0]
            if not pts:
                continue
            xs, ys = [p[0] for p in pts], [p[1] for p in pts]
            legend = lab if axis == "N" else f"shape {lab}"
            iso = "isoFLOP" in lab
            if len(set(xs)) >= 2 and not iso:
                try:
                    fit = fit_power_law(xs, ys)
                    legend += f" (exponent {fit.exponent:.3f})"
                    se = "" if math.isnan(fit.stderr) else f"{fit.stderr:.4f}"
                    fits.append([f"loss vs {axis}", legend.split(" (exponent")[0], f"{fit.exponent:.4f}", se, f"{fit.r2:.3f}", str(fit.n)])
                except ValueError:
                    pass
            line = ax.plot(xs, ys, marker="o", label=legend)[0]
            if iso and len(pts) >= 3:
                x0, y0, r0 = min(pts, key=lambda p: p[1])
                ax.scatter([x0], [y0], s=120, facecolors="none", edgecolors=line.get_color(), linewidths=2, zorder=3)
                d0 = _scale_num(r0, SCALE_D)
                n_all = metric(r0, "params_total") or x0
                optima.append([lab, fmt(x0), fmt(d0), fmt(d0 / n_all) if d0 else "", fmt(y0),
                               "yes" if x0 in (min(xs), max(xs)) else "no"])  # fmt: skip
        ax.set_xscale("log")
        ax.set_yscale("log")
        _readable_log_y(ax)
        ax.set_xlabel("non-embedding parameters N" if axis == "N" else "training tokens D")
        ax.set_ylabel("final loss")
        ax.set_title(f"Scaling: final loss vs {axis} (log-log)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6)
    name = _save(fig, out_dir, "scaling.png")
    extra = [m for m in ("params_total", "tokens_per_param", "compute") if any(metric(r, m) is not None for r in rs)]
    header = ["line", "shape", "N", "D", "final_loss"] + extra
    body = [[_budget(r), fmt(field_of(r, *SCALE_SHAPE)), fmt(_scale_num(r, SCALE_N)), fmt(_scale_num(r, SCALE_D)),
             fmt(metric(r, "final_loss", "loss"))] + [fmt(metric(r, m)) for m in extra]
            for r in sorted(rs, key=lambda r: (_budget(r), _scale_num(r, SCALE_N) or 0))]  # fmt: skip
    tables: list[Table] = []
    if fits:
        tables.append(("Power-law fits: loss = a x^k (k = -alpha)", ["fit", "line", "exponent k", "stderr", "R^2", "points"], fits))
    if optima:
        tables.append(("isoFLOP minima (circled; the lowest point, not a fitted vertex)",
                       ["budget", "N at min", "D at min", "tokens/param (D / all params)", "loss", "at the edge of the sweep"], optima))  # fmt: skip
    tables.append(("Data", header, body))
    return [Section("Scaling: loss vs model size and data", "scaling", name,
                    "Final loss of small models trained on real text: lines per compute budget (isoFLOP) or fixed data "
                    "size; power-law exponents fitted on the fixed-data lines.", tables)]  # fmt: skip


PLOTS: tuple[tuple[str, tuple[str, ...], Callable[[Sequence[dict[str, Any]], Path], list[Section]]], ...] = (
    ("memory", ("fsdp", "ddp"), plot_memory),
    ("attention", ("attention",), plot_attention),
    ("precision", ("precision",), plot_precision),
    ("quantization", ("quantization",), plot_quantization),
    ("scaling", ("scaling",), plot_scaling),
)


# ---------------------------------------------------------------------------------------------
# Writers


def _md_table(header: list[str], body: list[list[str]]) -> str:
    from tabulate import tabulate

    def esc(s: str) -> str:
        return str(s).replace("|", "\\|").replace("\n", " ")

    return tabulate([[esc(c) for c in line] for line in body], headers=[esc(h) for h in header], tablefmt="github", disable_numparse=True)


def _html_table(header: list[str], body: list[list[str]], verdict_cols: Sequence[int] = ()) -> str:
    out = ["<table><thead><tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in header) + "</tr></thead><tbody>"]
    for line in body:
        cells = []
        for i, c in enumerate(line):
            cls = ""
            if i in verdict_cols:
                cls = f' class="v-{re.sub(r"[^a-z]+", "-", str(c).lower()).strip("-")}"'
            cells.append(f"<td{cls}>{html.escape(str(c))}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;color:#222}
h1{margin-bottom:.2em} h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;font-size:12px;margin:.6em 0 1.2em} th,td{border:1px solid #ccc;padding:3px 6px;vertical-align:top;text-align:left}
th{background:#f3f3f3} img{max-width:100%;height:auto;border:1px solid #eee} figcaption{font-size:13px;color:#555}
.v-holds{background:#e3f6e3} .v-fails{background:#fbe0e0} .v-reported{background:#eef2fb} .v-not-measured-here{background:#f6f6f6;color:#666}
.note{color:#666;font-size:13px}
"""


def build(rows: Sequence[dict[str, Any]], out_dir: Path, sources: Sequence[str] = ()) -> dict[str, Any]:
    """Write report.md, report.html and the PNGs into out_dir; returns what was written."""
    from bench import claims as claims_mod

    out_dir.mkdir(parents=True, exist_ok=True)
    sections: list[Section] = []
    skipped: list[str] = []
    for name, plugins, fn in PLOTS:
        present = [r for r in rows if r.get("plugin") in plugins]
        try:
            got = fn(rows, out_dir)
        except Exception as e:  # one plot's failure must not cost the report
            got = [Section(f"{name} (plot failed)", f"{name}-failed", None, "", [], [f"plot failed: {type(e).__name__}: {e}"])]
        if got:
            sections.extend(got)
        elif present:
            st = sorted({r.get("status", "?") for r in present})
            skipped.append(f"{name}: {len(present)} {'/'.join(plugins)} rows ({', '.join(st)}) but none with the metrics this plot needs")
        else:
            skipped.append(f"{name}: no {'/'.join(plugins)} rows in these results")
    devices, results = claims_mod.evaluate(rows)
    c_header, c_body = claims_mod.table(devices, results, "csv")
    verdict_cols = [i for i, h in enumerate(c_header) if h.startswith("verdict")]
    counts = claims_mod.summary(devices, results)
    run_ids = sorted({str(r.get("run_id")) for r in rows})
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    meta = [f"results: {', '.join(sources) or '-'}", f"devices: {', '.join(devices)}",
            f"runs: {', '.join(run_ids) or '-'}; {len(rows)} rows", f"generated {when}"]  # fmt: skip

    # markdown (PNG files beside it)
    md = ["# bench report", ""] + [f"- {m}" for m in meta] + [""]
    for s in sections:
        md += [f"## {s.title}", ""]
        if s.png:
            md += [f"![{s.title}]({s.png})", ""]
        if s.caption:
            md += [s.caption, ""]
        for n in s.notes:
            md += [f"> {n}", ""]
        for title, h, b in s.tables:
            if title:
                md += [f"**{title}**", ""]
            md += [_md_table(h, b), ""]
    if skipped:
        md += ["## Plots skipped", ""] + [f"- {s}" for s in skipped] + [""]
    md += ["## Claims", "", "```", counts, "```", "", claims_mod.render(devices, results, "markdown"), ""]
    (out_dir / "report.md").write_text("\n".join(md))

    # html (self-contained: images as data URIs)
    h = ["<!doctype html>", '<html lang="en"><head><meta charset="utf-8">', "<title>bench report</title>",
         f"<style>{CSS}</style></head><body>", "<h1>bench report</h1>",
         "<ul>" + "".join(f"<li>{html.escape(m)}</li>" for m in meta) + "</ul>"]  # fmt: skip
    toc = [(s.anchor, s.title) for s in sections] + ([("skipped", "Plots skipped")] if skipped else []) + [("claims", "Claims")]
    h.append("<nav><strong>Contents</strong><ul>" + "".join(f'<li><a href="#{a}">{html.escape(t)}</a></li>' for a, t in toc) + "</ul></nav>")
    for s in sections:
        h.append(f'<h2 id="{s.anchor}">{html.escape(s.title)}</h2>')
        if s.png:
            data = base64.b64encode((out_dir / s.png).read_bytes()).decode()
            h.append(f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(s.title)}">'
                     f"<figcaption>{html.escape(s.caption)}</figcaption></figure>")  # fmt: skip
        elif s.caption:
            h.append(f"<p>{html.escape(s.caption)}</p>")
        for n in s.notes:
            h.append(f'<p class="note">{html.escape(n)}</p>')
        for title, hh, b in s.tables:
            if title:
                h.append(f"<h3>{html.escape(title)}</h3>")
            h.append(_html_table(hh, b))
    if skipped:
        h.append('<h2 id="skipped">Plots skipped</h2><ul>' + "".join(f"<li>{html.escape(s)}</li>" for s in skipped) + "</ul>")
    h.append('<h2 id="claims">Claims</h2>')
    h.append(f'<pre class="note">{html.escape(counts)}</pre>')
    h.append(_html_table(c_header, c_body, verdict_cols))
    h.append("</body></html>")
    (out_dir / "report.html").write_text("\n".join(h))
    return {"md": out_dir / "report.md", "html": out_dir / "report.html",
            "pngs": [out_dir / s.png for s in sections if s.png], "skipped": skipped}  # fmt: skip


@click.command("report")
@click.argument("results", nargs=-1, type=click.Path(path_type=Path))
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("report"),
              show_default=True, help="Folder for report.md, report.html and the PNGs.")  # fmt: skip
def command(results: tuple[Path, ...], out_dir: Path) -> None:
    """Markdown + self-contained HTML report with plots and the claims table.

    RESULTS: result files or folders (default: the latest file under results/runs/).
    """
    from bench.params import UsageError
    from bench.results import load_rows

    if not results:
        runs = sorted(Path("results/runs").glob("*.jsonl"), key=lambda p: p.stat().st_mtime)
        if not runs:
            raise UsageError("no results yet: run `bench run --plugin NAME` first, or pass a result file")
        results = (runs[-1],)
    rows = load_rows(results)
    written = build(rows, out_dir, [str(p) for p in results])
    for s in written["skipped"]:
        click.echo(f"skipped plot: {s}", err=True)
    click.echo(f"wrote {written['html']} and {written['md']} ({len(written['pngs'])} plots)")
