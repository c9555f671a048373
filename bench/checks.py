"""One piece of evidence against one claim's check (bench.contract.Check): the verdict and a
reason that cites every number compared. Used by the claims engine (bench/claims.py) and by
plugins that show the verdict beside their own figures (contract.claim_record)."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from bench.contract import Check, Claim, Evidence
from bench.tables import fmt_value, num

# What a holds/fails rests on, strongest first: measured on the device; simulated (fake tensors / process
# group); extrapolated (a formula carried beyond the points measured); published (arithmetic over printed
# numbers); by construction (the harness's own code fixes the outcome: Claim.construction).
KIND_RANK = {"measured": 0, "simulated": 1, "extrapolated": 2, "published": 3, "by construction": 4}
KINDS = tuple(KIND_RANK)


def fmt(v: Any) -> str:
    """bench/tables.py's number format; "-" for nothing, thousands separators for large counts."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int) and abs(v) >= 10_000:
        return f"{v:,}"  # byte counts: 39,487,696
    return fmt_value(v)


def _same_decimal(a: Any, b: Any) -> bool:
    """Exact decimal equality: a float's binary value written out in full equals the string
    (3.1415920257568359375 is exactly the float32 nearest 3.141592, so float64 holds it)."""

    def dec(x: Any) -> Decimal:
        return Decimal(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else Decimal(str(x))

    try:
        da, db = dec(a), dec(b)
    except (InvalidOperation, ValueError, TypeError):
        return False
    return da.is_finite() and da == db


# ---------------------------------------------------------------------------------------------
# One piece of evidence against one check


def check_value(check: Check, ev: Evidence, detail_max: int | None = None) -> tuple[str, str]:
    """(verdict, reason citing the numbers) for one piece of evidence under one check; the
    plugin's detail follows the numbers, cut to detail_max characters when given."""
    kind, value = check.type, ev.value
    u = f" {ev.unit}" if ev.unit else ""
    detail = ev.detail.strip()
    if detail_max is not None and len(detail) > detail_max:
        detail = detail[: max(detail_max - 3, 0)].rstrip() + "..."
    tail = f" ({detail})" if detail else ""
    if kind == "plugin":
        shown = f"{fmt(value)}{u}" if value is not None else "no value"
        if ev.verdict in ("holds", "fails"):
            return ev.verdict, f"{shown}; plugin: {detail or 'no detail given'}"
        return "reported", f"{shown} (the plugin gave no verdict)" + tail
    if value is None:
        return "reported", "evidence carries no value" + tail
    if kind in ("report", "formula", "parts"):
        return "reported", f"{fmt(value)}{u}" + tail
    expected = ev.expected if ev.expected is not None else check.value
    if kind == "exact":
        if isinstance(value, str) or isinstance(expected, str):
            ok = str(value) == str(expected) or _same_decimal(value, expected)
            return ("holds" if ok else "fails"), f"{value!s} {'==' if ok else '!='} {expected!s} (exact)" + tail
        a, b = num(value), num(expected)
        if a is None or b is None:
            return "fails", f"cannot compare {value!r} with {expected!r} (not finite numbers)" + tail
        ok = a == b
        return ("holds" if ok else "fails"), f"{fmt(a)}{u} {'==' if ok else '!='} {fmt(b)} (exact)" + tail
    a = num(value)
    if a is None:
        return "fails", f"{value!r} is not a finite number" + tail
    if kind in ("rel", "abs"):
        b = num(expected)
        if b is None or (kind == "rel" and b == 0):
            return "reported", f"{fmt(a)}{u}; no expected value to compare with" + tail
        tol = float(check.tol or 0.0)
        if kind == "rel":
            dev = a / b - 1.0
            ok = abs(dev) <= tol
            said = f"{fmt(a)}{u} vs {fmt(b)}: {dev * 100:+.2f}%, {'within' if ok else 'outside'} ±{tol * 100:g}%"
        else:
            ok = abs(a - b) <= tol
            said = f"{fmt(a)}{u} vs {fmt(b)}: {a - b:+.3g}, {'within' if ok else 'outside'} ±{tol:g}"
        return ("holds" if ok else "fails"), said + tail
    if kind == "range":
        lo, hi = float(check.lo or 0.0), float(check.hi or 0.0)
        ok = lo <= a <= hi
        return ("holds" if ok else "fails"), f"{fmt(a)}{u} {'in' if ok else 'outside'} [{lo:g}, {hi:g}]" + tail
    if kind == "max":
        mx = float(check.value)
        ok = abs(a) <= mx
        return ("holds" if ok else "fails"), f"|{fmt(a)}|{u} {'<=' if ok else '>'} {mx:g}" + tail
    raise ValueError(f"unknown check type {kind!r}")


def judge(claim: Claim, ev: Evidence) -> str:
    """The verdict `bench claims` will give this one piece of evidence (for a plugin's display)."""
    return check_value(claim.check, ev)[0]


def combine(parts: Sequence[tuple[str, str, str | None]]) -> tuple[str, str, str | None]:
    """Several pieces of evidence (verdict, reason, kind) for one claim on one device: fails if one
        fails, holds if one holds and none fails, else reported; the kind is the strongest of the
        deciding pieces (measured > simulated > published). The reason lists every number, after how
    many of the judged pieces hold ("1 of 2 hold: ...") where there are several."""
    verdicts = [v for v, _, _ in parts]
    v = "fails" if "fails" in verdicts else "holds" if "holds" in verdicts else "reported"
    kinds = [k for pv, _, k in parts if pv == v and k]
    kind = min(kinds, key=lambda k: KIND_RANK[k]) if kinds else None
    if len(parts) == 1:
        return v, parts[0][1], kind
    judged = [pv for pv in verdicts if pv in ("holds", "fails")]
    held = f"{judged.count('holds')} of {len(judged)} hold: " if len(judged) > 1 else ""
    return v, held + "; ".join(f"[{pv}] {r}" for pv, r, _ in parts), kind
