"""Report sections of ddp / fsdp: per-rank memory by stage and world size stacked by category (measured and
simulated), the weak-scaling table, and the simulator's predicted peak beside the measured one."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.contract import Row, Section
from bench.plots import field_of, first_number, fmt, ok_cases, pyplot, save, sort_key, varying
from plugins.distributed.params import stage_of


def metric_source(row: Row, *names: str) -> str | None:
    for n in names:
        m = row.metric(n)
        if m is not None:
            return m.source
    return None


RANK_LABELS = ("rank", "node", "host", "local_rank")  # who measured a row, not what was measured
MEM_STATES = (("params_bytes", "parameters"), ("grads_bytes", "gradients"), ("optim_bytes", "optimizer state"))
MEM_PEAK = (("peak_activations_mib", "activations (at peak)"), ("peak_temporaries_mib", "temporaries (at peak)"))


def plot_memory(rows: Sequence[Row], out_dir: Path) -> list[Section]:
    rs = [
        r
        for r in ok_cases(rows, ("fsdp", "ddp"))
        if first_number(r, "params_bytes", "grads_bytes", "optim_bytes", "model_state_bytes") is not None
    ]
    if not rs:
        return []
    # one bar per config: the rank with the most model-state bytes (ranks differ by the greedy partition)
    configs: dict[str, dict[str, Any]] = {}
    for r in rs:
        key = json.dumps(
            [r.plugin, r.device, r.params, {k: v for k, v in r.labels.items() if k not in RANK_LABELS}],
            sort_keys=True,
            default=str,
        )
        tot = sum(first_number(r, m) or 0 for m, _ in MEM_STATES) or (first_number(r, "model_state_bytes") or 0)
        if key not in configs or tot > configs[key]["_tot"]:
            configs[key] = {"row": r, "_tot": tot}
    chosen = [c["row"] for c in configs.values()]
    sections = []
    for src in ("measured", "simulated"):
        group = [r for r in chosen if (metric_source(r, "params_bytes", "model_state_bytes") or "measured") == src]
        if not group:
            continue
        keys = [k for k in varying(group, exclude=RANK_LABELS) if k != "stage"]
        keys = [k for k in keys if k == "world_size"] + [k for k in keys if k != "world_size"]

        def ident(r: Row, keys: list[str] = keys) -> str:
            head = f"{r.plugin} stage {stage_of(r)}"
            vals = [(k, r.device if k == "device" else field_of(r, k)) for k in keys]
            return ", ".join([head] + [f"{k}={fmt(v)}" for k, v in vals if v is not None])

        group.sort(
            key=lambda r: (
                [sort_key(stage_of(r))] + [sort_key(r.device if k == "device" else field_of(r, k)) for k in keys]
            )
        )
        fixed = {
            k: v
            for k, v in group[0].params.items()
            if k not in keys and k != "stage" and all(r.params.get(k) == v for r in group)
        }
        biggest = max(
            sum(first_number(r, m) or 0 for m, _ in MEM_STATES) or (first_number(r, "model_state_bytes") or 0)
            for r in group
        )
        unit, div = ("GB", 1e9) if biggest > 4 * 2**30 else ("MiB", 2**20)  # GB = 1e9 bytes, as in ZeRO Figure 1
        cats: list[tuple[str, list[float]]] = []
        for m, name in MEM_STATES:
            # ZeRO-1 partitions whole tensors: the largest partition where the plugin reports it
            names = (m + "_max_rank", m) if m == "optim_bytes" else (m,)
            vals = [(first_number(r, *names) or 0) / div for r in group]
            if any(vals):
                cats.append((name, vals))
        if not cats:  # only a total
            cats.append(("model states", [(first_number(r, "model_state_bytes") or 0) / div for r in group]))
        for m, name in MEM_PEAK:
            vals = [(first_number(r, m) or 0) * 2**20 / div for r in group]
            if any(vals):
                cats.append((name, vals))
        formula = [(first_number(r, "formula_rest_bytes", "formula_bytes") or 0) / div for r in group]
        bottom = [sum(v[i] for _, v in cats) for i in range(len(group))]
        fig = _memory_figure(group, keys, cats, formula, div, src)
        name = save(fig, out_dir, f"memory_{src}.png")
        step = [first_number(r, "model_state_step_bytes") for r in group]
        show_step = any(v is not None for v in step)
        header = (
            ["config"]
            + [f"{n} [{unit}]" for n, _ in cats]
            + [f"total [{unit}]", f"formula at rest [{unit}]"]
            + ([f"model states during step [{unit}]", f"formula during step [{unit}]"] if show_step else [])
            + ["status"]
        )
        body = []
        for i, r in enumerate(group):
            line = [ident(r)] + [fmt(v[i]) for _, v in cats] + [fmt(bottom[i]), fmt(formula[i]) if formula[i] else ""]
            if show_step:
                fs = first_number(r, "formula_bytes")
                line += [fmt(step[i] / div) if step[i] is not None else "", fmt(fs / div) if fs is not None else ""]
            body.append([*line, r.status])
        sections.append(
            Section(
                f"Memory by stage and world size ({src})",
                f"memory-{src}",
                name,
                "Per rank (the rank with the most model-state bytes; optimizer state: the largest partition where reported): "
                "model states at rest, stacked with activations/temporaries at the step's peak where measured. Black tick: the "
                "ZeRO formula for the config run, at rest (torch keeps stage-2 parameters sharded at rest; the table gives the "
                f"during-the-step figures). Source: {src}."
                + (f" Fixed: {', '.join(f'{k}={fmt(v)}' for k, v in fixed.items())}." if fixed else ""),
                [("", header, body)],
            )
        )
    return sections


SIZE_KEYS = ("params", "model", "layers", "width")  # what sets a model's size: one panel (and scale) each


def _memory_figure(
    group: list[Row], keys: list[str], cats: list[tuple[str, list[float]]], formula: list[float], div: float, src: str
) -> Any:
    """Stacked bars per config, one panel per model size (each with its own y scale and unit, so
    stages 1-3 of a small model are not slivers beside a large model's DDP bar); x labels: the
    stage and the other varying fields, one per line; one legend, right of the last panel."""
    size_keys = [k for k in keys if k in SIZE_KEYS]
    other = [k for k in keys if k not in SIZE_KEYS]
    panels: dict[str, list[int]] = {}
    for i, r in enumerate(group):
        title = ", ".join(f"{k}={fmt(field_of(r, k))}" for k in size_keys)
        panels.setdefault(title, []).append(i)
    both = len({r.plugin for r in group}) > 1
    plt = pyplot()
    widths = [max(len(ix), 2) for ix in panels.values()]
    fig, axes = plt.subplots(
        1,
        len(panels),
        figsize=(max(7.0, 1.25 * sum(widths) + 3.2), 5.0),
        gridspec_kw={"width_ratios": widths},
        squeeze=False,
    )
    for ax, (title, ix) in zip(axes[0], panels.items()):
        peak = max(sum(v[i] for _, v in cats) for i in ix) * div
        unit, pdiv = ("GB", 1e9) if peak > 4 * 2**30 else ("MiB", 2**20)  # GB = 1e9 bytes, as in ZeRO Figure 1
        k = div / pdiv
        xs = list(range(len(ix)))
        bottom = [0.0] * len(ix)
        for name, vals in cats:
            pv = [vals[i] * k for i in ix]
            ax.bar(xs, pv, bottom=bottom, label=name, width=0.7)
            bottom = [b + v for b, v in zip(bottom, pv)]
        fx = [(x, formula[i] * k) for x, i in zip(xs, ix) if formula[i]]
        if fx:
            ax.scatter(
                [x for x, _ in fx],
                [f for _, f in fx],
                marker="_",
                s=700,
                linewidths=2,
                color="black",
                zorder=3,
                label="ZeRO formula (model states at rest)",
            )

        def tick(r: Row) -> str:
            lines = [(f"{r.plugin} " if both else "") + f"stage {stage_of(r)}"]
            vals = [(k, r.device if k == "device" else field_of(r, k)) for k in other]
            lines += [f"{'ws' if k == 'world_size' else k}={fmt(v)}" for k, v in vals if v not in (None, "")]
            return "\n".join(lines)

        ax.set_xticks(xs)
        ax.set_xticklabels([tick(group[i]) for i in ix], fontsize=9)
        ax.set_xlim(-0.6, len(ix) - 0.4)
        ax.set_ylabel(f"{unit} per rank")
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    axes[0][-1].legend(handles, labels, fontsize=9, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle(f"Memory per rank by stage and world size ({src})", fontsize=12)
    fig.tight_layout()
    return fig


def _summary(rows: Sequence[Row], metric: str) -> list[Row]:
    return [r for r in rows if r.plugin in ("fsdp", "ddp") and r.kind == "summary" and r.number(metric) is not None]


def _config(r: Row) -> str:
    return ", ".join(f"{k}={fmt(r.labels[k])}" for k in ("stage", "precision", "model", "hybrid") if k in r.labels)


def weak_scaling_section(rows: Sequence[Row]) -> list[Section]:
    """Per configuration run at several world sizes: per-rank throughput and collective bytes vs the
    smallest world size (weak scaling: each rank keeps its batch; ideal per-rank figures stay flat)."""
    by: dict[str, list[Row]] = {}
    for r in _summary(rows, "tokens_per_s_per_rank"):
        by.setdefault(f"{r.plugin} {_config(r)} on {r.device}", []).append(r)
    body = []
    for name, rs in sorted(by.items()):
        if len({r.labels.get("world_size") for r in rs}) < 2:
            continue
        for r in sorted(rs, key=lambda r: sort_key(r.labels.get("world_size"))):
            base = r.number("scaling_vs_world_size") is None  # the smallest world size: every ratio is 1
            cells = [r.number(m) for m in ("tokens_per_s_per_rank", "tflops_per_rank", "comm_bytes_per_rank")]
            ratios = [r.number(m) for m in ("efficiency", "tflops_vs_smallest", "comm_vs_smallest")]
            body.append(
                [name, fmt(r.labels.get("world_size")), fmt(r.value("threads_per_rank"))]
                + [fmt(c) if c is not None else "-" for c in cells]
                + [fmt(c) if c is not None else ("1" if base else "-") for c in ratios]
            )
    if not body:
        return []
    header = [
        "config",
        "world size",
        "threads/rank",
        "tokens/s per rank",
        "TFLOP/s per rank",
        "collective bytes per rank per step",
        "efficiency (tokens/s)",
        "TFLOP/s vs smallest",
        "collective bytes vs smallest",
    ]
    return [
        Section(
            "Weak scaling (measured)",
            "weak-scaling",
            None,
            "Each rank keeps its batch; per-rank figures at the slowest rank's step, against the smallest world size "
            "of the same configuration (efficiency 1 = linear scaling). Collective bytes per rank use the ZeRO paper's "
            "accounting (all-reduce 2x payload; the ring's (N-1)/N factor ignored); on one rank DDP still calls "
            "all-reduce (a local no-op) and FSDP2 calls nothing ('-': no ratio to 0 bytes). On a CPU the ranks split "
            "its cores: compare world sizes at equal threads per rank (--threads).",
            [("", header, body)],
        )
    ]


def predicted_memory_section(rows: Sequence[Row]) -> list[Section]:
    """Real cases beside their simulated twin: the tracked peak (and CUDA's max allocated) vs the prediction."""
    rs = _summary(rows, "sim_peak_mib")
    if not rs:
        return []
    body = []
    for r in sorted(rs, key=lambda r: (r.device, _config(r), sort_key(r.labels.get("world_size")))):
        cuda, ratio = r.number("cuda_max_allocated_mib"), r.number("cuda_vs_sim")
        body.append(
            [
                r.device,
                _config(r),
                fmt(r.labels.get("world_size")),
                fmt(r.number("sim_peak_mib")),
                fmt(r.number("peak_mib")),
                fmt(r.number("peak_vs_sim")),
                fmt(cuda) if cuda else "-",
                fmt(ratio) if ratio else "-",
            ]
        )
    header = [
        "device",
        "config",
        "world size",
        "simulated peak [MiB]",
        "tracked peak here [MiB]",
        "here / simulated",
        "CUDA max allocated [MiB]",
        "CUDA / simulated",
    ]
    return [
        Section(
            "Predicted vs measured per-rank peak",
            "predicted-memory",
            None,
            "The same configuration run for real and --simulate'd (fake process group + fake tensors, on the host): "
            "the simulated per-rank step peak (MemTracker) beside the real run's tracked peak and, on CUDA, "
            "torch.cuda.max_memory_allocated over the same step. Goal: within 5%.",
            [("", header, body)],
        )
    ]


def sections(rows: Sequence[Row], out_dir: Path) -> list[Section]:
    return plot_memory(rows, out_dir) + weak_scaling_section(rows) + predicted_memory_section(rows)
