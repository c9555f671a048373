"""Claim evidence that compares cases: collective bytes per stage vs DDP (zero.comm.stage1-3), the notes'
stage-2 factor vs the limits extrapolated from measured / simulated bytes (zero.stage2_notes), each stage's
limit as Nd grows vs the formula's (zero.limits, extrapolated; the reductions at the Nd run beside), the largest
model each strategy fits on one GPU (fsdp.ddp_oom), and per-rank TFLOP/s across world sizes (fsdp.near_linear)."""

from __future__ import annotations

import math
from typing import Any

from bench.contract import Evidence, Metric, Record, claim_record
from plugins.distributed.claims import BY_ID, NEAR_LINEAR_PER_DOUBLING, NOTES_TOL
from plugins.distributed.formulas import limit_of, reduction_limit, times
from plugins.distributed.summary import Case, find

COMM_EXPECTED = {1: 1.0, 2: 1.0, 3: 1.5}  # ZeRO sec. 7.2: 2Psi, 2Psi, 3Psi vs DDP's 2Psi
COMM_HOW = {
    1: "torch's ZeroRedundancyOptimizer over DDP: all-reduce of the gradients (2Psi) + broadcast of the updated "
    "parameters (Psi) = 3Psi; the paper's stage 1 reduce-scatters and all-gathers (2Psi), the pattern of stage 2 here",
    2: "FSDP2 reshard_after_forward=False: all-gather of the parameters once (Psi) + reduce-scatter of the gradients "
    "(Psi) = 2Psi, the paper's algorithm for stages 1 and 2",
    3: "FSDP2 reshard_after_forward=True: all-gather in forward and again in backward (2Psi) + reduce-scatter (Psi)",
}


def cross_case_evidence(cases: list[Case]) -> list[Record]:
    out = comm_evidence(cases)
    out += stage2_notes_evidence(cases)
    out += limits_evidence(cases)
    out += oom_evidence(cases)
    out += near_linear_evidence(cases)
    return out


def _labels(a: Case, **extra: Any) -> dict[str, Any]:
    return {"world_size": a.world, "precision": a.precision, "model": a.params.get("model"), **extra}


def comm_evidence(cases: list[Case]) -> list[Record]:
    """zero.comm.stage1-3: collective bytes per step of each stage / DDP's, same real config, 2+ ranks (on one
    rank FSDP2 skips its collectives while DDP still calls all-reduce, a local no-op: nothing to compare)."""
    out = []
    for a in cases:
        base = find(cases, a, 0)
        if a.stage == 0 or a.simulated or a.hybrid or a.world < 2 or base is None or not base.comm:
            continue
        ratio = a.comm / base.comm
        detail = (
            f"collective bytes per step, largest rank, {a.precision}, world size {a.world}, Psi={a.psi:,}: "
            f"{a.name} {a.comm:,.0f} / DDP {base.comm:,.0f} = {ratio:.3f} (expected {COMM_EXPECTED[a.stage]:g}); "
            f"{COMM_HOW[a.stage]}; counted by wrapping torch.distributed's collectives, ZeRO sec. 7.1 "
            f"accounting (all-reduce 2x payload, all-gather/reduce-scatter/broadcast 1x)"
        )
        claim = BY_ID[f"zero.comm.stage{a.stage}"]
        ev = Evidence(round(ratio, 4), "x", "measured", detail, COMM_EXPECTED[a.stage])
        out.append(claim_record(claim, ev, _labels(a, source="measured")))
    return out


def notes_verdict(lim1: float | None, lim2: float, two_byte_params: bool) -> tuple[bool, str]:
    """The notes' stage-2 "~4" (the same factor as stage 1) against the limits as Nd grows: it holds if
    stage 2's limit is within NOTES_TOL of stage 1's and, with the paper's 2-byte parameters, of 4."""
    bits, ok = [], True
    if lim1 is not None:
        same = math.isfinite(lim2) and abs(lim2 / lim1 - 1) <= NOTES_TOL
        ok &= same
        bits.append(f"stage 2 / stage 1 = {lim2 / lim1:.2f} ({'within' if same else 'outside'} ±{NOTES_TOL:.0%} of 1)")
    if two_byte_params or lim1 is None:
        near4 = math.isfinite(lim2) and abs(lim2 / 4 - 1) <= NOTES_TOL
        ok &= near4
        bits.append(f"stage 2 -> {times(lim2)} vs ~4 ({'within' if near4 else 'outside'} ±{NOTES_TOL:.0%})")
    return ok, "; ".join(bits)


