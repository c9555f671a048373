"""Names the inference plugin's parameters take, importable without torch (`bench list`)."""

from __future__ import annotations

MODES = ("decode", "cache", "sampling")
PLAIN = ("fp32", "bf16", "fp16")
BNB = ("llm_int8", "nf4")
TORCHAO = ("ao_int8_wo", "ao_int4_wo")
FORMATS = PLAIN + BNB + TORCHAO
LIBRARY = {**{f: "bitsandbytes" for f in BNB}, **{f: "torchao" for f in TORCHAO}}
REFERENCE = "bf16"  # the 16-bit model the quantized formats are compared with
# sampling case: the samplers' settings (vocab 256: top-k keeps ~4% of it)
TOP_K, TOP_P, TEMP = 10, 0.9, 0.7

# per case: what the afford probe may plan a decode case's timings for, and each timed measurement's cap, s
BUDGET_S = {"quick": 8.0, "full": 60.0, "gpu": 8.0}
MEASURE_S = {"quick": 0.15, "full": 1.0, "gpu": 0.3}
MIN_REPEATS = {"quick": 2, "full": 5, "gpu": 3}  # timed generations per batch size at least


def batch_sizes(max_batch: int) -> list[int]:
    """1, 4, 16, 64, ... (x4) up to max_batch, and max_batch itself."""
    out, b = [], 1
    while b <= max_batch:
        out.append(b)
        b *= 4
    if out[-1] != max_batch:
        out.append(max_batch)
    return out
