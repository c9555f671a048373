"""Activation memory of plugins/common/gpt.py's GPT: the bytes a training forward keeps for backward,
per transformer layer, term by term, after Korthikanti et al. 2022 ("Reducing Activation
Recomputation in Large Transformer Models", arXiv 2205.05198, sec. 4.1), adapted to what this GPT
runs. Pure arithmetic (no torch import): the distributed simulator calls it at any size.

Notation (the paper's): s sequence length, b batch, h hidden size (d_model), a attention heads,
L layers, V vocabulary; e bytes per element of the activations' dtype (the paper: e = 2).

The paper, 16-bit, no recomputation, per layer: sbh(34 + 5as/h) bytes, i.e.
  attention   11sbh + 5as^2b: QKV input 2sbh, Q and K 4sbh, softmax output 2as^2b, softmax dropout
              mask as^2b, dropout output 2as^2b, V 2sbh, projection input 2sbh, dropout mask sbh
  MLP         19sbh: first linear input 2sbh, GeLU input 8sbh, second linear input 8sbh, dropout mask sbh
  LayerNorms  4sbh: two inputs of 2sbh
With fused (flash) attention the 5as^2b terms are gone: 34sbh.

This GPT (pre-norm Block: x + attn(ln1(x)), then x + mlp(ln2(x)); SDPA; GELU MLP of width 4h; no
dropout anywhere) as torch 2.13 saves it, checked tensor by tensor with
torch.autograd.graph.saved_tensors_hooks and measured with MemTracker (plugins/precision/activations.py,
`bench run --plugin precision --what activations`). Differences from the paper:
  - no dropout: the attention and MLP dropout masks (sbh + sbh in 16-bit) and the softmax dropout mask
    and output (3as^2b) are absent; the AV matmul's input is the softmax output itself;
  - LayerNorm also keeps its per-token mean and rstd (2sb values each);
  - flash attention keeps its output O (also the projection's input: one storage) and the
    per-row logsumexp (a*s*b fp32 values); Q, K, V are views of one qkv output (3sbh);
  - the math backend keeps scaled copies of Q and K (it multiplies both by d^-1/4), a contiguous
    copy of V (with b or a = 1 and no upcast a view instead, which keeps the whole qkv output: 3sbh),
    the softmax output (as^2b), and the projection's input as a copy (the transposed attention
    output made contiguous); it computes 16-bit attention in fp32 (torch's default, on any device;
    measured on a CPU: the saved Q, K, V copies and softmax output are fp32 for bf16 inputs);
  - LayerNorm's mean/rstd: the input dtype on a CPU (measured), fp32 on CUDA (torch source; not
    measured here).
Totals (e_att = 4 for 16-bit, else e): flash 16sbh*e + 4sb*e_stats + 4asb; math 13sbh*e + 3sbh*e_att
+ as^2b*e_att + 4sb*e_stats
(+2sbh*e when b or a is 1 and there is no upcast).
In 16-bit with flash that is 32sbh (+ the small terms): the paper's 34sbh less its two dropout masks;
with math, 26sbh + 12sbh + 4as^2b where the paper has 34sbh + 5as^2b (fp32 attention, no dropout).

The layer's input x is counted in the layer (as the paper does: "LayerNorm input"); it is the previous
layer's output, so L layers keep L times the per-layer figure, and the model adds the embedding and
head terms of `model_activation_bytes`.
"""

from __future__ import annotations

from typing import Any

# GPTConfig options (plugins/common/gpt.py) whose saved tensors differ and were not measured: their plain values
NOT_MODELLED = {"n_kv_head": 0, "mlp": "gelu", "norm": "layernorm", "pos": "learned"}
ATTENTION = ("flash", "math", "efficient")  # efficient: CUDA memory-efficient kernel (torch source; not measured)
ELEMENT_BYTES = {"fp32": 4, "float32": 4, "bf16": 2, "bfloat16": 2, "fp16": 2, "float16": 2, "half": 2}