def stage2_notes_evidence(cases: list[Case]) -> list[Record]:
    """zero.stage2_notes: per configuration (measured or simulated) with DDP and stage 2 (and stage 1), the
    reductions at the Nd run and their limits as Nd grows (DDP / the replicated bytes, measured by category)."""
    out = []
    for a2 in cases:
        base, a1 = find(cases, a2, 0), find(cases, a2, 1)
        if a2.stage != 2 or a2.hybrid or base is None or a2.nd < 2:
            continue
        bf16 = a2.precision == "bf16"
        if a1 is None and not bf16:
            continue  # fp32 stage 2 alone tends to 4x (4-byte parameters): the comparison needs stage 1
        lim2 = limit_of(base.value, a2.replicated)
        lim1 = limit_of(base.value, a1.replicated) if a1 is not None else None
        holds, why = notes_verdict(lim1, lim2, bf16)
        src = "simulated" if a2.simulated else "measured"
        at = f"stage 2 {base.value / a2.value:.3g}x" + (f", stage 1 {base.value / a1.value:.3g}x" if a1 else "")
        lims = f"stage 2 {times(lim2)}" + (f", stage 1 {times(lim1)}" if lim1 is not None else "")
        f1, f2 = reduction_limit(1, a2.precision), reduction_limit(2, a2.precision)
        detail = (
            f"{src}, {a2.precision}, Nd={a2.nd}, Psi={a2.psi:,}: reduction vs DDP {at}; as Nd grows (DDP / "
            f"replicated bytes): {lims}; formula limits for these dtypes: stage 1 {f1:g}x, stage "
            f"2 {f2:g}x; the paper (2+2+K, K=12): 4x and 8x; the notes: stage 2 ~4, like stage 1: {why}"
        )
        if not bf16:
            detail += " (fp32 keeps 4-byte parameters: both factors halve, 2x and 4x, and stay a factor 2 apart)"
        detail += f" (the limits are extrapolated from the bytes {src} at Nd={a2.nd}: Nd -> infinity is not run)"
        ev = Evidence(
            round(lim2, 3) if math.isfinite(lim2) else None,
            f"x (stage 2 as Nd grows; extrapolated from {src} bytes)",
            "extrapolated",
            detail,
            "~4 (the notes)",
            "holds" if holds else "fails",
        )
        rec = claim_record(BY_ID["zero.stage2_notes"], ev, _labels(a2, source=src))
        rec.metrics["reduction_at_nd"] = Metric(base.value / a2.value, f"x DDP / stage 2 at Nd={a2.nd}", src)
        out.append(rec)
    return out


LIMIT_TOL = 0.05  # zero.limits: each stage's extrapolated limit within +-5% of the formula's


