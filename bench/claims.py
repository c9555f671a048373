"""`bench claims`: every documented claim (bench/claims.json, from shared/claims.md) with what
it expects, what was measured on each device, and a verdict.

Verdicts: holds | fails | reported (shown, no assertion) | not measured here (with what would
measure it). Evidence comes from result rows (row["evidence"][claim_id], attached by plugins);
formula claims are computed here from the registry's data and bench/flops.py's peak table.
A claim that fails is a finding, not an error: the command exits 0. Unreadable results: exit 2.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import click

from bench.tables import fmt_value

REGISTRY = Path(__file__).with_name("claims.json")
VERDICTS = ("holds", "fails", "reported", "not measured here")
NO_RESULTS = "no results"  # the device column when no result rows were given
FORMATS = ("terminal", "markdown", "csv")


def load_registry(path: Path = REGISTRY) -> list[dict[str, Any]]:
    data = json.loads(path.read_text())
    return list(data["claims"])


# ---------------------------------------------------------------------------------------------
# What an evaluation returns


@dataclass
class Measured:
    """One number a verdict stands on."""

    value: Any
    unit: str = ""
    source: str = "measured"  # measured | simulated | formula
    detail: str = ""

    def text(self) -> str:
        return f"{fmt(self.value)}{' ' + self.unit if self.unit else ''} ({self.source})"


@dataclass
class Outcome:
    verdict: str  # one of VERDICTS
    reason: str  # the numbers compared, or why nothing was measured
    measured: list[Measured] = field(default_factory=list)

    def cell(self) -> str:
        return f"{self.verdict}: {self.reason}" if self.reason else self.verdict


@dataclass
class ClaimResult:
    claim: dict[str, Any]
    outcomes: dict[str, Outcome]  # device label -> outcome

    @property
    def id(self) -> str:
        return self.claim["id"]


def fmt(v: Any) -> str:
    """bench/tables.py's number format; "-" for nothing, thousands separators for large counts."""
    if v is None:
        return "-"
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) >= 10_000:
        return f"{v:,}"  # byte counts: 39,487,696
    if isinstance(v, bool):
        return str(v)
    return fmt_value(v)


