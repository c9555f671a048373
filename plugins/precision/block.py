"""--what block: one pre-norm transformer block (gpt.Block) forward + backward in each format: time,
TFLOP/s, % of the dense peak, output error vs the float64 block. The block is built on the device it
runs on. Each format first times one step at batch 1 (ctx.afford) and runs the largest batch <= --batch
that fits its budget, or becomes a `skipped` row naming the measured time.

fp8 (CUDA only): torchao.float8.convert_to_float8_training on a bf16 block; without torchao, or on a
GPU without fp8 kernels, a `skipped` row with the reason.
"""

from __future__ import annotations

import copy
import importlib.util
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from bench.contract import Metric, Record, timing_metrics
from plugins.common.numerics import rel_error, torch_dtype
from plugins.precision.budget import budget, timing_cap
from plugins.precision.matmul import throughput_dtype, with_matmul
from plugins.precision.params import TF32_SKIP, PrecisionParams, formats_of, guarded, skipped, tf32_mode

if TYPE_CHECKING:  # pragma: no cover
    from bench.context import Context

FP8_CPU_SKIP = (
    "fp8 block forward/backward needs torchao.float8 training on CUDA (compute capability >= 8.9); "
    "a CPU has no fp8 autograd path: see the cast and matmul rows"
)
FP8_E5M2_SKIP = (
    "see the fp8_e4m3 row: torchao's float8 training recipe picks the fp8 formats of the block's matmuls itself"
)
CALLS = 12


def fp8_block_skip(device_type: str) -> str | None:
    """Why an fp8 block cannot run here, or None."""
    if device_type != "cuda":
        return FP8_CPU_SKIP
    if importlib.util.find_spec("torchao") is None:
        return "fp8 block needs torchao (pip install torchao): not installed here"
    import torch

    cap = torch.cuda.get_device_capability()
    if cap < (8, 9):
        return f"fp8 block needs compute capability >= 8.9 (Ada/Hopper); this GPU has {cap[0]}.{cap[1]}"
    return None


def run_block(p: PrecisionParams, ctx: Context) -> list[Record]:
    out = []
    for fmt in formats_of(p):
        labels = {"format": fmt}
        if fmt == "tf32" and ctx.device.type != "cuda":
            out.append(skipped(labels, TF32_SKIP))
        elif fmt == "fp8_e5m2":
            out.append(skipped(labels, FP8_E5M2_SKIP))
        elif fmt.startswith("fp8") and (why := fp8_block_skip(ctx.device.type)):
            out.append(skipped(labels, why))
        else:
            out.append(guarded(labels, partial(_block_row, fmt, p, ctx)))
    return out


def _fwd_bwd(block: Any, x: Any, go: Any) -> Callable[[], Any]:
    def step() -> Any:
        for q in block.parameters():
            q.grad = None
        x.grad = None
        y = block(x)
        y.backward(go)
        return y

    return step


def _block_row(fmt: str, p: PrecisionParams, ctx: Context) -> Record:
    import torch

    from plugins.common.gpt import Block, config_from

    cfg = config_from(p.model)
    dev = ctx.device
    torch.manual_seed(ctx.seed)
    with torch.device(dev):  # built on the device it runs on
        ref_block = Block(cfg)
    if fmt.startswith("fp8"):
        from torchao.float8 import convert_to_float8_training

        block = convert_to_float8_training(copy.deepcopy(ref_block).to(torch.bfloat16))
        dt = torch.bfloat16
        how = "fp8: torchao.float8.convert_to_float8_training on a bf16 block (Linear matmuls in fp8, rest bf16)"
    else:
        dt = torch_dtype(fmt)
        block = copy.deepcopy(ref_block).to(dt)
        how = ""

    def inputs(batch: int) -> tuple[Any, Any]:
        g = torch.Generator(device=dev).manual_seed(ctx.seed)
        x = torch.randn(batch, p.seq, cfg.d_model, generator=g, device=dev)
        return x, torch.randn(batch, p.seq, cfg.d_model, generator=g, device=dev)

    def build(batch: int) -> Callable[[], Any]:
        x32, go32 = inputs(batch)
        fn = _fwd_bwd(block, x32.to(dt).requires_grad_(True), go32.to(dt))
        fn()  # one untimed step: autograd and kernel set-up are not what a step costs
        return fn

    spend = budget("block", ctx.profile)
    with tf32_mode(fmt == "tf32"):
        sizes = sorted({b for b in (1, 2, 4, 8, 16, 32, 64) if b < p.batch} | {p.batch})
        batch, afford_note = ctx.afford(build, sizes, spend, exponent=1.0, calls=CALLS, what=f"{fmt} block step")
    x32, go32 = inputs(batch)
    notes = [
        f"block: gpt.Block of the {p.model} preset (d={cfg.d_model}, {cfg.n_head} heads), input [{batch}, {p.seq}, "
        f"{cfg.d_model}], forward + backward; FLOPs counted once on the fp32 block (the same math in every format); "
        "rel_error = output vs the float64 block",
        afford_note + f" (per-format budget {spend:g} s, {ctx.profile} profile)",
    ]
    if how:
        notes.append(how)
    with tf32_mode(False):
        flops = ctx.count_flops(_fwd_bwd(ref_block, x32.clone().requires_grad_(True), go32))
        with torch.no_grad():
            ref = copy.deepcopy(ref_block).double()(x32.double())
    step = _fwd_bwd(block, x32.to(dt).requires_grad_(True), go32.to(dt))
    with tf32_mode(fmt == "tf32"):
        with torch.no_grad():
            err = rel_error(block(x32.to(dt)), ref)
        t = ctx.time(step, max_time_s=timing_cap(ctx.profile, ctx.max_time_s))
    m, s = timing_metrics(t)
    m.update(ctx.throughput(flops, t.median_s, throughput_dtype(fmt), with_matmul=with_matmul(fmt, dev.type)))
    # batch is chosen by the budget probe on each machine (bench run --fixed-sizes: the smallest): the row's
    # identity (a label, "sequences"), never a gated metric; the FLOPs follow from it, the same on every machine
    m["flops"] = Metric(flops, "FLOP (FlopCounterMode, forward + backward)", deterministic=True)
    m["rel_error"] = Metric(err, "rel. vs fp64")
    m["tokens_per_s"] = Metric(batch * p.seq / t.median_s, "tokens/s (forward + backward)")
    return Record(metrics=m, samples=s, notes=notes, labels={"batch": batch})
