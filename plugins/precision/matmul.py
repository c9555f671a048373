"""--what matmul: n x n @ n x n in each format: time (ctx.time), TFLOP/s and % of the dtype's dense peak
(ctx.throughput), output error vs float64. fp8: torch._scaled_mm with per-tensor absmax scales.

Each format first times one call at a small size (ctx.afford) and runs the largest n <= --size that
fits its budget (plugins/precision/budget.py), or becomes a `skipped` row naming the measured time;
a format that fails is an error row of its own. fp8 where the device has no fp8 kernel (a GPU before
compute capability 8.9) is a `skipped` row with torch's reason.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from bench.contract import Metric, Record, Skip, timing_metrics
from plugins.common.numerics import rel_error, torch_dtype
from plugins.precision.budget import budget, timing_cap
from plugins.precision.params import TF32_SKIP, PrecisionParams, formats_of, guarded, skipped, tf32_mode

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from bench.context import Context

SIZES = (64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
CALLS = 12  # probe 1, error check 1, warm-up >= 2, samples >= 3 up to the time cap, margin


CUDA_PROBE_MIN = 2048  # below this a GPU call is launch-bound: its time would extrapolate as n^3 far too high


def sizes_upto(n: int, device_type: str = "cpu") -> list[int]:
    """Sizes the probe may choose from, smallest first (the probe times the smallest)."""
    lo = min(n, CUDA_PROBE_MIN) if device_type == "cuda" else 0
    return sorted({s for s in SIZES if lo <= s < n} | {n})


def with_matmul(fmt: str, device_type: str) -> bool:
    """Also report % of the core's measured matmul peak: not for fp8 (the core measures no fp8 matmul)
    nor for fp16 on a CPU (emulated half on many CPUs: the core's own measurement would be slow)."""
    if fmt.startswith("fp8"):
        return False
    return device_type == "cuda" or fmt in ("fp32", "bf16")


def throughput_dtype(fmt: str) -> Any:
    return "tf32" if fmt == "tf32" else torch_dtype(fmt)


def run_matmul(p: PrecisionParams, ctx: Context) -> list[Record]:
    out = []
    for fmt in formats_of(p):
        if fmt == "tf32" and ctx.device.type != "cuda":
            out.append(skipped({"format": fmt}, TF32_SKIP))
            continue
        out.append(guarded({"format": fmt}, partial(_matmul_row, fmt, p, ctx)))
    return out


def _inputs(n: int, ctx: Context) -> tuple[torch.Tensor, torch.Tensor]:
    import torch

    g = torch.Generator(device=ctx.device).manual_seed(ctx.seed)  # built on the device it runs on
    a = torch.randn(n, n, generator=g, device=ctx.device)
    return a, torch.randn(n, n, generator=g, device=ctx.device)


def _kernel(fmt: str, a32: torch.Tensor, b32: torch.Tensor) -> tuple[Callable[[], Any], str]:
    """The timed call for one format and a note on how it runs."""
    if fmt.startswith("fp8"):
        return fp8_matmul(fmt, a32, b32)
    dt = torch_dtype(fmt)
    a, b = a32.to(dt), b32.to(dt)
    return (lambda: a @ b), ""


def _matmul_row(fmt: str, p: PrecisionParams, ctx: Context) -> Record:
    notes = [
        "matmul: n x n @ n x n, inputs standard normal (fixed seed); rel_error = ||C - C_fp64||_F / ||C_fp64||_F; "
        "tflops from FlopCounterMode's count / median time; mfu = % of the dtype's dense peak (GPUs in bench/flops.py)"
    ]
    what = f"{fmt} matmul" + (" (torch._scaled_mm)" if fmt.startswith("fp8") else "")

    def build(n: int) -> Callable[[], Any]:
        a, b = _inputs(n, ctx)
        with tf32_mode(fmt == "tf32"):
            fn, _ = _kernel(fmt, a, b)
            fn()  # one untimed call: lazy kernel set-up is not what a call costs
        return fn

    spend = budget("matmul", ctx.profile)
    with tf32_mode(fmt == "tf32"):
        n, afford_note = ctx.afford(build, sizes_upto(p.size, ctx.device.type), spend, calls=CALLS, what=what)
    notes.append(afford_note + f" (per-format budget {spend:g} s, {ctx.profile} profile)")
    a32, b32 = _inputs(n, ctx)
    with tf32_mode(False):
        flops = ctx.count_flops(lambda: a32 @ b32)  # the same math in every format
    ref = a32.double() @ b32.double()
    fn, how = _kernel(fmt, a32, b32)
    if how:
        notes.append(how)
    with tf32_mode(fmt == "tf32"):
        err = rel_error(fn(), ref)
        t = ctx.time(fn, max_time_s=timing_cap(ctx.profile, ctx.max_time_s))
    m, s = timing_metrics(t)
    m.update(ctx.throughput(flops, t.median_s, throughput_dtype(fmt), with_matmul=with_matmul(fmt, ctx.device.type)))
    # n is chosen by the budget probe on each machine (bench run --fixed-sizes: the smallest): the row's
    # identity (a label), never a gated metric; the FLOPs follow from it, the same on every machine
    m["n_requested"] = Metric(p.size, "matrix size asked for (--size)", deterministic=True)
    m["flops"] = Metric(flops, "FLOP (FlopCounterMode, 2 per multiply-add)", deterministic=True)
    m["rel_error"] = Metric(err, "rel. vs fp64")
    return Record(metrics=m, samples=s, notes=notes, labels={"n": n})


def fp8_matmul(fmt: str, a32: torch.Tensor, b32: torch.Tensor) -> tuple[Callable[[], Any], str]:
    """torch._scaled_mm(A8, B8) with per-tensor scales (absmax / finfo.max, as Transformer Engine's
    current scaling), B column-major as cuBLASLt wants, output bf16. e5m2 x e5m2 has no cuBLASLt
    kernel: it falls back to e4m3 x e5m2 (the forward/gradient pairing) and says so. Current torch
    refuses an unsupported pairing with ValueError, older with RuntimeError; a device without any
    fp8 kernel (compute capability < 8.9) -> Skip with torch's reason."""
    import torch

    def quant(x: torch.Tensor, dt: torch.dtype, col_major: bool) -> tuple[torch.Tensor, torch.Tensor]:
        scale = (x.abs().max() / torch.finfo(dt).max).float().reshape(())
        q = (x.t().contiguous() / scale).to(dt).t() if col_major else (x / scale).to(dt)
        return q, scale

    dt = torch_dtype(fmt)
    tried: list[str] = []
    for da, how in (
        (dt, f"fp8: torch._scaled_mm {fmt} x {fmt}"),
        (torch.float8_e4m3fn, f"{fmt}: ran as e4m3 x e5m2: no e5m2 x e5m2 kernel here"),
    ):
        if tried and da == dt:
            continue
        a8, sa = quant(a32, da, False)
        b8, sb = quant(b32, dt, True)

        def fn(a8: Any = a8, b8: Any = b8, sa: Any = sa, sb: Any = sb) -> Any:
            return torch._scaled_mm(a8, b8, scale_a=sa, scale_b=sb, out_dtype=torch.bfloat16)

        try:
            fn()
            return fn, how + "; per-tensor scales absmax/finfo.max, output bf16"
        except (RuntimeError, ValueError, NotImplementedError) as e:
            tried.append(f"{type(e).__name__}: {str(e).splitlines()[0][:300]}")
    raise Skip(f"no fp8 matmul kernel on this device ({' / then '.join(tried)})")
