"""Across cases: power-law exponents of memory and time in n (and in the head count), and the
claims' evidence.

A sweep is one parameter varied (seq or heads) with every other one fixed; per value the median of
extra_mib and time_ms; the exponent is the slope of a least-squares line in log-log (bench/fit.py,
with stderr and R^2). The naive kernel's memory exponent in n is attn.quadratic (expected 2), a
fused kernel's attn.flash_linear (expected 1); head-count sweeps give attn.heads (report); on CUDA
the flash backend's best % of the dense peak gives attn.fa_speed (report).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from bench.contract import Evidence, Metric, Record, Row
from plugins.attention.claims import CLAIMS
from plugins.attention.params import DTYPES, FUSED, IMPLS

SWEEP_KEYS = ("impl", "dtype", "mode", "seq", "heads", "head_dim", "batch", "causal")


@dataclass
class Sweep:
    """One parameter swept (seq or heads) with every other parameter fixed; medians per x."""

    var: str
    fixed: dict[str, Any]
    xs: list[int]
    mem: list[float]  # extra_mib per x
    time: list[float]  # time_ms per x
    rec: Record | None = None

    def fits(self) -> dict[str, Any]:
        from bench.fit import fit_power_law

        res: dict[str, Any] = {}
        for what, ys in (("mem", self.mem), ("time", self.time)):
            try:
                res[what] = fit_power_law(self.xs, ys)
            except ValueError:
                res[what] = None
        return res

    def label(self) -> str:
        f = self.fixed
        bits = f"{f['impl']} {f['dtype']} {f['mode']}" + (" causal" if f.get("causal") else "")
        other = ", ".join(f"{k}={f[k]}" for k in ("seq", "heads", "head_dim", "batch") if k in f)
        return f"{bits} ({other})"

    def record(self) -> Record:
        fits = self.fits()
        m: dict[str, Metric] = {
            "points": Metric(f"{self.var}=" + ",".join(map(str, self.xs)), "swept values"),
            "extra_mib_max": Metric(max(self.mem), "MiB (largest point)"),
        }
        for what, name in (("mem", "extra_mib"), ("time", "time_ms")):
            fit = fits[what]
            if fit is None:
                continue
            m[f"{what}_exponent"] = Metric(fit.exponent, f"exponent of {name} in the swept parameter (log-log fit)")
            m[f"{what}_stderr"] = Metric(fit.stderr if fit.stderr == fit.stderr else None, "stderr of the exponent")
            m[f"{what}_r2"] = Metric(fit.r2, "R^2 (log-log)")
        self.rec = Record(metrics=m, labels={"analysis": f"{self.var}_sweep", **self.fixed})
        return self.rec

    def text(self) -> str:
        fits = self.fits()
        pts = ", ".join(f"{x}: {y:.3g} MiB / {t:.3g} ms" for x, y, t in zip(self.xs, self.mem, self.time))
        parts = [f"{self.label()} over {self.var} [{pts}]"]
        for what in ("mem", "time"):
            f = fits[what]
            if f is not None:
                se = f"{f.stderr:.2g}" if f.stderr == f.stderr else "n/a (2 points)"
                parts.append(f"{what} exponent {f.exponent:.3f} (stderr {se}, R^2 {f.r2:.4f})")
        return "; ".join(parts)

    def claim(self, claim_id: str, sweeps: list[Sweep], impls: tuple[str, ...]) -> None:
        """Attach claim_id evidence (memory exponent) to this sweep's record, the other sweeps of
        those impls in the detail, and show the registry's verdict beside it."""
        from bench.contract import judge

        fit = self.fits()["mem"]
        if fit is None or self.rec is None:
            return
        others = [s.text() for s in sweeps if s is not self and s.fixed["impl"] in impls]
        detail = self.text() + (" | other sweeps: " + " | ".join(others) if others else "")
        ev = Evidence(fit.exponent, "exponent", "measured", detail)
        self.rec.evidence[claim_id] = ev
        self.rec.labels["claim"] = claim_id
        claim = next(c for c in CLAIMS if c.id == claim_id)
        self.rec.metrics["verdict"] = Metric(
            f"{judge(claim, ev)} ({claim.expected} {claim.tolerance})", "bench claims check"
        )


