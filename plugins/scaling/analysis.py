"""The scaling fits over a run's training rows, shared by summarize() (summary rows, claim evidence)
and report() (plots): which runs form L(N) at fixed D, L(D) at fixed N, the compute frontier L(C)
and each isoFLOP profile, and the fits of each. No torch: numpy/scipy only.

Runs are grouped by what they actually trained, not by the case that asked for them: a run belongs
to the fixed-D set of every run whose D is within GROUP_TOL, and to the isoFLOP profile of budget C
when its case asked for C or its C = 6 N_total D is within GROUP_TOL of C (so one run can serve L(N), L(D) and an isoFLOP
profile at once). Repeats (param repeat > 0: another seed) only measure the seed-to-seed noise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from bench.contract import Row
from plugins.scaling import fit as sf
from plugins.scaling.shapes import budget_c

GROUP_TOL = 0.03  # relative: D or C within 3% count as the same (whole steps round D)


@dataclass(frozen=True)
class Run:
    shape: str
    n: float  # N_nonemb
    n_total: float
    d: float  # tokens trained
    c: float  # 6 N_total D
    loss: float  # final validation loss [nats/byte]
    budget: float  # the case's compute budget C (0: a D budget)
    repeat: int  # 0: the run's seed; k > 0: seed + 1000 k


@dataclass
class LawFit:
    what: str  # "N" | "D" | "C"
    at: str  # what was held fixed
    x: list[float]
    y: list[float]
    runs: list[Run] = field(default_factory=list)
    alpha: float = math.nan  # L ~ x^-alpha

    @property
    def shapes(self) -> list[str]:
        return [r.shape for r in self.runs]

    alpha_se: float = math.nan
    prefactor: float = math.nan
    r2: float = math.nan
    sat: sf.SatFit | None = None  # L = E + A x^-alpha
    preferred: str = ""

    @property
    def log_span(self) -> float:
        """Decades of x covered."""
        return math.log10(max(self.x) / min(self.x)) if self.x else 0.0

    def seed_se(self, rel_noise: float) -> float:
        """Standard error of alpha from seed noise alone: sigma(ln L) / sqrt(sum (ln x - mean)^2), with
        sigma(ln L) = rel_noise (the relative loss difference of two seeds) / sqrt(2)."""
        lx = [math.log(v) for v in self.x]
        m = sum(lx) / len(lx)
        sxx = sum((v - m) ** 2 for v in lx)
        return rel_noise / math.sqrt(2) / math.sqrt(sxx) if sxx > 0 else math.nan


@dataclass
class Iso:
    c: float  # the budget [FLOP]
    runs: list[Run]
    opt: sf.IsoOpt

    def tpp(self, log_n: float) -> float:
        """Tokens per parameter at N = e^log_n on this budget: D/N = C / (6 N^2)."""
        return self.c / (6.0 * math.exp(2 * log_n)) if log_n == log_n else math.nan


@dataclass
class Fits:
    runs: list[Run]
    law_n: LawFit | None
    law_d: LawFit | None
    law_c: LawFit | None
    isos: list[Iso]
    noise: list[tuple[Run, Run]]  # (repeat, its seed-0 twin)

    @property
    def rel_noise(self) -> float | None:
        """Largest relative loss difference between a repeat and its twin (None without repeats)."""
        if not self.noise:
            return None
        return max(abs(a.loss / b.loss - 1) for a, b in self.noise)


def runs_of(rows: Sequence[Row]) -> list[Run]:
    """Training points of ok case rows (one per (N, D, repeat)); old rows without params_total or
    compute fall back to params and 6 N_total D."""
    seen: dict[tuple[float, float, int], Run] = {}
    for r in rows:
        if not (r.is_case and r.ok):
            continue
        loss, n, d = r.number("final_loss"), r.number("params"), r.number("tokens")
        if loss is None or not n or not d or loss <= 0:
            continue
        nt = r.number("params_total") or n
        c = r.number("compute") or 6.0 * nt * d
        budget, repeat = budget_c(str(r.params.get("budget") or "")), int(r.params.get("repeat") or 0)
        run = Run(str(r.get("shape", "?")), n, nt, d, c, loss, budget, repeat)
        key = (run.n, run.d, run.repeat)
        if key not in seen or (run.budget and not seen[key].budget):  # keep the one that names its budget
            seen[key] = run
    return list(seen.values())


def _close(a: float, b: float) -> bool:
    return abs(a / b - 1.0) <= GROUP_TOL


def groups(runs: Sequence[Run], key: str) -> list[list[Run]]:
    """Runs clustered by D (key "d") within GROUP_TOL of the cluster's first, or by N (key "n") exactly."""
    out: list[list[Run]] = []
    for r in sorted(runs, key=lambda r: getattr(r, key)):
        v = getattr(r, key)
        last = out[-1] if out else None
        if last and (_close(v, getattr(last[0], key)) if key == "d" else v == getattr(last[0], key)):
            last.append(r)
        else:
            out.append([r])
    return out


