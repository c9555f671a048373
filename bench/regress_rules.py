"""The regression gate's rules, one metric at a time: direction, kind, portability, validity, and the
two decisions (deterministic: equal within a tolerance; timing: significant AND large enough).

Portability (which deterministic figures gate across machines):
  portable       exact on every machine: integers (bytes, element and FLOP counts), strings and
                 booleans, formula / simulated figures, and measured floats whose unit starts with a
                 count of bytes, bits, FLOP or parameters (bytes/param, GB (1e9 bytes), FLOP/token: ratios of
                 integer counts, computed the same way everywhere).
  machine-bound  a metric either side flags `portable: false` (losses after many training steps,
                 overflow / skipped-step counts, % of zero gradients: they follow the CPU's kernels),
                 AND -- conservatively -- every other measured float without a count unit (a loss, an
                 error, a %, a scale, an "x" ratio) whose plugin has not flagged it: a false alarm on
                 another machine class costs more than one run's delay in gating it there.
  Machine-bound metrics gate only against a baseline from the same machine (fingerprint
  machine_id); bench.regress finds or records one.

Validity: a value that is null, NaN or +/-inf on either side, or timing samples with a non-finite
entry, is a failure of that metric with the reason -- never a pass (NaN compares false with
everything, and inf <= rtol * inf is true, so a plain tolerance test would pass both). A duration
is positive: a timing sample (or a timing without samples) that is zero or negative is invalid too
(an all-zero baseline would make any change "+inf%").

Noise limits what a timing can detect; it does not excuse what is far beyond it. A timing whose
noise-driven threshold exceeds --max-threshold (50%) is "noisy": its detectable effect is
noisy_k (2) x its min effect, and a significant slowdown at least that large is still "slower"
(then confirmed by a rerun, as any slowdown); a smaller change is listed "not gated" with the
detectable effect it had (a 1000x slowdown with p = 1e-15 fails even at 680% noise).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.rows import Metric, Row
from bench.stats import iqr_rel, mann_whitney_p, median, median_ci

# Reported but never gated: noise figures and bookkeeping written by timing_metrics().
META_SUFFIXES = ("_ci95_pct", "_noise_pct", "_samples", "_stop", "_block")
META_NAMES = ("threads",)


@dataclass
class GateConfig:
    alpha: float = 0.05  # Mann-Whitney two-sided significance level
    min_effect: float = 0.05  # floor on the relative change of the median (0.05 = 5%)
    ci_k: float = 2.0  # x hypot of the two medians' 95% CI half-widths (relative)
    iqr_k: float = 1.0  # x the smaller IQR/median of the two runs
    serial_ci: bool = True  # medians' CIs widened for dependent samples, as the timing engine reports them
    max_threshold: float = 0.5  # a noise-driven threshold above this: too noisy to gate ("noisy")
    noisy_k: float = 2.0  # a noisy timing still fails a significant slowdown >= this x its min effect
    ab_min_effect: float = 0.02  # A/B mode (paired): floor on the geometric-mean change (0.02 = 2%)
    min_pairs: int = 6  # A/B mode: fewer pairs cannot reach p < 0.05 (Wilcoxon exact: min p = 2 / 2^n)
    fail_on_noisy: bool = False  # a timing too noisy to gate makes the gate inconclusive (exit 2)
    min_samples: int = 3  # fewer raw samples on a side: no significance test
    rtol: float = 1e-6  # deterministic floats
    int_rtol: float = 0.0  # deterministic integers (0: exact)
    tolerances: dict[str, float] = field(default_factory=dict)  # per metric rel tolerance
    confirm: int = 1  # confirming reruns a slowdown must survive (0: fail on first detection)
    only: str = "all"  # all | deterministic | timing
    metrics: tuple[str, ...] | None = None
    allow_missing: bool = False


# --- per metric: direction and kind ---------------------------------------------------------
_HIGHER = re.compile(r"(per_s$|per_sec|tflops|gflops|throughput|mfu|speedup|bandwidth|gbps)")
_LOWER = re.compile(
    r"(noise|ci95|error|err$|loss|latency|perplexity|_ms$|_us$|_ns$|_s$|seconds|time|bytes|_mib$|_gib$|_kib$|_mb$|_gb$|memory|peak)"
)
_PCT = re.compile(r"(pct|percent|util)")
# A unit that counts bytes, bits, FLOP or parameters ("bytes/param", "GB (1e9 bytes)", "FLOP/token";
# not "nats/byte", a loss): exact on every machine.
_COUNT_UNIT = re.compile(r"^(bytes?|bits?|flops?|params?|gb|mb|kb|gib|mib|kib)\b", re.I)


def direction(name: str, m: Metric | None = None) -> str | None:
    """'lower' or 'higher' is better, or None: the metric's own "better", else from its name/unit."""
    b = m.better if m is not None else None
    if b in ("lower", "higher"):
        return b
    n = name.lower()
    if _HIGHER.search(n):
        return "higher"
    if _LOWER.search(n):
        return "lower"
    if _PCT.search(n):  # pct_matmul, % of peak
        return "higher"
    unit = (m.unit if m is not None else "").lower()
    if "/s" in unit:
        return "higher"
    if unit.startswith(("ms", "s ", "us", "ns", "mib", "gib", "bytes", "byte")) or unit in ("s",):
        return "lower"
    return None


