"""The claims of shared/claims.md (and the notes, shared/seed/week1-notes.md) that the precision plugin
judges: ids, statements, sources and checks. Verdicts the plugin gives itself (Check("plugin")) are
computed in plugins/precision/verdicts.py from the numbers in the rows."""

from __future__ import annotations

from bench.contract import Check, Claim

CPU = "run `bench run --plugin precision` (CPU is enough)"

CLAIMS: tuple[Claim, ...] = (
    Claim(
        id="mem.store_fp32",
        claim="1B params take 4 GB at fp32",
        source="course notes week 1; IEEE 754 binary32 = 4 bytes",
        expected="4 bytes/param",
        tolerance="exact",
        check=Check("exact", value=4),
        needs=CPU,
        metric="bytes_per_param",
        unit="bytes/param",
    ),
    Claim(
        id="mem.store_16bit",
        claim="16-bit (fp16, bf16) halves it: 2 GB",
        source="course notes week 1; IEEE 754 binary16 / bfloat16 = 2 bytes",
        expected="2 bytes/param",
        tolerance="exact",
        check=Check("exact", value=2),
        needs=CPU,
        metric="bytes_per_param",
        unit="bytes/param",
    ),
    Claim(
        id="mem.train_24x",
        claim="training 1B at fp32 needs ~24 GB (weights 4 + Adam 8 + grads 4 + activations 8 bytes/param), ~6x the weights",
        source="course notes week 1",
        expected="a 1.2B-parameter GPT, fp32 + AdamW, one step at a stated batch x sequence (default 1 x 2048): "
        "model states at rest exactly 16 bytes/param, the step's peak ~24 bytes/param",
        tolerance="states exact; peak within 24 +-10%; the verdict names the tokens per batch where that holds",
        check=Check("plugin"),
        needs=CPU,
        metric="total_bytes_per_param",
        unit="bytes/param",
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
        source="course notes week 1; int8 range -128..127",
        expected="3",
        tolerance="exact",
        check=Check("exact", value="3"),
        needs=CPU,
        metric="value",
    ),
    Claim(
        id="prec.ranges",
        claim="fp32 max ~3.4e38; fp16 max 65504; bf16 max ~3.39e38",
        source="course notes week 1; torch.finfo; IEEE 754",
        expected="torch.finfo max 3.4028e38 / 65504 / 3.3895e38, written at the digits the notes give",
        tolerance="at the digits the notes give (3.4e38: 2 significant digits, 65504: all 5, 3.39e38: 3), not exact",
        check=Check("plugin"),
        needs=CPU,
        metric="max",
    ),
    Claim(
        id="prec.bf16_training",
        claim="bf16 trains like fp32 (most popular choice)",
        source="course notes week 1",
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
        source="course notes week 1 (Quantization, FP16)",
        expected="a cast to fp16 keeps values scaled into range (1e5 finite, 1e-8 non-zero)",
        tolerance="every stored value vs an unscaled round-to-nearest-even (CPython struct): equal everywhere = no scale",
        check=Check("plugin"),
        needs=CPU,
        metric="mismatches",
        unit="values",
        known_error='fp16 "projects ... using scaling factors": tensor.to(float16) is a plain rounding, no scale '
        "(scaling enters as loss scaling of gradients, or in int8/fp8 quantization)",
    ),
    Claim(
        id="prec.bf16_truncation",
        claim='BFLOAT16 is a "truncated" 32-bit float: same exponent bits as FP32, fraction truncated to 7 bits',
        source="course notes week 1 (BFLOAT16)",
        expected="layout 1/8/7 (fp32: 1/8/23) and fp32 -> bf16 conversion by truncation",
        tolerance="layout exact; every probe value stored as its truncation",
        check=Check("plugin"),
        needs=CPU,
        metric="differ_from_truncation",
        unit="values",
        known_error='bf16 "truncates the fraction": torch rounds to nearest even (0.1 -> 0.10009765625, '
        "truncation would give 0.099609375); the layout part holds",
    ),
    Claim(
        id="mem.act_layer",
        claim="a transformer layer keeps sbh(34 + 5as/h) bytes of activations for backward in 16-bit without "
        "recomputation; 34sbh with fused (flash) attention",
        source="Korthikanti et al. 2022, arXiv 2205.05198, sec. 4.1",
        expected="the paper's terms adapted to this GPT (no dropout; LayerNorm statistics; flash keeps its output "
        "and logsumexp; the math kernel computes 16-bit attention in fp32: plugins/common/activations.py) vs "
        "MemTracker per layer, across s, b, h, kernel and dtype",
        tolerance="largest |measured / formula - 1| <= 5%",
        check=Check("max", value=5),
        needs=CPU,
        metric="act_dev_pct",
        unit="%",
    ),
)