def limits_evidence(cases: list[Case]) -> list[Record]:
    """zero.limits: per configuration with DDP and stages 1-3, each stage's reduction vs DDP as Nd grows,
    DDP / the bytes the stage keeps replicated (measured or simulated by category at the Nd run, carried to
    Nd -> infinity: extrapolated), against the formula's limits for the run's dtypes; the reductions at the
    Nd run (measured or simulated) are in the detail, apart."""
    out = []
    for a3 in cases:
        base = find(cases, a3, 0)
        stages = {s: find(cases, a3, s) for s in (1, 2, 3)}
        if a3.stage != 3 or a3.hybrid or base is None or a3.nd < 2 or any(v is None for v in stages.values()):
            continue
        src = "simulated" if a3.simulated else "measured"
        ok, bits, at = True, [], []
        for s, a in stages.items():
            assert a is not None
            lim, want = limit_of(base.value, a.replicated), reduction_limit(s, a.precision)
            good = (not math.isfinite(want) and not math.isfinite(lim)) or (
                math.isfinite(want) and math.isfinite(lim) and abs(lim / want - 1) <= LIMIT_TOL
            )
            ok &= good
            bits.append(f"stage {s} {times(lim)} (formula {times(want)}{'' if good else ', OUTSIDE ±5%'})")
            at.append(f"stage {s} {base.value / a.value:.3g}x")
        lim2 = limit_of(base.value, stages[2].replicated) if stages[2] else math.inf
        detail = (
            f"{a3.precision}, Psi={a3.psi:,}: extrapolated as Nd grows (DDP / the bytes kept replicated, {src} at "
            f"Nd={a3.nd}): {', '.join(bits)}; {src} at Nd={a3.nd} itself: {', '.join(at)}; the paper's 2-byte "
            "parameters and gradients with K=12 give 4x / 8x / Nd x"
        )
        ev = Evidence(
            round(lim2, 3) if math.isfinite(lim2) else None,
            f"x (stage 2 as Nd grows; extrapolated from {src} bytes)",
            "extrapolated",
            detail,
            verdict="holds" if ok else "fails",
        )
        out.append(claim_record(BY_ID["zero.limits"], ev, _labels(a3, source=src)))
    return out


def oom_evidence(cases: list[Case]) -> list[Record]:
    """fsdp.ddp_oom: per (world size, precision, GPU memory) with simulated DDP and stage-3 cases at two or
    more model sizes, the largest size whose per-rank tracked step peak fits one GPU's memory."""
    groups: dict[tuple[int, str, float], dict[int, dict[int, float]]] = {}
    for a in cases:
        if a.simulated and a.stage in (0, 3) and not a.hybrid and a.psi:
            gb = float(a.params.get("gpu_gb") or 80.0)  # rows from before --gpu-gb: 80 GB
            g = groups.setdefault((a.world, a.precision, gb), {0: {}, 3: {}})
            g[a.stage][a.psi] = a.peak_mib * 2**20  # bytes
    out = []
    for (world, prec, gb), g in sorted(groups.items()):
        sizes = sorted(set(g[0]) & set(g[3]))
        if len(sizes) < 2:
            continue
        budget = gb * 1e9

        ddp, fsdp = (max((n for n in sizes if g[s][n] <= budget), default=0) for s in (0, 3))
        alike = all(g[s][sizes[0]] <= budget for s in (0, 3))
        ok = alike and fsdp > ddp
        peaks = "; ".join(f"{_b(n)}: DDP {g[0][n] / 1e9:.1f} GB, stage 3 {g[3][n] / 1e9:.1f} GB" for n in sizes)
        detail = (
            f"simulated per-rank step peak (MemTracker under fake tensors, {prec}, Nd={world}) vs one GPU of "
            f"{gb:g} GB: {peaks}; largest that fits: DDP {_b(ddp)}, FSDP stage 3 {_b(fsdp)}; the smallest size "
            f"fits both: {alike}. DDP's gradient buckets are not simulated (no DDP under fake tensors), so its "
            f"real peak is higher still"
        )
        ev = Evidence(
            f"DDP {_b(ddp)} / FSDP-3 {_b(fsdp)}",
            "params (largest that fits)",
            "simulated",
            detail,
            "FSDP > DDP",
            "holds" if ok else "fails",
        )
        rec = claim_record(
            BY_ID["fsdp.ddp_oom"], ev, {"world_size": world, "precision": prec, "gpu_gb": gb, "source": "simulated"}
        )
        rec.metrics = {
            "largest_fit_stage0_params": Metric(ddp, "params", "simulated", deterministic=True),
            "largest_fit_stage3_params": Metric(fsdp, "params", "simulated", deterministic=True),
            "verdict": rec.metrics["verdict"],
        }
        out.append(rec)
    return out


def _b(n: float) -> str:
    return f"{n / 1e9:.3g}B" if n >= 1e8 else f"{n / 1e6:.3g}M"