def samples_key(row: Row, name: str) -> str | None:
    """The raw-sample series behind a metric: time_ms <- samples["time_s"] (timing_metrics()), or same name."""
    s = row.samples
    cands = [name] + ([name[:-3] + "_s"] if name.endswith("_ms") else [])
    for c in cands:
        if s.get(c):
            return c
    return None


def is_meta(name: str) -> bool:
    return name in META_NAMES or name.endswith(META_SUFFIXES)


def is_timing_name(name: str) -> bool:
    """time_ms, step_ms, train_s, latency_us ...: a duration (its samples, if any, are raw timings)."""
    if _HIGHER.search(name):
        return False
    return bool(re.search(r"(_ms|_us|_ns|_s|_sec|seconds)$", name)) or name in ("time", "latency", "wall_time")


def portability(b: Metric, c: Metric | None) -> tuple[bool, str]:
    """(portable across machines, why) for a deterministic metric; see the module docstring."""
    if b.portable is False or (c is not None and c.portable is False):
        return False, "flagged portable=false"
    if b.portable is True and (c is None or c.portable is not False):
        return True, "flagged portable=true"
    v = b.value
    if isinstance(v, (bool, str, int)) or v is None:
        return True, "exact value"
    if b.source in ("formula", "simulated"):
        return True, f"{b.source}"
    if _COUNT_UNIT.search(b.unit):
        return True, "a count of bytes/bits/FLOP/params"
    return False, "unflagged measured float, treated as machine-bound"


# --- validity -------------------------------------------------------------------------------
def bad_value(v: Any) -> str | None:
    """Why a metric value cannot be gated (null, NaN, +/-inf), or None for a usable one."""
    if v is None:
        return "null (no value)"
    if isinstance(v, float) and not math.isfinite(v):
        return "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")
    return None


def bad_samples(xs: Sequence[float]) -> str | None:
    """Why a series of raw timing samples (durations) cannot be gated: non-finite entries, or
    entries <= 0 (a duration is positive); None for usable ones."""
    bad = [x for x in xs if not math.isfinite(x)]
    if bad:
        kinds = sorted({"NaN" if math.isnan(x) else "inf" for x in bad})
        return f"{len(bad)} of {len(xs)} raw samples are {'/'.join(kinds)}"
    nonpos = [x for x in xs if x <= 0]
    if nonpos:
        return f"{len(nonpos)} of {len(xs)} raw samples are zero or negative (a duration is positive)"
    return None


def bad_timing_value(v: Any) -> str | None:
    """bad_value() for a timing metric's own value (used where it has no raw samples): also <= 0."""
    why = bad_value(v)
    if why is None and isinstance(v, (int, float)) and not isinstance(v, bool) and v <= 0:
        return f"{v:g} (a duration is positive)"
    return why


# --- the two decisions ----------------------------------------------------------------------
@dataclass
class TimingResult:
    verdict: str  # same | faster | slower | ambiguous (compare.py marks each)
    ratio: float  # median(current) / median(baseline)
    change: float  # relative change in the WORSE direction (+0.2 = 20% worse)
    p: float | None
    threshold: float  # the minimum effect that applied
    why: str
    noisy: bool = False  # ambiguous because the noise-driven threshold exceeds max_threshold
    invalid: bool = False  # ambiguous because a sample is NaN/inf: never a pass
    ci: tuple[float, float] | None = None  # paired: 95% CI of the change (worse direction), bootstrap
    detect: float | None = None  # paired: detectable effect at this noise (80% power), relative
    pairs: int = 0  # paired: number of A/B pairs


