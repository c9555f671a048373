"""Power-law fits: y = a * x^k by least squares in log-log space, with the slope's standard error.

Used for scaling exponents of memory/time in sequence length (attention) and of loss in
model size / data (scaling). Returns the exponent, its standard error, the prefactor and R^2.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class PowerFit:
    exponent: float
    stderr: float  # standard error of the exponent (nan with 2 points)
    prefactor: float
    r2: float
    n: int

    def predict(self, x: float) -> float:
        return self.prefactor * x**self.exponent


def fit_power_law(x: Sequence[float], y: Sequence[float]) -> PowerFit:
    """Least squares of log y = log a + k log x. Needs >= 2 points with x, y > 0."""
    pts = [(math.log(a), math.log(b)) for a, b in zip(x, y) if a > 0 and b > 0]
    n = len(pts)
    if n < 2:
        raise ValueError(f"a power-law fit needs at least 2 positive points, got {n}")
    mx = sum(p[0] for p in pts) / n
    my = sum(p[1] for p in pts) / n
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    if sxx == 0:
        raise ValueError("a power-law fit needs at least 2 distinct x values")
    sxy = sum((p[0] - mx) * (p[1] - my) for p in pts)
    k = sxy / sxx
    b = my - k * mx
    resid = [p[1] - (b + k * p[0]) for p in pts]
    ss_res = sum(r * r for r in resid)
    ss_tot = sum((p[1] - my) ** 2 for p in pts)
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0
    se = math.sqrt(ss_res / (n - 2) / sxx) if n > 2 else float("nan")
    return PowerFit(k, se, math.exp(b), r2, n)
