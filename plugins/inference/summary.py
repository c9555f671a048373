"""summarize() of the inference plugin: claim evidence and the comparison of each weight format
with bf16, from the case rows of a run. The verdict functions are pure (figures in, verdict and
the arithmetic in words out) so that tests can feed them breaking values."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from bench.contract import Evidence, Metric, Record, Row, claim_record
from plugins.inference.claims import CLAIMS
from plugins.inference.names import BNB, PLAIN, REFERENCE, TOP_P, TORCHAO


def claim(claim_id: str, ev: Evidence) -> Record:
    return claim_record(next(c for c in CLAIMS if c.id == claim_id), ev)


# --- verdicts (pure) ------------------------------------------------------------------------------
def verdict_tv(tv: float, bound: float, what: str) -> tuple[str, str]:
    ok = tv <= bound
    return ("holds" if ok else "fails"), f"{what}: TV {tv:.4g} {'<=' if ok else '>'} bound {bound:.4g}"


def verdict_temperature(entropy: Sequence[tuple[float, float]], t0_match_pct: float) -> tuple[str, str]:
    """entropy: (T, mean entropy bits) pairs; holds when strictly rising in T and T->0 == greedy."""
    pts = sorted(entropy)
    rising = all(b[1] > a[1] for a, b in itertools.pairwise(pts))
    ok = rising and t0_match_pct == 100.0 and len(pts) >= 2
    said = ", ".join(f"T={t:g}: {h:.4g} bits" for t, h in pts)
    return ("holds" if ok else "fails"), (
        f"mean entropy {said} ({'rising' if rising else 'NOT rising'}); "
        f"T=1e-4 draws == greedy on {t0_match_pct:.4g}% of distributions"
    )


def verdict_top_k(outside_pct: float, tv: float, bound: float) -> tuple[str, str]:
    v, said = verdict_tv(tv, bound, "20,000 draws vs the renormalised top-k probabilities")
    ok = outside_pct == 0.0 and v == "holds"
    return ("holds" if ok else "fails"), f"{outside_pct:.4g}% of draws outside the top k; {said}"


def verdict_top_p(
    notes_differs_pct: float,
    notes_empty_pct: float,
    min_mass: float,
    max_without_last: float,
    p: float,
    outside_pct: float,
) -> tuple[str, str]:
    """The notes' '<= p' set against the nucleus (whose own promise is reported alongside)."""
    nucleus_ok = min_mass >= p and max_without_last < p and outside_pct == 0.0
    ok = notes_differs_pct == 0.0
    return ("holds" if ok else "fails"), (
        f"the notes' '<= p' set differs from the nucleus on {notes_differs_pct:.4g}% of distributions and is "
        f"empty on {notes_empty_pct:.4g}% (p={p:g}); the nucleus (>= p): min kept mass {min_mass:.4g}, max mass "
        f"without its least probable token {max_without_last:.4g}, {outside_pct:.4g}% of draws outside "
        f"({'as promised' if nucleus_ok else 'PROMISE BROKEN'})"
    )


def verdict_bandwidth(intensity: float, ridge: float | None) -> tuple[str | None, str]:
    if ridge is None:
        return None, f"intensity {intensity:.3g} FLOP/byte; no ridge point (no measured peak)"
    ok = intensity < ridge
    return ("holds" if ok else "fails"), (
        f"intensity {intensity:.3g} FLOP/byte {'<' if ok else '>='} ridge "
        f"{ridge:.3g} FLOP/byte: {'bandwidth' if ok else 'compute'}-bound"
    )


# --- rows ----------------------------------------------------------------------------------------
def _ok(rows: Sequence[Row], mode: str) -> list[Row]:
    return [r for r in rows if r.is_case and r.ok and r.params.get("mode") == mode]


def _group(r: Row) -> tuple[Any, ...]:
    return (r.params.get("model"), r.params.get("prompt_len"), r.params.get("max_new_tokens"))


def _at(rows: Sequence[Row], precision: str, batch: int, group: tuple[Any, ...]) -> Row | None:
    return next(
        (r for r in rows if r.params.get("precision") == precision and r.get("batch") == batch and _group(r) == group),
        None,
    )


def summarize(rows: list[Row]) -> list[Record]:
    out: list[Record] = []
    dec = [r for r in _ok(rows, "decode") if r.number("tpot_p50_ms") is not None]
    if dec:
        out += _decode_claims(dec)
        out += _formats_vs_reference(dec)
    # the cache experiment whose generation is longest relative to its prompt (n >> P: where the growth shows)
    groups: dict[tuple[Any, ...], dict[Any, Row]] = {}
    for r in _ok(rows, "cache"):
        groups.setdefault((*_group(r), r.params.get("precision"), r.get("batch")), {})[r.get("cache")] = r
    if groups:
        best = max(groups, key=lambda g: (g[2] or 0) / ((g[1] or 0) + 1))
        out += _cache_claims(groups[best])
    smp = {r.get("sampler"): r for r in _ok(rows, "sampling") if r.get("batch") == 1}
    out += _sampling_claims(smp)
    return out