def near_linear_evidence(cases: list[Case]) -> list[Record]:
    """fsdp.near_linear: weak scaling of real stage-3 cases of one configuration over the world sizes run.

    Threshold: per-rank TFLOP/s efficiency >= NEAR_LINEAR_PER_DOUBLING (0.95) per doubling of ranks,
    efficiency^(1 / log2(N / N_smallest)). The paper loses at most ~1% per doubling (-5.9% over six
    doublings, 8 -> 512 GPUs); 5% leaves room for the 3-10% run-to-run variation of timings on shared
    machines (shared/design.md), so noise alone is not called a scaling loss. Ranks with different
    threads each (a CPU's cores split among the ranks) are not the same per-rank resource: reported, not
    judged. Oversubscribed CPU runs (more threads than cores) are judged and say so: that is a finding
    about this machine, not about FSDP."""
    groups: dict[str, list[Case]] = {}
    for a in cases:
        if a.stage == 3 and not a.simulated and not a.hybrid and a.step_max_ms:
            groups.setdefault(a.config(world=False), []).append(a)
    out = []
    for group in groups.values():
        ws = sorted({a.world for a in group})
        if len(ws) < 2:
            continue
        runs = sorted({a.world: a for a in group}.values(), key=lambda a: a.world)
        out.append(_near_linear_record(runs))
    return out


def _near_linear_record(runs: list[Case]) -> Record:
    b = runs[0]
    use_flops = all(a.tflops_per_rank for a in runs)
    per = [(a.tflops_per_rank if use_flops else a.tokens_per_s_per_rank) or 0.0 for a in runs]
    what = "TFLOP/s per rank" if use_flops else "tokens/s per rank (no FLOP count)"
    eff = [x / per[0] for x in per]
    per_doubling = [e ** (1 / math.log2(a.world / b.world)) for a, e in zip(runs[1:], eff[1:])]
    worst = min(per_doubling)
    threads = sorted({a.threads for a in runs}, key=str)
    equal = len(threads) == 1
    over = [a.world for a in runs if a.oversubscribed]
    ok = worst >= NEAR_LINEAR_PER_DOUBLING
    sizes = ", ".join(str(a.world) for a in runs)
    table = "; ".join(
        f"N={a.world}: {x:.4g} {what.split(' (')[0]}, {a.tokens_per_s_per_rank or 0:.4g} tokens/s per rank, "
        f"efficiency {e:.3f}, {a.threads} thread(s)/rank, collective {a.comm:,.0f} B/rank/step"
        for a, x, e in zip(runs, per, eff)
    )
    detail = (
        f"weak scaling, stage 3 (FULL_SHARD), {b.precision}, model {b.params.get('model')}, batch {b.tokens_per_rank:,}"
        f" tokens per rank, world sizes {sizes} on {b.device}: {table}; worst efficiency per doubling "
        f"{worst:.3f} vs >= {NEAR_LINEAR_PER_DOUBLING} (the paper: ~1% lost per doubling, 8 -> 512 GPUs)"
    )
    verdict: str | None = "holds" if ok else "fails"
    if not equal:
        verdict = None
        detail += (
            f"; NOT JUDGED: threads per rank differ ({', '.join(map(str, threads))}): the ranks split this "
            "CPU's cores, so per-rank throughput compares different resources; rerun with --threads 1"
        )
    if over:
        detail += (
            f"; oversubscribed at N={', '.join(map(str, over))} (threads x ranks > {b.cores} cores): the "
            "ranks share cores, a finding about this machine, not about FSDP"
        )
    ev = Evidence(
        round(eff[-1], 4),
        f"x {what} at N={runs[-1].world} vs N={b.world}",
        "measured",
        detail,
        f">= {NEAR_LINEAR_PER_DOUBLING} per doubling",
        verdict,
    )
    rec = claim_record(
        BY_ID["fsdp.near_linear"],
        ev,
        {"world_sizes": sizes, "precision": b.precision, "model": b.params.get("model"), "source": "measured"},
    )
    rec.metrics["efficiency_per_doubling"] = Metric(worst, "x (worst over the world sizes run)", better="higher")
    return rec
