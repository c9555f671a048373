"""The `sampling` case: what each sampler promises, checked on the GPT's own next-token
distributions, and what it costs per token next to the forward (a decode step).

Distributions: the logits of every step of greedy generations (batch 4, real-text prompts) with the
KV cache, fp32. Checks (the notes' generative configuration, sampling.py):
  greedy       the cached generation's tokens == argmax of the GPT's own full forward at each
               position (greedy_argmax_pct; cache and argmax checked together)
  temperature  T -> 0 (T = 1e-4) draws == greedy on every distribution (t0_match_pct); the mean
               entropy (bits) rises with T over 0.5, 1, 2 (entropy_bits_T*)
  random       DRAWS draws at T = 1 from one distribution: total-variation distance to its
               probabilities vs the bound honest draws exceed with probability <= 3e-4
  top_k        draws from every distribution: % outside its k most probable tokens (must be 0); the
               TV test against the renormalised top-k probabilities
  top_p        the kept set: cumulative probability >= p and minimal (without its least probable
               token it is < p) on every distribution; % of draws outside it; how often the notes'
               literal "cumulative probability <= p" set differs from it, and is empty
Cost: each sampler on (batch, vocab) logits (ctx.time) vs one decode step at the same batch and
context (ctx.time; the step is repeatable: it rewrites the same cache position each call).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from bench.contract import Metric, Record, Skip
from plugins.inference import formats as F
from plugins.inference import sampling as S
from plugins.inference.decode import prompts
from plugins.inference.kvcache import KVCache, decode_step, generate
from plugins.inference.names import MEASURE_S, TEMP, TOP_K, TOP_P, batch_sizes

if TYPE_CHECKING:  # pragma: no cover
    from bench.context import Context

DIST_BATCH = 4
DRAWS = 20000
SAMPLERS = {
    "greedy": S.Sampler(0.0),
    "random": S.Sampler(1.0),
    "temperature": S.Sampler(TEMP),
    "top_k": S.Sampler(1.0, top_k=TOP_K),
    "top_p": S.Sampler(1.0, top_p=TOP_P),
}


def properties(
    logits: torch.Tensor, reference_argmax: torch.Tensor, greedy_tokens: torch.Tensor, gen: torch.Generator
) -> dict[str, dict[str, Metric]]:
    """Per sampler name: the measured checks of its promise. logits (D, V) fp32."""
    d = {"deterministic": True, "portable": False}
    probs = torch.softmax(logits, -1)
    argmax = logits.argmax(-1)
    out: dict[str, dict[str, Metric]] = {name: {} for name in SAMPLERS}
    out["greedy"]["greedy_argmax_pct"] = Metric(
        100.0 * float((greedy_tokens == reference_argmax).float().mean()),
        "% of greedy tokens == argmax of the full forward",
        **d,
    )
    t0 = S.Sampler(1e-4)(logits, gen)
    out["greedy"]["t0_match_pct"] = Metric(
        100.0 * float((t0 == argmax).float().mean()), "% of T=1e-4 draws == greedy", **d
    )
    for t in (0.5, 1.0, 2.0):
        h = float(S.entropy_bits(S.Sampler(t).probs(logits)).mean())
        out["temperature"][f"entropy_bits_T{t:g}"] = Metric(h, f"bits (mean entropy at T={t:g})", **d)
    # TV tests on the first distribution: the sampler's own distribution vs DRAWS draws from it
    for name in ("random", "top_k", "top_p", "temperature"):
        smp = SAMPLERS[name]
        q = smp.probs(logits[:1])[0]
        draws = torch.multinomial(q.expand(1, -1), DRAWS, replacement=True, generator=gen)[0]
        counts = torch.bincount(draws, minlength=q.numel())
        out[name]["tv"] = Metric(
            S.total_variation(counts, q), f"TV distance, {DRAWS} draws vs the sampler's probabilities", **d
        )
        out[name]["tv_bound"] = Metric(
            S.tv_noise_bound(q, DRAWS), "TV exceeded by honest draws with p <= 3e-4", "formula", **d
        )
    # top-k: draws from every distribution, never outside the k most probable
    draws_k = torch.multinomial(SAMPLERS["top_k"].probs(logits), 64, replacement=True, generator=gen)  # (D, 64)
    topk = logits.topk(TOP_K, -1).indices
    inside = (draws_k.unsqueeze(-1) == topk.unsqueeze(1)).any(-1)
    out["top_k"]["outside_pct"] = Metric(
        100.0 * float((~inside).float().mean()), f"% of draws outside the top {TOP_K}", **d
    )
    # top-p: the kept set and draws from it
    keep = S.nucleus_mask(probs, TOP_P)
    mass = (probs * keep).sum(-1)
    smallest = torch.where(keep, probs, torch.full_like(probs, 2.0)).amin(-1)
    out["top_p"]["min_kept_mass"] = Metric(
        float(mass.min()), f"min over distributions of the kept mass (>= {TOP_P:g})", **d
    )
    out["top_p"]["max_mass_without_last"] = Metric(
        float((mass - smallest).max()), f"max kept mass minus its least probable token (< {TOP_P:g}: minimal)", **d
    )
    draws_p = torch.multinomial(SAMPLERS["top_p"].probs(logits), 64, replacement=True, generator=gen)
    out["top_p"]["outside_pct"] = Metric(
        100.0 * float((~keep.gather(-1, draws_p)).float().mean()), "% of draws outside the kept set", **d
    )
    notes_set = S.notes_top_p_mask(probs, TOP_P)
    out["top_p"]["notes_differs_pct"] = Metric(
        100.0 * float((notes_set != keep).any(-1).float().mean()),
        "% of distributions where the notes' '<= p' set != the nucleus",
        **d,
    )
    out["top_p"]["notes_empty_pct"] = Metric(
        100.0 * float((notes_set.sum(-1) == 0).float().mean()),
        "% of distributions where the notes' '<= p' set is empty",
        **d,
    )
    out["top_p"]["kept_tokens_mean"] = Metric(float(keep.sum(-1).float().mean()), "tokens kept (mean)", **d)
    return out


def run_sampling(p: Any, ctx: Context) -> list[Record]:
    if p.precision not in F.PLAIN:
        raise Skip(f"the sampling case runs the plain formats ({', '.join(F.PLAIN)}); got {p.precision}")
    from plugins.common.gpt import config_from

    cfg = config_from(p.model)
    P, N = p.prompt_len, p.max_new_tokens
    if cfg.block_size < P + N:
        raise Skip(f"prompt {P} + {N} new tokens exceed the {p.model} preset's {cfg.block_size} positions")
    dev = ctx.device
    model, how = F.build(p.precision, cfg, dev, ctx.seed)
    prompt = prompts(DIST_BATCH, P, ctx.seed, dev)
    seen: list[torch.Tensor] = []

    def pick(logits: torch.Tensor) -> torch.Tensor:
        seen.append(logits.float())
        return logits.argmax(-1)

    tokens = generate(model, prompt, N, pick)  # (B, N) greedy with the cache
    with torch.no_grad():
        full = model(torch.cat([prompt, tokens], dim=1))[:, P - 1 : P + N - 1].float()  # logits that chose each token
    logits = torch.cat(seen, dim=0)  # (N * B, V)
    gen = torch.Generator(device=dev).manual_seed(ctx.seed)
    props = properties(logits, full.argmax(-1).reshape(-1), tokens.reshape(-1), gen)
    measure_s = min(ctx.max_time_s, MEASURE_S.get(ctx.profile, 1.0))
    out = []
    for b in sorted({1, batch_sizes(p.max_batch)[-1]}):
        cache = KVCache.allocate(cfg, b, P + 1, model.wte.weight.dtype, dev)
        cache.length = P
        tok = torch.zeros(b, 1, dtype=torch.long, device=dev)

        def step(cache: KVCache = cache, tok: torch.Tensor = tok) -> None:
            cache.length = P
            decode_step(model, tok, cache)

        t_step = ctx.time(step, max_time_s=measure_s)
        rows = logits[torch.arange(b, device=dev) % logits.shape[0]]  # (b, V) real logits
        for name, smp in SAMPLERS.items():
            t = ctx.time(lambda smp=smp, rows=rows: smp(rows, gen), max_time_s=measure_s)
            m = {
                "sample_us": Metric(t.median_s * 1e6, "us per call"),
                "step_ms": Metric(t_step.median_s * 1e3, "ms"),
                "pct_of_step": Metric(100 * t.median_s / t_step.median_s, "% of step_ms"),
            }
            m.update(props[name])
            note = (
                f"{name}: {smp.name()}; sample_us: one call picks one token per sequence of the batch; step_ms: one "
                f"decode step at the same batch, context {P + 1}; distributions: {logits.shape[0]} next-token distributions of greedy "
                f"generations (batch {DIST_BATCH}, prompt {P}, {N} tokens) of the {p.model} GPT in {p.precision} ({how})"
            )
            out.append(
                Record(metrics=m, samples={"sample_s": t.samples_s}, labels={"sampler": name, "batch": b}, notes=[note])
            )
    return out
