"""Report section of scaling: final loss vs N and D, power-law fits, isoFLOP minima."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.contract import Row, Section, Table
from bench.plots import field_of, first_number, fmt, num, ok_cases, pyplot, readable_log_y, save


def metric_source(row: Row, *names: str) -> str | None:
    for n in names:
        m = row.metric(n)
        if m is not None:
            return m.source
    return None


SCALE_N = ("params", "n_params", "N")
SCALE_D = ("tokens", "n_tokens", "D")
SCALE_SHAPE = ("shape", "preset", "model")


def _scale_num(r: dict[str, Any], names: Sequence[str]) -> float | None:
    """N or D of a scaling row: the metric first (a case's `tokens` param is 0 on isoFLOP runs)."""
    v = first_number(r, *names)
    if not v:
        v = num(field_of(r, *names))
    return v or None


def _budget(r: Row) -> str:
    """The line a training run belongs to in loss-vs-N: its isoFLOP budget C, or its fixed D."""
    p = r.params or {}
    b = str(p.get("budget") or "").replace(" ", "")  # the scaling plugin's "C=3e10" / "D=1.6e6"
    if b.upper().startswith("C="):
        return f"C={b[2:]} FLOP (isoFLOP)"
    if b.upper().startswith("D="):
        return f"D={b[2:]} tokens"
    c, d = num(p.get("compute")), num(p.get("tokens"))
    if c:
        return f"C={c:.3g} FLOP (isoFLOP)"
    if d:
        return f"D={d:.3g} tokens"
    return "all"


def plot_scaling(rows: Sequence[Row], out_dir: Path) -> list[Section]:
    """Loss vs N (one line per compute budget or fixed D; power-law fits on fixed-D lines, the
    minimum marked on isoFLOP lines) and loss vs D (one line per model shape)."""
    from bench.fit import fit_power_law

    rs = [r for r in ok_cases(rows, ("scaling",)) if first_number(r, "final_loss", "loss") is not None and _scale_num(r, SCALE_N)]
    if not rs:
        return []
    plt = pyplot()
    by_budget: dict[str, list[Row]] = {}
    for r in rs:
        by_budget.setdefault(_budget(r), []).append(r)
    by_shape: dict[str, list[Row]] = {}
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
            pts = sorted((_scale_num(r, names), first_number(r, "final_loss", "loss"), r) for r in srs if _scale_num(r, names))
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
                n_all = first_number(r0, "params_total") or x0
                optima.append([lab, fmt(x0), fmt(d0), fmt(d0 / n_all) if d0 else "", fmt(y0),
                               "yes" if x0 in (min(xs), max(xs)) else "no"])  # fmt: skip
        ax.set_xscale("log")
        ax.set_yscale("log")
        readable_log_y(ax)
        ax.set_xlabel("non-embedding parameters N" if axis == "N" else "training tokens D")
        ax.set_ylabel("final loss")
        ax.set_title(f"Scaling: final loss vs {axis} (log-log)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6)
    name = save(fig, out_dir, "scaling.png")
    extra = [m for m in ("params_total", "tokens_per_param", "compute") if any(first_number(r, m) is not None for r in rs)]
    header = ["line", "shape", "N", "D", "final_loss"] + extra
    body = [[_budget(r), fmt(field_of(r, *SCALE_SHAPE)), fmt(_scale_num(r, SCALE_N)), fmt(_scale_num(r, SCALE_D)),
             fmt(first_number(r, "final_loss", "loss"))] + [fmt(first_number(r, m)) for m in extra]
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
