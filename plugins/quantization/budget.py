"""The cases of each profile, how they are launched, and what they are expected to cost.

quick (CPU, CI; about 30 s on 2 cores): every scheme but fp4 / fp4_dq once on the medium GPT (19M
    parameters), speed at batch 1 and 16 where it is measured; the optimizers on the small GPT (3.3M).
full: every scheme on the medium and large GPTs, batch up to 256.
gpu (a share of about 70 s of one H200 run), most valuable evidence first: bitsandbytes LLM.int8 (fp16,
    its native dtype) and NF4 on CUDA -- bytes, error and speed per batch up to 4096 on the 1.2B GPT's
    layers (quant.int8_speed, quant.nf4) -- then torchao's CUDA kernels, then 8-bit Adam. (NF4 without
    double quantization differs from nf4_dq in bytes only, measured exactly on CPU.)

Launch: cases on the small presets (<= 20M parameters: nothing can exhaust memory) share the run's
warm worker; the large and 1b presets get a fresh process each (fp32 copies of 1.2B parameters can OOM).

Estimates (Plugin.estimate_s, for `bench run --plan`), from stated assumptions:
  work = imports of the scheme's library + building the fp32 GPT + the quantized copy + text through
  both + the timed measurements (each at most its cap plus warm-up), with
  CPU (2 cores; the AMD EPYC CI machine's case times, results/cpu-amd-epyc-quick.jsonl): GPT init 130M
      parameters/s, copy + quantize 200M/s, forward 100 GFLOP/s; bitsandbytes import 3 s (it loads
      torch._dynamo), torchao 2.5 s, paid in a warm worker by the first case of the library in the grid's
      order (every case otherwise); bitsandbytes' CPU ops compile at their first call per shape: 1.5 s a scheme
  CUDA (H100/H200 class; assumed, nothing measured yet): init 5G parameters/s, copy + quantize 2G/s
      (bitsandbytes int8 stages its fp32 weights through the CPU: 4 GB/s), forward 100 TFLOP/s
"""

from __future__ import annotations

from typing import Any

from bench.contract import Launch
from plugins.quantization.params import (
    LIBRARY,
    OPTIMIZERS,
    SCHEMES,
    SMALL_MODELS,
    TEXT_BATCH,
    TEXT_SEQ,
    QuantParams,
    batch_sizes,
    timed,
)

# GPT preset -> (parameters of the block Linears, all parameters); plugins/common/gpt.py PRESETS
# (12 L d^2 in the blocks; vocab 256), here so that no torch import is needed to plan.
PRESET_DIMS = {
    "tiny": (2, 64, 128),
    "small": (4, 256, 256),
    "medium": (6, 512, 512),
    "large": (12, 768, 1024),
    "1b": (24, 2048, 2048),
}
IMPORT_S = {"bitsandbytes": 3.0, "torchao": 2.5}  # bitsandbytes' import compiles its default ops (torch._dynamo)
BNB_CPU_COMPILE_S = 1.5  # bitsandbytes' CPU ops are torch.compile'd at their first call per layer shape
RATES = {  # device -> (init params/s, copy+quantize params/s, forward FLOP/s)
    "cpu": (130e6, 200e6, 100e9),
    "cuda": (5e9, 2e9, 100e12),
}
INT8_STAGING_BYTES_S = 4e9  # bitsandbytes int8: fp32 weights to the CPU and back (CUDA)
TIMING_S = {"cpu": 0.17, "cuda": 0.35}  # one timed measurement at most: warm-up + samples to the cap (quick / gpu)
OVERHEAD_S = {"cpu": 0.1, "cuda": 0.5}


def quick() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = [{"scheme": s, "max_batch": 16} for s in SCHEMES if s not in QUICK_LEFT_OUT]
    return [{**c, "model": "small"} if c["scheme"] in OPTIMIZERS else c for c in cases]


QUICK_LEFT_OUT = ("fp4", "fp4_dq")  # bitsandbytes compiles its CPU ops per shape (~2 s a scheme); nf4 stands for 4-bit


def full() -> list[dict[str, Any]]:
    return [{"scheme": s, "model": m, "max_batch": 256} for m in ("medium", "large") for s in SCHEMES]


def gpu() -> list[dict[str, Any]]:
    big = {"model": "1b", "max_batch": 4096}
    return [
        {"scheme": "llm_int8", "dtype": "fp16", **big},  # LLM.int8 is an fp16 method: quant.int8_speed, mem.store_int8
        {"scheme": "nf4_dq", "dtype": "bf16", **big},  # quant.nf4
        {"scheme": "ao_int8_dyn", "dtype": "bf16", **big},
        {"scheme": "ao_int4_wo", "dtype": "bf16", **big},
        {"scheme": "adamw8bit", "dtype": "bf16", **big},
    ]


GRIDS = {"quick": quick, "full": full, "gpu": gpu}


def launch(p: QuantParams) -> Launch:
    if p.model in SMALL_MODELS:
        return Launch(timeout_s=300.0, reuse=True)
    return Launch(timeout_s=900.0)


def _import_s(p: QuantParams) -> float:
    """The scheme's library import, charged where it is paid: every fresh process, or in the warm
    worker the first scheme of that library in SCHEMES order (the grids keep that order)."""
    lib = LIBRARY.get(p.scheme)
    if lib is None:
        return 0.0
    first = next(s for s in SCHEMES if LIBRARY.get(s) == lib)
    return IMPORT_S[lib] if p.scheme == first or not launch(p).reuse else 0.0


def estimate_s(p: QuantParams, device_type: str) -> float:
    """Expected seconds of one case's work (process start-up excluded); see the module doc."""
    dev = "cuda" if device_type == "cuda" else "cpu"
    n_layer, d, block = PRESET_DIMS.get(p.model, PRESET_DIMS["medium"])
    linear = 12 * n_layer * d * d
    total = linear + (256 + block) * d
    init_rate, copy_rate, flops = RATES[dev]
    work = OVERHEAD_S[dev] + _import_s(p) + total / init_rate
    tokens = TEXT_BATCH * min(TEXT_SEQ, block)
    if LIBRARY.get(p.scheme) == "bitsandbytes" and dev == "cpu":
        work += BNB_CPU_COMPILE_S
    if p.scheme in OPTIMIZERS:  # forward + backward + 2 steps + timed steps
        return work + 6 * total * tokens / flops + 3 * total / copy_rate + TIMING_S[dev]
    work += 2 * total / copy_rate  # the copy and the scheme applied to it
    if p.scheme == "llm_int8" and dev == "cuda":
        work += 2 * 4 * linear / INT8_STAGING_BYTES_S
    work += 3 * 2 * total * tokens / flops  # reference, error and probe forwards
    if timed(p):
        work += 2 * len(batch_sizes(p.max_batch)) * TIMING_S[dev]
    return work
