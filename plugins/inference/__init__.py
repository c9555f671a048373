"""Inference on the project's GPT presets (plugins/common/gpt.py; no downloads): prefill and decode
timed apart, the KV cache's bytes and its speed-up, the memory-bandwidth roofline of a decode step,
weight formats from fp32 to 4-bit, and the samplers of the course notes (claims infer.*).

One case = one --mode:
  decode    one weight format (--precision) over batch sizes 1, 4, 16, 64 (x4 up to --max-batch):
            time to first token (prefill), time per output token p50/p99 over the decode steps,
            decode and end-to-end tokens/s, end-to-end latency, KV-cache bytes allocated vs the
            formula, weight bytes, the bytes a step reads over its time as GB/s and % of the
            device's measured copy bandwidth, arithmetic intensity vs the ridge point, joules per
            token where NVML has an energy counter (decode.py)
  cache     decoding with the KV cache vs recomputing the whole prefix each step: fitted exponents in
            the generated length n of the cached decode's time (~1) and of the time recomputing adds
            (~2), at batch --max-batch (recompute.py)
  sampling  greedy, temperature, top-k, top-p (sampling.py) checked for what they promise on the
            GPT's own distributions, and their cost per token next to a decode step (sampling_case.py)
Formats (formats.py): fp32, bf16, fp16; bitsandbytes llm_int8 and nf4; torchao int8 / int4
weight-only. A format whose library or kernel is missing, or whose kernel is too slow here for the
case's budget (ctx.afford probes one decode step), is a `skipped` row with the measured reason.
Generation: kvcache.py (a preallocated cache over the GPT's own modules; tested equal to its forward).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.contract import Launch, Plugin, Record, Row, Section, param
from plugins.common.numerics import PRESET_NAMES
from plugins.inference.claims import CLAIMS
from plugins.inference.names import (
    BNB,
    BUDGET_S,
    FORMATS,
    LIBRARY,
    MEASURE_S,
    MIN_REPEATS,
    MODES,
    PLAIN,
    TORCHAO,
    batch_sizes,
)

if TYPE_CHECKING:  # pragma: no cover
    from bench.context import Context

# plugins/common/gpt.py PRESETS (tested equal): (layers, d_model, block_size), for validate/estimate without torch
PRESET_SHAPES = {
    "tiny": (2, 64, 128),
    "small": (4, 256, 256),
    "medium": (6, 512, 512),
    "large": (12, 768, 1024),
    "1b": (24, 2048, 2048),
}
VOCAB = 256
CHEAP = ("tiny", "small")  # cases on these presets share a warm worker (Launch(reuse=True))


@dataclass(frozen=True)
class InferenceParams:
    mode: str = param("decode", "what the case measures (see `bench list --plugin inference`)", choices=MODES)
    precision: str = param("fp32", "weight format", choices=FORMATS)
    model: str = param("small", "GPT preset (plugins/common/gpt.py)", choices=PRESET_NAMES)
    prompt_len: int = param(32, "prompt tokens (real text)")
    max_new_tokens: int = param(16, "tokens generated per sequence")
    max_batch: int = param(16, "batch sizes 1, 4, 16, 64, ... up to this (cache mode: this batch)")


# --- estimate_s: stated assumptions (bench run --plan) ---------------------------------------------
# step time = max(layers x per-layer launch/overhead, FLOPs / rate, bytes / bandwidth); CPU rates
# from this project's 2-core CI machine (order of magnitude), CUDA from an H100/H200's datasheet
# derated (bf16 ~300 TFLOP/s reached, ~3 TB/s), 0.1 ms of launches per layer in eager mode.
ASSUME = {
    "cpu": {"flops": 5e10, "bw": 1e10, "layer_s": 1e-4, "build_per_param_s": 3e-8, "quant_per_param_s": 2e-7},
    "cuda": {"flops": 3e14, "bw": 3e12, "layer_s": 1e-4, "build_per_param_s": 1e-9, "quant_per_param_s": 2e-9},
}
BYTES = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "llm_int8": 1.0, "nf4": 0.55, "ao_int8_wo": 1.0, "ao_int4_wo": 0.55}


def n_params(model: str) -> int:
    L, d, block = PRESET_SHAPES[model]
    return 12 * L * d * d + (VOCAB + block) * d


def estimate(p: InferenceParams, device_type: str) -> float:
    a = ASSUME["cuda" if device_type == "cuda" else "cpu"]
    profile = "gpu" if device_type == "cuda" else "quick"
    L = PRESET_SHAPES[p.model][0]
    n = n_params(p.model)
    build = n * a["build_per_param_s"] + (n * a["quant_per_param_s"] if p.precision in BNB + TORCHAO else 0.0)
    if p.precision in BNB + TORCHAO:
        build += 1.5  # the library's import
    if device_type == "cuda":
        build += 1.0  # first calls: cuBLAS handles, the cached bandwidth / matmul-peak lookups
    P, N = p.prompt_len, p.max_new_tokens

    def fwd(tokens: int) -> float:
        return max(L * a["layer_s"], 2 * n * tokens / a["flops"], n * BYTES[p.precision] / a["bw"])

    meas = MEASURE_S[profile]
    if p.mode == "cache":
        b = p.max_batch
        gen = sum(fwd(b) for _ in range(N)) + sum(fwd(b * (P + t)) for t in range(N))
        return build + 5 * gen
    if p.mode == "sampling":
        return build + 4 * fwd(P * 4) + 12 * meas
    work = 0.0
    for b in batch_sizes(p.max_batch):
        gen = fwd(b * P) + (N - 1) * fwd(b)
        # TTFT: >= 2 warm-up + >= 3 timed prefills or the cap; decode: a warm-up + the timed generations or the cap
        work += max(meas, 3 * fwd(b * P)) + 2 * fwd(b * P) + max(meas, MIN_REPEATS[profile] * gen) + gen
    return build + min(work, BUDGET_S[profile] + len(batch_sizes(p.max_batch)) * 4 * meas)


class InferencePlugin(Plugin):
    name = "inference"
    description = (
        "prefill/decode latency and tokens/s, KV-cache bytes and speed-up, bandwidth roofline, int8/4-bit, sampling"
    )
    version = "1"
    Params = InferenceParams
    claims = CLAIMS
    metrics = {
        "ttft_ms": "time to first token: prefill of the prompt + the first pick, ms",
        "tpot_p50_ms": "time per output token, median decode step, ms",
        "tpot_p99_ms": "time per output token, 99th percentile decode step, ms",
        "decode_tok_s": "decode tokens/s (batch x decode steps / their time)",
        "e2e_ms": "end-to-end latency of one generation, ms",
        "new_tokens_excess": "tokens generated per sequence - max_new_tokens",
        "kv_bytes": "bytes the KV cache allocates (allocator)",
        "kv_formula_bytes": "2 L kv_heads head_dim bytes tokens batch",
        "weight_bytes": "bytes of the weights at rest, scales included",
        "memory_bytes": "weights + KV cache, bytes",
        "pct_bandwidth": "bytes a decode step reads / its median time, % of the measured copy bandwidth",
        "intensity": "FLOPs / bytes of a decode step (formula)",
        "energy_j_per_token": "J per generated token (NVML), or why not available",
        "total_exponent": "fitted exponent of the time of n decode steps in n",
        "extra_exponent": "fitted exponent in n of the time recomputing the prefix adds over the cached decode",
        "greedy_argmax_pct": "% of greedy tokens == argmax of the full forward",
        "entropy_bits_T1": "mean entropy of the next-token distributions at T=1, bits",
        "tv": "total-variation distance of draws to the sampler's probabilities",
        "outside_pct": "% of draws outside the sampler's kept set",
        "notes_differs_pct": "% of distributions where the notes' top-p set differs from the nucleus",
        "speed_ratio": "decode tokens/s over bf16's at the same batch",
        "memory_ratio": "(weights + KV cache) over bf16's at the same batch",
        "weight_ratio": "weight bytes over bf16's",
    }
    normalised = ("pct_bandwidth", "speed_ratio", "memory_ratio", "intensity")
    table_metrics = (
        "ttft_ms",
        "tpot_p50_ms",
        "tpot_p99_ms",
        "decode_tok_s",
        "e2e_ms",
        "kv_bytes",
        "kv_formula_bytes",
        "weight_bytes",
        "achieved_gbps",
        "pct_bandwidth",
        "intensity",
        "ridge",
        "bound",
        "energy_j_per_token",
        "total_exponent",
        "extra_exponent",
        "step_exponent",
        "same_tokens_pct",
        "sample_us",
        "step_ms",
        "pct_of_step",
        "speed_ratio",
        "memory_ratio",
        "weight_ratio",
    )

    def grid(self, profile: str) -> list[dict[str, Any]]:
        if profile == "quick":  # 2 CPU cores, <= 30 s: the small preset, short prompts, one warm worker
            cases: list[dict[str, Any]] = [
                {"precision": "fp32", "max_batch": 64},
                {"precision": "fp32", "prompt_len": 128, "max_batch": 1},
                {"mode": "cache", "prompt_len": 1, "max_new_tokens": 32, "max_batch": 4},
                {"mode": "sampling", "max_batch": 1},
            ]
            cases += [{"precision": f, "max_batch": 16 if f in PLAIN else 4} for f in FORMATS if f != "fp32"]
            return cases
        if profile == "full":
            cases = [
                {"precision": f, "model": "medium", "prompt_len": pl, "max_new_tokens": 32, "max_batch": 64}
                for f in FORMATS
                for pl in (32, 256)
            ]
            cases += [
                {"mode": "cache", "model": "medium", "prompt_len": 1, "max_new_tokens": 256, "max_batch": 1},
                {"mode": "sampling", "model": "medium", "max_batch": 64},
            ]
            return cases
        if profile == "gpu":  # ~45 s of an H200 (`bench run --profile gpu --plan`): the 1b preset, bf16 vs 8/4-bit
            cases = [{"precision": "bf16", "model": "1b", "prompt_len": 128, "max_new_tokens": 32, "max_batch": 64}]
            cases += [
                {"precision": f, "model": "1b", "prompt_len": 128, "max_new_tokens": 32, "max_batch": 16}
                for f in ("llm_int8", "nf4")
            ]
            cases += [
                {
                    "mode": "cache",
                    "precision": "bf16",
                    "model": "large",
                    "prompt_len": 1,
                    "max_new_tokens": 160,
                    "max_batch": 64,
                }
            ]
            return cases
        return [{}]

    def validate(self, p: InferenceParams) -> str | None:
        if p.prompt_len < 1:
            return f"--prompt-len must be >= 1, got {p.prompt_len}"
        if p.max_new_tokens < 2:
            return f"--max-new-tokens must be >= 2 (a first token and one decode step), got {p.max_new_tokens}"
        if p.max_batch < 1:
            return f"--max-batch must be >= 1, got {p.max_batch}"
        block = PRESET_SHAPES[p.model][2]
        if p.prompt_len + p.max_new_tokens > block:
            return f"--prompt-len {p.prompt_len} + --max-new-tokens {p.max_new_tokens} exceed the {p.model} preset's {block} positions"
        # --mode cache / sampling over a grid of formats: the quantized cases are skipped rows (run), not an error
        return None

    def available(self, p: InferenceParams) -> str | None:
        lib = LIBRARY.get(p.precision)
        if lib and importlib.util.find_spec(lib) is None:
            return f"{lib} is not installed (pip install {lib}, or `pip install -e .[quant]`)"
        return None

    def launch(self, p: InferenceParams) -> Launch:
        # a small preset cannot exhaust memory, and its cases are short: they share a warm worker (the
        # bitsandbytes / torchao imports paid once); a crash there costs that case only
        return Launch(timeout_s=600.0, reuse=p.model in CHEAP)

    def estimate_s(self, p: InferenceParams, device_type: str) -> float | None:
        return estimate(p, device_type)

    def describe(self) -> str:
        return (
            "modes: decode (TTFT, TPOT p50/p99, tokens/s, KV-cache bytes vs formula, % of measured copy bandwidth, "
            "J/token), cache (with vs without KV cache: exponents of generation time), sampling (greedy, "
            "temperature, top-k, top-p: promises checked, cost per token). Formats: " + ", ".join(FORMATS)
        )

    def run(self, p: InferenceParams, ctx: Context) -> list[Record]:
        if p.mode == "cache":
            from plugins.inference.recompute import run_cache

            return run_cache(p, ctx)
        if p.mode == "sampling":
            from plugins.inference.sampling_case import run_sampling

            return run_sampling(p, ctx)
        from plugins.inference.decode import run_decode

        return run_decode(p, ctx)

    def summarize(self, rows: list[Row]) -> list[Record]:
        from plugins.inference.summary import summarize

        return summarize(rows)

    def report(self, rows: list[Row], out_dir: Path) -> list[Section]:
        from plugins.inference.report import sections

        return sections(rows, out_dir)
