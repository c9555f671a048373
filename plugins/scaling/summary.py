"""summarize() of the scaling plugin: summary rows with the fits (plugins/scaling/analysis.py) and the
evidence of claims compute.6nd, scale.kaplan.{n,d,c} and scale.chinchilla. No plots (report.py)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from bench.contract import Evidence, Metric, Record, Row, claim_record
from plugins.scaling.analysis import Fits, Iso, LawFit, fits_of
from plugins.scaling.claims import (
    CHINCHILLA_TOKENS_PER_PARAM,
    CLAIM_BY_ID,
    KAPLAN_ALPHA_C,
    KAPLAN_ALPHA_D,
    KAPLAN_ALPHA_N,
)
from plugins.scaling.flops import judge_6nd
from plugins.scaling.shapes import fmt_n

PAPER = {"N": KAPLAN_ALPHA_N, "D": KAPLAN_ALPHA_D, "C": KAPLAN_ALPHA_C}
CAVEATS = (
    "absolute loss constants (Kaplan's N_c, D_c, C_c; Chinchilla's E, A, B) depend on the data and the tokenizer "
    "(here bytes of the Python docs, nats/byte; Kaplan: WebText2 BPE, nats/token): only slopes are compared",
    "models are tiny (3k-0.5M parameters on CPU), data repeats for the small ones (epochs column) and one seed "
    "trains each point: the fits describe this regime, not the papers' 1e6-1e10 parameter range",
)


def summarize(rows: Sequence[Row]) -> list[Record]:
    out: list[Record] = []
    flops = [r for r in rows if r.is_case and r.ok and r.value("ratio_6n") is not None]
    six = judge_6nd(flops)
    if six is not None:
        out.append(six)
    fits = fits_of(rows)
    if not fits.runs:
        return out
    noise = fits.rel_noise
    if fits.noise:
        out.append(_noise_record(fits))
    for f in (fits.law_n, fits.law_d, fits.law_c):
        if f is not None:
            out.append(_law_record(f, noise))
    for iso in fits.isos:
        out.append(_iso_record(iso))
    valid = [i for i in fits.isos if i.opt.ok]
    if valid:
        out.append(_iso_overall(valid))
    if out:
        out[-1].notes.extend(CAVEATS)
    return out


def law_text(f: LawFit, noise: float | None = None) -> str:
    """The fit in words: exponent, its errors (fit, seed noise), the range, the irreducible-term fit."""
    se = "n/a" if f.alpha_se != f.alpha_se else f"{f.alpha_se:.3f}"
    s = (
        f"alpha_{f.what} = {f.alpha:.4f} +- {se} (plain log-log fit, {len(f.x)} points over {f.log_span:.2f} decades, "
        f"R^2 {f.r2:.3f}; Kaplan {PAPER[f.what]})"
    )
    if noise is not None:
        s += f"; seed noise alone moves it by ~{f.seed_se(noise):.3f} (1 sigma; noise of the repeated run)"
    if f.sat and f.sat.ok:
        sse = "n/a" if f.sat.alpha_se != f.sat.alpha_se else f"{f.sat.alpha_se:.3f}"
        s += f"; with an irreducible term L = E + A {f.what}^-alpha: alpha = {f.sat.alpha:.3f} +- {sse}, E = {f.sat.E:.3f} nats/byte"
        if f.sat.message:
            s += f" [{f.sat.message}]"
    if f.preferred:
        s += f"; AICc prefers: {f.preferred}"
    return s


def _law_record(f: LawFit, noise: float | None) -> Record:
    claim = CLAIM_BY_ID[f"scale.kaplan.{f.what.lower()}"]
    pts = ", ".join(f"{s}:{fmt_n(x)}->{y:.3f}" for s, x, y in zip(f.shapes, f.x, f.y))
    rs = f.runs
    tpp = [r.d / r.n_total for r in rs]
    regime = (
        f"regime: N_nonemb {_span([r.n for r in rs])}, D {_span([r.d for r in rs])} tokens, {min(tpp):.0f}-{max(tpp):.0f} "
        "tokens/param (Kaplan: 1e3-1e9 parameters, L(N) trained to convergence, L(D) on large models early-stopped)"
    )
    detail = (
        f"fitted exponent of final validation loss vs {f.what} {f.at}: {law_text(f, noise)}; points {pts}; {regime}"
    )
    rec = claim_record(claim, Evidence(f.alpha, "", "measured", detail), {"analysis": f"L({f.what}) {f.at}"})
    rec.metrics.update(
        {
            "alpha_stderr": Metric(f.alpha_se, "", "measured"),
            "alpha_irr": Metric(f.sat.alpha if f.sat and f.sat.ok else None, "", "measured"),
            "alpha_irr_stderr": Metric(f.sat.alpha_se if f.sat and f.sat.ok else None, "", "measured"),
            "paper_alpha": Metric(PAPER[f.what], "", "formula"),
            "points": Metric(len(f.x), "runs", "measured"),
            "decades": Metric(f.log_span, "decades of " + f.what, "measured"),
        }
    )
    if noise is not None:
        rec.metrics["alpha_seed_se"] = Metric(f.seed_se(noise), "", "measured")
    return rec


def _span(xs: list[float]) -> str:
    lo, hi = fmt_n(min(xs)), fmt_n(max(xs))
    return lo if lo == hi else f"{lo}-{hi}"


def _noise_record(fits: Fits) -> Record:
    pairs = "; ".join(
        f"{a.shape} at D={fmt_n(a.d)}: {a.loss:.4f} (seed +{1000 * a.repeat}) vs {b.loss:.4f} ({100 * (a.loss / b.loss - 1):+.2f}%)"
        for a, b in fits.noise
    )
    note = (
        f"seed-to-seed noise: the same run with another seed (init and data order) gave {pairs}. One repeat is a "
        "rough estimate; it is propagated to each exponent as sigma(ln L) = difference / sqrt(2)"
    )
    m = {"loss_seed_diff_pct": Metric(100 * (fits.rel_noise or 0.0), "% of final loss (largest repeat)", "measured")}
    return Record(metrics=m, labels={"analysis": "seed noise"}, notes=[note])


def _iso_record(iso: Iso) -> Record:
    c, rs, o = iso.c, iso.runs, iso.opt
    lab = {"analysis": f"isoFLOP C={c:.3g}"}
    losses = ", ".join(f"{r.shape}:{r.loss:.3f}" for r in rs)
    if not o.ok:
        return Record(
            labels=lab,
            metrics={"points": Metric(len(rs), "runs", "measured")},
            notes=[f"isoFLOP C={c:.3g}: {o.message}; losses {losses}"],
        )
    tpp = iso.tpp(o.log_n_opt)
    se2 = 2 * o.log_n_se  # ln(D/N) = ln(C/6) - 2 ln N
    lo, hi = (tpp * math.exp(-se2), tpp * math.exp(se2)) if se2 == se2 else (math.nan, math.nan)
    blo, bhi = iso.tpp(o.boot_hi), iso.tpp(o.boot_lo)
    # N_nonemb at the optimum: ln N_nonemb interpolated in ln N_total along the profile (extrapolated at the ends)
    ln_nonemb = _interp(o.log_n_opt, [math.log(r.n_total) for r in rs], [math.log(r.n) for r in rs])
    d_opt = c / (6 * o.n_opt)
    m = {
        "n_opt": Metric(o.n_opt, "params", "measured"),
        "tokens_per_param": Metric(tpp, "tokens/param", "measured"),
        "tpp_low": Metric(lo, "tokens/param (1 sigma, curvature)", "measured"),
        "tpp_high": Metric(hi, "tokens/param (1 sigma, curvature)", "measured"),
        "paper_tpp": Metric(CHINCHILLA_TOKENS_PER_PARAM, "tokens/param", "formula"),
        "points": Metric(len(rs), "runs", "measured"),
    }
    note = (
        f"isoFLOP C={c:.3g} FLOP (6 N_total D): parabola in ln N over {len(rs)} sizes "
        f"{fmt_n(rs[0].n_total)}-{fmt_n(rs[-1].n_total)} ({losses}): N_opt = {fmt_n(o.n_opt)} (all params; "
        f"~{fmt_n(math.exp(ln_nonemb))} non-embedding), D_opt = {fmt_n(d_opt)} tokens, {tpp:.1f} tokens/param "
        f"(1-sigma from the curvature {lo:.1f}-{hi:.1f}; bootstrap 16-84% {blo:.1f}-{bhi:.1f}, "
        f"{100 * o.boot_valid:.0f}% of resamples had a minimum; {d_opt / math.exp(ln_nonemb):.0f} per non-embedding "
        f"param), min loss {o.loss_min:.3f}, parabola rms residual {o.rms:.3f}"
        + ("" if o.interior else f"; {o.message}")
    )
    return Record(labels=lab, metrics=m, notes=[note])


def _iso_overall(valid: list[Iso]) -> Record:
    from bench.fit import fit_power_law

    inner = [v for v in valid if v.opt.interior]
    best = max(inner or valid, key=lambda v: v.c)
    tpp = best.tpp(best.opt.log_n_opt)
    parts = []
    for v in valid:
        o = v.opt
        t = v.tpp(o.log_n_opt)
        se2 = 2 * o.log_n_se
        rng = f"{t * math.exp(-se2):.1f}-{t * math.exp(se2):.1f}" if se2 == se2 else "n/a (3 points: no residual)"
        boot = f"{v.tpp(o.boot_hi):.1f}-{v.tpp(o.boot_lo):.1f}" if o.boot_lo == o.boot_lo else "n/a"
        edge = "" if o.interior else "; vertex outside the sizes: a bound"
        parts.append(f"C={v.c:.3g}: {t:.1f} over {len(v.runs)} sizes (1-sigma {rng}; bootstrap 16-84% {boot}{edge})")
    detail = (
        "tokens per parameter at the isoFLOP optimum (Chinchilla Approach 2: parabola of final validation loss in "
        "ln N at fixed C = 6 N_total D; N = all parameters, Chinchilla's convention), value from the largest budget "
        "with an interior optimum: " + "; ".join(parts)
    )
    m = {"tokens_per_param": Metric(tpp, "tokens/param", "measured")}
    if len(valid) >= 2:
        pf = fit_power_law([v.c for v in valid], [v.opt.n_opt for v in valid])
        se = "n/a" if pf.stderr != pf.stderr else f"{pf.stderr:.2f}"
        detail += f"; N_opt ~ C^{pf.exponent:.2f} +- {se} over {len(valid)} budgets (Chinchilla: a = 0.50, Table 2)"
        m["n_opt_exponent"] = Metric(pf.exponent, "", "measured")
    detail += (
        f"; Chinchilla Table 3: ~{CHINCHILLA_TOKENS_PER_PARAM:g} tokens/param at 4e8-1e10 params. At this tiny scale "
        "the uncertainty is a factor of several: few sizes per budget, one seed, fixed hyperparameters, embeddings "
        "that are most of N_total, and the optimum ratio need not be scale-free down here"
    )
    m["paper_tpp"] = Metric(CHINCHILLA_TOKENS_PER_PARAM, "tokens/param", "formula")
    ev = Evidence(tpp, "tokens/param", "measured", detail)
    rec = claim_record(CLAIM_BY_ID["scale.chinchilla"], ev, {"analysis": "isoFLOP optimum"})
    rec.metrics.update(m)
    return rec


def _interp(x: float, xs: list[float], ys: list[float]) -> float:
    """Piecewise-linear y(x) through sorted xs, extended by the end segments."""
    if len(xs) == 1:
        return ys[0]
    j = max(0, min(len(xs) - 2, sum(1 for v in xs if v <= x) - 1))
    return ys[j] + (ys[j + 1] - ys[j]) / (xs[j + 1] - xs[j]) * (x - xs[j])
