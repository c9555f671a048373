"""One gpuplan case: every stage's search (search.py) with the fsdp simulator (plugins/distributed/sim.py).

Each world size the search asks about is simulated at 4 and 5 layers and extrapolated to the model's depth
(every layer of a shape is identical, so each figure of the step's peak is a + b * layers as long as the
peak falls at the same place of the step); at each answer and at the world size below it a third depth
(6 layers) must lie on the same line byte for byte, else the stage is searched again simulating every
layer. Measured on small GPTs (GELU and Llama-like, checkpointing on and off, 8 and 4,096 ranks,
stages 0/2/3 and HSDP): the increment per layer is constant from 4 layers on (from 2 or 3 in most).
Models of at most 15 layers (4 + 5 + 6) are simulated whole, as is ZeRO-1 (stage 1) always: its greedy
partition gives rank 0 a share of the optimizer state that is not linear in the layers. --exact also
simulates every layer at each answer and the world size below it.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from bench.contract import Metric, Record
from plugins.distributed.formulas import state_dtypes
from plugins.planner.plugin import DEPTHS, GB, STAGE_NAMES, ac_of, ac_text, model_of
from plugins.planner.search import Answer, Point, Sim, extrapolate, ladder, lower_bound, plan_stage, zero1_partition

# Memory outside the caching allocator, per GPU (bytes), added to the reserved peak before comparing with the GPU:
# - the CUDA context: "~300MB" with lazy module loading (CUDA >= 11.7), "> 1000MB" before (ptrblck, PyTorch
#   issue pytorch/pytorch#107667, 2023); 300-400 MB (pytorch/pytorch#20532). Taken as 0.5 GB.
# - NCCL's own buffers (NCCL allocates them with cudaMalloc, outside torch's allocator): NCCL_BUFFSIZE, 4 MiB by
#   default (NCCL's environment-variable documentation), per channel and per peer of a ring, send and receive:
#   an allowance of 2 x 2 x 32 channels (NCCL's MAXCHANNELS on NVLink hosts) x 4 MiB = 512 MiB per
#   communicator; FSDP uses one (HSDP two).
CUDA_CONTEXT_BYTES = 500_000_000
NCCL_BYTES_PER_COMM = 2 * 2 * 32 * 4 * 2**20
MARGIN_NOTE = (
    "need_gb = the predicted reserved peak (caching-allocator model) + 0.5 GB CUDA context (pytorch/pytorch#107667: "
    "~300 MB with lazy loading) + NCCL buffers 2 x 2 x 32 channels x NCCL_BUFFSIZE 4 MiB = 0.54 GB per communicator "
    "(FSDP 1, HSDP 2); a world size fits when need_gb <= --gpu-gb; headroom_gb = --gpu-gb - need_gb"
)


def overhead_bytes(stage: int, hybrid: bool, world: int) -> int:
    """CUDA context + NCCL buffers of one GPU (see above); one rank alone has no communicator."""
    comms = 0 if world == 1 else (2 if hybrid else 1)
    return CUDA_CONTEXT_BYTES + comms * NCCL_BYTES_PER_COMM


UNATTRIBUTED = (
    "bytes the tracker counted in categories the core's breakdown does not name (with FSDP2: FSDPMemTracker's "
    "sharded/unsharded parameters and gradients, optimizer state, all-gather and reduce-scatter buffers)"
)


def sim_of(rec: Record, world: int, stage: int, how: str, zero1_extra: int = 0, overhead: int = 0) -> Sim:
    """The largest rank's peak and its parts (bytes) from a simulated row. ZeRO-1: rank 0's peak plus the
    largest partition's extra optimizer state (the row's optim_bytes_max_rank, else `zero1_extra`: K x the
    elements the largest partition holds beyond rank 0's, from search.zero1_partition)."""
    m = rec.metrics
    peak = round(m["peak_mib"].value * 2**20)
    reserved = round(m["reserved_peak_gib"].value * 2**30) if m.get("reserved_peak_gib") else 0
    parts = {
        k[len("peak_") : -len("_mib")]: round(v.value * 2**20)
        for k, v in m.items()
        if k.startswith("peak_") and k.endswith("_mib") and k != "peak_mib" and v.value
    }
    rest = peak - sum(parts.values())
    if rest:
        parts["unattributed"] = rest
    if stage == 1:
        extra = (
            int(m["optim_bytes_max_rank"].value - m["optim_bytes"].value)
            if "optim_bytes_max_rank" in m
            else zero1_extra
        )
        if extra:
            peak += extra
            reserved += extra if reserved else 0
            parts["optimizer_state"] = parts.get("optimizer_state", 0) + extra
            how += f"; + {extra / GB:.3g} GB: the largest ZeRO-1 partition's optimizer state beyond rank 0's"
    ratio = float(m["reserved_vs_allocated"].value) if m.get("reserved_vs_allocated") else 0.0
    return Sim(world, peak, parts, how, reserved, overhead, ratio)