def groups(rows: list[Row], var: str) -> list[Sweep]:
    """Rows grouped by every parameter but `var`; medians of extra_mib and time_ms per value of var."""
    by_key: dict[tuple[tuple[str, str], ...], dict[int, list[tuple[float, float]]]] = {}
    fixed_of: dict[tuple[tuple[str, str], ...], dict[str, Any]] = {}
    for r in rows:
        mem, ms, x = r.number("extra_mib"), r.number("time_ms"), r.params.get(var)
        if mem is None or ms is None or x is None:
            continue
        fixed = {k: r.params.get(k) for k in SWEEP_KEYS if k != var}
        key = tuple(sorted((k, repr(v)) for k, v in fixed.items()))
        fixed_of[key] = fixed
        by_key.setdefault(key, {}).setdefault(int(x), []).append((mem, ms))
    out = []
    for key, by_x in by_key.items():
        xs = sorted(by_x)
        mem_med = [statistics.median(a for a, _ in by_x[x]) for x in xs]
        time_med = [statistics.median(b for _, b in by_x[x]) for x in xs]
        out.append(Sweep(var, fixed_of[key], xs, mem_med, time_med))
    order = {i: n for n, i in enumerate(IMPLS)}
    out.sort(key=lambda s: (order.get(s.fixed["impl"], 99), str(s.fixed)))
    return out


def pick(sweeps: list[Sweep], impls: tuple[str, ...]) -> Sweep | None:
    """The best-established sweep among impls: earlier impl first, forward, not causal, most points, fp32 first."""
    cands = [s for s in sweeps if s.fixed["impl"] in impls and s.fits()["mem"] is not None]
    if not cands:
        return None
    dt = {d: i for i, d in enumerate(DTYPES)}
    return min(
        cands,
        key=lambda s: (
            impls.index(s.fixed["impl"]),
            s.fixed["mode"] != "fwd",
            bool(s.fixed["causal"]),
            -len(s.xs),
            dt.get(s.fixed["dtype"], 9),
        ),
    )


def fa_speed(rows: list[Row]) -> Record | None:
    """CUDA only (rows with an mfu against the table's dense peak): best % of peak per backend; the
    flash backend's best is attn.fa_speed."""
    best: dict[str, Row] = {}
    for r in rows:
        mfu, impl = r.number("mfu"), str(r.params.get("impl"))
        if (
            mfu is not None
            and r.number("tflops") is not None
            and (impl not in best or mfu > (best[impl].number("mfu") or 0))
        ):
            best[impl] = r
    if not best:
        return None

    def line(r: Row) -> str:
        p = r.params
        peak = r.metric("mfu")
        return (
            f"{p['impl']}: {r.number('tflops'):.1f} TFLOP/s = {r.number('mfu'):.1f}% {peak.unit if peak else ''} on "
            f"{r.device} ({p['dtype']} {p['mode']}{' causal' if p['causal'] else ''}, "
            f"B={p['batch']} H={p['heads']} n={p['seq']} d={p['head_dim']})"
        )

    order = {i: n for n, i in enumerate(IMPLS)}
    impls = sorted(best, key=lambda i: order.get(i, 99))
    m = {f"best_mfu_{i}": Metric(best[i].number("mfu"), "% of dense peak", "measured") for i in impls}
    m.update({f"best_tflops_{i}": Metric(best[i].number("tflops"), "TFLOP/s", "measured") for i in impls})
    rec = Record(metrics=m, labels={"analysis": "fa_speed"})
    if "sdpa_flash" in best:
        f = best["sdpa_flash"]
        detail = (
            "best of the flash backend: "
            + line(f)
            + " | every backend's best: "
            + " | ".join(line(best[i]) for i in impls)
        )
        rec.evidence["attn.fa_speed"] = Evidence(f.number("mfu"), "% of peak", "measured", detail)
    return rec


def summarize(rows: list[Row]) -> list[Record]:
    ok = [r for r in rows if r.is_case and r.ok and r.plugin == "attention"]
    out: list[Record] = []
    sweeps = [s for s in groups(ok, "seq") if len(s.xs) >= 2]
    out += [s.record() for s in sweeps]
    quad = pick(sweeps, ("naive",))
    if quad:
        quad.claim("attn.quadratic", sweeps, ("naive",))
    lin = pick(sweeps, FUSED)
    if lin:
        lin.claim("attn.flash_linear", sweeps, FUSED)
    heads = [h for h in groups(ok, "heads") if len(h.xs) >= 2]
    if heads:
        recs = [h.record() for h in heads]
        counts = sorted({x for h in heads for x in h.xs})
        detail = "; ".join(h.text() for h in heads)
        recs[0].evidence["attn.heads"] = Evidence(",".join(map(str, counts)), "heads", "measured", detail)
        out += recs
    fa = fa_speed(ok)
    if fa:
        out.append(fa)
    return out
