"""FLOPs, TFLOP/s and MFU.

FLOPs are counted with torch.utils.flop_counter.FlopCounterMode (a multiply-add = 2 FLOPs;
it counts matmul/conv/attention ops, not elementwise ones). MFU = achieved FLOP/s / the dense
peak of the dtype used, from PEAK_TFLOPS below, plus "% of measured matmul": against the
best matmul measured on the device at hand (the only peak a CPU has here).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from functools import partial
from typing import Any

import torch

from bench.contract import Metric

# Dense (no 2:4 sparsity) peak TFLOP/s by device and dtype.
# Sources: NVIDIA H100 Tensor Core GPU datasheet (SXM5: fp32 66.9, tf32 494.7, bf16/fp16 989.4,
# fp8 1978.9; PCIe: fp32 51.2, tf32 378, bf16/fp16 756.5, fp8 1513); H200 datasheet (same
# compute as H100 SXM); A100 datasheet (fp32 19.5, tf32 156, bf16/fp16 312); V100 datasheet
# (SXM2: fp32 15.7, fp16 tensor 125). The datasheets' larger figures assume 2:4 sparsity.
PEAK_TFLOPS: dict[str, dict[str, float]] = {
    "H100 SXM": {"fp32": 66.9, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4, "fp8": 1978.9, "int8": 1978.9},
    "H100 PCIe": {"fp32": 51.2, "tf32": 378.0, "bf16": 756.5, "fp16": 756.5, "fp8": 1513.0, "int8": 1513.0},
    "H200": {"fp32": 66.9, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4, "fp8": 1978.9, "int8": 1978.9},
    "A100": {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0, "fp16": 312.0, "int8": 624.0},
    "V100": {"fp32": 15.7, "fp16": 125.0},
}
PEAK_SOURCE = "NVIDIA datasheets, dense (non-sparse) peaks"

DTYPE_NAMES = {
    torch.float32: "fp32",
    torch.float16: "fp16",
    torch.bfloat16: "bf16",
    torch.float8_e4m3fn: "fp8",
    torch.float8_e5m2: "fp8",
    torch.int8: "int8",
}


def dtype_name(dtype: torch.dtype | str) -> str:
    return dtype if isinstance(dtype, str) else DTYPE_NAMES.get(dtype, str(dtype).replace("torch.", ""))


def peak_key(device_name: str) -> str | None:
    """Map a CUDA device name ('NVIDIA H100 80GB HBM3') to a PEAK_TFLOPS key."""
    n = device_name.upper()
    if "H200" in n:
        return "H200"
    if "H100" in n:
        return "H100 PCIe" if "PCIE" in n else "H100 SXM"
    if "A100" in n:
        return "A100"
    if "V100" in n:
        return "V100"
    return None


def table_peak(device: torch.device | str, dtype: torch.dtype | str) -> float | None:
    """Dense peak TFLOP/s of this device for dtype, or None (CPUs, unknown GPUs)."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    key = peak_key(torch.cuda.get_device_name(device))
    return PEAK_TFLOPS.get(key, {}).get(dtype_name(dtype)) if key else None


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of one call of fn (works under FakeTensorMode too)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        fn()
    return int(fc.get_total_flops())


@functools.cache
def measured_matmul(device_str: str, dtype_str: str) -> tuple[float, str]:
    """(best matmul TFLOP/s measured on this device for a dtype, where it came from), measured once
    per machine, device, dtype and thread count (bench/cache.py), so that the cases that report %
    of it do not each pay for it. Square matmuls, sizes tried in turn, 0.5 s of timing each."""
    from bench.cache import machine_cached

    key = f"{device_str}|{dtype_str}|{torch.get_num_threads()} threads"
    # plausible TFLOP/s: above a 1990s CPU (1 MFLOP/s), below 100x the fastest accelerator's dense peak
    return machine_cached("matmul_peak", key, lambda: _measure_matmul(device_str, dtype_str), (1e-6, 1e6))


def measured_matmul_tflops(device_str: str, dtype_str: str) -> float:
    return measured_matmul(device_str, dtype_str)[0]


def _measure_matmul(device_str: str, dtype_str: str) -> float:
    from bench.timing import measure

    device = torch.device(device_str)
    dtype = {v: k for k, v in DTYPE_NAMES.items() if v != "fp8"}.get(dtype_str, torch.float32)
    if dtype == torch.int8:
        dtype = torch.bfloat16
    if device.type != "cpu":
        sizes: tuple[int, ...] = (8192,)
    elif dtype in (torch.float16, torch.bfloat16):
        sizes = (512,)  # CPUs without native half matmul emulate it (~100x slower): keep it short
    else:
        sizes = (1024, 2048)
    best = 0.0
    for n in sizes:
        a = torch.randn(n, n, device=device).to(dtype)
        b = torch.randn(n, n, device=device).to(dtype)
        t = measure(partial(torch.matmul, a, b), device, max_time_s=0.5)
        best = max(best, 2 * n**3 / t.median_s / 1e12)
    return best


def throughput_metrics(
    flops: float,
    seconds: float,
    dtype: torch.dtype | str,
    device: torch.device | str,
    *,
    with_matmul: bool = True,
    energy_j: float | None = None,
) -> dict[str, Metric]:
    """TFLOP/s, MFU vs the table's dense peak (GPUs in the table), % of the measured matmul, and
    energy per TFLOP where the timing measured the energy of one call (Timing.energy_j, NVML)."""
    device = torch.device(device)
    out: dict[str, Metric] = {}
    if seconds <= 0 or flops <= 0:
        return out
    tf = flops / seconds / 1e12
    out["tflops"] = Metric(tf, "TFLOP/s")
    pk = table_peak(device, dtype)
    if pk:
        out["mfu"] = Metric(100.0 * tf / pk, f"% of {pk:g} TFLOP/s {dtype_name(dtype)} dense peak")
    if with_matmul:
        mm, where = measured_matmul(str(device), dtype_name(dtype))
        if mm > 0:
            pct = 100.0 * tf / mm
            # the reference is one square matmul timed for 0.5 s per size (_measure_matmul), not the
            # device's ceiling: a case may outrun it (a shape the kernels like better, a quieter moment)
            above = "; above 100: this case outran that reference matmul" if pct > 100 else ""
            out["pct_matmul"] = Metric(
                pct, f"% of the {dtype_name(dtype)} reference matmul ({mm:.3g} TFLOP/s, square, {where}{above})"
            )
    if energy_j is not None and energy_j > 0:
        out["j_per_tflop"] = Metric(energy_j / (flops / 1e12), "J per TFLOP (NVML energy of the timed window)")
    return out
