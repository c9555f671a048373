"""Speed of a quantized layer against the same layer unquantized, per batch size, in one process.

The layer is block 0's mlp.fc (d -> 4d); its inputs are the real activations, repeated to `batch`
rows. Each batch size times the quantized layer (ctx.time) and then the unquantized one in --dtype;
time_ratio = quantized / unquantized (quant.int8_speed: report).

A kernel's speed depends on the machine (bitsandbytes' and torchao's CPU kernels, fp16 on a CPU
without native half): one call at batch 1 of each layer is timed first (after a warm-up call; its
cost is CPU time per thread on a CPU, so that a machine busy with other work keeps the same rows),
time is taken as linear in the batch (an upper bound), and the batch sizes whose measurement fits
SPEED_BUDGET_S are kept; none fitting -> no speed rows, a note naming the cost.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import torch

from bench.contract import Metric, Skip, timing_metrics
from plugins.quantization.params import batch_sizes

if TYPE_CHECKING:  # pragma: no cover
    from bench.context import Context

SPEED_BUDGET_S = {"quick": 1.0, "full": 20.0, "gpu": 5.0}  # one timed measurement (one layer, one batch size)
TIMING_CAP_S = {"quick": 0.15, "full": 2.0, "gpu": 0.3}  # each ctx.time (`--max-time` lowers it further)
WARMUP_S = {"quick": 0.02, "full": 0.1, "gpu": 0.05}
CALLS = 12  # calls one measurement needs at the least (warm-up 2, samples >= 3 at the cap, blocks of fast calls)


def call_cost_s(fn: Any, device: Any) -> tuple[float, float]:
    """(cost, wall) of one call in seconds. On CUDA cost = wall (synchronized). On a CPU cost =
    min(wall, process CPU time / torch threads): what the call costs on this CPU, not how long a
    machine busy with other work took to give it the cores."""
    c0, t0 = time.process_time(), time.perf_counter()
    fn()
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
        return time.perf_counter() - t0, time.perf_counter() - t0
    wall = time.perf_counter() - t0
    return min(wall, (time.process_time() - c0) / max(1, torch.get_num_threads())), wall


def _get(table: dict[str, float], profile: str) -> float:
    return table.get(profile, table["full"])


def affordable(ctx: Context, fn_at: Any, sizes: list[int], what: str) -> tuple[int, str]:
    """The largest batch size whose measurement (~CALLS calls, time linear in the batch from one call at
    the smallest) fits SPEED_BUDGET_S, and a note; Skip naming the cost when none does."""
    budget = _get(SPEED_BUDGET_S, ctx.profile)
    n0 = min(sizes)
    f = fn_at(n0)
    f()  # warm-up (first-call initialisation)
    one, wall = call_cost_s(f, ctx.device)
    fits = [n for n in sizes if one * n / n0 * CALLS <= budget]
    said = f"{what}: one call at batch {n0} cost {one * 1e3:.3g} ms (measured; wall {wall * 1e3:.3g} ms)"
    if ctx.fixed_sizes:  # the CI gate: the smallest batch on every host, never a host-dependent skip
        return n0, f"{said}; --fixed-sizes: batch {n0} (no budget choice)"
    if not fits:
        raise Skip(
            f"{said}; ~{CALLS} calls would need {one * CALLS:.3g} s, over the {ctx.profile} budget of {budget:g} s"
        )
    return max(fits), f"{said}; budget {budget:g} s per measurement -> batch up to {max(fits)}"


def layer_speed(
    ctx: Context,
    qfc: Any,
    ref_fc: Any,
    act: torch.Tensor,
    dt: torch.dtype,
    ref_dt: torch.dtype,
    max_batch: int,
    what: str,
) -> tuple[list[tuple[int, dict[str, Metric], dict[str, list[float]]]], list[str]]:
    """[(batch, metrics, samples)] for the batch sizes that fit the budget, and notes."""
    sizes = batch_sizes(max_batch)
    reps = -(-max(sizes) // act.shape[0])
    xq = act.repeat(reps, 1)[: max(sizes)].to(dt).contiguous()  # [max batch, d] the quantized layer's input
    xr = xq.to(ref_dt)
    notes = []
    with torch.no_grad():
        try:
            bq, nq = affordable(ctx, lambda b: lambda: qfc(xq[:b]), sizes, what)
            br, nr = affordable(ctx, lambda b: lambda: ref_fc(xr[:b]), sizes, f"the unquantized layer in {ref_dt}")
        except Skip as s:
            return [], [f"speed not measured: {s}"]
        cap = min(bq, br)
        if cap < max(sizes):
            notes.append(f"speed: batch sizes above {cap} left out: {nq}; {nr}")
        kw: dict[str, Any] = {
            "max_time_s": min(ctx.max_time_s, _get(TIMING_CAP_S, ctx.profile)),
            "warmup_s": _get(WARMUP_S, ctx.profile),
        }
        out = []
        for b in (s for s in sizes if s <= cap):
            xb, rb = xq[:b], xr[:b]
            t = ctx.time(lambda xb=xb: qfc(xb), **kw)
            tr = ctx.time(lambda rb=rb: ref_fc(rb), **kw)
            m, samples = timing_metrics(t)
            m["ref_time_ms"] = Metric(tr.median_s * 1e3, "ms")
            m["time_ratio"] = Metric(t.median_s / tr.median_s, "x")
            samples["ref_time_s"] = tr.samples_s
            out.append((b, m, samples))
    return out, notes