def _cache_claims(cache: dict[Any, Row]) -> list[Record]:
    on, off = cache.get("on"), cache.get("off")
    out = []

    def fmt(r: Row | None, name: str) -> str:
        v = r.number(name) if r is not None else None
        return "-" if v is None else f"{v:.3g}"

    if on is None and off is None:
        return out
    r0 = on or off
    ctx = (
        f"{r0.params.get('max_new_tokens')}-token generations of the {r0.params.get('model')} GPT "
        f"({r0.params.get('precision')}, batch {r0.get('batch')}, prompt {r0.params.get('prompt_len')}): T_on(n) ~ "
        f"n^{fmt(on, 'total_exponent')}, T_off(n) ~ n^{fmt(off, 'total_exponent')}, T_off - T_on ~ "
        f"n^{fmt(off, 'extra_exponent')} ± {fmt(off, 'extra_exponent_se')}; one step's time ~ context^"
        f"{fmt(on, 'step_exponent')} (cache) / ^{fmt(off, 'step_exponent')} (none); tokens equal with and "
        f"without the cache: {fmt(r0, 'same_tokens_pct')}%"
    )
    if on is not None and on.number("total_exponent") is not None:
        out.append(claim("infer.cache_linear", Evidence(on.number("total_exponent"), "exponent", "measured", ctx)))
    if off is not None and off.number("extra_exponent") is not None:
        out.append(
            claim("infer.nocache_quadratic", Evidence(off.number("extra_exponent"), "exponent", "measured", ctx))
        )
    return out


def _decode_claims(dec: list[Row]) -> list[Record]:
    out = []
    worst = max(dec, key=lambda r: abs(r.number("new_tokens_excess") or 0))
    out.append(
        claim(
            "infer.max_new_tokens",
            Evidence(
                worst.value("new_tokens_excess"),
                "tokens",
                "measured",
                f"{len(dec)} decode rows; max_new_tokens {worst.params.get('max_new_tokens')} gave "
                f"{worst.value('new_tokens')} tokens per sequence (worst row: {worst.params.get('precision')}, "
                f"batch {worst.get('batch')})",
            ),
        )
    )
    kv = [r for r in dec if r.number("kv_bytes") and r.number("kv_formula_bytes")]
    if kv:
        w = max(kv, key=lambda r: abs(r.number("kv_bytes") / r.number("kv_formula_bytes") - 1))
        exact = sum(1 for r in kv if r.value("kv_bytes") == r.value("kv_formula_bytes"))
        out.append(
            claim(
                "infer.kv_cache_bytes",
                Evidence(
                    w.value("kv_bytes"),
                    "bytes",
                    "measured",
                    (
                        f"{exact} of {len(kv)} decode rows allocate exactly the formula's bytes; worst row: "
                        f"{w.params.get('precision')} {w.params.get('model')}, batch {w.get('batch')}, "
                        f"{w.params.get('prompt_len')}+{w.params.get('max_new_tokens')} tokens: allocator {w.value('kv_bytes')} "
                        f"vs formula {w.value('kv_formula_bytes')} bytes"
                    ),
                    expected=w.value("kv_formula_bytes"),
                ),
            )
        )
    b1 = [r for r in dec if r.get("batch") == 1 and r.number("intensity") is not None]
    order = ("bf16", "fp32") if any(r.is_cuda for r in b1) else ("fp32", "bf16")
    pick = next((r for pr in order for r in b1 if r.params.get("precision") == pr), b1[0] if b1 else None)
    if pick is not None:
        v, said = verdict_bandwidth(pick.number("intensity"), pick.number("ridge"))
        bounds = "; ".join(
            f"{r.params.get('precision')} batch {r.get('batch')}: {r.value('bound')}" for r in dec if r.value("bound")
        )
        pct = pick.number("pct_bandwidth")
        out.append(
            claim(
                "infer.bandwidth_bound",
                Evidence(
                    pick.number("intensity"),
                    "FLOP/byte",
                    "measured",
                    (
                        f"{pick.params.get('precision')} {pick.params.get('model')} batch 1: {said}; the step reads "
                        f"{pick.value('read_bytes')} bytes in {pick.number('tpot_p50_ms'):.4g} ms = "
                        f"{pick.number('achieved_gbps'):.4g} GB/s, {pct if pct is None else f'{pct:.3g}'}% of the measured copy "
                        f"bandwidth; by row: {bounds}"
                    ),
                    verdict=v,
                ),
            )
        )
    return out