def compare_samples(
    base: Sequence[float], cur: Sequence[float], better: str = "lower", cfg: GateConfig | None = None
) -> TimingResult:
    """The timing decision on raw samples: significance AND a noise-adapted minimum effect."""
    cfg = cfg or GateConfig()
    why_bad = bad_samples(base) or bad_samples(cur)
    if why_bad or not base or not cur:
        side = "baseline" if (bad_samples(base) or not base) else "current"
        why = f"{side}: {why_bad or 'no samples'}"
        return TimingResult("ambiguous", math.nan, math.nan, None, math.nan, why, invalid=True)
    ma, mb = median(base), median(cur)
    ratio = mb / ma if ma else math.inf
    change = (ratio - 1.0) if better != "higher" else ((1.0 / ratio - 1.0) if ratio else math.inf)
    # the CI the timing engine reports: order statistics widened for dependent samples (each side's
    # samples are in time order within a run)
    ci = math.hypot(
        median_ci(base, serial=cfg.serial_ci).rel_halfwidth, median_ci(cur, serial=cfg.serial_ci).rel_halfwidth
    )
    iqrs = [x for x in (iqr_rel(base), iqr_rel(cur)) if x == x]
    noise = min(iqrs) if iqrs else 0.0
    thr = max(cfg.min_effect, cfg.ci_k * ci, cfg.iqr_k * noise)
    parts = (
        f"min effect {100 * thr:.1f}% = max(floor {100 * cfg.min_effect:g}%, {cfg.ci_k:g} x CI {100 * ci:.1f}%, "
        f"{cfg.iqr_k:g} x IQR {100 * noise:.1f}%)"
    )
    big = abs(change) >= thr
    if len(base) < cfg.min_samples or len(cur) < cfg.min_samples:
        if big:
            why = f"{len(base)} vs {len(cur)} samples: too few to test a change of {100 * change:+.1f}%"
            return TimingResult("ambiguous", ratio, change, None, thr, why)
        return TimingResult("same", ratio, change, None, thr, f"too few samples to test; change within {parts}")
    p = mann_whitney_p(base, cur)
    noise_thr = max(cfg.ci_k * ci, cfg.iqr_k * noise)  # the noise-driven part (the floor is the user's choice)
    sig = p < cfg.alpha
    if noise_thr > cfg.max_threshold:
        return noisy_result(ratio, change, p, sig, thr, f"noise {100 * noise_thr:.1f}% ({parts})", cfg)
    if big and sig:
        why = f"p={p:.2g} < {cfg.alpha:g} and |change| >= {parts}"
        return TimingResult("slower" if change > 0 else "faster", ratio, change, p, thr, why)
    if not big:
        return TimingResult(
            "same", ratio, change, p, thr, (f"significant (p={p:.2g}) but " if sig else "") + f"below {parts}"
        )
    why = f"change {100 * change:+.1f}% beyond the min effect but not significant (p={p:.2g} >= {cfg.alpha:g})"
    return TimingResult("ambiguous", ratio, change, p, thr, why)


def noisy_result(
    ratio: float,
    change: float,
    p: float | None,
    sig: bool,
    thr: float,
    noise_words: str,
    cfg: GateConfig,
    what: str = "min effect",
) -> TimingResult:
    """A timing whose noise-driven threshold exceeds cfg.max_threshold: too noisy to gate a change
    near its noise, but not one far beyond it. Detectable effect = noisy_k x thr (the min effect; in
    A/B mode the pairs' 80%-power effect); a significant slowdown at least that large is "slower"
    (confirmed by a rerun as any slowdown)."""
    detect = cfg.noisy_k * thr
    pw = "" if p is None else f"p={p:.2g}"
    if sig and change >= detect:
        why = (
            f"{pw} < {cfg.alpha:g} and change {100 * change:+.1f}% >= the detectable effect {100 * detect:.1f}% "
            f"(= {cfg.noisy_k:g} x {what}) at this {noise_words}: far beyond the noise"
        )
        return TimingResult("slower", ratio, change, p, thr, why)
    why = (
        f"not gated: could detect only a slowdown >= {100 * detect:.1f}% at this noise (its detectable effect: "
        f"{cfg.noisy_k:g} x {what}, with p < {cfg.alpha:g}); this change {100 * change:+.1f}%"
        + (f", {pw}" if pw else "")
        + f"; {noise_words} exceeds {100 * cfg.max_threshold:g}%"
    )
    return TimingResult("ambiguous", ratio, change, p, thr, why, noisy=True)


Z80 = 0.841621  # one-sided normal quantile of 80% power


