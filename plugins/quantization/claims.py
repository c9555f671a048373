"""The claims of shared/claims.md that the quantization plugin judges (ids, statements, sources and checks),
and the arithmetic of the one judged from published figures (quant.nf4.bits).

Evidence comes from plugins/quantization/summary.py (measured on the run's machine). mem.store_int8 and
quant.int8_half are one measurement (x_fp16 = bytes_per_param / 2 bytes exactly): the first is judged,
the second is a `parts` claim pointing to it, shown with its verdict but not counted again."""

from __future__ import annotations

from functools import partial
from typing import Any

from bench.contract import Check, Claim, Figure, Judged


def f_nf4_bits(d: dict[str, Any]) -> Judged:
    # QLoRA sec. 3: 32/64 = 0.5 bits of fp32 absmax per param become 8/64 + 32/(64*256) = 0.127
    bits = (
        float(d["weight_bits"])
        + float(d["absmax_bits"]) / d["block"]
        + float(d["absmax2_bits"]) / (d["block"] * d["block2"])
    )
    ratio = bits / float(d["ref_bits"])
    tol = float(d["tol"])
    ok = abs(bits - float(d["printed_bits"])) <= tol and abs(ratio - float(d["printed_ratio"])) <= tol
    return Judged(
        "holds" if ok else "fails",
        (
            f"{d['weight_bits']} + {d['absmax_bits']}/{d['block']} + {d['absmax2_bits']}/({d['block']}x{d['block2']}) "
            f"= {bits:.4f} bits/param (printed {d['printed_bits']}); /{d['ref_bits']} = {ratio:.4f} (printed {d['printed_ratio']})"
        ),
        tuple([Figure(round(bits, 4), "bits/param", "published"), Figure(round(ratio, 4), "x of fp16", "published")]),
    )


CLAIMS: tuple[Claim, ...] = (
    Claim(
        id="mem.store_int8",
        claim="int8 quarters it: 1 GB (quantized weights, scales counted)",
        source="course notes week 1 (shared/seed/week1-notes.md), Quantization, Impact",
        expected="1 byte/param",
        tolerance="±2% (scales/zero points counted)",
        check=Check("rel", value=1, tol=0.02),
        needs="run `bench run --plugin quantization` (CPU is enough)",
        metric="bytes_per_param",
        unit="bytes/param",
        line=395,
        quote="representing the model parameters as eight bit integers, which requires only one gigabyte of GPU RAM",
    ),
    Claim(
        id="quant.int8_half",
        claim="LLM.int8() halves inference memory vs fp16 (the same measurement as mem.store_int8: int8 bytes / "
        "fp16 bytes = bytes_per_param / 2, so it shows mem.store_int8's verdict and is not counted again)",
        source="Dettmers et al. 2022 (LLM.int8(), arXiv 2208.07339)",
        expected="0.50x of fp16 bytes (1 byte/param + scales)",
        tolerance="±2% (as mem.store_int8's 1 byte/param ±2%)",
        check=Check("parts", parts=("mem.store_int8",)),
        needs="run `bench run --plugin quantization` (bitsandbytes runs on CPU)",
        metric="x_fp16",
        unit="x of fp16",
    ),
    Claim(
        id="quant.nf4",
        claim="NF4 with double quantization: 4.127 bits/param = 0.258x of fp16",
        source="Dettmers et al. 2023 (QLoRA, arXiv 2305.14314) sec. 3",
        expected="0.258x of fp16 bytes (0.516 bytes/param)",
        tolerance="±2%",
        check=Check("rel", value=0.258, tol=0.02),
        needs="run `bench run --plugin quantization` (bitsandbytes runs on CPU)",
        metric="x_fp16",
        unit="x of fp16",
    ),
    Claim(
        id="quant.nf4.bits",
        claim="4-bit weights + 8-bit absmax per 64 + fp32 second-level absmax per 256 blocks = 4.127 bits/param",
        source="QLoRA (arXiv 2305.14314) sec. 3, Double Quantization",
        expected="4.127 bits/param; 0.258x of 16 bits",
        tolerance="as printed (±0.0005 bits; ±0.0005x)",
        check=Check(
            "formula",
            formula=partial(
                f_nf4_bits,
                {
                    "weight_bits": 4,
                    "block": 64,
                    "absmax_bits": 8,
                    "block2": 256,
                    "absmax2_bits": 32,
                    "ref_bits": 16,
                    "printed_bits": 4.127,
                    "printed_ratio": 0.258,
                    "tol": 0.0005,
                },
            ),
        ),
        needs="nothing: arithmetic",
        unit="bits/param",
        parent="quant.nf4",
    ),
    Claim(
        id="quant.int8_speed",
        claim="int8 inference is slower than bf16 at small batch (BLOOM-176B, 8xA100: 286.56 vs 230.38 ms/token at batch 1)",
        source='Hugging Face blog "A Gentle Introduction to 8-bit Matrix Multiplication" (Belkada, Dettmers 2022), BLOOM-176B on 8xA100',
        expected="speed ratio int8/bf16 per batch size (report only)",
        tolerance="report only",
        check=Check("report"),
        needs="run `bench run --plugin quantization` (CPU timings are not the GPU kernels': `--profile gpu` on a GPU)",
        metric="time_ratio",
        unit="x",
    ),
    Claim(
        id="quant.error",
        claim="int8 loses precision dramatically without scaling; with per-row scales the error is small (judged on "
        "real activations, where the unscaled cast is not trivially zero; weights of std 0.02 cast to all-zero codes)",
        source="course notes week 1 (shared/seed/week1-notes.md), INT8; LLM.int8() (arXiv 2208.07339) sec. 3.1",
        expected="naive-cast error >= 10x the per-row absmax error (activations); per-row error < 2% (weights and activations)",
        tolerance="the plugin's verdict on that criterion (output error of block 0's mlp.fc vs fp32, real text)",
        check=Check("plugin"),
        needs="run `bench run --plugin quantization` (CPU is enough)",
        metric="error_ratio",
        unit="x",
        line=393,
        quote="Pretty dramatic loss of precision",
    ),
)
