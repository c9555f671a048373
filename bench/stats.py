"""Statistics shared by timing (stopping rule) and regress (comparisons)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

Z95 = 1.959964  # two-sided 95% normal quantile


@dataclass(frozen=True)
class MedianCI:
    median: float
    low: float
    high: float

    @property
    def rel_halfwidth(self) -> float:
        """Half the CI width over the median (0.02 = +/-2%)."""
        if self.median == 0:
            return math.inf
        return (self.high - self.low) / 2.0 / abs(self.median)


def median(xs: Sequence[float]) -> float:
    s = sorted(xs)
    n = len(s)
    if n == 0:
        raise ValueError("median of no samples")
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


def sign_autocorr(xs: Sequence[float]) -> float:
    """Lag-1 autocorrelation of the signs of x_i - median, xs in time order: ~0 for independent
    samples, towards 1 when slow and fast samples come in runs (another process's time slices, a
    clock change). Fewer than 8 samples: 0 (too few to tell)."""
    n = len(xs)
    if n < 8:
        return 0.0
    m = median(xs)
    sg = [1.0 if x > m else (-1.0 if x < m else 0.0) for x in xs]
    mean = sum(sg) / n
    d = [v - mean for v in sg]
    var = sum(v * v for v in d)
    if var == 0:
        return 0.0
    return sum(d[i] * d[i + 1] for i in range(n - 1)) / var


def median_ci(xs: Sequence[float], z: float = Z95, serial: bool = False) -> MedianCI:
    """Distribution-free CI of the median from order statistics.

    The rank of the median's bounds follows Binomial(n, 1/2); with the normal
    approximation the bounds are the order statistics at n/2 -/+ z*sqrt(n)/2
    (e.g. Conover, Practical Nonparametric Statistics, 3rd ed., sec. 3.2).
    With fewer than 6 samples the CI is the full range.

    serial: xs are in time order and may be dependent. The variance of the fraction of samples
    below the median grows by (1 + rho) / (1 - rho) for sign autocorrelation rho (AR(1) form of
    the long-run variance), so the rank half-width grows by its square root (rho clipped to
    [0, 0.9]: never narrower than the independent CI).
    """
    s = sorted(xs)
    n = len(s)
    m = median(s)
    if n < 6:
        return MedianCI(m, s[0], s[-1])
    inflate = 1.0
    if serial:
        rho = min(max(sign_autocorr(xs), 0.0), 0.9)
        inflate = math.sqrt((1 + rho) / (1 - rho))
    half = inflate * z * math.sqrt(n) / 2.0
    lo = max(0, math.floor(n / 2.0 - half))
    hi = min(n - 1, math.ceil(n / 2.0 + half) - 1)
    return MedianCI(m, s[lo], s[hi])


def iqr_rel(xs: Sequence[float]) -> float:
    """Interquartile range over the median: a robust noise figure (0.05 = 5%)."""
    s = sorted(xs)
    n = len(s)
    if n < 4:
        return float("nan")
    q1 = s[int(0.25 * (n - 1))]
    q3 = s[math.ceil(0.75 * (n - 1))]
    m = median(s)
    return (q3 - q1) / m if m else float("nan")


def mann_whitney_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided Mann-Whitney U p-value (scipy; asymptotic with tie correction)."""
    from scipy.stats import mannwhitneyu

    if len(a) < 2 or len(b) < 2:
        return 1.0
    return float(mannwhitneyu(a, b, alternative="two-sided").pvalue)