def plan(p: Any, ctx: Any) -> list[Record]:
    import torch

    from plugins.common.gpt import GPT
    from plugins.distributed.params import FSDPParams
    from plugins.distributed.sim import run_simulated

    cfg, name = model_of(p)
    with torch.device("meta"):
        shapes = [tuple(t.shape) for t in GPT(cfg).parameters()]  # a tied weight once
    numels = [math.prod(s) for s in shapes]
    psi = sum(numels)
    budget = p.gpu_gb * GB
    cache: dict[tuple[int, bool, int, int], Sim] = {}

    def sim_at(stage: int, hybrid: bool, world: int, layers: int) -> Sim:
        key = (stage, hybrid, world, layers)
        if key not in cache:
            fp = FSDPParams(
                stage=stage,
                hybrid=hybrid,
                simulate=True,
                world_size=world,
                precision=p.precision,
                batch=p.batch,
                seq=p.seq,
                ac=ac_of(p),
                ac_every=p.ac_every,
            )
            rec = run_simulated(fp, ctx, cfg=dataclasses.replace(cfg, n_layer=layers))[0]
            extra = 0
            if stage == 1:  # stage 1 is simulated whole: the full model's partition
                sizes = zero1_partition(numels, world)
                extra = state_dtypes(1, p.precision).K * (max(sizes) - sizes[0])
            over = overhead_bytes(stage, hybrid, world)
            cache[key] = sim_of(rec, world, stage, f"simulated, all {layers} layers", extra, over)
        return cache[key]

    def simulator(stage: int, hybrid: bool, whole: bool) -> Any:
        def f(world: int) -> Sim:
            if whole:
                return sim_at(stage, hybrid, world, cfg.n_layer)
            s, _ = extrapolate(DEPTHS[:2], [sim_at(stage, hybrid, world, d) for d in DEPTHS[:2]], cfg.n_layer)
            return s

        return f

    stages = [(s, False) for s in range(4)] + ([(2, True), (3, True)] if p.hybrid else [])
    records: list[Record] = []
    for stage, hybrid in stages:
        worlds = ladder(p.max_world, hybrid)

        def bound(n: int, stage: int = stage, hybrid: bool = hybrid) -> int:
            return lower_bound(stage, p.precision, shapes, n, hybrid)

        whole = stage == 1 or cfg.n_layer <= sum(DEPTHS)  # up to 15 layers one simulation costs less
        ans = plan_stage(stage, hybrid, worlds, budget, bound, simulator(stage, hybrid, whole))
        notes = []
        if not whole:
            if not _check(ans, stage, hybrid, cfg.n_layer, sim_at):
                notes.append("a third depth fell off the extrapolation's line: searched again, every layer simulated")
                ans = plan_stage(stage, hybrid, worlds, budget, bound, simulator(stage, hybrid, True))
            elif p.exact and not _exact(ans, stage, hybrid, cfg.n_layer, sim_at, budget):
                notes.append("every layer simulated changed a verdict: searched again, every layer simulated")
                ans = plan_stage(stage, hybrid, worlds, budget, bound, simulator(stage, hybrid, True))
        records.extend(_records(ans, budget, notes))
    for r in records:
        r.notes.append(
            f"model: {name} ({cfg.n_layer} layers, d={cfg.d_model}, Psi={psi:,} params), {p.precision}, "
            f"batch {p.batch} x seq {p.seq} per GPU, AdamW, activation checkpointing {ac_text(p)}; "
            f"GPU {p.gpu_gb:g} GB; world sizes: powers of two up to {p.max_world}"
        )
        r.metrics["n_params"] = Metric(psi, "params", "formula", deterministic=True)
    return records


