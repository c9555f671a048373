"""Report sections of precision: loss curves per format and their difference from fp32; activation
bytes per layer, formula vs measured; training memory of the 1B GPT beside the notes' 4 + 4 + 8 + 8."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.contract import Row, Section
from bench.plots import field_of, first_number, fmt, label, ok_cases, pyplot, save, varying


def _smooth(xs: Sequence[float], k: int) -> list[float]:
    """Trailing moving average over k steps (the first points average what exists)."""
    out, acc = [], 0.0
    for i, x in enumerate(xs):
        acc += x
        if i >= k:
            acc -= xs[i - k]
        out.append(acc / min(i + 1, k))
    return out


def loss_section(rows: Sequence[Row], out_dir: Path) -> list[Section]:
    """Loss per step per format (and scaler); beside it, each curve's difference from the fp32
    curve of the same run settings in %, smoothed, which is what prec.bf16_training is about."""
    rs = [r for r in ok_cases(rows, ("precision",)) if len(r.samples.get("loss") or []) >= 2]
    if not rs:
        return []
    keys = varying(rs, exclude=("rank",))
    lonly = sorted({k for r in rs for k in r.labels})
    keys = [k for k in lonly if k in keys] + [k for k in keys if k not in lonly]  # format, scaler first
    rs.sort(key=lambda r: label(r, keys, lonly))
    curves = [(label(r, keys, lonly), r, [float(x) for x in r.samples["loss"] if x is not None]) for r in rs]

    def fmt_of(r: Row) -> Any:
        return r.labels.get("format", field_of(r, "dtype", "precision"))

    def same_run(a: Row, b: Row) -> bool:  # the same settings but the format
        def settings(r: Row) -> dict[str, Any]:
            return {k: v for k, v in r.params.items() if k not in ("dtype", "precision", "format", "scaler")}

        return settings(a) == settings(b) and a.device == b.device

    refs = [(r, loss) for _, r, loss in curves if fmt_of(r) == "fp32"]
    plt = pyplot()
    fig, axes = plt.subplots(1, 2 if refs else 1, figsize=(13.0 if refs else 7.5, 4.6), squeeze=False)
    ax = axes[0][0]
    body = []
    k = max(1, min(10, len(curves[0][2]) // 10))
    for lab, r, loss in curves:
        ax.plot(range(1, len(loss) + 1), loss, label=lab, linewidth=1.1)
        final = first_number(r, "final_loss")
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
    ax.legend(fontsize=9)
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
            a2.legend(fontsize=9)
    name = save(fig, out_dir, "precision_loss.png")
    header = ["series", "steps", "first loss", "last loss", "final_loss metric", f"last vs fp32 [%, {k}-step avg]"]
    return [
        Section(
            "Precision: loss curves",
            "precision",
            name,
            "samples['loss'] per step of each training case; right: each curve against the fp32 curve of the "
            "same settings (training loss; prec.bf16_training compares the final validation loss).",
            [("", header, body)],
        )
    ]


def sections(rows: Sequence[Row], out_dir: Path) -> list[Section]:
    return loss_section(rows, out_dir) + activation_section(rows) + scale_section(rows)


def activation_table(rows: Sequence[Row]) -> tuple[list[str], list[list[str]]]:
    """One line per configuration: formula vs measured bytes per layer (also the README's table)."""
    rs = [r for r in ok_cases(rows, ("precision",)) if r.params.get("what") == "activations" and r.number("ratio")]
    header = [
        "dtype",
        "attention",
        "h",
        "a",
        "s",
        "b",
        "source",
        "formula [bytes/layer]",
        "measured [bytes/layer]",
        "measured / formula",
        "paper as printed [bytes/layer]",
        "measured / paper",
    ]
    body = []
    for r in rs:
        lab = r.labels
        body.append(
            [
                str(lab.get("format")),
                str(lab.get("attention")),
                str(lab.get("d_model")),
                str(lab.get("heads")),
                str(lab.get("seq")),
                str(lab.get("batch")),
                str(lab.get("mode")),
                f"{r.value('formula_bytes'):,}",
                f"{r.value('measured_bytes'):,}",
                f"{r.number('ratio'):.4f}",
                f"{r.value('paper_bytes'):,}",
                f"{r.number('paper_ratio'):.3f}",
            ]
        )
    return header, body


def activation_section(rows: Sequence[Row]) -> list[Section]:
    header, body = activation_table(rows)
    if not body:
        return []
    return [
        Section(
            "Precision: activation bytes per layer",
            "precision-activations",
            None,
            "Bytes one transformer layer keeps for backward: the formula of plugins/common/activations.py "
            "(Korthikanti et al. 2022 sec. 4.1 adapted to this GPT: no dropout, LayerNorm statistics, flash "
            "logsumexp, the CPU math kernel in fp32) vs MemTracker (2 layers - 1 layer); the paper's "
            "sbh(34 + 5as/h) x e/2 as printed beside it.",
            [("", header, body)],
        )
    ]


def scale_section(rows: Sequence[Row]) -> list[Section]:
    """The 1B GPT's step by phase (forward + backward, optimizer update), category by category, beside the
    notes' 4 + 4 + 8 + 8."""
    rs = [r for r in ok_cases(rows, ("precision",)) if r.params.get("what") == "trainmem" and r.labels.get("batch")]
    if not rs:
        return []
    header = [
        "device",
        "source",
        "batch x seq",
        "phase",
        "weights",
        "gradients",
        "Adam (+ update temporaries)",
        "activations + temporaries",
        "peak",
        "at rest (excl. counters)",
        "24 +-10% holds at tokens/batch",
    ]
    body = [["the notes", "", "", "", "4", "4", "8", "8", "24", "16", ""]]
    for r in rs:
        lo, hi = r.number("tokens_24_lo"), r.number("tokens_24_hi")
        window = f"{lo:,.0f} - {hi:,.0f}" if lo is not None and hi is not None else "none"
        for phase, name in (("fwd_bwd", "forward+backward"), ("update", "optimizer update")):
            top = " (the step's peak)" if r.value("peak_phase") == name else ""
            cells = [r.number(f"{phase}_{c}_bytes_per_param") for c in ("parameters", "gradients", "optimizer_state")]
            body.append(
                [
                    r.device,
                    str(r.labels.get("mode")),
                    f"{r.value('batch')} x {r.value('seq')}",
                    name + top,
                    *(fmt(v) for v in cells),
                    fmt(r.number(f"{phase}_act_bytes_per_param")),
                    fmt(r.number(f"peak_{phase}_bytes_per_param")),
                    fmt(r.number("state_bytes_per_param_excl_counters")),
                    window,
                ]
            )
    return [
        Section(
            "Precision: training memory of the 1B GPT (mem.train_24x)",
            "precision-train-24x",
            None,
            "bytes/param at each phase's peak by category (fp32 + AdamW(foreach=True)), beside the notes' "
            "4 + 4 + 8 + 8 = 24; the step's peak is the larger phase.",
            [("", header, body)],
        )
    ]
