"""Report section of quantization: bytes/param, error and speed ratio per scheme."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from bench.contract import Row, Section, Table
from bench.plots import field_of, first_number, fmt, label, num, ok_cases, pyplot, readable_log_y, save, varying


def plot_quantization(rows: Sequence[Row], out_dir: Path) -> list[Section]:
    """Per scheme: bytes/param (scales counted) and output error vs fp32 (bars), and the time
    ratio to the unquantized layer per batch size where the rows carry one (quant.int8_speed)."""
    rs = [r for r in ok_cases(rows, ("quantization",)) if first_number(r, "bytes_per_param", "rel_error") is not None]
    if not rs:
        return []
    # the per-batch rows of one case repeat its bytes and error: one bar per case
    cases: dict[str, list[Row]] = {}
    for r in rs:
        cases.setdefault(json.dumps([r.device, r.params], sort_keys=True, default=str), []).append(r)
    reps = [v[0] for v in cases.values()]
    keys = [k for k in varying(reps, exclude=("rank", "batch"))]
    reps.sort(key=lambda r: label(r, keys))
    labs = [label(r, keys) for r in reps]
    panels = [m for m in ("bytes_per_param", "rel_error") if any(first_number(r, m) is not None for r in reps)]
    speed = {
        label(v[0], keys): sorted(
            (num(field_of(r, "batch")), first_number(r, "time_ratio"))
            for r in v
            if num(field_of(r, "batch")) and first_number(r, "time_ratio")
        )
        for v in cases.values()
    }
    speed = {k: v for k, v in speed.items() if len(v) >= 2}
    plt = pyplot()
    # bars side by side on top, the speed lines across the bottom
    mosaic = [panels or ["none"]] + ([["speed"] * max(1, len(panels))] if speed else [])
    width = max(7.0, min(18.0, 0.55 * len(reps) * max(1, len(panels)) + 3))
    fig, axd = plt.subplot_mosaic(mosaic, figsize=(width, 5.0 * len(mosaic)))
    for m in panels:
        ax = axd[m]
        idx = [i for i, r in enumerate(reps) if first_number(r, m) is not None]
        vals = [first_number(reps[i], m) for i in idx]
        bars = ax.bar(range(len(idx)), vals, color="tab:blue" if m == "bytes_per_param" else "tab:red")
        ax.bar_label(bars, labels=[fmt(v) for v in vals], fontsize=7)
        ax.set_xticks(range(len(idx)))
        ax.set_xticklabels([labs[i].replace(", ", "\n") for i in idx], fontsize=7, rotation=30, ha="right")
        pos = [v for v in vals if v > 0]
        if m == "rel_error" and pos and max(pos) / min(pos) > 20:
            ax.set_yscale("symlog", linthresh=min(pos))  # the fp32 reference's error is 0
        unit = next((reps[i].metric(m).unit for i in idx if reps[i].metric(m)), "")
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
        readable_log_y(ax)
        ax.set_xlabel("batch (rows of the layer input)")
        ax.set_ylabel("time / unquantized layer time [x]")
        ax.set_title("Quantization: time ratio by batch (1 = as fast)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    name = save(fig, out_dir, "quantization.png")
    extra = [
        m
        for m in ("x_fp16", "bits_per_param", "scale_bytes_per_param", "logits_rel_error", "act_rel_error")
        if any(first_number(r, m) is not None for r in reps)
    ]
    header = ["scheme", *panels, *extra]
    body = [[labs[i]] + [fmt(first_number(r, m)) for m in panels + extra] for i, r in enumerate(reps)]
    tables: list[Table] = [("", header, body)]
    if speed:
        batches = sorted({p[0] for v in speed.values() for p in v})
        sbody = [[lab] + [fmt(dict(pts).get(b)) for b in batches] for lab, pts in sorted(speed.items())]
        tables.append(
            ("Time ratio to the unquantized layer, by batch", ["scheme"] + [f"batch {b:g}" for b in batches], sbody)
        )
    return [
        Section(
            "Quantization: bytes per parameter, error and speed",
            "quantization",
            name,
            "Per scheme: bytes per parameter (codes + scales + tables) and output error vs the fp32 reference; "
            "time of the quantized layer over the unquantized one per batch size.",
            tables,
        )
    ]