def _num(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return None
    return None


def _same_decimal(a: Any, b: Any) -> bool:
    """Exact decimal equality: a float's binary value written out in full equals the string
    (3.1415920257568359375 is exactly the float32 nearest 3.141592, so float64 holds it)."""
    from decimal import Decimal, InvalidOperation

    try:
        da = Decimal(a) if isinstance(a, (int, float)) and not isinstance(a, bool) else Decimal(str(a))
        db = Decimal(b) if isinstance(b, (int, float)) and not isinstance(b, bool) else Decimal(str(b))
    except (InvalidOperation, ValueError, TypeError):
        return False
    return da.is_finite() and da == db


# ---------------------------------------------------------------------------------------------
# Checks of one piece of evidence against the registry


def check_value(check: dict[str, Any], ev: dict[str, Any], detail_max: int | None = None) -> tuple[str, str]:
    """(verdict, reason citing the numbers) for one evidence dict under one registry check;
    the plugin's detail follows the numbers, cut to detail_max characters when given."""
    kind = check["type"]
    value = ev.get("value")
    unit = ev.get("unit") or ""
    u = f" {unit}" if unit else ""
    detail = (ev.get("detail") or "").strip()
    if detail_max is not None and len(detail) > detail_max:
        detail = detail[: max(detail_max - 3, 0)].rstrip() + "..."
    tail = f" ({detail})" if detail else ""
    if value is None and kind not in ("plugin",):
        return "reported", "evidence carries no value" + tail
    if kind in ("report", "formula", "parts"):
        return "reported", f"{fmt(value)}{u}" + tail
    if kind == "plugin":
        v = ev.get("verdict")
        shown = f"{fmt(value)}{u}" if value is not None else "no value"
        if v in ("holds", "fails"):
            return v, f"{shown}; plugin: {detail or 'no detail given'}"
        return "reported", f"{shown} (the plugin gave no verdict)" + tail
    expected = ev.get("expected")
    if expected is None:
        expected = check.get("value")
    if kind == "exact":
        if isinstance(value, str) or isinstance(expected, str):
            ok = str(value) == str(expected) or _same_decimal(value, expected)
            return ("holds" if ok else "fails"), f"{value!s} {'==' if ok else '!='} {expected!s} (exact)" + tail
        a, b = _num(value), _num(expected)
        if a is None or b is None:
            return "reported", f"cannot compare {value!r} with {expected!r}" + tail
        ok = a == b or math.isclose(a, b, rel_tol=1e-12, abs_tol=0.0)
        return ("holds" if ok else "fails"), f"{fmt(a)}{u} {'==' if ok else '!='} {fmt(b)} (exact)" + tail
    a = _num(value)
    if a is None:
        return "reported", f"{value!r} is not a number" + tail
    if kind == "rel":
        b = _num(expected)
        if b is None or b == 0:
            return "reported", f"{fmt(a)}{u}; no expected value to compare with" + tail
        dev = a / b - 1.0
        tol = float(check["tol"])
        ok = abs(dev) <= tol
        return ("holds" if ok else "fails"), (
            f"{fmt(a)}{u} vs {fmt(b)}: {dev * 100:+.2f}%, {'within' if ok else 'outside'} ±{tol * 100:g}%" + tail
        )
    if kind == "abs":
        b = _num(expected)
        if b is None:
            return "reported", f"{fmt(a)}{u}; no expected value to compare with" + tail
        tol = float(check["tol"])
        ok = abs(a - b) <= tol
        return ("holds" if ok else "fails"), (
            f"{fmt(a)}{u} vs {fmt(b)}: {a - b:+.3g}, {'within' if ok else 'outside'} ±{tol:g}" + tail
        )
    if kind == "range":
        lo, hi = float(check["lo"]), float(check["hi"])
        ok = lo <= a <= hi
        return ("holds" if ok else "fails"), f"{fmt(a)}{u} {'in' if ok else 'outside'} [{lo:g}, {hi:g}]" + tail
    if kind == "max":
        mx = float(check["value"])
        ok = abs(a) <= mx
        return ("holds" if ok else "fails"), f"|{fmt(a)}|{u} {'<=' if ok else '>'} {mx:g}" + tail
    raise ValueError(f"unknown check type {kind!r}")


def combine(parts: Sequence[tuple[str, str]]) -> tuple[str, str]:
    """Several pieces of evidence for one claim on one device: fails if one fails, holds if
    one holds and none fails, else reported. The reason lists every number."""
    verdicts = [v for v, _ in parts]
    if "fails" in verdicts:
        v = "fails"
    elif "holds" in verdicts:
        v = "holds"
    else:
        v = "reported"
    if len(parts) == 1:
        return v, parts[0][1]
    return v, "; ".join(f"[{pv}] {r}" for pv, r in parts)


# ---------------------------------------------------------------------------------------------
# Formula claims: computed here from the registry's data (never from a hard-coded verdict)


def _peak(device: str, dtype: str) -> float:
    from bench.flops import PEAK_TFLOPS  # imports torch: only when formulas are evaluated

    return float(PEAK_TFLOPS[device][dtype])


def f_pf_day_flops(d: dict[str, Any]) -> tuple[str, str, list[Measured]]:
    flops = float(d["flops_per_s"]) * float(d["seconds"])
    ok = math.isclose(flops, float(d["printed"]), rel_tol=1e-12)
    m = [Measured(flops, "FLOP", "formula")]
    return ("holds" if ok else "fails"), (
        f"{d['flops_per_s']:g} FLOP/s x {d['seconds']:g} s = {flops:.4g} {'==' if ok else '!='} {d['printed']:g}"
    ), m


def f_pf_day_gpus(d: dict[str, Any]) -> tuple[str, str, list[Measured]]:
    from bench.flops import PEAK_SOURCE

    peak = _peak(d["device"], d["dtype"])  # TFLOP/s, dense
    gpus = float(d["pf_day_flops"]) / (peak * 1e12 * 86400)
    m = [Measured(round(gpus, 3), "GPUs", "formula", f"{d['device']} {d['dtype']} {peak:g} TFLOP/s dense")]
    base = f"{d['pf_day_flops']:g} FLOP / ({peak:g} TFLOP/s {d['dtype']} dense x 86400 s) = {gpus:.2f} {d['device']}s ({PEAK_SOURCE})"
    claimed = d.get("claimed_gpus")
    if claimed is None:
        return "reported", base, m
    dev = gpus / float(claimed) - 1.0
    ok = abs(dev) <= float(d["tol"])
    reason = f"{base}; claimed {claimed:g}: {dev * 100:+.0f}%"
    sp = d.get("sparsity_speedup")
    if sp and not ok:
        gs = gpus / float(sp)
        reason += f"; with 2:4 sparsity ({peak * sp:g} TFLOP/s) {gs:.2f} GPUs, so {claimed:g} only holds with sparsity"
    return ("holds" if ok else "fails"), reason, m


def zero_bytes_per_param(stage: int, k: float, nd: float) -> float:
    """Model-state bytes per parameter per rank, mixed-precision Adam (ZeRO sec. 3.1):
    params 2, grads 2, optimizer K; stage 1 shards K, stage 2 also grads, stage 3 everything."""
    if stage == 0:
        return 2 + 2 + k
    if stage == 1:
        return 2 + 2 + k / nd
    if stage == 2:
        return 2 + (2 + k) / nd
    if stage == 3:
        return (2 + 2 + k) / nd
    raise ValueError(f"ZeRO stage {stage}?")


def f_zero_bytes(d: dict[str, Any]) -> tuple[str, str, list[Measured]]:
    gb = zero_bytes_per_param(int(d["stage"]), float(d["k"]), float(d["nd"])) * float(d["psi"]) / 1e9
    ok = abs(gb - float(d["printed_gb"])) <= float(d["tol_gb"])
    name = "DDP" if int(d["stage"]) == 0 else f"stage {d['stage']}"
    return ("holds" if ok else "fails"), (
        f"{name}, Psi={d['psi']:g}, Nd={d['nd']}, K={d['k']}: {gb:.3f} GB vs printed {d['printed_gb']:g} GB "
        f"({'within' if ok else 'outside'} ±{d['tol_gb']:g})"
    ), [Measured(round(gb, 4), "GB", "formula")]


def f_zero_limits(d: dict[str, Any]) -> tuple[str, str, list[Measured]]:
    k = float(d["k"])
    nds = [float(n) for n in d["nd"]]
    base = zero_bytes_per_param(0, k, 1)
    ratios = {s: [base / zero_bytes_per_param(s, k, n) for n in nds] for s in (1, 2, 3)}
    ok = True
    bits = []
    for s in (1, 2):
        lim = float(d["limits"][str(s)])
        r = ratios[s]
        rising = all(b >= a for a, b in zip(r, r[1:]))
        near = abs(r[-1] / lim - 1) <= float(d["tol"])
        ok &= rising and near and all(x <= lim for x in r)
        bits.append(f"stage {s}: " + ", ".join(f"{x:.3g}x" for x in r[:-1]) + f" ... {r[-1]:.5g}x -> {lim:g}x")
    exact3 = all(math.isclose(x, n, rel_tol=1e-12) for x, n in zip(ratios[3], nds))
    ok &= exact3
    bits.append(f"stage 3: = Nd {'exactly' if exact3 else 'NOT'}")
    reason = f"DDP/stage bytes, K={k:g}, Nd={', '.join(f'{n:g}' for n in nds)}: " + "; ".join(bits)
    m = [Measured(round(ratios[1][-1], 4), "x (stage 1, largest Nd)", "formula"),
         Measured(round(ratios[2][-1], 4), "x (stage 2, largest Nd)", "formula")]  # fmt: skip
    return ("holds" if ok else "fails"), reason, m


def f_percent_changes(d: dict[str, Any]) -> tuple[str, str, list[Measured]]:
    ok = True
    bits, m = [], []
    for p in d["pairs"]:
        pct = (float(p["to"]) / float(p["from"]) - 1) * 100
        good = abs(pct - float(p["printed_pct"])) <= float(d["tol_pct"])
        ok &= good
        bits.append(f"{p['label']}: {p['from']:g} -> {p['to']:g} = {pct:+.2f}% vs printed {p['printed_pct']:+g}%")
        m.append(Measured(round(pct, 2), "%", "formula", p["label"]))
    peak = _peak(d["peak_device"], d["peak_dtype"])
    share = 100 * float(d["peak_value"]) / peak
    good = abs(share - float(d["printed_peak_pct"])) <= float(d["peak_tol_pct"])
    ok &= good
    bits.append(f"{d['peak_value']:g} / {peak:g} TFLOP/s ({d['peak_device']} {d['peak_dtype']} dense) = {share:.1f}% vs ~{d['printed_peak_pct']:g}%")
    m.append(Measured(round(share, 1), "% of peak", "formula"))
    return ("holds" if ok else "fails"), "; ".join(bits), m


def f_memory_variant(d: dict[str, Any]) -> tuple[str, str, list[Measured]]:
    dev, gb = d["device"], d["claimed_gb"]
    variants = d["variants_gb"]
    ok = gb in variants.get(dev, [])
    others = [k for k, v in variants.items() if gb in v and k != dev]
    reason = f"{dev} was made with {'/'.join(str(x) for x in variants.get(dev, []))} GB ({d['variants_source']})"
    reason += f"; {gb} GB is {'one of them' if ok else 'not'}" + (f"; {gb} GB fits {', '.join(others)}" if others and not ok else "")
    return ("holds" if ok else "fails"), reason, [Measured(max(variants.get(dev, [0])), f"GB (largest {dev})", "formula")]


def f_same_constant(d: dict[str, Any]) -> tuple[str, str, list[Measured]]:
    a, b = float(d["printed"]), float(d["reference"])
    dev = a / b - 1
    ok = abs(dev) <= float(d["tol"])
    c, e = float(d["at_pf_days"]), float(d["exponent"])
    la, lb = (a / c) ** e, (b / c) ** e  # L(C) = (C_c / C)^alpha, eq. 1.3
    return ("holds" if ok else "fails"), (
        f"printed {a:.2g} vs eq. {b:.2g}: {dev * 100:+.0f}%; at C={c:g} PF-day the laws give L={la:.3f} vs {lb:.3f}"
    ), [Measured(a, "PF-days (printed)", "formula")]


def f_tokens_per_param(d: dict[str, Any]) -> tuple[str, str, list[Measured]]:
    target, tol = float(d["target"]), float(d["tol"])
    ok = True
    bits, m = [], []
    for r in d["rows"]:
        ratio = float(r["tokens"]) / float(r["params"])
        good = abs(ratio / target - 1) <= tol
        ok &= good
        bits.append(f"{r['label']}: {ratio:.1f}{'' if good else ' (outside)'}")
        m.append(Measured(round(ratio, 2), f"tokens/param ({r['label']})", "formula"))
    return ("holds" if ok else "fails"), (
        f"tokens/param {', '.join(bits)}; all within ±{tol * 100:g}% of {target:g}" if ok else
        f"tokens/param {', '.join(bits)}; not all within ±{tol * 100:g}% of {target:g}"
    ), m  # fmt: skip


def f_tokens_per_param_below(d: dict[str, Any]) -> tuple[str, str, list[Measured]]:
    ratio = float(d["tokens"]) / float(d["params"])
    printed_ok = abs(ratio - float(d["printed"])) <= float(d["tol"])
    below = ratio < float(d["below"])
    ok = printed_ok and below
    return ("holds" if ok else "fails"), (
        f"{d['tokens']:.3g} / {d['params']:.3g} = {ratio:.2f} tokens/param "
        f"({'matches' if printed_ok else 'does not match'} printed {d['printed']:g}; "
        f"{'below' if below else 'not below'} {d['below']:g})"
    ), [Measured(round(ratio, 2), "tokens/param", "formula")]


def f_nf4_bits(d: dict[str, Any]) -> tuple[str, str, list[Measured]]:
    # QLoRA sec. 3: 32/64 = 0.5 bits of fp32 absmax per param become 8/64 + 32/(64*256) = 0.127
    bits = float(d["weight_bits"]) + float(d["absmax_bits"]) / d["block"] + float(d["absmax2_bits"]) / (d["block"] * d["block2"])
    ratio = bits / float(d["ref_bits"])
    tol = float(d["tol"])
    ok = abs(bits - float(d["printed_bits"])) <= tol and abs(ratio - float(d["printed_ratio"])) <= tol
    return ("holds" if ok else "fails"), (
        f"{d['weight_bits']} + {d['absmax_bits']}/{d['block']} + {d['absmax2_bits']}/({d['block']}x{d['block2']}) "
        f"= {bits:.4f} bits/param (printed {d['printed_bits']}); /{d['ref_bits']} = {ratio:.4f} (printed {d['printed_ratio']})"
    ), [Measured(round(bits, 4), "bits/param", "formula"), Measured(round(ratio, 4), "x of fp16", "formula")]


FORMULAS: dict[str, Callable[[dict[str, Any]], tuple[str, str, list[Measured]]]] = {
    "pf_day_flops": f_pf_day_flops,
    "pf_day_gpus": f_pf_day_gpus,
    "zero_bytes": f_zero_bytes,
    "zero_limits": f_zero_limits,
    "percent_changes": f_percent_changes,
    "memory_variant": f_memory_variant,
    "same_constant": f_same_constant,
    "tokens_per_param": f_tokens_per_param,
    "tokens_per_param_below": f_tokens_per_param_below,
    "nf4_bits": f_nf4_bits,
}


# ---------------------------------------------------------------------------------------------
# Rows -> evidence per device


def device_of(row: dict[str, Any]) -> str:
    return str((row.get("fingerprint") or {}).get("label") or "unknown device")


def is_cuda_row(row: dict[str, Any]) -> bool:
    fp = row.get("fingerprint") or {}
    if fp.get("device_type"):
        return fp["device_type"] == "cuda"
    return bool(fp.get("cuda")) and bool(fp.get("devices"))


WHERE_KEYS = ("stage", "world_size", "nproc", "precision", "dtype", "model", "params", "preset", "impl", "backend", "scheme")


def _where(row: dict[str, Any]) -> str:
    """Which case a piece of evidence came from (params, else the summary row's labels)."""
    p = {**(row.get("labels") or {}), **(row.get("params") or {})}
    bits = [f"{k}={fmt(p[k])}" for k in WHERE_KEYS if p.get(k) not in (None, "", 0)]
    return f"{row.get('plugin')}" + (f" {', '.join(bits)}" if bits else "")


def gather(rows: Sequence[dict[str, Any]]) -> tuple[list[str], dict[tuple[str, str], list[tuple[dict[str, Any], dict[str, Any]]]]]:
    """Device labels in order of appearance, and (device, claim id) -> [(evidence, row)], with
    identical evidence (e.g. the same figure on every rank) kept once."""
    devices: list[str] = []
    found: dict[tuple[str, str], list[tuple[dict[str, Any], dict[str, Any]]]] = {}
    seen: set[str] = set()
    for r in rows:
        dev = device_of(r)
        if dev not in devices:
            devices.append(dev)
        for cid, ev in (r.get("evidence") or {}).items():
            if not isinstance(ev, dict):
                continue
            key = json.dumps([dev, cid, ev.get("value"), ev.get("unit"), ev.get("source"), ev.get("expected"),
                              ev.get("verdict"), ev.get("detail")], sort_keys=True, default=str)  # fmt: skip
            if key in seen:
                continue
            seen.add(key)
            found.setdefault((dev, cid), []).append((ev, r))
    return devices, found


def _not_measured(claim: dict[str, Any], dev: str, rows_here: list[dict[str, Any]], cpu_only_evidence: bool) -> Outcome:
    needs = claim.get("needs", "")
    names = claim.get("plugin") or []
    names = [names] if isinstance(names, str) else list(names)
    plugin = "/".join(names)
    if claim.get("requires") == "cuda" and not any(is_cuda_row(r) for r in rows_here):
        why = needs if needs.startswith("needs CUDA") else f"needs CUDA: {needs}"
        if cpu_only_evidence:
            why += " (evidence from CPU rows does not count)"
        return Outcome("not measured here", why)
    mine = [r for r in rows_here if r.get("plugin") in names]
    if not rows_here:
        return Outcome("not measured here", f"no results given; {needs}")
    if not mine:
        return Outcome("not measured here", f"no {plugin} rows in these results; {needs}" if plugin else needs)
    cases = [r for r in mine if r.get("kind", "case") == "case"]
    skipped = [r for r in cases if r.get("status") == "skipped"]
    if skipped and len(skipped) == len(cases):
        msg = (skipped[0].get("message") or "no reason given").strip()
        return Outcome("not measured here", f"{plugin} was skipped here: {msg}; {needs}")
    bad = [r for r in mine if r.get("status") in ("oom", "error", "timeout")]
    extra = f" ({len(bad)} of {len(mine)} rows ended {'/'.join(sorted({r['status'] for r in bad}))})" if bad else ""
    return Outcome("not measured here", f"{plugin} ran{extra} but attached no evidence for this claim; {needs}")


def _evidence_outcome(claim: dict[str, Any], evs: list[tuple[dict[str, Any], dict[str, Any]]],
                      detail_max: int | None = None) -> Outcome:  # fmt: skip
    check = claim["check"]
    parts, measured = [], []
    for ev, row in evs:
        v, reason = check_value(check, ev, detail_max)
        src = ev.get("source") or "measured"
        if len(evs) > 1:
            reason = f"{src}, {_where(row)}: {reason}"
        parts.append((v, reason))
        measured.append(Measured(ev.get("value"), ev.get("unit") or "", src, ev.get("detail") or ""))
    v, reason = combine(parts)
    return Outcome(v, reason, measured)


def evaluate(rows: Sequence[dict[str, Any]], registry: list[dict[str, Any]] | None = None,
             detail_max: int | None = None) -> tuple[list[str], list[ClaimResult]]:  # fmt: skip
    """Every registry claim x every device in rows -> Outcome. Evidence under ids that are
    not in the registry is shown too (as reported), never dropped. detail_max shortens the
    plugins' detail text in reasons (the numbers compared always stay)."""
    registry = load_registry() if registry is None else registry
    devices, found = gather(rows)
    if not devices:
        devices = [NO_RESULTS]
    rows_by_dev: dict[str, list[dict[str, Any]]] = {d: [] for d in devices}
    for r in rows:
        rows_by_dev[device_of(r)].append(r)
    formula_cache: dict[str, tuple[str, str, list[Measured]]] = {}
    out: list[ClaimResult] = []
    by_id: dict[str, ClaimResult] = {}
    for claim in registry:
        check = claim["check"]
        outcomes: dict[str, Outcome] = {}
        for dev in devices:
            evs = found.get((dev, claim["id"]), [])
            if claim.get("requires") == "cuda":
                cpu_ev = bool(evs) and not any(is_cuda_row(r) for _, r in evs)
                evs = [(e, r) for e, r in evs if is_cuda_row(r)]
            else:
                cpu_ev = False
            if check["type"] == "formula":
                if claim["id"] not in formula_cache:
                    formula_cache[claim["id"]] = FORMULAS[check["formula"]](check.get("data", {}))
                fv, freason, fm = formula_cache[claim["id"]]
                if evs:  # a plugin measured it too: show both, any failure wins
                    eo = _evidence_outcome({**claim, "check": {"type": "plugin"}}, evs, detail_max)
                    v, reason = combine([(fv, f"formula: {freason}"), (eo.verdict, f"evidence: {eo.reason}")])
                    outcomes[dev] = Outcome(v, reason, list(fm) + eo.measured)
                else:
                    outcomes[dev] = Outcome(fv, freason, list(fm))
            elif check["type"] == "parts":
                outcomes[dev] = Outcome("not measured here", "")  # filled in below, once the parts exist
            elif evs:
                outcomes[dev] = _evidence_outcome(claim, evs, detail_max)
            else:
                outcomes[dev] = _not_measured(claim, dev, rows_by_dev[dev], cpu_ev)
        res = ClaimResult(claim, outcomes)
        out.append(res)
        by_id[claim["id"]] = res
    for res in out:  # aggregate claims split into parts
        check = res.claim["check"]
        if check["type"] != "parts":
            continue
        for dev in devices:
            parts = [(pid, by_id[pid].outcomes[dev]) for pid in check["parts"]]
            judged = [(pid, o) for pid, o in parts if o.verdict in ("holds", "fails")]
            failing = [(pid, o) for pid, o in judged if o.verdict == "fails"]
            if failing:
                v = "fails"
                reason = "; ".join(f"{pid} fails: {o.reason}" for pid, o in failing)
            elif judged and len(judged) == len([p for p in parts if p[1].verdict != "reported"]):
                v = "holds"
                reason = "; ".join(f"{pid}: {o.reason}" for pid, o in judged)
            else:
                v = "not measured here"
                reason = "; ".join(f"{pid}: {o.verdict} ({o.reason})" for pid, o in parts if o.verdict == "not measured here")
            res.outcomes[dev] = Outcome(v, reason, [m for _, o in judged for m in o.measured])
    known = {c["id"] for c in registry}
    extra_ids = sorted({cid for (_, cid) in found} - known)
    for cid in extra_ids:
        claim = {"id": cid, "claim": "(evidence for an id that is not in the registry)", "source": "", "expected": "",
                 "tolerance": "", "check": {"type": "report"}, "needs": "add it to bench/claims.json"}  # fmt: skip
        outcomes = {}
        for dev in devices:
            evs = found.get((dev, cid), [])
            outcomes[dev] = _evidence_outcome(claim, evs, detail_max) if evs else Outcome("not measured here", "no evidence on this device")
        out.append(ClaimResult(claim, outcomes))
    return devices, out


# ---------------------------------------------------------------------------------------------
# Tables


def table(devices: Sequence[str], results: Sequence[ClaimResult], fmt_name: str = "terminal") -> tuple[list[str], list[list[str]]]:
    """Header and body: one row per claim; per device a measured and a verdict column
    (csv: verdict and reason apart)."""
    header = ["id", "claim", "expected"]
    for d in devices:
        sfx = f" ({d})"
        header.append(f"measured{sfx}")
        if fmt_name == "csv":
            header += [f"verdict{sfx}", f"reason{sfx}"]
        else:
            header.append(f"verdict{sfx}")
    body = []
    for res in results:
        c = res.claim
        exp = str(c.get("expected", ""))
        if c.get("tolerance") and c["tolerance"] not in ("exact",):
            exp += f" [{c['tolerance']}]"
        elif c.get("tolerance") == "exact":
            exp += " [exact]"
        claim_text = c.get("claim", "")
        if c.get("known_error"):
            claim_text = f"KNOWN ERROR IN THE NOTES: {claim_text}"
        line = [c["id"], claim_text, exp]
        for d in devices:
            o = res.outcomes[d]
            line.append("; ".join(m.text() for m in o.measured) or "-")
            if fmt_name == "csv":
                line += [o.verdict, o.reason]
            else:
                line.append(o.cell())
        body.append(line)
    return header, body


def render(devices: Sequence[str], results: Sequence[ClaimResult], fmt_name: str = "terminal") -> str:
    header, body = table(devices, results, fmt_name)
    if fmt_name == "csv":
        import csv
        import io

        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(header)
        w.writerows(body)
        return buf.getvalue()
    from tabulate import tabulate

    if fmt_name == "markdown":
        esc = [[cell.replace("|", "\\|").replace("\n", " ") for cell in line] for line in body]
        return tabulate(esc, headers=header, tablefmt="github", disable_numparse=True)
    # terminal: wrap long cells so the table stays readable
    ndev = len(devices)
    widths = [27, 34, 30] + [28, 46] * ndev if ndev < 3 else [27, 24, 20] + [18, 30] * ndev
    return tabulate(body, headers=header, tablefmt="simple", disable_numparse=True, maxcolwidths=widths)


def summary(devices: Sequence[str], results: Sequence[ClaimResult]) -> str:
    lines = []
    for d in devices:
        counts = {v: 0 for v in VERDICTS}
        for r in results:
            counts[r.outcomes[d].verdict] = counts.get(r.outcomes[d].verdict, 0) + 1
        lines.append(f"{d}: {len(results)} claims: " + ", ".join(f"{n} {v}" for v, n in counts.items()))
    return "\n".join(lines)


@click.command("claims")
@click.argument("results", nargs=-1, type=click.Path(path_type=Path))
@click.option("--format", "fmt_name", type=click.Choice(FORMATS), default="terminal", show_default=True)
def command(results: tuple[Path, ...], fmt_name: str) -> None:
    """Every documented claim: expected, measured (per device), verdict.

    RESULTS: result files or folders (default: the latest file under results/runs/; with
    none, formula claims are still evaluated). Claims that fail are findings: exit 0.
    """
    from bench.results import load_rows

    if results:
        rows = load_rows(results)
    else:
        runs = sorted(Path("results/runs").glob("*.jsonl"), key=lambda p: p.stat().st_mtime)
        if runs:
            click.echo(f"claims for {runs[-1]} (the latest run)", err=True)
            rows = load_rows([runs[-1]])
        else:
            click.echo("no results under results/runs/: only formula claims can be judged", err=True)
            rows = []
    # the terminal shortens the plugins' detail text; markdown and csv keep all of it
    devices, res = evaluate(rows, detail_max=140 if fmt_name == "terminal" else None)
    click.echo(render(devices, res, fmt_name))
    if fmt_name != "csv":
        click.echo("\n" + summary(devices, res))
