"""The quantization plugin's parameters and scheme names (no torch import: `bench list` reads them).

One case = one scheme applied to every Linear of a real model's transformer blocks (GPT preset of
plugins/common/gpt.py: attn.qkv, attn.proj, mlp.fc, mlp.proj; the tied embedding/LM head and the
LayerNorms stay in --dtype, as LLM.int8() and QLoRA leave them):
  fp32, bf16, fp16     the unquantized layers (references)
  int8_naive           weight.to(torch.int8): the naive cast, no scale (truncates toward zero)
  int8_tensor          absmax over the whole weight matrix: one fp32 scale per tensor, round to nearest
  int8_rowwise         absmax per output row, round to nearest, fp32 scale per row (LLM.int8()'s
                       vector-wise quantization, arXiv 2208.07339 sec. 3.1)
                       (the three int8_* are plain torch: dequantize then matmul, so their time is
                       not a kernel's and is not measured)
  llm_int8             bitsandbytes Linear8bitLt (int8 weights + fp32 row scales SCB; outlier features
                       above --threshold in 16-bit: the mixed-precision decomposition)
  nf4, fp4             bitsandbytes Linear4bit, blocks of 64 with an fp32 absmax each
  nf4_dq, fp4_dq       ... with double quantization: absmax in 8 bits, fp32 second-level absmax per 256
                       blocks (QLoRA, arXiv 2305.14314 sec. 3)
  ao_int8_dyn          torchao Int8DynamicActivationInt8WeightConfig (int8 weights per row, activations
                       quantized per token at run time)
  ao_int4_wo           torchao int4 weight-only, groups of --group-size (CPU: the prototype opaque
                       packing; CUDA: tinygemm tile packing)
  adamw, adamw8bit     optimizer-state bytes per parameter after a real step: torch AdamW vs
                       bitsandbytes AdamW8bit
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.contract import param
from plugins.common.numerics import PRESET_NAMES

REFERENCE = ("fp32", "bf16", "fp16")
OWN = ("int8_naive", "int8_tensor", "int8_rowwise")
BNB = ("llm_int8", "nf4", "nf4_dq", "fp4", "fp4_dq")
TORCHAO = ("ao_int8_dyn", "ao_int4_wo")
OPTIMIZERS = ("adamw", "adamw8bit")
SCHEMES = REFERENCE + OWN + BNB + TORCHAO + OPTIMIZERS
LIBRARY = {s: "bitsandbytes" for s in (*BNB, "adamw8bit")} | {s: "torchao" for s in TORCHAO}
LINEARS = (("attn", "qkv"), ("attn", "proj"), ("mlp", "fc"), ("mlp", "proj"))  # per block
TEXT_BATCH, TEXT_SEQ = 4, 64  # real text behind the error figures (and the timed activations)
SMALL_MODELS = ("tiny", "small", "medium")  # <= 20M parameters: a case cannot exhaust memory


@dataclass(frozen=True)
class QuantParams:
    scheme: str = param("llm_int8", "quantization scheme (see `bench list --plugin quantization`)", choices=SCHEMES)
    model: str = param("medium", "GPT preset whose block Linears are quantized", choices=PRESET_NAMES)
    dtype: str = param(
        "bf16",
        "activation/compute dtype, and the unquantized layer timed beside each scheme",
        choices=("bf16", "fp16", "fp32"),
    )
    max_batch: int = param(64, "timed batch sizes (rows of the layer's input): 1, 16, 256, ... up to this")
    threshold: float = param(6.0, "llm_int8: outlier threshold of the mixed-precision decomposition (0 = none)")
    group_size: int = param(128, "ao_int4_wo: weights per scale/zero point")


def batch_sizes(max_batch: int) -> list[int]:
    """1, 16, 256, ... (x16) up to max_batch, and max_batch itself."""
    out, b = [], 1
    while b <= max_batch:
        out.append(b)
        b *= 16
    if out[-1] != max_batch:
        out.append(max_batch)
    return out


def timed(p: QuantParams) -> bool:
    """Is the scheme's speed measured? Not for the plain-torch int8 references (dequantize + matmul:
    not a kernel's time) nor for the unquantized layer in --dtype itself (a ratio of 1 by construction)."""
    return p.scheme not in OWN and p.scheme != p.dtype
