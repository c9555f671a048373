"""The precision plugin's verdicts for claims judged by the plugin (Check("plugin")): pure functions of
the measured numbers, so that a test can feed each one a value that breaks it. Each returns
(verdict, detail): "holds" or "fails", and the numbers compared in words."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

# prec.ranges: the maxima the notes state (shared/claims.md), and the significant digits they give
STATED_MAX = {"fp32": ("3.4e38", 2), "fp16": ("65504", 5), "bf16": ("3.39e38", 3)}
TRAIN_24X_TOL = 0.10  # "~24 bytes/param": within +-10%
TARGET_BPP = 24.0  # the notes: weights 4 + Adam 8 + gradients 4 + activations/temporaries 8 bytes/param
NOTES_SPLIT = {"weights": 4.0, "gradients": 4.0, "optimizer": 8.0, "activations": 8.0}


def at_digits(x: float, digits: int) -> str:
    """x written with `digits` significant digits, as the notes write it (3.4028e38 -> 3.4e+38)."""
    return f"{x:.{digits - 1}e}"


def judge_ranges(got: dict[str, float], stated: dict[str, tuple[str, int]] | None = None) -> tuple[str, str]:
    """prec.ranges: each format's torch.finfo max, rounded to the significant digits the notes give,
    equals the notes' figure (fp16's 65504 at all 5 digits: exact)."""
    stated = STATED_MAX if stated is None else stated
    parts, ok = [], True
    for f, (text, digits) in stated.items():
        if f not in got:
            return "fails", f"no {f} maximum measured"
        shown = at_digits(got[f], digits)
        same = float(shown) == float(text)
        ok &= same
        parts.append(
            f"{f}: finfo max {got[f]:.6g} -> {shown} at {digits} digits vs the notes' {text} "
            f"({'match' if same else 'MISMATCH'})"
        )
    return ("holds" if ok else "fails"), "; ".join(parts) + " (compared at the digits the notes give, not exactly)"


def fp16_unscaled(x: float) -> float:
    """x rounded to fp16 by CPython's struct (round half to even), no scale: an implementation
    independent of torch. Values past fp16's range overflow to +-inf."""
    import struct

    try:
        return float(struct.unpack("<e", struct.pack("<e", x))[0])
    except OverflowError:
        return math.copysign(math.inf, x)


def judge_fp16_scaling(values: Sequence[float], stored: Sequence[float]) -> tuple[str, str]:
    """prec.fp16_scaling, the notes: FP16 "statistically projects the original FP32 into lower precision
    space using scaling factors". Holds if torch's cast differs from an unscaled round-to-nearest-even
    (a scale or a statistic was applied); fails when every stored value is the unscaled rounding of
    its input, overflow to inf and underflow to 0 included."""
    if not values or len(values) != len(stored):
        return "fails", "no fp16 cast values to judge"
    rows, differ = [], []
    for v, s in zip(values, stored):
        u = fp16_unscaled(v)
        same = s == u or (math.isnan(s) and math.isnan(u))
        rows.append(f"{v:g} -> {s:g}")
        if not same:
            differ.append(f"{v:g}: stored {s:g}, unscaled rounding {u:g}")
    if differ:
        return "holds", "the cast is not a plain rounding (a scale or statistic applied): " + "; ".join(differ)
    lost = [f"{v:g} -> {s:g}" for v, s in zip(values, stored) if math.isinf(s) or (s == 0 and v != 0)]
    return "fails", (
        f"tensor.to(torch.float16) is an elementwise round-to-nearest-even with scale 1: all {len(values)} "
        f"values equal their unscaled rounding ({'; '.join(rows)}); nothing is scaled into range"
        + (f" ({', '.join(lost)})" if lost else "")
        + ", and no scale is stored (2 bytes per value). Scaling factors enter fp16 training as loss scaling "
        "(GradScaler, on the gradients) and int8/fp8 quantization, not the fp16 cast"
    )


def bf16_truncate(x: float) -> float:
    """fp32(x) with its low 16 bits dropped: truncation to bfloat16, as the notes describe it."""
    import struct

    (bits,) = struct.unpack("<I", struct.pack("<f", x))
    return float(struct.unpack("<f", struct.pack("<I", bits & 0xFFFF0000))[0])


def judge_bf16_truncation(layout_bf16: str, layout_fp32: str) -> tuple[str, str]:
    """prec.bf16_truncation, the notes (line 381): bf16 "has the same bits as FP32 for exponent but
    truncates the fraction to 7 bits instead of 23 bits": the bit layout, judged exactly. How a
    conversion rounds is not in the notes' words: bf16_cast_finding reports it apart."""
    try:
        eb, fb = (int(x) for x in layout_bf16.split("/")[1:])
        e32, f32 = (int(x) for x in layout_fp32.split("/")[1:])
    except ValueError:
        return "fails", f"unreadable layouts {layout_bf16!r} / {layout_fp32!r}"
    ok = eb == e32 and fb == 7 and f32 == 23
    return ("holds" if ok else "fails"), (
        f"layout {layout_bf16} vs fp32 {layout_fp32}: exponent bits {eb} vs {e32}, fraction bits {fb} (notes: 7) "
        f"vs {f32} (notes: 23)"
    )


def bf16_cast_finding(values: Sequence[float], stored: Sequence[float]) -> str:
    """How torch converted the probe values (a finding about torch, not a claim of the notes)."""
    differ = [(v, s, bf16_truncate(v)) for v, s in zip(values, stored) if s != bf16_truncate(v)]
    if not differ:
        return f"all {len(values)} probe values stored as their truncation"
    why = "; ".join(f"{v!r} -> torch {s!r}, truncation {t!r}" for v, s, t in differ[:3])
    return f"{len(differ)} of {len(values)} probe values differ from truncation: {why} (torch rounds to nearest even)"


