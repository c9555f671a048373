"""The CPU kernel set a run computes with: `native` (ATen, oneDNN and MKL each dispatch to the fastest
kernels the host's CPU has) or `portable` (one pinned set that every x86-64 host has, so that fixed-seed
figures -- a bf16 training loss included -- come out the same bit for bit on any such host).

The pin is the three libraries' own switches, set in the environment before torch computes anything
(`bench run --kernels portable`, or BENCH_KERNELS=portable, which `import bench` applies), so every case
process and torchrun rank inherits it. Each is the lowest level its library offers; measured on an AMD
EPYC (Zen 4, avx512_bf16), `bench run --plugin precision --what train --dtype bf16 --model tiny
--threads 1`, final_loss in nats/token:

    native                                                  2.248099   (ATen AVX512, oneDNN avx512_core_bf16)
    ATEN_CPU_CAPABILITY=default                             2.262416   (ATen's own kernels decide)
    + ONEDNN_MAX_CPU_ISA=AVX2                               2.227110   (oneDNN decides: bf16 matmuls and GELU)
    + ONEDNN_MAX_CPU_ISA=SSE41                              2.227110 (train_loss same; final_loss -3e-8:
                                                            the fp32 GELU oneDNN jit runs at the capped ISA)
    + MKL_CBWR=COMPATIBLE (the portable set)                2.231857   (MKL's SGEMM / bf16 GEMM branch decides)
    portable + MKL_ENABLE_INSTRUCTIONS=AVX2 / SSE4_2 /
      ATEN_CPU_CAPABILITY=default (a foreign host)          2.231857   (unchanged)

Why each is needed:
  ATEN_CPU_CAPABILITY=default  ATen's vectorized kernels (softmax, layer norm, AdamW, reductions) exist
                 as default/AVX2/AVX-512 builds that round differently; `default` is the one every CPU runs
                 (ATEN_CPU_CAPABILITY=default is also how the tests emulate a foreign host).
  ONEDNN_MAX_CPU_ISA=SSE41     torch sends bf16 matmuls and GELU to oneDNN only where oneDNN's ISA has
                 bf16 (AVX512_CORE and up: brgemm avx512_core_bf16) and otherwise computes them itself;
                 oneDNN's JIT kernels (the fp32 GELU) follow the ISA too. SSE4.1 is oneDNN's oldest x86 ISA
                 (docs: "CPU Dispatcher Control").
  MKL_CBWR=COMPATIBLE          MKL's conditional numerical reproducibility on its SSE2 branch: fp32 GEMMs
                 and the bf16 GEMM (gemm_bf16bf16f32) otherwise dispatch on the CPU model; COMPATIBLE is
                 the branch oneMKL documents for Intel and non-Intel CPUs alike (its other branches fall
                 back to AUTO on non-Intel CPUs: oneMKL developer guide, "Specifying Code Branches").

Cost: the pinned path is slower (no AVX2/AVX-512 kernels), so its timings are not the host's: the CI gate
checks the numerics of the pinned path and gates no timings. The kernel set is part of the fingerprint
(bench.fingerprint), and so of machine_id and numerics_id.
"""

from __future__ import annotations

import os
from typing import Any

ENV = "BENCH_KERNELS"
SETS = ("native", "portable")
PORTABLE: dict[str, str] = {
    "ATEN_CPU_CAPABILITY": "default",
    "ONEDNN_MAX_CPU_ISA": "SSE41",
    "MKL_CBWR": "COMPATIBLE",
}
# Every variable that changes which CPU kernels run (recorded in the fingerprint when set).
KERNEL_VARS = (
    "ATEN_CPU_CAPABILITY",
    "ONEDNN_MAX_CPU_ISA",
    "DNNL_MAX_CPU_ISA",
    "MKL_CBWR",
    "MKL_ENABLE_INSTRUCTIONS",
    "MKL_DEBUG_CPU_TYPE",
    "FBGEMM_ENABLE_INSTRUCTIONS",
    "ONEDNN_DEFAULT_FPMATH_MODE",
)


def apply(name: str | None = None) -> str:
    """Select a kernel set for this process and every process it starts (before torch computes
    anything). name None: $BENCH_KERNELS, else native. Returns the set's name."""
    name = name or os.environ.get(ENV) or "native"
    if name not in SETS:
        raise ValueError(f"{ENV}={name!r}: expected one of {', '.join(SETS)}")
    os.environ[ENV] = name
    if name == "portable":
        os.environ.update(PORTABLE)
    return name


def kernel_set() -> dict[str, Any]:
    """What this process runs with: the set's name (`custom` when BENCH_KERNELS=portable but a pinned
    variable was changed afterwards), the kernel variables set, and ATen's capability as torch reports it."""
    import torch

    name = os.environ.get(ENV) or "native"
    env = {k: os.environ[k] for k in KERNEL_VARS if os.environ.get(k)}
    if name == "portable" and any(env.get(k) != v for k, v in PORTABLE.items()):
        name = "custom"
    return {"set": name, "env": env, "aten_capability": torch.backends.cpu.get_cpu_capability()}


def describe(ks: dict[str, Any] | None) -> str:
    """'portable (ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=SSE41 MKL_CBWR=COMPATIBLE; ATen DEFAULT)'."""
    if not ks:
        return "not recorded (a result file from before kernel sets)"
    env = " ".join(f"{k}={v}" for k, v in sorted((ks.get("env") or {}).items()))
    return f"{ks.get('set', '?')} ({env + '; ' if env else ''}ATen {ks.get('aten_capability', '?')})"