def _formats_vs_reference(dec: list[Row]) -> list[Record]:
    """Each format's decode tokens/s and memory over bf16's, same preset, prompt, tokens and batch."""
    out = []
    ratios: dict[tuple[str, int], tuple[float, float, float]] = {}
    for r in dec:
        fmt, b = r.params.get("precision"), r.get("batch")
        ref = _at(dec, REFERENCE, b, _group(r))
        if fmt == REFERENCE or ref is None:
            continue
        sp = r.number("decode_tok_s") / ref.number("decode_tok_s")
        mem = r.number("memory_bytes") / ref.number("memory_bytes")
        w = r.number("weight_bytes") / ref.number("weight_bytes")
        ratios[(fmt, b)] = (sp, mem, w)
        out.append(
            Record(
                metrics={
                    "speed_ratio": Metric(sp, f"x of {REFERENCE} decode tokens/s"),
                    "memory_ratio": Metric(mem, f"x of {REFERENCE} (weights + KV cache)", deterministic=True),
                    "weight_ratio": Metric(w, f"x of {REFERENCE} weight bytes", deterministic=True),
                },
                labels={"analysis": f"vs {REFERENCE}", "precision": fmt, "batch": b},
            )
        )

    def by_batch(fmt: str, i: int) -> str:
        xs = sorted((b, v[i]) for (f, b), v in ratios.items() if f == fmt)
        return ", ".join(f"batch {b}: {x:.3g}x" for b, x in xs) or "not measured"

    if ("llm_int8", 1) in ratios:
        sp, mem, w = ratios[("llm_int8", 1)]
        others = "; ".join(
            f"{f}: {by_batch(f, 1)}" for f in BNB[1:] + TORCHAO + ("fp16",) if any(k[0] == f for k in ratios)
        )
        out.append(
            claim(
                "infer.int8_memory",
                Evidence(
                    w,
                    "x of bf16 weight bytes",
                    "measured",
                    (
                        f"llm_int8 / bf16 weight bytes {w:.4g}x (embeddings and norms stay 16-bit); with the KV cache "
                        f"(weights + KV cache) by batch: {by_batch('llm_int8', 1)}; others: {others}"
                    ),
                ),
            )
        )
        sp_others = "; ".join(
            f"{f}: {by_batch(f, 0)}"
            for f in BNB[1:] + TORCHAO + PLAIN
            if f != REFERENCE and any(k[0] == f for k in ratios)
        )
        ref = _at(dec, REFERENCE, 1, _group(next(r for r in dec if r.params.get("precision") == "llm_int8")))
        dev = (
            "CUDA" if ref is not None and ref.is_cuda else "this CPU's bitsandbytes kernels, not the paper's CUDA ones"
        )
        out.append(
            claim(
                "infer.int8_speed",
                Evidence(
                    sp,
                    "x of bf16 tokens/s",
                    "measured",
                    (
                        f"llm_int8 / bf16 decode tokens/s by batch: {by_batch('llm_int8', 0)} ({dev}); others: {sp_others}"
                    ),
                ),
            )
        )
    return out


def _sampling_claims(smp: dict[Any, Row]) -> list[Record]:
    out = []
    g = smp.get("greedy")
    if g is not None and g.number("greedy_argmax_pct") is not None:
        out.append(
            claim(
                "infer.greedy",
                Evidence(
                    g.number("greedy_argmax_pct"),
                    "%",
                    "measured",
                    f"greedy tokens of KV-cache generations vs argmax of the full forward; {g.notes[0] if g.notes else ''}",
                ),
            )
        )
    t = smp.get("temperature")
    if t is not None and g is not None and t.number("entropy_bits_T1") is not None:
        ent = [(float(k[len("entropy_bits_T") :]), t.number(k)) for k in t.metrics if k.startswith("entropy_bits_T")]
        v, said = verdict_temperature(ent, g.number("t0_match_pct") or 0.0)
        out.append(
            claim("infer.temperature", Evidence(t.number("entropy_bits_T1"), "bits", "measured", said, verdict=v))
        )
    r = smp.get("random")
    if r is not None and r.number("tv") is not None:
        v, said = verdict_tv(r.number("tv"), r.number("tv_bound"), "20,000 draws at T=1 vs the model's probabilities")
        out.append(claim("infer.random_sampling", Evidence(r.number("tv"), "TV distance", "measured", said, verdict=v)))
    k = smp.get("top_k")
    if k is not None and k.number("outside_pct") is not None:
        v, said = verdict_top_k(k.number("outside_pct"), k.number("tv"), k.number("tv_bound"))
        out.append(claim("infer.top_k", Evidence(k.number("outside_pct"), "% of draws", "measured", said, verdict=v)))
    p = smp.get("top_p")
    if p is not None and p.number("notes_differs_pct") is not None:
        v, said = verdict_top_p(
            p.number("notes_differs_pct"),
            p.number("notes_empty_pct"),
            p.number("min_kept_mass"),
            p.number("max_mass_without_last"),
            TOP_P,
            p.number("outside_pct"),
        )
        out.append(
            claim(
                "infer.top_p",
                Evidence(p.number("notes_differs_pct"), "% of distributions", "measured", said, verdict=v),
            )
        )
    return out