def element_bytes(dtype: Any) -> int:
    """Bytes per element of a dtype given as "fp32"/"bf16"/"fp16" or a torch.dtype."""
    name = str(dtype).replace("torch.", "")
    if name not in ELEMENT_BYTES:
        raise ValueError(f"dtype {dtype!r}: one of fp32, bf16, fp16 (or the torch dtypes)")
    return ELEMENT_BYTES[name]


def default_attention(device_type: str, dtype: Any) -> str:
    """The SDPA kernel this GPT gets by default (causal, no mask, no dropout): on a CPU torch's flash
    kernel (any float dtype); on CUDA flash for 16-bit, the memory-efficient kernel for fp32
    (torch's priority order flash > efficient > math; flash needs 16-bit inputs)."""
    if device_type == "cuda" and element_bytes(dtype) == 4:
        return "efficient"
    return "flash"


def activation_bytes(
    cfg: Any, batch: int, seq: int, dtype: Any = "fp32", attention: str = "flash", device: str = "cpu"
) -> dict[str, int]:
    """Bytes one transformer layer of the GPT keeps for backward, per term, and their "total".

    cfg: a plugins.common.gpt.GPTConfig (uses d_model, n_head, ffn_hidden; refuses dropout > 0 and the
    options in NOT_MODELLED: grouped-query attention, SwiGLU, RMSNorm, RoPE); batch, seq: b and s;
    dtype: the dtype of the model's parameters and activations (no autocast): "fp32", "bf16", "fp16"
    or a torch.dtype; attention: the SDPA kernel, "flash", "math" or "efficient" (see
    default_attention); device: "cpu" or "cuda" (LayerNorm keeps its mean/rstd in the input dtype on a
    CPU, in fp32 on CUDA). Raises ValueError for what it does not model (dropout > 0, an unknown
    kernel). Stable: the distributed simulator calls it.
    """
    if getattr(cfg, "dropout", 0.0):
        raise ValueError("dropout > 0 is not modelled (the paper's dropout terms; this GPT's presets have none)")
    unmodelled = [
        f"{k}={getattr(cfg, k)!r}"
        for k, plain in NOT_MODELLED.items()
        if getattr(cfg, k, plain) not in (plain, cfg.n_head if k == "n_kv_head" else plain)
    ]
    if unmodelled:
        raise ValueError(f"not modelled (measured only for the plain GPT): {', '.join(unmodelled)}")
    if attention not in ATTENTION:
        raise ValueError(f"attention {attention!r}: one of {', '.join(ATTENTION)}")
    s, b, h, a = int(seq), int(batch), int(cfg.d_model), int(cfg.n_head)
    e = element_bytes(dtype)
    sbh = s * b * h
    e_stats = 4 if device == "cuda" else e  # LayerNorm mean/rstd: fp32 on CUDA (acc type), input dtype on CPU
    t: dict[str, int] = {}
    t["ln1_input"] = sbh * e  # paper: LayerNorm input 2sbh (the layer's input x)
    t["ln1_stats"] = 2 * s * b * e_stats  # not in the paper: mean and rstd per token
    t["qkv_input"] = sbh * e  # paper: QKV matmul input 2sbh (ln1's output)
    if attention == "math":
        # the math kernel computes 16-bit attention in fp32 unless torch.backends.cuda.allow_fp16_bf16_reduction_math_sdp
        # (default off; aten/src/ATen/native/transformers/attention.cpp, _scaled_dot_product_attention_math: query_acc)
        e_att = 4 if e == 2 else e
        t["q_k_scaled"] = 2 * sbh * e_att  # paper: Q and K 4sbh (math keeps q*d^-1/4 and k*d^-1/4: copies)
        # paper: V 2sbh. Not a case fitted to one configuration: it follows from torch's code. The math
        # kernel's attn @ v is at::matmul, which folds the batch dims of v (b, a, s, d) into (b*a, s, d) with
        # reshape (aten/src/ATen/native/LinearAlgebra.cpp, _matmul_impl), and bmm saves that input for
        # backward. v is a view of the qkv output (split, view, transpose: strides (3sh, d, 3h, 1)); reshape
        # returns a view only when the merged dims' strides are compatible (computeStride in
        # aten/src/ATen/TensorUtils.cpp): stride_b = 3sh != a * stride_a = h in general, so it copies v
        # (sbh), but a dim of size 1 always merges, so with b or a = 1 the saved tensor is a view and keeps
        # the whole qkv storage alive (3sbh). A 16-bit input is upcast first (.to(float): a copy), so only
        # without upcast. Checked with saved_tensors_hooks (tests/test_activations.py).
        t["v"] = (3 if min(a, b) == 1 and e_att == e else 1) * sbh * e_att
        t["softmax"] = a * s * s * b * e_att  # paper: softmax output 2as^2b (no dropout: also the AV input)
        t["proj_input"] = sbh * e  # paper: projection input 2sbh (transpose(1, 2).contiguous() copies)
    else:
        t["qkv"] = 3 * sbh * e  # paper: Q, K 4sbh + V 2sbh (flash keeps q, k, v: views of the qkv output)
        t["attn_output"] = sbh * e  # paper: projection input 2sbh (flash keeps O; the projection reads it)
        rows = s if attention == "flash" else -(-s // 32) * 32  # efficient pads lse to 32 rows (torch source)
        t["logsumexp"] = a * rows * b * 4  # not in the paper: fp32 softmax statistics per row
    t["ln2_input"] = sbh * e  # paper: LayerNorm input 2sbh (x + attn)
    t["ln2_stats"] = 2 * s * b * e_stats  # not in the paper
    t["fc_input"] = sbh * e  # paper: first linear input 2sbh
    w = int(getattr(cfg, "ffn_hidden", 0) or 4 * h)  # MLP width (the paper: 4h)
    t["gelu_input"] = s * b * w * e  # paper: GeLU input 8sbh
    t["fc2_input"] = s * b * w * e  # paper: second linear input 8sbh
    # paper: attention dropout mask sbh, MLP dropout mask sbh, softmax dropout mask as^2b and output
    # 2as^2b: this GPT has no dropout (0 bytes)
    t["total"] = sum(t.values())
    return t


def model_activation_bytes(
    cfg: Any, batch: int, seq: int, dtype: Any = "fp32", attention: str = "flash", device: str = "cpu"
) -> dict[str, int]:
    """Bytes the whole GPT keeps at the end of a training forward (loss computed), per term and
    "total": L layers (activation_bytes) + the embedding and head terms. "logits" is held by the
    caller (GPT.forward returns it) until the statement ends; "kept_for_backward" leaves it out (what
    is alive when backward starts in `_, loss = model(x, y); loss.backward()`).
    """
    s, b, h, v = int(seq), int(batch), int(cfg.d_model), int(cfg.vocab_size)
    e = element_bytes(dtype)
    e_stats = 4 if device == "cuda" else e
    layer = activation_bytes(cfg, batch, seq, dtype, attention, device)["total"]
    t: dict[str, int] = {}
    t["layers"] = int(cfg.n_layer) * layer
    t["positions"] = s * 8  # int64 positions, kept by wpe's backward (the token ids are an input)
    t["ln_f_stats"] = 2 * s * b * e_stats  # final LayerNorm mean/rstd (its input: the last layer's output)
    t["head_input"] = s * b * h * e  # lm_head's input (ln_f's output)
    t["log_softmax"] = s * b * v * 4  # cross_entropy on logits.float(): log-probabilities kept, fp32
    t["logits"] = s * b * v * e  # returned to the caller
    t["kept_for_backward"] = sum(x for k, x in t.items() if k != "logits")
    t["total"] = t["kept_for_backward"] + t["logits"]
    return t


def korthikanti_bytes(cfg: Any, batch: int, seq: int, dtype: Any = "bf16", fused: bool = False) -> int:
    """The paper's per-layer figure as printed (sec. 4.1), at the dtype's element size:
    sbh(34 + 5as/h) * e/2 bytes; fused (flash) attention: 34sbh * e/2."""
    s, b, h, a = int(seq), int(batch), int(cfg.d_model), int(cfg.n_head)
    e = element_bytes(dtype)
    unit = 34 * s * b * h + (0 if fused else 5 * a * s * s * b)  # bytes at e = 2
    return unit * e // 2
