"""Report section of the scaling plugin: one figure (L(N) at fixed D, L(D) at fixed N, the isoFLOP
profiles with their parabolas and vertices, loss vs compute with the frontier fit) and the tables of
exponents, isoFLOP optima and runs, from the fits of plugins/scaling/analysis.py (the same numbers
the summary rows and claims carry)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.contract import Row, Section, Table
from bench.plots import fmt, pyplot, readable_log_y, save
from plugins.scaling.analysis import Fits, LawFit, fits_of, groups
from plugins.scaling.claims import CHINCHILLA_TOKENS_PER_PARAM, CLAIM_BY_ID
from plugins.scaling.shapes import fmt_n
from plugins.scaling.summary import PAPER

LOSS = "final validation loss [nats/byte]"


def sections(rows: Sequence[Row], out_dir: Path) -> list[Section]:
    fits = fits_of([r for r in rows if r.plugin == "scaling"], n_boot=500)
    if not fits.runs:
        return []
    plt = pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(13, 9.5))
    _panel_n(axes[0][0], fits)
    _panel_d(axes[0][1], fits)
    _panel_iso(axes[1][0], fits, plt)
    _panel_c(axes[1][1], fits, plt)
    for ax in axes.flat:
        ax.grid(True, which="both", alpha=0.3)
    name = save(fig, out_dir, "scaling.png")
    tables: list[Table] = [_exponent_table(fits)]
    if fits.isos:
        tables.append(_iso_table(fits))
    tables.append(_data_table(fits))
    caption = (
        "Final validation loss of small GPTs trained on the Python docs (bytes): L(N) at fixed data, L(D) at fixed "
        "size, isoFLOP profiles (C = 6 N_total D) with the parabola in ln N and its vertex (bootstrap 16-84%), and "
        "loss vs compute with the fit on the compute-efficient frontier. Dashed: plain log-log fits (Kaplan's form); "
        "dotted: with an irreducible term."
    )
    notes = []
    if fits.rel_noise is not None:
        notes.append(f"seed-to-seed noise (one repeat): {100 * fits.rel_noise:.2f}% of the final loss")
    return [Section("Scaling: loss vs model size, data and compute", "scaling", name, caption, tables, notes)]


def _fit_lines(ax: Any, f: LawFit | None) -> None:
    if f is None or f.alpha != f.alpha:
        return
    import numpy as np

    xs = np.geomspace(min(f.x), max(f.x), 50)
    ax.plot(
        xs,
        f.prefactor * xs ** (-f.alpha),
        "k--",
        lw=1.2,
        label=f"fit: alpha_{f.what} = {f.alpha:.3f} (Kaplan {PAPER[f.what]})",
    )
    if f.sat and f.sat.ok:
        ax.plot(
            xs, f.sat.predict(xs), "r:", lw=1.2, label=f"E + A x^-alpha: alpha = {f.sat.alpha:.3f}, E = {f.sat.E:.2f}"
        )


def _log_axes(ax: Any, xlabel: str, title: str) -> None:
    ax.set(xscale="log", yscale="log", xlabel=xlabel, ylabel=LOSS, title=title)
    readable_log_y(ax)
    ax.title.set_fontsize(9)
    ax.legend(fontsize=9)


def _panel_n(ax: Any, fits: Fits) -> None:
    for g in groups(fits.runs, "d"):
        if len({r.n for r in g}) >= 2:
            g = sorted(g, key=lambda r: r.n)
            ax.plot([r.n for r in g], [r.loss for r in g], "o-", ms=4, lw=0.8, label=f"D = {fmt_n(g[0].d)} tokens")
    _fit_lines(ax, fits.law_n)
    _log_axes(ax, "N (non-embedding parameters)", "L(N) at fixed D" + (f" ({fits.law_n.at})" if fits.law_n else ""))


def _panel_d(ax: Any, fits: Fits) -> None:
    for g in groups(fits.runs, "n"):
        if len({r.d for r in g}) >= 2:
            g = sorted(g, key=lambda r: r.d)
            ax.plot(
                [r.d for r in g], [r.loss for r in g], "o-", ms=4, lw=0.8, label=f"{g[0].shape} (N = {fmt_n(g[0].n)})"
            )
    _fit_lines(ax, fits.law_d)
    _log_axes(ax, "D (tokens trained)", "L(D) at fixed N" + (f" ({fits.law_d.at})" if fits.law_d else ""))


def _panel_iso(ax: Any, fits: Fits, plt: Any) -> None:
    import numpy as np

    for i, iso in enumerate(fits.isos):
        col = plt.get_cmap("plasma")(i / max(1, len(fits.isos)))
        rs, o = iso.runs, iso.opt
        ax.plot([r.n_total for r in rs], [r.loss for r in rs], "o", color=col, label=f"C = {iso.c:.3g} FLOP")
        if o.ok:
            x = np.log([r.n_total for r in rs])
            a, b, c = np.polyfit(x, [r.loss for r in rs], 2)
            xs = np.linspace(x.min() - 0.3, x.max() + 0.3, 80)
            ax.plot(np.exp(xs), a * xs**2 + b * xs + c, "-", color=col, lw=1)
            xerr = None
            if o.boot_lo == o.boot_lo:
                xerr = [[max(0.0, o.n_opt - math.exp(o.boot_lo))], [max(0.0, math.exp(o.boot_hi) - o.n_opt)]]
            tpp = iso.tpp(o.log_n_opt)
            ax.errorbar(
                [o.n_opt],
                [o.loss_min],
                xerr=xerr,
                fmt="*",
                color=col,
                ms=12,
                capsize=3,
                label=f"optimum: {tpp:.0f} tokens/param",
            )
        n20 = math.sqrt(iso.c / (6 * CHINCHILLA_TOKENS_PER_PARAM))  # D = 20 N and C = 6 N D
        ax.axvline(n20, color=col, ls=":", lw=1, label=f"{CHINCHILLA_TOKENS_PER_PARAM:g} tokens/param (Chinchilla)")
    ax.set(
        xscale="log", xlabel="N_total (all parameters)", ylabel=LOSS, title="isoFLOP profiles (Chinchilla Approach 2)"
    )
    ax.xaxis.set_minor_formatter(plt_null())  # minor labels (3x10^3, 4x10^3 ...) ran into each other
    ax.title.set_fontsize(9)
    ax.legend(fontsize=9)


def plt_null() -> Any:
    from matplotlib.ticker import NullFormatter

    return NullFormatter()


def _panel_c(ax: Any, fits: Fits, plt: Any) -> None:
    shapes = sorted({r.shape for r in fits.runs}, key=lambda s: min(r.n_total for r in fits.runs if r.shape == s))
    cmap = plt.get_cmap("viridis")
    for i, s in enumerate(shapes):
        rs = sorted((r for r in fits.runs if r.shape == s), key=lambda r: r.c)
        label = f"{s} (N_total = {fmt_n(rs[0].n_total)})"
        ax.plot(
            [r.c for r in rs],
            [r.loss for r in rs],
            "o-",
            color=cmap(i / max(1, len(shapes) - 1)),
            ms=4,
            lw=0.8,
            label=label,
        )
    _fit_lines(ax, fits.law_c)
    _log_axes(ax, "compute C = 6 N_total D [FLOP]", "loss vs compute (fit on the frontier)")


def _exponent_table(fits: Fits) -> Table:
    body = []
    for what, f in (("N", fits.law_n), ("D", fits.law_d), ("C", fits.law_c)):
        claim = CLAIM_BY_ID[f"scale.kaplan.{what.lower()}"]
        lo, hi = claim.check.lo, claim.check.hi
        window = f"{lo:g}-{hi:g}"
        if f is None or f.alpha != f.alpha:
            body.append([f"L({what})", "-", "0", "-", "-", "-", f"{PAPER[what]}", window, "not measured"])
            continue
        irr = f"{f.sat.alpha:.3f}" if f.sat and f.sat.ok else "-"
        inside = "yes" if lo is not None and hi is not None and lo <= f.alpha <= hi else "no"
        se = "" if f.alpha_se != f.alpha_se else f" ± {f.alpha_se:.3f}"
        body.append(
            [
                f"L({what})",
                f.at,
                str(len(f.x)),
                f"{f.log_span:.2f}",
                f"{f.alpha:.4f}{se}",
                irr,
                f"{PAPER[what]}",
                window,
                inside,
            ]
        )
    header = [
        "law",
        "held fixed",
        "points",
        "decades",
        "alpha (log-log)",
        "alpha (with E)",
        "Kaplan",
        "window",
        "in window",
    ]
    return (
        "Scaling exponents (plain log-log fits, Kaplan eq. 1.1-1.3; window: claims scale.kaplan.n/d/c)",
        header,
        body,
    )


def _iso_table(fits: Fits) -> Table:
    body = []
    for iso in fits.isos:
        o = iso.opt
        sizes = f"{len(iso.runs)}: {fmt_n(iso.runs[0].n_total)}-{fmt_n(iso.runs[-1].n_total)}"
        if not o.ok:
            body.append([f"{iso.c:.3g}", sizes, "-", "-", "-", "-", "-", o.message])
            continue
        tpp = iso.tpp(o.log_n_opt)
        se2 = 2 * o.log_n_se
        sig = f"{tpp * math.exp(-se2):.1f}-{tpp * math.exp(se2):.1f}" if se2 == se2 else "-"
        boot = f"{iso.tpp(o.boot_hi):.1f}-{iso.tpp(o.boot_lo):.1f}" if o.boot_lo == o.boot_lo else "-"
        body.append(
            [
                f"{iso.c:.3g}",
                sizes,
                fmt_n(o.n_opt),
                fmt_n(iso.c / (6 * o.n_opt)),
                f"{tpp:.1f}",
                sig,
                boot,
                "yes" if o.interior else "no (a bound)",
            ]
        )
    header = ["C [FLOP]", "sizes", "N_opt", "D_opt", "tokens/param", "1 sigma", "bootstrap 16-84%", "interior"]
    return ("isoFLOP optima (parabola vertex in ln N_total; Chinchilla ~20 tokens/param)", header, body)


def _data_table(fits: Fits) -> Table:
    body = [
        [
            r.shape,
            fmt(r.n),
            fmt(r.n_total),
            fmt(r.d),
            fmt(r.c),
            fmt(r.d / r.n_total),
            fmt(r.loss),
            f"C={r.budget:.3g}" if r.budget else "D",
        ]
        for r in sorted(fits.runs, key=lambda r: (r.n, r.d))
    ]
    header = ["shape", "N (non-emb.)", "N_total", "D [tokens]", "C [FLOP]", "tokens/param", "final loss", "budget"]
    return ("Runs (seed 0)", header, body)
