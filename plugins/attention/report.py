"""Report sections of attention: time and memory vs sequence length and head count, fitted slopes."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from bench.contract import Row, Section, Table
from bench.plots import (
    field_of,
    first_number,
    fmt,
    label,
    num,
    ok_cases,
    pyplot,
    readable_log_y,
    save,
    series_keys,
    sort_key,
    varying,
)

PANELS = ("time_ms", "extra_mib")  # one log-log panel each


def _sweep_plot(
    rs: list[Row], out_dir: Path, xkey: str, fname: str, xlabel: str
) -> tuple[str, list[Table], str] | None:
    """time_ms and extra_mib vs x per series (every other varying setting), log-log, with fitted
    slopes; only series with >= 2 values of x are drawn. -> (png name, tables, "Fixed: ..." text)."""
    from bench.fit import fit_power_law

    have = [r for r in rs if num(field_of(r, xkey)) is not None]
    if not have:
        return None
    keys = series_keys(have, varying(have, exclude=(xkey, "rank")), lambda r: field_of(r, xkey))
    series: dict[str, list[Row]] = {}
    for r in have:
        series.setdefault(label(r, keys), []).append(r)
    series = {k: v for k, v in series.items() if len({num(field_of(r, xkey)) for r in v}) >= 2}
    # name the lines by what differs among the drawn ones only (single points elsewhere made
    # causal/dtype/mode vary over all rows)
    drawn = [r for v in series.values() for r in v]
    if drawn:
        keys = series_keys(drawn, varying(drawn, exclude=(xkey, "rank")), lambda r: field_of(r, xkey))
        series = {}
        for r in drawn:
            series.setdefault(label(r, keys), []).append(r)
    mnames = [n for n in PANELS if any(first_number(r, n) is not None for v in series.values() for r in v)]
    if not series or not mnames:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, len(mnames), figsize=(6.4 * len(mnames), 5.0), squeeze=False)
    fits: list[list[str]] = []
    for ax, mname in zip(axes[0], mnames):
        unit = ""
        for lab, srs in sorted(series.items()):
            # the median where a point was measured more than once
            by_x: dict[float, list[float]] = {}
            for r in srs:
                y = first_number(r, mname)
                if y is not None and y > 0:
                    by_x.setdefault(num(field_of(r, xkey)), []).append(y)
                    unit = unit or (r.metric(mname).unit if r.metric(mname) else "")
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
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        readable_log_y(ax)
        ax.set_xlabel(xlabel)
        short = unit.split(" ")[0] if unit else ""
        ax.set_ylabel(f"{mname} [{short}]" if short else mname)
        ax.set_title(f"attention {mname} vs {xkey} (log-log)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=9)
    name = save(fig, out_dir, fname)
    data_body = []
    for lab, srs in sorted(series.items()):
        for r in sorted(srs, key=lambda r: sort_key(field_of(r, xkey))):
            data_body.append([lab, fmt(field_of(r, xkey))] + [fmt(first_number(r, m)) for m in mnames])
    tables: list[Table] = []
    if fits:
        tables.append(
            ("Fitted slopes (log-log least squares)", ["series", "metric", "slope", "stderr", "R^2", "points"], fits)
        )
    tables.append(("Data", ["series", xkey, *mnames], data_body))
    p0 = drawn[0].params
    fixed = ", ".join(
        f"{k}={fmt(v)}"
        for k, v in p0.items()
        if k != xkey and k not in keys and all(r.params.get(k) == v for r in drawn)
    )
    return name, tables, f" Fixed: {fixed}." if fixed else ""


def plot_attention(rows: Sequence[Row], out_dir: Path) -> list[Section]:
    rs = ok_cases(rows, ("attention",))
    out = []
    got = _sweep_plot(rs, out_dir, "seq", "attention.png", "sequence length n")
    if got:
        out.append(
            Section(
                "Attention: time and memory vs sequence length",
                "attention",
                got[0],
                "One line per backend/setting; the slope of a log-log line is the exponent in n "
                "(naive attention memory ~2, fused kernels ~1). Memory: extra bytes above the inputs." + got[2],
                got[1],
            )
        )
    got = _sweep_plot(rs, out_dir, "heads", "attention_heads.png", "attention heads H")
    if got:
        out.append(
            Section(
                "Attention: time and memory vs head count",
                "attention-heads",
                got[0],
                "Head-count sweeps at fixed sequence length (attn.heads: report only)." + got[2],
                got[1],
            )
        )
    return out
