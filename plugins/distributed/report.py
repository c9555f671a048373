"""Report section of ddp/fsdp: per-rank memory by stage and world size, stacked by category."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.contract import Row, Section
from bench.plots import field_of, first_number, fmt, ok_cases, pyplot, save, sort_key, varying


def metric_source(row: Row, *names: str) -> str | None:
    for n in names:
        m = row.metric(n)
        if m is not None:
            return m.source
    return None


MEM_STATES = (("params_bytes", "parameters"), ("grads_bytes", "gradients"), ("optim_bytes", "optimizer state"))
MEM_PEAK = (("peak_activations_mib", "activations (at peak)"), ("peak_temporaries_mib", "temporaries (at peak)"))


def plot_memory(rows: Sequence[Row], out_dir: Path) -> list[Section]:
    rs = [r for r in ok_cases(rows, ("fsdp", "ddp", "zero", "distributed"))
          if first_number(r, "params_bytes", "grads_bytes", "optim_bytes", "model_state_bytes") is not None]  # fmt: skip
    if not rs:
        return []
    # one bar per config: the rank with the most model-state bytes (ranks differ by the greedy partition)
    configs: dict[str, dict[str, Any]] = {}
    for r in rs:
        key = json.dumps([r.plugin, r.device, r.params, {k: v for k, v in r.labels.items() if k != "rank"}],
                         sort_keys=True, default=str)  # fmt: skip
        tot = sum(first_number(r, m) or 0 for m, _ in MEM_STATES) or (first_number(r, "model_state_bytes") or 0)
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

        def stage_of(r: Row) -> Any:
            st = field_of(r, "stage")
            return 0 if st is None and r.plugin == "ddp" else st

        def ident(r: dict[str, Any], keys: list[str] = keys) -> str:
            st = stage_of(r)
            head = r.plugin + (f" stage {st}" if st is not None else "")
            vals = [(k, r.device if k == "device" else field_of(r, k)) for k in keys]
            return ", ".join([head] + [f"{k}={fmt(v)}" for k, v in vals if v is not None])

        group.sort(key=lambda r: [sort_key(stage_of(r))] + [sort_key(r.device if k == "device" else field_of(r, k)) for k in keys])
        fixed = {k: v for k, v in group[0].params.items()
                 if k not in keys and k != "stage" and all(r.params.get(k) == v for r in group)}  # fmt: skip
        biggest = max(sum(first_number(r, m) or 0 for m, _ in MEM_STATES) or (first_number(r, "model_state_bytes") or 0) for r in group)
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
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(max(6.5, 1.1 * len(group) + 3), 4.6))
        xs = list(range(len(group)))
        bottom = [0.0] * len(group)
        for name, vals in cats:
            ax.bar(xs, vals, bottom=bottom, label=name)
            bottom = [b + v for b, v in zip(bottom, vals)]
        # the formula for what the bars show (at rest); stage 2's "during the step" figure is in the table
        formula = [(first_number(r, "formula_rest_bytes", "formula_bytes") or 0) / div for r in group]
        if any(formula):
            ax.scatter([x for x, f in zip(xs, formula) if f], [f for f in formula if f], marker="_", s=900, linewidths=2,
                       color="black", zorder=3, label="ZeRO formula (model states at rest)")  # fmt: skip
        ax.set_xticks(xs)
        ax.set_xticklabels([ident(r).replace(", ", "\n") for r in group], fontsize=7)
        ax.set_ylabel(f"{unit} per rank")
        ax.set_title(f"Memory per rank by stage and world size ({src})")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), markerscale=0.4)
        name = save(fig, out_dir, f"memory_{src}.png")
        step = [first_number(r, "model_state_step_bytes") for r in group]
        show_step = any(v is not None for v in step)
        header = (["config"] + [f"{n} [{unit}]" for n, _ in cats] + [f"total [{unit}]", f"formula at rest [{unit}]"]
                  + ([f"model states during step [{unit}]", f"formula during step [{unit}]"] if show_step else []) + ["status"])  # fmt: skip
        body = []
        for i, r in enumerate(group):
            line = [ident(r)] + [fmt(v[i]) for _, v in cats] + [fmt(bottom[i]), fmt(formula[i]) if formula[i] else ""]
            if show_step:
                fs = first_number(r, "formula_bytes")
                line += [fmt(step[i] / div) if step[i] is not None else "", fmt(fs / div) if fs is not None else ""]
            body.append(line + [r.status])
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
