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
everything, and inf <= rtol * inf is true, so a plain tolerance test would pass both).
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
    """Why a series of raw timing samples cannot be gated (non-finite entries), or None."""
    bad = [x for x in xs if not math.isfinite(x)]
    if not bad:
        return None
    kinds = sorted({"NaN" if math.isnan(x) else "inf" for x in bad})
    return f"{len(bad)} of {len(xs)} raw samples are {'/'.join(kinds)}"


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
    if noise_thr > cfg.max_threshold:
        why = f"not gated: noise {100 * noise_thr:.1f}% ({parts}; its noise part exceeds {100 * cfg.max_threshold:g}%)"
        return TimingResult("ambiguous", ratio, change, p, thr, why, noisy=True)
    sig = p < cfg.alpha
    if big and sig:
        why = f"p={p:.2g} < {cfg.alpha:g} and |change| >= {parts}"
        return TimingResult("slower" if change > 0 else "faster", ratio, change, p, thr, why)
    if not big:
        return TimingResult(
            "same", ratio, change, p, thr, (f"significant (p={p:.2g}) but " if sig else "") + f"below {parts}"
        )
    why = f"change {100 * change:+.1f}% beyond the min effect but not significant (p={p:.2g} >= {cfg.alpha:g})"
    return TimingResult("ambiguous", ratio, change, p, thr, why)


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