def _distinct(xs: Sequence[float]) -> int:
    n, prev = 0, None
    for x in sorted(xs):
        if prev is None or not _close(x, prev):
            n, prev = n + 1, x
    return n


def law(what: str, at: str, rs: Sequence[Run], x_of: str) -> LawFit:
    """Plain log-log fit (Kaplan's form) and, with >= 3 points, one with an irreducible term."""
    from bench.fit import fit_power_law

    rs = sorted(rs, key=lambda r: getattr(r, x_of))
    x, y = [getattr(r, x_of) for r in rs], [r.loss for r in rs]
    f = LawFit(what, at, x, y, list(rs))
    if len(set(x)) >= 2:
        pf = fit_power_law(x, y)
        f.alpha, f.alpha_se, f.prefactor, f.r2 = -pf.exponent, pf.stderr, pf.prefactor, pf.r2
        f.sat = sf.fit_saturating(x, y) if len(set(x)) >= 3 else None
        if f.sat and f.sat.ok:
            a_plain = sf.aicc(sf.power_rss(x, y, pf.exponent, pf.prefactor), len(x), 2)
            a_sat = sf.aicc(f.sat.rss, len(x), 3)
            if a_plain == a_plain and a_sat == a_sat:
                f.preferred = "with irreducible term" if a_sat < a_plain else "plain power law"
            else:
                f.preferred = "undecided (too few points for AICc)"
    return f


def fits_of(rows: Sequence[Row], n_boot: int = 2000) -> Fits:
    from plugins.scaling.shapes import fmt_n

    all_runs = runs_of(rows)
    runs = [r for r in all_runs if r.repeat == 0]
    twins = {(r.n, r.d): r for r in runs}
    noise = [(r, twins[(r.n, r.d)]) for r in all_runs if r.repeat and (r.n, r.d) in twins]
    # L(N): the fixed-D set with the most sizes (>= 3), then the largest D
    law_n = law_d = law_c = None
    by_d = [g for g in groups(runs, "d") if len({r.n for r in g}) >= 3]
    if by_d:
        g = max(by_d, key=lambda g: (len({r.n for r in g}), g[0].d))
        law_n = law("N", f"at D={fmt_n(g[0].d)} tokens (N = non-embedding params)", g, "n")
    # L(D): the size with the most data budgets (>= 3), then the largest N
    by_n = [g for g in groups(runs, "n") if _distinct([r.d for r in g]) >= 3]
    if by_n:
        g = max(by_n, key=lambda g: (_distinct([r.d for r in g]), g[0].n))
        law_d = law("D", f"at N={fmt_n(g[0].n)} ({g[0].shape})", g, "d")
    # L(C): the compute-efficient frontier of all runs (Kaplan's C_min)
    front = [runs[i] for i in sf.pareto_frontier([r.c for r in runs], [r.loss for r in runs])]
    if len(front) >= 3:
        law_c = law("C", "on the compute-efficient frontier (C = 6 N_total D)", front, "c")
    # isoFLOP profiles (Chinchilla Approach 2): the runs asked for a budget, and every other run whose C is
    # within GROUP_TOL of it
    isos = []
    for c in sorted({r.budget for r in runs if r.budget > 0}):
        members: dict[float, Run] = {}
        for r in runs:
            if (r.budget == c or _close(r.c, c)) and (r.n_total not in members or r.budget == c):
                members[r.n_total] = r
        rs = sorted(members.values(), key=lambda r: r.n_total)
        opt = sf.isoflop_optimum([r.n_total for r in rs], [r.loss for r in rs], n_boot=n_boot)
        isos.append(Iso(c, rs, opt))
    return Fits(runs, law_n, law_d, law_c, isos, noise)
