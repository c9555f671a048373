"""The attention plugin's parameters, its FLOP formula and the tolerances of its correctness check.

No torch import here: `bench list` reads the parameters without loading torch.

Shapes: q, k, v and the output are [B, H, n, d] (batch, heads, sequence length, head dim).

FLOPs (formula; FlashAttention-2 benchmark convention, Dao 2023 arXiv 2307.08691 sec. 4.1 and
flash-attn benchmarks/benchmark_flash_attention.py `flops()`):
  forward  = 4 * B * H * n^2 * d    (Q K^T and P V: two n x n x d matmuls, 2 FLOPs per multiply-add)
  causal   = half of that
  backward = 2.5 x forward          (5 matmuls: dV, dP, dQ, dK and the recomputed Q K^T)
  fwd+bwd  = 3.5 x forward
The same nominal count is used for every kernel, so TFLOP/s compare kernels on the same work.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.contract import param

IMPLS = ("naive", "sdpa_math", "sdpa_flash", "sdpa_efficient", "sdpa_cudnn", "flex")
SDPA_BACKENDS = {  # impl -> torch.nn.attention.SDPBackend member name
    "sdpa_math": "MATH",
    "sdpa_flash": "FLASH_ATTENTION",
    "sdpa_efficient": "EFFICIENT_ATTENTION",
    "sdpa_cudnn": "CUDNN_ATTENTION",
}
FUSED = ("sdpa_flash", "sdpa_efficient", "sdpa_cudnn", "flex")  # kernels that never hold the n x n scores
DTYPES = ("fp32", "bf16", "fp16")
ELEMENT_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
MODES = ("fwd", "fwdbwd")
BWD_FACTOR = 2.5  # backward FLOPs / forward FLOPs (FlashAttention-2 convention, see module doc)

# Correctness tolerance: max |out - ref| / max |ref| against the float64 reference. fp32 leaves room
# for a different summation order; 16-bit for the rounding of P (bf16: 8-bit mantissa, fp16: 11-bit).
REL_TOL = {"fp32": 1e-3, "bf16": 5e-2, "fp16": 1e-2}
GRAD_TOL_FACTOR = 4.0  # gradients go through more rounded products than the output
REF_ROWS = 256  # query rows the float64 reference covers (evenly spaced; all keys)

FLOP_NOTE = (
    "tflops = attention FLOPs / median time; FLOPs (formula): forward 4*B*H*n^2*d (QK^T and PV, "
    "2 FLOPs per multiply-add), halved when causal; fwd+bwd = 3.5x forward (backward 2.5x: 5 matmuls "
    "incl. the recomputed QK^T; FlashAttention-2 benchmark convention, arXiv 2307.08691)"
)
CHECK_NOTE = (
    f"checked before timing against a float64 naive reference on up to {REF_ROWS} evenly spaced query "
    "rows (all keys; fwdbwd: grad_out zero outside those rows, so dQ, dK, dV are exact); "
    "rel_error = max|out - ref| / max|ref|"
)
MEM_NOTE = "extra_mib = peak bytes allocated during one call above the live inputs (ctx.peak_above)"


@dataclass(frozen=True)
class AttentionParams:
    impl: str = param("sdpa_flash", "kernel: naive, SDPA with a forced backend, or FlexAttention", choices=IMPLS)
    seq: int = param(1024, "sequence length n (queries = keys)")
    heads: int = param(12, "attention heads H")
    head_dim: int = param(64, "head dimension d")
    batch: int = param(1, "batch size B")
    causal: bool = param(False, "causal mask (lower triangle; FLOPs halved)")
    dtype: str = param("fp32", "dtype of q, k, v and the kernel's arithmetic", choices=DTYPES)
    mode: str = param("fwd", "fwd: forward only; fwdbwd: forward + backward", choices=MODES)


def attention_flops(batch: int, heads: int, seq: int, head_dim: int, causal: bool, mode: str) -> float:
    """Nominal attention FLOPs of one call (see the module doc for the convention and its source)."""
    f = 4.0 * batch * heads * seq * seq * head_dim
    if causal:
        f /= 2
    return f * (1.0 + BWD_FACTOR) if mode == "fwdbwd" else f


def flops_of(p: AttentionParams) -> float:
    return attention_flops(p.batch, p.heads, p.seq, p.head_dim, p.causal, p.mode)


def scores_bytes(p: AttentionParams) -> int:
    """Bytes of one B*H*n*n score matrix in the case's dtype (what the naive and math kernels hold)."""
    return p.batch * p.heads * p.seq * p.seq * ELEMENT_BYTES[p.dtype]


def inputs_bytes(p: AttentionParams) -> int:
    """Bytes of q, k, v: 3 * B*H*n*d in the case's dtype."""
    return 3 * p.batch * p.heads * p.seq * p.head_dim * ELEMENT_BYTES[p.dtype]