def compare_paired(
    base: Sequence[float], cur: Sequence[float], better: str = "lower", cfg: GateConfig | None = None
) -> TimingResult:
    """The A/B decision on paired timings: base[i] and cur[i] measured close in time (one block of
    interleaved runs; each a run's median). d_i = log(cur_i / base_i), sign turned so + = worse.

    Test: Wilcoxon signed-rank on d (scipy; exact for small n): no distributional assumption, and the
    drift between blocks cancels inside each pair. Effect: the geometric-mean ratio exp(mean d), with
    a 95% percentile-bootstrap CI of mean d (scipy.stats.bootstrap, fixed seed). Slower: p < alpha
    AND change >= cfg.ab_min_effect. Detectable effect at this noise (80% power, normal
    approximation): exp((z_{1-alpha/2} + z_0.8) x sd(d) / sqrt(n)) - 1. The signed-rank test is valid
    at any noise (the pairs are the replication, drift cancels inside them), so a significant change
    beyond the floor is decided whatever the noise; noise only costs power: a change that is not
    significant while the detectable effect exceeds cfg.max_threshold is "noisy" (not gated, with the
    effect it could have detected)."""
    import statistics

    import numpy as np
    from scipy.stats import bootstrap, norm, wilcoxon

    cfg = cfg or GateConfig()
    if len(base) != len(cur):
        raise ValueError(f"paired timings need as many A as B values ({len(base)} vs {len(cur)})")
    why_bad = bad_samples(base) or bad_samples(cur)
    if why_bad or not base:
        side = "A (baseline)" if (bad_samples(base) or not base) else "B (current)"
        why = f"{side}: {why_bad or 'no pairs'}"
        return TimingResult("ambiguous", math.nan, math.nan, None, math.nan, why, invalid=True)
    n = len(base)
    raw = [math.log(c / b) for b, c in zip(base, cur, strict=True)]
    d = [-x for x in raw] if better == "higher" else raw
    mean_d = statistics.fmean(d)
    ratio = math.exp(statistics.fmean(raw))  # geometric mean of cur/base
    change = math.expm1(mean_d)
    floor = cfg.ab_min_effect
    sd = statistics.stdev(d) if n > 1 else math.inf
    z = float(norm.ppf(1 - cfg.alpha / 2))
    detect = math.expm1((z + Z80) * sd / math.sqrt(n)) if n > 1 else math.inf
    if n < cfg.min_pairs or sd == 0:
        lo = hi = change
    else:
        res = bootstrap((np.asarray(d),), np.mean, confidence_level=0.95, n_resamples=2000, method="percentile", rng=0)
        lo, hi = math.expm1(float(res.confidence_interval.low)), math.expm1(float(res.confidence_interval.high))
    words = f"{n} pairs, geo-mean change {100 * change:+.1f}%" + (
        f" (95% CI {100 * lo:+.1f}% .. {100 * hi:+.1f}%)" if n >= cfg.min_pairs and sd > 0 else ""
    )
    extra: dict[str, Any] = {"ci": (lo, hi), "detect": detect, "pairs": n}
    if n < cfg.min_pairs:
        verdict = "ambiguous" if abs(change) >= floor else "same"
        why = f"{words}: too few pairs to test (< {cfg.min_pairs})"
        return TimingResult(verdict, ratio, change, None, floor, why, **extra)
    p = 1.0 if all(x == 0 for x in d) else float(wilcoxon(d).pvalue)
    sig = p < cfg.alpha
    words += f", Wilcoxon p={p:.2g}, detectable effect {100 * detect:.1f}% (80% power)"
    if sig and abs(change) >= floor:  # the test holds at any noise: the pairs are the replication
        why = f"{words}; p < {cfg.alpha:g} and |change| >= floor {100 * floor:g}%"
        return TimingResult("slower" if change > 0 else "faster", ratio, change, p, floor, why, **extra)
    if detect > cfg.max_threshold:  # too noisy to have caught a change near its noise: said, not gated
        why = (
            f"not gated: could detect only a change >= {100 * detect:.1f}% at this noise (80% power); {words}; "
            f"not significant beyond the {100 * floor:g}% floor"
        )
        return TimingResult("ambiguous", ratio, change, p, floor, why, noisy=True, **extra)
    if not sig and abs(change) >= max(floor, detect):
        why = f"{words}; a change this large should have been significant (p >= {cfg.alpha:g})"
        return TimingResult("ambiguous", ratio, change, p, floor, why, **extra)
    if not sig:
        return TimingResult("same", ratio, change, p, floor, f"{words}; not significant (p >= {cfg.alpha:g})", **extra)
    return TimingResult(
        "same", ratio, change, p, floor, f"{words}; significant but below floor {100 * floor:g}%", **extra
    )


def compare_deterministic(name: str, a: Any, b: Any, cfg: GateConfig) -> tuple[bool, str]:
    """(equal within tolerance, the tolerance in words). Non-finite values never compare equal
    (callers reject them first with bad_value(); this is the second line)."""
    if isinstance(a, bool) or isinstance(b, bool) or not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
        return a == b, "exact"
    if not (math.isfinite(a) and math.isfinite(b)):
        return False, "finite values only"
    if name in cfg.tolerances:
        rtol = cfg.tolerances[name]
    elif isinstance(a, int) and isinstance(b, int):
        rtol = cfg.int_rtol
    else:
        rtol = cfg.rtol
    ok = a == b if rtol == 0 else abs(b - a) <= rtol * max(abs(a), abs(b))
    return ok, ("exact" if rtol == 0 else f"rel {rtol:g}")
