"""The claims of shared/claims.md (and the notes, shared/seed/week1-notes.md) that the precision plugin
judges: ids, statements, sources and checks. Verdicts the plugin gives itself (Check("plugin")) are
computed in plugins/precision/verdicts.py from the numbers in the rows."""

from __future__ import annotations

from functools import partial
from typing import Any

from bench.contract import Check, Claim, Figure, Judged

CPU = "run `bench run --plugin precision` (CPU is enough)"
NOTES = "course notes week 1 (shared/seed/week1-notes.md)"
# the storage claims divide a model's bytes by its parameters: numel x element_size / numel
STORAGE_BY_CONSTRUCTION = (
    "bytes / parameters of a model is numel x element_size / numel, the dtype's element size: it checks "
    "torch's element_size, not memory that could come out otherwise"
)


def f_integers(d: dict[str, Any]) -> Judged:
    """The contiguous integers a float format holds exactly: 2^(fraction bits + 1) (the implicit leading 1),
    per format; the statement holds if the format judged holds the fewest of the float formats compared."""
    exact = {f: 2 ** (bits + 1) for f, bits in d["fraction_bits"].items()}
    me = d["format"]
    ok = exact[me] == min(exact.values())
    said = ", ".join(f"{f} {n:,}" for f, n in exact.items())
    reason = (
        f"integers exact up to 2^(fraction bits + 1): {said}; {me}: {exact[me]:,} + 1 = {exact[me] + 1:,} is not "
        f"representable (it rounds to {exact[me]:,}), so integer sums past {exact[me]:,} go wrong; {me} "
        f"{'holds the fewest' if ok else 'does not hold the fewest'} of {', '.join(exact)} ({d['source']})"
    )
    return Judged("holds" if ok else "fails", reason, (Figure(exact[me], "largest contiguous integer", "published"),))


def f_single_gpu(d: dict[str, Any]) -> Judged:
    """The largest model one GPU trains at the notes' own bytes/param, vs "impossible above 1B"."""
    bpp, above = float(d["bytes_per_param"]), float(d["above_params"])
    fits = {g: gb * 1e9 / bpp for g, gb in d["gpus_gb"].items()}
    ok = all(n <= above for n in fits.values())
    said = "; ".join(
        f"{g} {d['gpus_gb'][g]:g} GB / {bpp:g} bytes/param = {n / 1e9:.2f}B params" for g, n in fits.items()
    )
    reason = (
        f"at the notes' own {bpp:g} bytes/param (line 364): {said}; "
        + (
            "none above 1B fits"
            if ok
            else f"models from {above / 1e9:g}B up to {max(fits.values()) / 1e9:.2f}B fit one GPU"
        )
        + f" ({d['source']})"
    )
    return Judged(
        "holds" if ok else "fails", reason, (Figure(round(max(fits.values()) / 1e9, 2), "B params", "published"),)
    )


