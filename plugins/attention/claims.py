"""The claims of shared/claims.md that the attention plugin judges: ids, statements, sources and checks.
Evidence: memory exponents fitted in plugins/attention/summary.py (measured on the run's machine)."""

from __future__ import annotations

from bench.contract import Check, Claim

CLAIMS: tuple[Claim, ...] = (
    Claim(
        id="attn.quadratic",
        claim="the naive attention kernel holds a B·H·n·n score matrix: peak memory ~n^2",
        source="Vaswani et al. 2017 (the n x n score matrix); shared/claims.md",
        expected="memory exponent in n = 2.0",
        tolerance="±0.2",
        check=Check("abs", value=2.0, tol=0.2),
        needs="run `bench run --plugin attention` (CPU is enough)",
        metric="mem_exponent",
        unit="exponent",
    ),
    Claim(
        id="attn.flash_linear",
        claim="fused (flash / memory-efficient) kernels keep extra memory linear in n",
        source="Dao et al. 2022 (FlashAttention, arXiv 2205.14135)",
        expected="memory exponent in n = 1.0",
        tolerance="±0.2",
        check=Check("abs", value=1.0, tol=0.2),
        needs="run `bench run --plugin attention` (CPU is enough: SDPA flash runs on CPU)",
        metric="mem_exponent",
        unit="exponent",
    ),
    Claim(
        id="attn.heads",
        claim="multi-head attention uses 12-100 heads",
        source="course notes week 1 (shared/seed/week1-notes.md), multi-headed self-attention",
        expected="time/memory per head count (report only)",
        tolerance="report only",
        check=Check("report"),
        needs="run `bench run --plugin attention` (CPU is enough)",
        metric="time_ms",
        line=146,
        quote="Common numbers: 12-100",
    ),
    Claim(
        id="attn.fa_speed",
        claim="FlashAttention-2 reaches 50-73% of A100 peak; FA3 up to 740 TFLOPS fp16 (75%) on H100; FA2 ~35% on H100",
        source="Dao 2023 (FlashAttention-2, arXiv 2307.08691); Shah et al. 2024 (FlashAttention-3, arXiv 2407.08608)",
        expected="TFLOPS and % of the dtype's dense peak per backend (report)",
        tolerance="report only",
        check=Check("report"),
        needs="needs CUDA: run `bench run --plugin attention --profile gpu` on a GPU",
        metric="mfu",
        unit="% of peak",
        requires="cuda",
    ),
)
