"""Statistics shared by timing (stopping rule) and regress (comparisons)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

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


def median_ci(xs: Sequence[float], z: float = Z95) -> MedianCI:
    """Distribution-free CI of the median from order statistics.

    The rank of the median's bounds follows Binomial(n, 1/2); with the normal
    approximation the bounds are the order statistics at n/2 -/+ z*sqrt(n)/2
    (e.g. Conover, Practical Nonparametric Statistics, 3rd ed., sec. 3.2).
    With fewer than 6 samples the CI is the full range.
    """
    s = sorted(xs)
    n = len(s)
    m = median(s)
    if n < 6:
        return MedianCI(m, s[0], s[-1])
    half = z * math.sqrt(n) / 2.0
    lo = max(0, int(math.floor(n / 2.0 - half)))
    hi = min(n - 1, int(math.ceil(n / 2.0 + half)) - 1)
    return MedianCI(m, s[lo], s[hi])


def iqr_rel(xs: Sequence[float]) -> float:
    """Interquartile range over the median: a robust noise figure (0.05 = 5%)."""
    s = sorted(xs)
    n = len(s)
    if n < 4:
        return float("nan")
    q1 = s[int(0.25 * (n - 1))]
    q3 = s[int(math.ceil(0.75 * (n - 1)))]
    m = median(s)
    return (q3 - q1) / m if m else float("nan")


def mann_whitney_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided Mann-Whitney U p-value (scipy; asymptotic with tie correction)."""
    from scipy.stats import mannwhitneyu

    if len(a) < 2 or len(b) < 2:
        return 1.0
    return float(mannwhitneyu(a, b, alternative="two-sided").pvalue)