def _neighbours(ans: Answer) -> list[Point]:
    """The answer and the simulated world size below it (the two the search's result rests on)."""
    sims = [pt for pt in ans.points if pt.sim is not None]
    if ans.smallest is None:
        return sims[-1:]
    below = [pt for pt in sims if pt.world < ans.smallest]
    return [pt for pt in sims if pt.world == ans.smallest] + below[-1:]


def _check(ans: Answer, stage: int, hybrid: bool, layers: int, sim_at: Any) -> bool:
    """Third depth at the points the answer rests on: collinear (exact) or not."""
    ok = True
    for pt in _neighbours(ans):
        s, line = extrapolate(DEPTHS, [sim_at(stage, hybrid, pt.world, d) for d in DEPTHS], layers)
        pt.sim = s
        ok = ok and line
    return ok


def _exact(ans: Answer, stage: int, hybrid: bool, layers: int, sim_at: Any, budget: float) -> bool:
    """--exact: every layer simulated at the points the answer rests on (the extrapolation named beside).
    False when a verdict changes (the caller then searches the stage again, every layer simulated)."""
    same = True
    for pt in _neighbours(ans):
        assert pt.sim is not None
        extrapolated = pt.sim
        full = sim_at(stage, hybrid, pt.world, layers)
        word = (
            "equal to the extrapolation"
            if full.peak == extrapolated.peak
            else f"extrapolated: {extrapolated.peak / GB:.4f} GB"
        )
        pt.sim = dataclasses.replace(full, how=f"{full.how} ({word})")
        same = same and (full.need <= budget) == pt.fits
    return same


def _records(ans: Answer, budget: float, notes: list[str]) -> list[Record]:
    out = []
    label = STAGE_NAMES[ans.stage] + (" + HSDP" if ans.hybrid else "")
    for pt in ans.points:
        src = "simulated" if pt.sim is not None else "formula"
        m: dict[str, Metric] = {
            "fits": Metric("yes" if pt.fits else "no", f"in {budget / GB:g} GB", src),
            "lower_bound_gb": Metric(pt.lower_bound / GB, "GB (model states, exact count)", "formula"),
        }
        if pt.sim is not None:
            m["peak_gb"] = Metric(
                pt.sim.peak / GB, "GB (allocated: tracked step peak)", "simulated", deterministic=True
            )
            if pt.sim.reserved:
                m["reserved_gb"] = Metric(
                    pt.sim.reserved / GB, "GB (reserved: caching-allocator model)", "simulated", deterministic=True
                )
            m["need_gb"] = Metric(
                pt.sim.need / GB, "GB (reserved + CUDA context + NCCL buffers)", "simulated", deterministic=True
            )
            m["headroom_gb"] = Metric((budget - pt.sim.need) / GB, "GB (GPU - need)", "simulated", deterministic=True)
            for k, v in sorted(pt.sim.parts.items()):
                m[f"{k}_gb"] = Metric(v / GB, "GB at the peak", "simulated", deterministic=True)
            m["how"] = Metric(pt.sim.how, "", "simulated")
        else:
            m["how"] = Metric("not simulated: the lower bound exceeds the GPU", "", "formula")
        m["answer"] = Metric("yes" if pt.world == ans.smallest else "", "the smallest that fits", src)
        rec_notes = [f"{label}: {ans.reason}", *notes, MARGIN_NOTE]
        if "unattributed" in (pt.sim.parts if pt.sim else {}):
            rec_notes.append(f"unattributed_gb: {UNATTRIBUTED}")
        out.append(Record(metrics=m, labels={"stage": label, "world_size": pt.world}, notes=rec_notes))
    return out
