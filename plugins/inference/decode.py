"""The `decode` case: prefill and decode of one weight format over batch sizes, KV-cache bytes, and
the memory-bandwidth roofline of a decode step.

Per batch size b (one row each, labelled batch=b), on real text prompts (plugins/common/text.py):
  ttft_ms        prefill of the P-token prompt + the first token's pick (cache allocation included):
                 ctx.time, the core's timing
  tpot_*_ms      each decode step of real generations of max_new_tokens tokens (greedy), timed one
                 by one (steps.time_sequence): p50 / p99 over every step of every repeat
  decode_tok_s   b * (N - 1) decode tokens / the median decode time of a generation
  e2e_ms         prefill + all N - 1 decode steps, median over repeats; e2e_tok_s = b * N / e2e
  kv_bytes       the cache's allocation as the allocator saw it (ctx.peak_above) = tensor bytes =
                 2 * layers * kv_heads * head_dim * bytes * (P + N) * b (the formula, exact; CUDA's
                 caching allocator rounds each tensor up to 512 bytes, so on a GPU it is exact where
                 one layer's K is a multiple of 512 bytes, as in every preset of the gpu grid)
  read_bytes     what a decode step must read at the mean context P + N/2: weights (one row of the
                 position table) + the filled KV cache; achieved_gbps = read_bytes / tpot_p50,
                 pct_bandwidth = achieved / the device's measured copy bandwidth (bench/bandwidth.py)
  intensity      FLOPs of that step (formula below) / read_bytes, vs the ridge point = the measured
                 matmul FLOP/s / the measured copy bytes/s (roofline, Williams et al. 2009): below it
                 the step is bandwidth-bound
FLOPs of one decode step (formula; Kaplan et al. 2020 Table 1, forward = 2 N + attention):
  b * (2 * matmul weights + 4 * layers * context * d_model)   (QK^T and AV: 2 FLOPs per multiply-add)
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import torch

from bench.contract import Metric, Record, Skip
from bench.stats import median
from plugins.inference import formats as F
from plugins.inference.kvcache import KVCache, activation_dtype, decode_step, kv_formula_bytes, prefill
from plugins.inference.names import BUDGET_S, MEASURE_S, MIN_REPEATS, batch_sizes
from plugins.inference.steps import time_sequence

if TYPE_CHECKING:  # pragma: no cover
    from bench.context import Context

COLUMNS_NOTE = (
    "ttft = prefill of the prompt + the first pick (cache allocation included); tpot p50/p99 over every decode step of "
    "every timed generation; decode_tok_s = batch x (N-1) / median decode time; e2e = prefill + N-1 steps (median); "
    "kv_bytes = the cache's allocation as the allocator saw it ({alloc}); read_bytes = weights + KV cache at the mean "
    "context P+N/2; achieved_gbps = read_bytes / tpot_p50; intensity = FLOPs (formula: batch x (2 x matmul weights + "
    "4 x layers x context x d_model)) / read_bytes; ridge = measured matmul FLOP/s / measured copy bytes/s; "
    "energy_j_per_token = NVML energy of whole generations (prefill + decode) / (batch x N)"
)


def matmul_weights(model: Any) -> int:
    """Weights that take part in a decode step's matmuls: the blocks' Linears and the LM head."""
    n = sum(int(lin.in_features) * int(lin.out_features) for _, _, lin in F.block_linears(model))
    return n + int(model.lm_head.in_features) * int(model.lm_head.out_features)


def step_flops(model: Any, batch: int, context: int) -> int:
    cfg = model.cfg
    return batch * (2 * matmul_weights(model) + 4 * cfg.n_layer * context * cfg.d_model)


def prompts(batch: int, length: int, seed: int, device: torch.device) -> torch.Tensor:
    from plugins.common.text import get_batch

    x, _ = get_batch("val", batch, length, torch.Generator().manual_seed(seed), device)
    return x


def energy_metric(joules: float | None, per: float, unit: str, why: str) -> Metric:
    if joules is None:
        return Metric(None, f"{unit} (not available: {why})")
    return Metric(joules / per, f"{unit} (NVML, whole device)")


def run_decode(p: Any, ctx: Context) -> list[Record]:
    from bench.bandwidth import measured_bandwidth
    from bench.flops import dtype_name, measured_matmul

    warnings.filterwarnings("ignore", message=r".*inputs will be cast from")  # bitsandbytes, once per call
    dev = ctx.device
    cfg = _config(p)
    try:
        model, how = F.build(p.precision, cfg, dev, ctx.seed)
    except F.FormatUnavailable as e:
        raise Skip(str(e)) from e
    P, N = p.prompt_len, p.max_new_tokens
    total = P + N
    dt = activation_dtype(model)
    budget = BUDGET_S.get(ctx.profile, 8.0)
    measure_s = min(ctx.max_time_s, MEASURE_S.get(ctx.profile, 1.0))

    def probe(b: int) -> Any:  # one decode step at batch b, context P (afford extrapolates linearly in b)
        cache = KVCache.allocate(cfg, b, total, dt, dev)
        tok = torch.zeros(b, 1, dtype=torch.long, device=dev)

        def call() -> None:
            cache.length = P
            decode_step(model, tok, cache)

        call()  # the library's lazy set-up (bitsandbytes, torchao) is not the kernel's speed: afford times the next
        return call

    # per batch size: 1 + repeats generations of N - 1 steps (an untimed warm-up, the timed ones) and >= 8
    # prefills of P positions (~P/32 steps' time each at small P: one batched matmul per layer); caps apart
    repeats = MIN_REPEATS.get(ctx.profile, 3)
    calls = (1 + repeats) * (N - 1) + 8 * max(1, P // 32)
    sizes = batch_sizes(p.max_batch)
    # a step's cost in the batch: linear on a CPU (compute-bound soon); on a GPU a bandwidth-bound step costs about
    # the same at batch 1 and 64, so sqrt growth is assumed (still above what such a step does)
    grow = 0.5 if dev.type == "cuda" else 1.0
    top, afford_note = ctx.afford(probe, sizes, budget, exponent=grow, calls=calls, what=f"{p.precision} decode step")
    weights = F.weight_bytes(model)
    bw, bw_where = measured_bandwidth(str(dev))
    peak_tf, peak_where = measured_matmul(str(dev), dtype_name(dt))
    ridge = peak_tf * 1e12 / (bw * 1e9) if bw > 0 and peak_tf > 0 else None
    notes = [
        f"{p.precision}: {how}; {p.model} GPT ({cfg.n_layer} layers, d={cfg.d_model}, {cfg.n_head} heads); "
        f"prompt {P} tokens of real text, {N} new tokens (greedy)",
        afford_note,
        f"bandwidth: {bw:.4g} GB/s ({bw_where}); ridge point = {peak_tf:.4g} TFLOP/s {dtype_name(dt)} matmul "
        f"({peak_where}) / bandwidth",
    ]
    if dev.type == "cpu" and p.precision in F.BNB + F.TORCHAO:
        notes.append(f"{p.precision} times are this CPU's kernels, not the CUDA ones the papers time")
    out = []
    for b in [s for s in sizes if s <= top]:
        out.append(_one_batch(p, ctx, model, b, measure_s, repeats, weights, bw, ridge, notes))
    for b in [s for s in sizes if s > top]:
        why = "not run with fixed sizes" if ctx.fixed_sizes else "over the case's time budget"
        out.append(Record(status="skipped", labels={"batch": b}, message=f"{why}: {afford_note}"))
    return out


def _config(p: Any) -> Any:
    from plugins.common.gpt import config_from

    cfg = config_from(p.model)
    if p.prompt_len + p.max_new_tokens > cfg.block_size:
        raise Skip(
            f"prompt {p.prompt_len} + {p.max_new_tokens} new tokens exceed the {p.model} preset's "
            f"{cfg.block_size} positions"
        )
    return cfg


def _one_batch(
    p: Any,
    ctx: Context,
    model: Any,
    b: int,
    measure_s: float,
    repeats: int,
    weights: int,
    bw: float,
    ridge: float | None,
    notes: list[str],
) -> Record:
    from bench.contract import timing_metrics

    cfg, dev = model.cfg, ctx.device
    P, N = p.prompt_len, p.max_new_tokens
    dt = activation_dtype(model)
    prompt = prompts(b, P, ctx.seed, dev)
    # KV cache: the allocator's bytes for the whole generation vs the formula
    held: list[KVCache] = []
    alloc, alloc_how = ctx.peak_above(lambda: held.append(KVCache.allocate(cfg, b, P + N, dt, dev)))
    tensor_bytes = held[0].nbytes()
    held.clear()
    formula = kv_formula_bytes(cfg, torch.tensor([], dtype=dt).element_size(), P + N, b)

    def first() -> dict[str, Any]:
        logits, cache = prefill(model, prompt, P + N)
        return {"cache": cache, "tok": logits.argmax(-1, keepdim=True), "out": []}

    def step(st: dict[str, Any], i: int) -> None:
        st["out"].append(st["tok"])
        st["tok"] = decode_step(model, st["tok"], st["cache"]).argmax(-1, keepdim=True)

    t_pre = ctx.time(lambda: first(), max_time_s=measure_s, warmup_s=min(0.1, measure_s / 2))
    seq = time_sequence(first, step, N - 1, dev, max_time_s=measure_s, min_repeats=repeats)
    st = seq.last_state  # the last timed generation: what it produced
    made = torch.cat(st["out"] + [st["tok"]], dim=1)
    decode_s = median([sum(s) for s in seq.steps_s])
    e2e_s = median(seq.total_s)
    p50, p99 = seq.percentile(50), seq.percentile(99)
    ctx_mean = P + N // 2
    kv_read = kv_formula_bytes(cfg, torch.tensor([], dtype=dt).element_size(), ctx_mean, b)
    read = F.step_read_bytes(model, weights, kv_read)
    flops = step_flops(model, b, ctx_mean)
    achieved = read / p50 / 1e9
    m, samples = timing_metrics(t_pre, "ttft")
    det = {"deterministic": True}
    m.update(
        {
            "tpot_p50_ms": Metric(p50 * 1e3, "ms"),
            "tpot_p99_ms": Metric(p99 * 1e3, "ms (nearest rank)"),
            "decode_tok_s": Metric(b * (N - 1) / decode_s, "tokens/s", better="higher"),
            "e2e_ms": Metric(e2e_s * 1e3, "ms"),
            "e2e_tok_s": Metric(b * N / e2e_s, "tokens/s", better="higher"),
            "decode_repeats": Metric(len(seq.steps_s), f"generations timed ({seq.stop_reason})"),
            "new_tokens": Metric(int(made.shape[1]), "tokens per sequence", **det),
            "new_tokens_excess": Metric(int(made.shape[1]) - N, "tokens", **det),
            "weight_bytes": Metric(weights, "bytes", **det),
            "kv_bytes": Metric(alloc, "bytes (allocator)", **det),
            "kv_tensor_bytes": Metric(tensor_bytes, "bytes (numel x element size)", **det),
            "kv_formula_bytes": Metric(formula, "bytes", "formula", **det),
            "kv_exact": Metric(alloc == formula == tensor_bytes, "allocator == tensors == formula", **det),
            "memory_bytes": Metric(weights + alloc, "bytes", **det),
            "read_bytes": Metric(read, "bytes per step", "formula", **det),
            "achieved_gbps": Metric(achieved, "GB/s"),
            "pct_bandwidth": Metric(100 * achieved / bw if bw > 0 else None, f"% of {bw:.4g} GB/s copy"),
            "step_flops": Metric(flops, "FLOPs per step", "formula", **det),
            "intensity": Metric(flops / read, "FLOP/byte", "formula", **det),
            "ridge": Metric(ridge, "FLOP/byte"),
            "bound": Metric(None if ridge is None else ("bandwidth" if flops / read < ridge else "compute"), ""),
            "energy_j_per_token": energy_metric(seq.energy_j, b * N, "J/token", seq.energy_why),
        }
    )
    notes = [*notes, COLUMNS_NOTE.format(alloc=alloc_how)]
    samples["tpot_s"] = seq.step_samples
    samples["step_median_s"] = seq.step_median()
    return Record(metrics=m, samples=samples, labels={"batch": b}, notes=notes)
