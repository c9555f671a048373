"""The inference statements the `inference` plugin judges: the course notes' generative
configuration (max new tokens, greedy, random sampling, temperature, top-k, top-p), their
quantization claim applied to inference memory, LLM.int8()'s small-batch speed, and the KV-cache /
roofline facts an inference benchmark rests on. Evidence comes from summarize() (summary.py),
which also computes the verdicts of the "plugin" checks from the measured figures."""

from __future__ import annotations

from bench.contract import Check, Claim

NOTES = "course notes week 1, Generative configuration"
RUN = "run `bench run --plugin inference` (CPU is enough)"

# Ranges of the fitted exponents: T_on(n), the time of the first n cached decode steps, and T_off(n) - T_on(n)
# (recompute.py)
CACHE_EXPONENT = (0.8, 1.25)
NOCACHE_EXPONENT = (1.6, 2.2)
INT8_MEMORY_TOL = 0.02  # +-2% of 0.5x on the weights (shared/claims.md, quant.int8_half: 0.50x +-2%)

CLAIMS: tuple[Claim, ...] = (
    Claim(
        id="infer.max_new_tokens",
        claim="Max new tokens limits the number of tokens the model will generate",
        source=NOTES,
        expected="generated tokens per sequence - max_new_tokens = 0 (every decode case and batch)",
        tolerance="exact",
        check=Check("exact", value=0),
        needs=RUN,
        metric="new_tokens_excess",
        unit="tokens",
        line=237,
        quote="Max new tokens: Limit the number of tokens that the model will generate",
        construction="the harness's own decode loop runs max_new_tokens steps (decode.py): the count checks that "
        "loop, not a library's generate",
    ),
    Claim(
        id="infer.greedy",
        claim="Greedy decoding: the token with the highest probability is always selected",
        source=NOTES,
        expected="100% of greedy tokens (KV-cache generation) == argmax of the GPT's own full forward",
        tolerance="exact",
        check=Check("exact", value=100),
        needs=RUN,
        metric="greedy_argmax_pct",
        unit="%",
        line=245,
        quote="Word/Token with the highest probability is always selected",
    ),
    Claim(
        id="infer.random_sampling",
        claim="Random sampling selects a token with a random-weighted strategy across the probabilities of all tokens",
        source=NOTES,
        expected="TV distance of 20,000 draws to the model's probabilities <= the bound honest draws exceed with p <= 3e-4",
        tolerance="the plugin's verdict (bound from the draw count)",
        check=Check("plugin"),
        needs=RUN,
        metric="tv",
        unit="TV distance",
        line=251,
        quote="Select a token using a random-weighted startegy across the probabilities of all tokens",
    ),
    Claim(
        id="infer.temperature",
        claim="Temperature controls randomness: the higher the temperature, the higher the randomness (T -> 0 is greedy)",
        source=NOTES,
        expected="mean entropy of the next-token distributions rises over T = 0.5, 1, 2; T = 1e-4 draws == greedy (100%)",
        tolerance="the plugin's verdict (strictly rising; exact)",
        check=Check("plugin"),
        needs=RUN,
        metric="entropy_bits_T1",
        unit="bits",
        line=252,
        quote="The higher the temperature, the higher the randomness",
        construction="softmax(z / T) has an entropy that rises with T for any logits z that are not all equal, and "
        "T -> 0 tends to the argmax: mathematics, not a measurement of the model",
    ),
    Claim(
        id="infer.top_k",
        claim="Top-k: select the top-k results after applying the random-weighted strategy using the probabilities "
        "(read as literally as top-p: a random-weighted draw over all tokens, kept only among the top k, i.e. "
        "redrawn until it falls there, which has the distribution of the top k renormalised)",
        source=NOTES,
        expected="0% of draws outside the top k; TV of 20,000 draws to the renormalised top-k probabilities (the "
        "literal reading's distribution) under the bound",
        tolerance="the plugin's verdict (exact; bound)",
        check=Check("plugin"),
        needs=RUN,
        metric="outside_pct",
        unit="% of draws",
        line=239,
        quote="Select the top-k results after applying random-weighted strategy using the probabilities",
    ),
    Claim(
        id="infer.top_p",
        claim="Top-p samples from the top-ranked tokens whose cumulative probability is <= p",
        source=NOTES + "; nucleus sampling: Holtzman et al. 2019 (arXiv 1904.09751) eq. 2",
        expected="the notes' '<= p' set == the nucleus (smallest top-ranked set with cumulative probability >= p) "
        "on every measured distribution",
        tolerance="the plugin's verdict (exact set equality)",
        check=Check("plugin"),
        needs=RUN,
        metric="notes_differs_pct",
        unit="% of distributions",
        line=238,
        quote="top-ranked consecutive results by probability with a cumulative probability ≤ p",
        construction="the '<= p' set leaves out the token that crosses p, so it differs from the nucleus on every "
        "distribution whose top-ranked cumulative sums miss p exactly: set arithmetic, whatever the model",
        known_error="the nucleus is the smallest set whose cumulative probability reaches p (>= p); the notes' "
        "'<= p' set leaves out the token that crosses p, and is empty when the top token alone exceeds p",
    ),
    Claim(
        id="infer.kv_cache_bytes",
        claim="The KV cache holds 2 (K and V) x layers x kv_heads x head_dim x bytes x tokens x batch",
        source="the KV-cache size of decoder-only inference (e.g. Pope et al. 2022, arXiv 2211.05102)",
        expected="bytes the cache allocates (allocator) == the formula, for the preset, dtype, tokens and batch",
        tolerance="exact (the worst case of every decode row)",
        check=Check("rel", tol=0.0),
        needs=RUN,
        metric="kv_bytes",
        unit="bytes",
        construction="the harness allocates the cache itself with the formula's own shape (kvcache.py), so the "
        "allocator's bytes equal the formula whatever the model",
    ),
    Claim(
        id="infer.cache_linear",
        claim="With a KV cache, generating n tokens takes time ~ n (each step costs about the same)",
        source="autoregressive decoding with cached keys/values (issue 19)",
        expected=f"exponent of T(n), the time of n decode steps, in [{CACHE_EXPONENT[0]}, {CACHE_EXPONENT[1]}]",
        tolerance="range",
        check=Check("range", lo=CACHE_EXPONENT[0], hi=CACHE_EXPONENT[1]),
        needs=RUN,
        metric="total_exponent",
        unit="exponent",
    ),
    Claim(
        id="infer.nocache_quadratic",
        claim="Without a cache, recomputing the whole prefix at every step adds time ~ n^2 to generating n tokens",
        source="autoregressive decoding without cached keys/values (issue 19)",
        expected=f"exponent of T_off(n) - T_on(n), the time recomputation adds over the cached decode, in "
        f"[{NOCACHE_EXPONENT[0]}, {NOCACHE_EXPONENT[1]}] (T_off(n) alone is reported)",
        tolerance="range",
        check=Check("range", lo=NOCACHE_EXPONENT[0], hi=NOCACHE_EXPONENT[1]),
        needs=RUN,
        metric="extra_exponent",
        unit="exponent",
    ),
    Claim(
        id="infer.bandwidth_bound",
        claim="Decoding at batch 1 is memory-bandwidth-bound: every step reads all weights for one token per sequence",
        source="roofline model (Williams et al. 2009, CACM 52(4)); Pope et al. 2022 (arXiv 2211.05102)",
        expected="arithmetic intensity of a batch-1 decode step (FLOPs / bytes read) < the ridge point "
        "(measured matmul FLOP/s / measured copy bandwidth)",
        tolerance="the plugin's verdict",
        check=Check("plugin"),
        needs=RUN,
        metric="intensity",
        unit="FLOP/byte",
    ),
    Claim(
        id="infer.int8_memory",
        claim="int8 weights halve inference memory vs 16-bit (notes: another 50% after fp16; LLM.int8(): "
        "'cuts the memory needed for inference by half')",
        source="course notes week 1 (Quantization, Impact); Dettmers et al. 2022 (LLM.int8(), arXiv 2208.07339)",
        expected="weight bytes of llm_int8 / bf16 = 0.5 (the KV cache, bf16 in both, is shown apart)",
        tolerance=f"±{INT8_MEMORY_TOL:.0%}",
        check=Check("rel", value=0.5, tol=INT8_MEMORY_TOL),
        needs=RUN + " (bitsandbytes)",
        metric="weight_ratio",
        unit="x of bf16",
        line=395,
        quote="further reduce the memory footprint by another 50% by representing the model parameters as eight bit integers",
    ),
    Claim(
        id="infer.int8_speed",
        claim="LLM.int8() decodes slower than 16-bit at small batch",
        source="Dettmers et al. 2022 (LLM.int8(), arXiv 2208.07339); HF blog (Belkada, Dettmers 2022): "
        "BLOOM-176B on 8xA100 286.56 vs 230.38 ms/token at batch 1",
        expected="decode tokens/s of llm_int8 / bf16 at batch 1 < 1",
        tolerance="range [0, 1]",
        check=Check("range", lo=0.0, hi=1.0),
        needs=RUN + " (bitsandbytes; the paper's kernels are CUDA's: `--profile gpu` on a GPU)",
        metric="speed_ratio",
        unit="x of bf16 tokens/s",
    ),
)
