"""The `cache` case: decoding with the KV cache vs recomputing the whole prefix at every step.

One greedy generation of max_new_tokens tokens from a short real-text prompt, timed step by step
(steps.time_sequence) twice: with the cache (each step runs one position: kvcache.decode_step) and
without (each step runs the GPT's own forward over the whole prefix: kvcache.recompute_step). Both
generations must produce the same tokens (checked; fp rounding may flip a near-tie, counted).

Fits (bench.fit.fit_power_law, least squares in log-log) over n = N/4 .. N - 1 (N = max_new_tokens;
the upper range), T(n) = the time of the first n decode steps (sum of their median times):
  total_exponent  T(n) ~ n^k: ~1 with the cache (every step costs about the same); without it
                  between 1 and 2: step t costs a fixed part (launches, Python, the per-step ops of
                  every layer) plus a part ~ the prefix length P + t, and on a small model the fixed
                  part weighs for tens of tokens
  extra_exponent  (no-cache row) T_off(n) - T_on(n) ~ n^k: what recomputing the prefix adds over the
                  cached decode, the fixed part of a step cancelling: ~2 (sum of t over n steps) once
                  the recomputed batch x prefix tokens are compute-bound; below the roofline's ridge a
                  forward of a few tokens costs about what one token's does (the weights are read
                  once either way), so batch x N/4 should reach some tens of tokens on a CPU
  step_exponent   one step's median time vs its context length P + t: ~0 with the cache (attention
                  over the cache grows, but the weights dominate at these lengths), towards 1 without
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from bench.contract import Metric, Record, Skip
from bench.fit import fit_power_law
from plugins.inference import formats as F
from plugins.inference.decode import prompts
from plugins.inference.kvcache import decode_step, prefill, recompute_step
from plugins.inference.names import MEASURE_S
from plugins.inference.steps import time_sequence

if TYPE_CHECKING:  # pragma: no cover
    from bench.context import Context


def fit_points(n_max: int) -> list[int]:
    """Nine geometrically spaced n from n_max/4 to n_max (the upper range: where the growth, not a
    step's fixed cost, decides the exponent), duplicates dropped."""
    lo = max(1, n_max // 4)
    return sorted({max(lo, min(n_max, round(lo * (n_max / lo) ** (k / 8)))) for k in range(9)})


def exponents(step_s: list[float], context0: int) -> tuple[Any, Any, list[int], list[float]]:
    """(fit of T(n) in n, fit of step time in its context length context0 + i, the n points, T there)."""
    ns = fit_points(len(step_s))
    cum = [sum(step_s[:n]) for n in ns]
    total = fit_power_law(ns, cum)
    step = fit_power_law([context0 + i for i in range(len(step_s))], step_s)
    return total, step, ns, cum


def run_cache(p: Any, ctx: Context) -> list[Record]:
    from plugins.common.gpt import config_from

    if p.precision not in F.PLAIN:
        raise Skip(f"the cache case runs the plain formats ({', '.join(F.PLAIN)}); got {p.precision}")
    cfg = config_from(p.model)
    P, N = p.prompt_len, p.max_new_tokens
    if cfg.block_size < P + N:
        raise Skip(f"prompt {P} + {N} new tokens exceed the {p.model} preset's {cfg.block_size} positions")
    if N < 16:
        raise Skip(f"--max-new-tokens {N}: the fits need at least 16 generated tokens")
    dev = ctx.device
    model, how = F.build(p.precision, cfg, dev, ctx.seed)
    batch = p.max_batch
    prompt = prompts(batch, P, ctx.seed, dev)
    measure_s = min(ctx.max_time_s, 4 * MEASURE_S.get(ctx.profile, 1.0))

    def start_cached() -> dict[str, Any]:
        logits, cache = prefill(model, prompt, P + N)
        return {"cache": cache, "tok": logits.argmax(-1, keepdim=True), "out": []}

    def step_cached(st: dict[str, Any], i: int) -> None:
        st["out"].append(st["tok"])
        st["tok"] = decode_step(model, st["tok"], st["cache"]).argmax(-1, keepdim=True)

    def start_full() -> dict[str, Any]:
        tok = recompute_step(model, prompt).argmax(-1, keepdim=True)
        return {"seq": torch.cat([prompt, tok], dim=1), "tok": tok, "out": []}

    def step_full(st: dict[str, Any], i: int) -> None:
        st["out"].append(st["tok"])
        st["tok"] = recompute_step(model, st["seq"]).argmax(-1, keepdim=True)
        st["seq"] = torch.cat([st["seq"], st["tok"]], dim=1)

    runs = {}
    for name, start, step in (("on", start_cached, step_cached), ("off", start_full, step_full)):
        seq = time_sequence(start, step, N - 1, dev, max_time_s=measure_s, min_repeats=3 if name == "on" else 2)
        st = seq.last_state
        runs[name] = (seq, torch.cat(st["out"] + [st["tok"]], dim=1))
    same = float((runs["on"][1] == runs["off"][1]).float().mean()) * 100
    on_steps, off_steps = runs["on"][0].step_median(), runs["off"][0].step_median()
    ns = fit_points(len(on_steps))
    extra = [sum(off_steps[:n]) - sum(on_steps[:n]) for n in ns]
    out = []
    for name, (seq, _) in runs.items():
        # decode step i reads the token at position P + i: its context is P + i + 1 positions (the
        # prefill / first forward that made token 0 is left out of T(n): a constant offset)
        steps = seq.step_median()
        total, step, ns, cum = exponents(steps, P + 1)
        m = {
            "total_exponent": Metric(total.exponent, "exponent"),
            "total_exponent_se": Metric(total.stderr, "standard error"),
            "total_exponent_r2": Metric(total.r2, "R^2"),
            "step_exponent": Metric(step.exponent, "exponent"),
            "step_exponent_r2": Metric(step.r2, "R^2"),
            "gen_ms": Metric(cum[-1] * 1e3, f"ms of the {N - 1} decode steps (sum of median step times)"),
            "step_first_ms": Metric(steps[0] * 1e3, "ms (median, first decode step)"),
            "step_last_ms": Metric(steps[-1] * 1e3, "ms (median, last decode step)"),
            "same_tokens_pct": Metric(same, "% of tokens equal with and without the cache (greedy)"),
            "decode_repeats": Metric(len(seq.steps_s), f"generations timed ({seq.stop_reason})"),
        }
        if name == "off" and sum(1 for e in extra if e > 0) >= 2:
            fx = fit_power_law(ns, extra)  # points where recomputing was not faster (e <= 0) are left out
            m["extra_exponent"] = Metric(fx.exponent, "exponent")
            m["extra_exponent_se"] = Metric(fx.stderr, "standard error")
            m["extra_exponent_r2"] = Metric(fx.r2, "R^2")
        notes = [
            f"{p.precision}: {how}; {p.model} GPT, batch {batch}, prompt {P} tokens, {N} tokens; cache={name}: "
            + (
                "each step runs one new position over the KV cache"
                if name == "on"
                else "each step runs the GPT's full forward over the whole prefix (no cache)"
            ),
            "total_exponent: T(n) ~ n^k, T(n) = time of the first n decode steps, fitted at "
            + ", ".join(f"n={n}: {c * 1e3:.4g} ms" for n, c in zip(ns, cum))
            + "; step_exponent: one step's median "
            f"time ~ (its context length)^k over contexts {P + 1}..{P + N - 1}",
        ]
        if name == "off":
            notes.append(
                "extra_exponent: T_off(n) - T_on(n) ~ n^k, fitted at "
                + ", ".join(f"n={n}: {e * 1e3:.4g} ms" for n, e in zip(ns, extra))
            )
        out.append(
            Record(metrics=m, samples={"step_median_s": steps}, labels={"cache": name, "batch": batch}, notes=notes)
        )
    return out
