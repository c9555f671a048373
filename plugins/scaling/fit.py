"""Fits for the scaling plugin: power laws with and without an irreducible term, isoFLOP
parabolas with their uncertainty, and the compute frontier.

No torch here (numpy + scipy only), so tests and summarize() stay fast.

Conventions (sources):
  Kaplan et al. 2020 (arXiv 2001.08361) eq. 1.1-1.3: L(N) = (N_c/N)^alpha_N, pure power laws,
      N = non-embedding parameters; alpha_N = 0.076, alpha_D = 0.095, alpha_C = 0.050.
  Hoffmann et al. 2022 (Chinchilla, arXiv 2203.15556) eq. 2 / Approach 3:
      L(N, D) = E + A/N^alpha + B/D^beta (E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28),
      N = all parameters (Pearce & Song 2024, arXiv 2406.12907, sec. 2); compute C = 6 N D.
  Approach 2 (isoFLOP profiles): at fixed C, fit a parabola to loss vs log N; its vertex is N_opt.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


# --- power laws ---------------------------------------------------------------------------
@dataclass(frozen=True)
class SatFit:
    """y = E + A * x^(-alpha): a power law with an irreducible term (Chinchilla eq. 2 form)."""

    alpha: float
    alpha_se: float
    A: float
    E: float
    E_se: float
    rss: float  # residual sum of squares (in y)
    n: int
    ok: bool
    message: str = ""

    def predict(self, x: float | np.ndarray) -> float | np.ndarray:
        return self.E + self.A * np.power(x, -self.alpha)


def _sat(x: np.ndarray, E: float, logA: float, alpha: float) -> np.ndarray:
    return E + np.exp(logA - alpha * np.log(x))


def fit_saturating(x: Sequence[float], y: Sequence[float]) -> SatFit:
    """Least squares (scipy.optimize.curve_fit) of y = E + A x^-alpha with 0 <= E < min(y).

    Standard errors from the covariance curve_fit returns (residual variance scaled); with
    n = 3 points there are no degrees of freedom left and the errors are nan.
    """
    import warnings

    from scipy.optimize import OptimizeWarning, curve_fit

    xa, ya = np.asarray(x, float), np.asarray(y, float)
    n = len(xa)
    if n < 3 or len(set(xa.tolist())) < 3:
        return SatFit(*(math.nan,) * 6, n=n, ok=False, message=f"needs >= 3 distinct x, got {len(set(xa.tolist()))}")
    ymin = float(ya.min())
    best = None
    # a few starting points for E (the fit is non-convex in E)
    for frac in (0.0, 0.5, 0.8, 0.95):
        E0 = frac * ymin
        yy = np.clip(ya - E0, 1e-12, None)
        k, b = np.polyfit(np.log(xa), np.log(yy), 1)
        p0 = (E0, b, max(1e-3, -k))
        try:
            with warnings.catch_warnings():  # a singular covariance (E at a bound) shows as nan errors instead
                warnings.simplefilter("ignore", OptimizeWarning)
                popt, pcov = curve_fit(
                    _sat, xa, ya, p0=p0, bounds=([0.0, -50.0, 0.0], [ymin * (1 - 1e-9), 50.0, 5.0]), maxfev=20000
                )
        except (RuntimeError, ValueError) as e:
            if best is None:
                best = (math.inf, None, None, str(e))
            continue
        rss = float(np.sum((_sat(xa, *popt) - ya) ** 2))
        if best is None or rss < best[0]:
            best = (rss, popt, pcov, "")
    if best is None or best[1] is None:
        return SatFit(*(math.nan,) * 6, n=n, ok=False, message=f"curve_fit failed: {best[3] if best else '?'}")
    rss, popt, pcov, _ = best
    se = np.sqrt(np.diag(pcov)) if n > 3 and np.all(np.isfinite(pcov)) else np.full(3, math.nan)
    E, logA, alpha = (float(v) for v in popt)
    at_bound = E <= 1e-9 or ymin * (1 - 1e-6) <= E
    return SatFit(
        alpha,
        float(se[2]),
        math.exp(logA),
        E,
        float(se[0]),
        rss,
        n,
        ok=True,
        message="E at its bound (0 or min loss): the irreducible term is not identified" if at_bound else "",
    )


def aicc(rss: float, n: int, k: int) -> float:
    """Small-sample Akaike criterion for least squares with k parameters (lower is better)."""
    if n - k - 1 <= 0 or rss <= 0:
        return math.nan
    return n * math.log(rss / n) + 2 * k + 2 * k * (k + 1) / (n - k - 1)


def power_rss(x: Sequence[float], y: Sequence[float], exponent: float, prefactor: float) -> float:
    """Residual sum of squares in y of y = a x^k."""
    return float(sum((prefactor * xi**exponent - yi) ** 2 for xi, yi in zip(x, y)))


# --- isoFLOP (Chinchilla Approach 2) ------------------------------------------------------
@dataclass(frozen=True)
class IsoOpt:
    """Vertex of loss = a (ln N)^2 + b ln N + c at one compute budget."""

    log_n_opt: float  # ln N_opt
    log_n_se: float  # delta-method standard error of ln N_opt (nan with 3 points)
    loss_min: float
    curvature: float  # a, per (ln N)^2; > 0 for a minimum
    interior: bool  # the vertex lies inside the sampled N range
    boot_lo: float  # 16th / 84th percentile of ln N_opt over bootstrap resamples of the points
    boot_hi: float
    boot_valid: float  # fraction of resamples with a minimum (a > 0)
    n: int
    ok: bool
    message: str = ""
    rms: float = math.nan  # root-mean-square residual of the parabola (loss units): its misfit

    @property
    def n_opt(self) -> float:
        return math.exp(self.log_n_opt)


def parabola_vertex(
    logn: Sequence[float] | np.ndarray, loss: Sequence[float] | np.ndarray
) -> tuple[float, float, np.ndarray, np.ndarray]:
    """(x*, a, coefficients [a, b, c], their covariance) of the least-squares parabola."""
    x, y = np.asarray(logn, float), np.asarray(loss, float)
    X = np.stack([x**2, x, np.ones_like(x)], axis=1)
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    dof = len(x) - 3
    resid = y - X @ coef
    s2 = float(resid @ resid) / dof if dof > 0 else math.nan
    cov = s2 * np.linalg.pinv(X.T @ X)
    a, b = float(coef[0]), float(coef[1])
    xs = -b / (2 * a) if a != 0 else math.nan
    return xs, a, coef, cov


def isoflop_optimum(n_params: Sequence[float], loss: Sequence[float], n_boot: int = 2000, seed: int = 0) -> IsoOpt:
    """N_opt at one budget from a parabola in ln N; uncertainty two ways: the delta method on the
    parabola's coefficients (uses the curvature), and a bootstrap over the points."""
    x = np.log(np.asarray(n_params, float))
    y = np.asarray(loss, float)
    n = len(x)
    if n < 3 or len(set(x.tolist())) < 3:
        return IsoOpt(*(math.nan,) * 4, False, math.nan, math.nan, 0.0, n, False, "needs >= 3 model sizes")
    xs, a, coef, cov = parabola_vertex(x, y)
    if not a > 0:
        return IsoOpt(
            math.nan,
            math.nan,
            float(y.min()),
            a,
            False,
            math.nan,
            math.nan,
            0.0,
            n,
            False,
            "no minimum: the losses are not convex in ln N (the sizes do not bracket the optimum)",
        )
    b = float(coef[1])
    g = np.array([b / (2 * a * a), -1 / (2 * a), 0.0])  # d(x*)/d(a, b, c) for x* = -b / 2a
    var = float(g @ cov @ g) if np.all(np.isfinite(cov)) else math.nan
    se = math.sqrt(var) if var == var and var >= 0 else math.nan
    lmin = float(coef[2] - b * b / (4 * a))
    # bootstrap: resample the points with replacement, refit; keep resamples with >= 3 sizes and a minimum
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        if len(set(x[idx].tolist())) < 3:
            continue
        xb, ab, _, _ = parabola_vertex(x[idx], y[idx])
        if ab > 0 and math.isfinite(xb):
            vals.append(xb)
    lo, hi = (
        (float(np.percentile(vals, 16)), float(np.percentile(vals, 84))) if len(vals) >= 20 else (math.nan, math.nan)
    )
    interior = bool(x.min() <= xs <= x.max())
    X = np.stack([x**2, x, np.ones_like(x)], axis=1)
    rms = float(np.sqrt(np.mean((y - X @ coef) ** 2)))
    return IsoOpt(
        float(xs),
        se,
        lmin,
        a,
        interior,
        lo,
        hi,
        len(vals) / max(1, n_boot),
        n,
        True,
        "" if interior else "the vertex lies outside the sampled sizes: an extrapolation, read as a bound",
        rms,
    )


def pareto_frontier(compute: Sequence[float], loss: Sequence[float]) -> list[int]:
    """Indices of the compute-efficient frontier: runs no cheaper run beats on loss."""
    order = sorted(range(len(compute)), key=lambda i: (compute[i], loss[i]))
    out, best = [], math.inf
    for i in order:
        if loss[i] < best:
            out.append(i)
            best = loss[i]
    return out
