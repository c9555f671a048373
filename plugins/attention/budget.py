"""What an attention case may spend, how it is launched, and what it is expected to cost.

Budgets (seconds of wall time; per profile, the same on every machine):
  CASE_BUDGET_S     the measurement of one case (~CALLS_PER_CASE calls of the kernel). After the
                    first call, one call's cost is measured (CPU: process CPU time per torch thread,
                    so that a machine busy with other work does not skip kernels it merely delays);
                    a kernel too slow for the budget here (fp16 on a CPU without native half, an
                    emulated path) becomes a `skipped` row naming that cost.
  TIMING_CAP_S      cap of each timed measurement (ctx.time; `--max-time` lowers it further)
  COMPILE_BUDGET_S  FlexAttention's first call, which compiles (about 21 s on this project's 2-core
                    machines with a cold inductor cache, less with a warm one): interrupted at the
                    budget -> `skipped` naming the time it ran.

Launch: the SDPA backends and the naive kernel at sizes that cannot exhaust memory run in the
run's warm worker (no interpreter start-up each); FlexAttention (torch.compile, interrupted by a
signal when over budget) and the naive/math kernels at large n (the n x n scores could OOM) get a
fresh process each.

Estimates (Plugin.estimate_s, for `bench run --plan`): overhead + the kernel's calls at an assumed
rate, each timed measurement capped. Assumed rates, FLOP/s of the attention formula:
  CPU (2 cores, measured on the AMD EPYC CI machine, fp32, n 256-2048): naive 60e9, sdpa_math 30e9,
      fused (flash, flex) 150e9; fp16 the same (the probe skips it where the CPU emulates half).
  CUDA (H100/H200 class, 16-bit): flash 400e12 and cuDNN 450e12 (FA2: 35-50% of the 989 TFLOP/s
      dense peak), efficient 200e12, naive and math 100e12 (softmax over the n x n scores is
      memory-bound); fp32 a tenth of these (no tensor cores without TF32).
"""

from __future__ import annotations

from plugins.attention.params import FUSED, AttentionParams, flops_of, scores_bytes

CASE_BUDGET_S = {"quick": 6.0, "full": 60.0, "gpu": 20.0}
TIMING_CAP_S = {"quick": 0.5, "full": 2.0, "gpu": 1.0}
COMPILE_BUDGET_S = {"quick": 6.0, "full": 120.0, "gpu": 20.0}
FLEX_IMPORT_S = 3.0  # torch._dynamo / inductor imports before the compile starts (2 CPU cores)
CALLS_PER_CASE = 10  # check 1, peak 1, FLOP count 1, warm-up >= 2, samples >= 3 (time cap), + margin
WARM_MAX_BYTES = 4 * 2**30  # naive/math: 3 score matrices (scores, softmax, their gradient) within 4 GiB -> warm worker

CPU_RATE = {"naive": 60e9, "sdpa_math": 30e9}  # FLOP/s; everything else: CPU_FUSED_RATE
CPU_FUSED_RATE = 150e9
CUDA_RATE = {"sdpa_flash": 400e12, "sdpa_cudnn": 450e12, "sdpa_efficient": 200e12, "flex": 300e12}
CUDA_UNFUSED_RATE = 100e12
OVERHEAD_S = {"cpu": 0.3, "cuda": 0.5}  # inputs, the float64 reference, the profiler, per case
CALL_OVERHEAD_S = 20e-6  # launch / dispatch per call
CPU_ONLY_SKIPS = ("sdpa_efficient", "sdpa_cudnn")  # no CPU kernel: the case ends at its first call


def budget(table: dict[str, float], profile: str) -> float:
    return table.get(profile, table["full"])


def warm(p: AttentionParams) -> bool:
    """May this case share the warm worker? Not flex (compiles, interrupted by a signal), not a
    naive/math case whose n x n matrices could exhaust memory."""
    if p.impl == "flex":
        return False
    return p.impl in FUSED or 3 * scores_bytes(p) <= WARM_MAX_BYTES


def estimate_s(p: AttentionParams, device_type: str) -> float:
    """Expected seconds of one case's work (process start-up excluded); see the module doc. The
    budgets are the gpu profile's on CUDA, the quick profile's on CPU (a full run caps its timings
    at 2 s, not 0.5 s: up to 1.5 s more per case)."""
    profile = "gpu" if device_type == "cuda" else "quick"
    if device_type == "cpu" and p.impl in CPU_ONLY_SKIPS:
        return 0.1
    if device_type == "cuda":
        rate = CUDA_RATE.get(p.impl, CUDA_UNFUSED_RATE) * (0.1 if p.dtype == "fp32" else 1.0)
    else:
        rate = CPU_RATE.get(p.impl, CPU_FUSED_RATE)
    t = flops_of(p) / rate + CALL_OVERHEAD_S  # one call
    cap = budget(TIMING_CAP_S, profile)
    timing = max(2 * t, 0.1) + min(cap, max(8 * max(t, 1e-3), 3 * t))  # warm-up, then samples up to the cap
    work = OVERHEAD_S.get(device_type, 0.5) + 5 * t + timing  # first call, probe, check, peak, FLOP count
    if p.impl == "flex":
        work += FLEX_IMPORT_S + budget(COMPILE_BUDGET_S, profile)  # worst case: the compile runs to its budget
    return work