CLAIMS: tuple[Claim, ...] = (
    Claim(
        id="mem.store_fp32",
        claim="1B params take 4 GB at fp32",
        source=f"{NOTES}; IEEE 754 binary32 = 4 bytes",
        expected="4 bytes/param",
        tolerance="exact",
        check=Check("exact", value=4),
        needs=CPU,
        metric="bytes_per_param",
        unit="bytes/param",
        line=363,
        quote="Storing 1B parameters requires = $10^9 \\times 4 \\text{ bytes/parameter} = 4GB$ @32-bit full precision",
        construction=STORAGE_BY_CONSTRUCTION,
    ),
    Claim(
        id="mem.store_16bit",
        claim="16-bit (fp16, bf16) halves it: 2 GB",
        source=f"{NOTES}; IEEE 754 binary16 / bfloat16 = 2 bytes",
        expected="2 bytes/param",
        tolerance="exact",
        check=Check("exact", value=2),
        needs=CPU,
        metric="bytes_per_param",
        unit="bytes/param",
        line=395,
        quote="down to only two gigabyte using 16-bit half precision of 50% saving",
        construction=STORAGE_BY_CONSTRUCTION,
    ),
    Claim(
        id="mem.train_24x",
        claim="training 1B at fp32 needs ~24 GB in total (Adam states, gradients, activations and temporaries "
        "besides the 4 GB of weights); the notes give no batch",
        source=f"{NOTES}; shared/claims.md: weights 4 + Adam 8 + gradients 4 + activations/temporaries 8 bytes/param",
        expected="a 1.2B-parameter GPT, fp32 + AdamW, one step at each batch of a sweep (1, 2, 4 x 2048 tokens): "
        "model states at rest exactly 16 bytes/param, the step's peak ~24 bytes/param at one or more of them",
        tolerance="states exact; peak within 24 +-10%; the verdict names the batches run where it holds and where "
        "not (the formula's window between them is shown apart, extrapolated)",
        check=Check("plugin"),
        needs=CPU,
        metric="total_bytes_per_param",
        unit="bytes/param",
        line=364,
        quote="Additionally, it requires ADAM optimizers states, Gradients, Activations, and temporary memory, "
        "making a total o 24GB @32-bit full precision",
    ),
    Claim(
        id="mem.single_gpu",
        claim="for models larger than 1B parameters it is impossible to train on a single GPU",
        source=f"{NOTES}; NVIDIA A100 80GB, H100 SXM 80GB, H200 141GB datasheets",
        expected="the largest model one GPU holds at the notes' 24 bytes/param: not above 1B",
        tolerance="every GPU's largest model <= 1B parameters",
        check=Check(
            "formula",
            formula=partial(
                f_single_gpu,
                {
                    "bytes_per_param": 24,
                    "above_params": 1e9,
                    "gpus_gb": {"A100 80GB": 80, "H100 SXM": 80, "H200": 141},
                    "source": "GPU memory from NVIDIA's datasheets, GB = 1e9 bytes; mem.train_24x measures the bytes/param",
                },
            ),
        ),
        needs="nothing: arithmetic over the notes' figure and datasheets",
        unit="B params",
        line=401,
        quote="For larger models, it is impossible to train on a single GPU, requiring distributed computing techniques.",
    ),
    Claim(
        id="prec.pi_fp32",
        claim="3.141592 stored in fp32 is 3.1415920257568359375",
        source="IEEE 754 binary32 (1 sign, 8 exponent, 23 fraction bits; 0x40490FD8)",
        expected="3.1415920257568359375",
        tolerance="exact",
        check=Check("exact", value="3.1415920257568359375"),
        needs=CPU,
        metric="value",
    ),
    Claim(
        id="prec.pi_fp16",
        claim="fp16 gives 3.140625",
        source="IEEE 754 binary16 (1/5/10 bits)",
        expected="3.140625",
        tolerance="exact",
        check=Check("exact", value="3.140625"),
        needs=CPU,
        metric="value",
    ),
    Claim(
        id="prec.pi_bf16",
        claim="bf16 gives 3.140625",
        source="bfloat16 (1/8/7 bits, fp32's exponent range)",
        expected="3.140625",
        tolerance="exact",
        check=Check("exact", value="3.140625"),
        needs=CPU,
        metric="value",
    ),
    Claim(
        id="prec.pi_int8",
        claim="int8 (naive cast, no scale) projects pi to 3",
        source="the notes' INT8 example (an image at line 391 of shared/seed/week1-notes.md; its numbers are not in "
        "the text); int8 range -128..127",
        expected="3",
        tolerance="exact",
        check=Check("exact", value="3"),
        needs=CPU,
        metric="value",
    ),
    Claim(
        id="prec.ranges",
        claim="fp32 max ~3.4e38; fp16 max 65504; bf16 max ~3.39e38",
        source="shared/claims.md; the notes' FP16 and BFLOAT16 examples (images at lines 374 and 383); torch.finfo; "
        "IEEE 754",
        expected="torch.finfo max 3.4028e38 / 65504 / 3.3895e38, written at the digits the notes give",
        tolerance="at the digits the notes give (3.4e38: 2 significant digits, 65504: all 5, 3.39e38: 3), not exact",
        check=Check("plugin"),
        needs=CPU,
        metric="max",
    ),
    Claim(
        id="prec.bf16_training",
        claim="bf16 trains like fp32 (most popular choice)",
        source="shared/claims.md (the notes, line 387, say only 'Most popular choice' of bf16)",
        expected="final loss of bf16 autocast within 2% of fp32 (same model, text, seed)",
        tolerance="|diff| <= 2%",
        check=Check("max", value=2),
        needs=CPU,
        metric="bf16_vs_fp32_pct",
        unit="%",
    ),
    Claim(
        id="prec.fp16_scaling",
        claim="FP16 statistically projects the original FP32 into lower precision space using scaling factors",
        source=f"{NOTES} (Quantization, FP16)",
        expected="a cast to fp16 keeps values scaled into range (1e5 finite, 1e-8 non-zero)",
        tolerance="every stored value vs an unscaled round-to-nearest-even (CPython struct): equal everywhere = no scale",
        check=Check("plugin"),
        needs=CPU,
        metric="mismatches",
        unit="values",
        line=371,
        quote="Statistically projects the original FP32 into lower precision space using scaling factors",
        known_error='fp16 "projects ... using scaling factors": tensor.to(float16) is a plain rounding, no scale '
        "(scaling enters as loss scaling of gradients, or in int8/fp8 quantization)",
    ),
    Claim(
        id="prec.bf16_truncation",
        claim='BFLOAT16 is a "truncated" 32-bit float: the same exponent bits as FP32, the fraction truncated to 7 '
        "bits instead of 23 (the bit layout; the notes say nothing of how a conversion rounds)",
        source=f"{NOTES} (BFLOAT16)",
        expected="layout 1/8/7 vs fp32's 1/8/23: the same 8 exponent bits, 7 fraction bits",
        tolerance="exact",
        check=Check("plugin"),
        needs=CPU,
        metric="layout",
        line=381,
        quote="“Truncated” 32-bit float -has the same bits as FP32 for exponent but truncates the fraction to 7 bits "
        "instead of 23 bits",
    ),
    Claim(
        id="prec.bf16_integers",
        claim="bf16 is not well suited for integer calculations (judged: it holds the fewest contiguous integers "
        "exactly of the float formats the notes compare, fp32, fp16 and bf16)",
        source=f"{NOTES} (BFLOAT16); IEEE 754 binary32/binary16 and bfloat16 fraction bits 23 / 10 / 7",
        expected="bf16 exact up to 256 (257 rounds to 256), fp16 up to 2,048, fp32 up to 16,777,216",
        tolerance="bf16's range the smallest",
        check=Check(
            "formula",
            formula=partial(
                f_integers,
                {
                    "format": "bf16",
                    "fraction_bits": {"fp32": 23, "fp16": 10, "bf16": 7},
                    "source": "fraction bits of IEEE 754 binary32, binary16 and bfloat16",
                },
            ),
        ),
        needs="nothing: arithmetic over the formats",
        unit="largest contiguous integer",
        line=386,
        quote="Not well suited for integer calculations",
    ),
    Claim(
        id="prec.bf16_truncation.torch_cast",
        claim="a finding about torch, not a claim of the notes: how tensor.to(torch.bfloat16) rounds fp32 values "
        "(round to nearest even, or truncation of the low 16 bits)",
        source="torch (c10/util/BFloat16.h round_to_nearest_even); measured on probe values",
        expected="shown: the probe values whose bf16 differs from their truncation",
        tolerance="report only",
        check=Check("report"),
        needs=CPU,
        metric="differ_from_truncation",
        unit="values",
        parent="prec.bf16_truncation",
    ),
    Claim(
        id="mem.act_layer",
        claim="a transformer layer keeps sbh(34 + 5as/h) bytes of activations for backward in 16-bit without "
        "recomputation; 34sbh when the attention core is recomputed (selective recomputation; flash attention "
        "recomputes it in backward)",
        source="Korthikanti et al. 2022, arXiv 2205.05198, sec. 4.1 eq. 1 and sec. 5 (34sbh)",
        expected="the paper's formula as printed, sbh(34 + 5as/h) bytes (math kernel) or 34sbh (flash), scaled by "
        "e/2 for fp32 (the paper counts 2-byte elements), vs MemTracker per layer across s, b, h, kernel and dtype",
        tolerance="largest |measured / printed formula - 1| <= 5%",
        check=Check("max", value=5),
        needs=CPU,
        metric="act_paper_dev_pct",
        unit="%",
    ),
    Claim(
        id="mem.act_layer.torch_model",
        claim="the project's model of what torch saves per layer of this GPT (plugins/common/activations.py: no "
        "dropout, LayerNorm statistics, flash's logsumexp, fp32 math attention), not the paper's claim",
        source="this project: plugins/common/activations.py, from torch 2.13's code (SDPA kernels, LayerNorm, matmul)",
        expected="the model's bytes vs MemTracker per layer, the same configurations as mem.act_layer",
        tolerance="largest |measured / model - 1| <= 5%",
        check=Check("max", value=5),
        needs=CPU,
        metric="act_dev_pct",
        unit="%",
        parent="mem.act_layer",
    ),
)