@dataclass(frozen=True)
class Scale:
    """mem.train_24x at one configuration: bytes per parameter at the step's peak."""

    params: int
    batch: int
    seq: int
    total: float  # bytes/param at the peak (simulated or measured)
    weights: float  # at the peak
    gradients: float
    optimizer: float
    activations: float  # activations + temporaries at the peak
    at_rest: float  # weights + gradients + Adam m, v after a step, without the 0-d step counters
    source: str  # measured | simulated


def tokens_window(
    per_token: float, fixed: float, floor: float = 0.0, tol: float = TRAIN_24X_TOL
) -> tuple[float, float] | None:
    """Tokens per batch at which the step's peak, max(fixed + per_token * tokens, floor) bytes/param,
    lies within 24 x (1 +- tol): activations grow linearly in tokens at a fixed sequence length
    (forward + backward phase); floor is the optimizer update's peak, which tokens do not change.
    None when no batch gets there."""
    lo_b, hi_b = TARGET_BPP * (1 - tol), TARGET_BPP * (1 + tol)
    if floor > hi_b or per_token <= 0:
        return None
    hi = (hi_b - fixed) / per_token
    lo = 0.0 if floor >= lo_b else (lo_b - fixed) / per_token
    if hi < 0:
        return None
    return max(lo, 0.0), hi


def judge_train_24x(sc: Scale, window: tuple[float, float] | None, tol: float = TRAIN_24X_TOL) -> tuple[str, str]:
    """mem.train_24x at the notes' scale: model states at rest exactly 16 bytes/param (4 + 4 + 8) and
    the step's peak within 24 x (1 +- tol) bytes/param at the stated batch x sequence. The detail
    gives the breakdown beside the notes' 4 + 4 + 8 + 8 and the tokens per batch where 24 holds."""
    tokens = sc.batch * sc.seq
    states_ok = sc.at_rest == 16.0
    extra = sc.optimizer - 8.0  # above m and v: the update's own temporaries (foreach AdamW: one parameter's worth)
    adam = f" (m, v 8 + the update's temporaries {extra:.2f})" if extra > 0.01 else ""
    total_ok = abs(sc.total / TARGET_BPP - 1) <= tol
    if window is None:
        where = f"24 x (1 +- {tol:.0%}) holds at no batch size"
    else:
        where = f"24 x (1 +- {tol:.0%}) holds from ~{window[0]:,.0f} to ~{window[1]:,.0f} tokens per batch"
    detail = (
        f"{sc.params / 1e9:.2f}B-parameter GPT, fp32 + AdamW, batch {sc.batch} x seq {sc.seq} = {tokens:,} tokens "
        f"({sc.source}): peak {sc.total:.2f} bytes/param = weights {sc.weights:.2f} + gradients {sc.gradients:.2f} + "
        f"Adam {sc.optimizer:.2f}{adam} + activations/temporaries {sc.activations:.2f} (the notes: 4 + 4 + 8 + 8 = 24); "
        f"at rest after a step {sc.at_rest:g} bytes/param ({'exactly 16' if states_ok else 'NOT 16'}); {where} "
        f"at seq {sc.seq}; here {sc.total / TARGET_BPP - 1:+.1%} of 24"
    )
    return ("holds" if states_ok and total_ok else "fails"), detail


def judge_train_24x_range(
    points: Sequence[Scale], window: tuple[float, float] | None, tol: float = TRAIN_24X_TOL
) -> tuple[str, str]:
    """mem.train_24x over the batches run (the notes give no batch): holds when the model states at rest
    are exactly 16 bytes/param at every point and the step's peak lies within 24 x (1 +- tol) at one or
    more of them; the detail names the points where it holds and where not, and apart, the formula's
    window (extrapolated between and beyond the points)."""
    if not points:
        return "fails", "no points to judge"
    pts = sorted(points, key=lambda q: q.batch * q.seq)
    inside = [q for q in pts if abs(q.total / TARGET_BPP - 1) <= tol]
    states_ok = all(q.at_rest == 16.0 for q in pts)

    def say(q: Scale) -> str:
        return f"{q.batch} x {q.seq} = {q.batch * q.seq:,} tokens: {q.total:.2f} ({q.total / TARGET_BPP - 1:+.1%})"

    lo, hi = pts[0].batch * pts[0].seq, pts[-1].batch * pts[-1].seq
    where = (
        f"24 x (1 +- {tol:.0%}) holds at {'; '.join(say(q) for q in inside)}"
        if inside
        else f"24 x (1 +- {tol:.0%}) holds at none"
    )
    outside = [q for q in pts if q not in inside]
    if outside:
        where += f"; not at {'; '.join(say(q) for q in outside)}"
    src = "/".join(sorted({q.source for q in pts}))
    detail = (
        f"{len(pts)} batches of a {pts[0].params / 1e9:.2f}B-parameter GPT, fp32 + AdamW, {lo:,}-{hi:,} tokens per "
        f"batch ({src}), peak bytes/param: {where}; at rest after a step "
        f"{'exactly 16' if states_ok else 'NOT 16: ' + ', '.join(f'{q.at_rest:g}' for q in pts)} bytes/param"
    )
    if window is not None:
        detail += f" (extrapolated by the activation formula: 24 +- {tol:.0%} from ~{window[0]:,.0f} to ~{window[1]:,.0f} tokens)"
    return ("holds" if states_ok and inside else "fails"), detail
