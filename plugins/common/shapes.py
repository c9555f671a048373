"""Published shapes of public model families, for planning: one table, each dimension with its source.

A shape builds plugins/common/gpt.py's GPT with the family's dimensions (layers, width, heads, key/value
heads, FFN width, vocabulary, context) and the architecture options the family needs (grouped-query
attention, SwiGLU, RMSNorm, RoPE, an untied output head). The GPT fuses Q|K|V into one matrix and the
SwiGLU gate|up into one: the parameter count is the family's exactly, the tensor names are not.

`param_count(cfg)` is the exact count of the GPT a config builds (tied weight once), checked in
tests/test_planner.py against the built model (meta device) and against each family's published total.
Pure arithmetic: no torch import.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

# Sources (the table's keys): every dimension of every shape names one of these and where in it
REFS = {
    "L3": "Dubey et al. 2024, The Llama 3 Herd of Models, arXiv 2407.21783",
    "L3c": "meta-llama/Llama-3.1-{8B,70B,405B} model card and config.json (Hugging Face)",
    "L1": "Touvron et al. 2023, LLaMA, arXiv 2302.13971",
    "L2": "Touvron et al. 2023, Llama 2, arXiv 2307.09288",
    "L2c": "meta-llama/Llama-2-{7b,70b}-hf model card and config.json (Hugging Face)",
    "G3": "Brown et al. 2020, Language Models are Few-Shot Learners, arXiv 2005.14165",
    "G2": "Radford et al. 2019, Language Models are Unsupervised Multitask Learners (GPT-2)",
}


@dataclass(frozen=True)
class Shape:
    """One published model shape. published: the total parameter count the source states (params)."""

    name: str
    layers: int
    d_model: int
    heads: int
    kv_heads: int
    ffn: int
    vocab: int
    context: int
    mlp: str  # "gelu" | "swiglu"
    norm: str  # "layernorm" | "rmsnorm"
    pos: str  # "learned" | "rope"
    bias: bool
    tie: bool
    published: float  # params, as printed (rounded)
    published_source: str
    tol: float  # relative: the printed figure's rounding (or the stated gap)
    sources: dict[str, str] = field(default_factory=dict)  # dimension -> where it is printed
    rope_theta: float = 10000.0


def _rounding(text: str) -> float:
    """Relative half-unit of the last printed digit: "8.03B" -> 0.005 / 8.03."""
    num = text.rstrip("B")
    decimals = len(num.split(".")[1]) if "." in num else 0
    return 0.5 * 10**-decimals / float(num)


def _llama3(size: str, layers: int, d: int, heads: int, ffn: int, published: float, text: str) -> Shape:
    return Shape(
        name=f"llama3-{size.lower()}",
        layers=layers,
        d_model=d,
        heads=heads,
        kv_heads=8,
        ffn=ffn,
        vocab=128256,
        context=8192,
        mlp="swiglu",
        norm="rmsnorm",
        pos="rope",
        bias=False,
        tie=False,
        rope_theta=500000.0,
        published=published,
        published_source="[L3c] model card",
        tol=_rounding(text),
        sources={
            "layers, d_model, FFN, heads, kv heads": "[L3] Table 3",
            "vocab": "[L3c] config.json vocab_size (Table 3 rounds it to 128,000)",
            "context": "[L3] sec. 3.4 (8K pre-training, then 128K)",
            "arch": "[L3] Table 3 (SwiGLU, RoPE theta 500,000); [L3c] (RMSNorm, no biases, untied head)",
        },
    )


def _llama2(size: str, layers: int, d: int, heads: int, kv: int, ffn: int, published: float, text: str) -> Shape:
    return Shape(
        name=f"llama2-{size.lower()}",
        layers=layers,
        d_model=d,
        heads=heads,
        kv_heads=kv,
        ffn=ffn,
        vocab=32000,
        context=4096,
        mlp="swiglu",
        norm="rmsnorm",
        pos="rope",
        bias=False,
        tie=False,
        published=published,
        published_source="[L2c] model card",
        tol=_rounding(text),
        sources={
            "layers, d_model, FFN, heads": "[L2c] config.json",
            "kv heads": "[L2] Table 1 (GQA at 34B/70B); [L2c] config.json",
            "vocab": "[L1] sec. 2.1 (32k); [L2] sec. 2.2 (same tokenizer)",
            "context": "[L2] Table 1 (4k)",
            "arch": "[L1] sec. 2.2 (pre-norm RMSNorm, SwiGLU of width 2/3 4d, RoPE); [L2c]",
        },
    )


def _gpt3(name: str, layers: int, d: int, heads: int, published: float, tol: float) -> Shape:
    return Shape(
        name=name,
        layers=layers,
        d_model=d,
        heads=heads,
        kv_heads=heads,
        ffn=4 * d,
        vocab=50257,
        context=2048,
        mlp="gelu",
        norm="layernorm",
        pos="learned",
        bias=True,
        tie=True,
        published=published,
        published_source="[G3] Table 2.1 n_params",
        tol=tol,
        sources={
            "layers, d_model, heads": "[G3] Table 2.1 (d_head 128)",
            "kv heads": "= heads: multi-head attention ([G3] sec. 2.1, GPT-2's)",
            "FFN": "[G3] sec. 2.1 (d_ff = 4 d_model)",
            "context": "[G3] sec. 2.1 (n_ctx 2048)",
            "vocab": "[G2] sec. 2.2 (50,257; [G3] sec. 2.1: GPT-2's tokenizer)",
            "arch": "[G3] sec. 2.1 (GPT-2's: pre-norm LayerNorm, GELU, learned positions, biases, tied embedding)",
        },
    )


SHAPES: dict[str, Shape] = {
    s.name: s
    for s in (
        _llama3("8B", 32, 4096, 32, 14336, 8.03e9, "8.03B"),
        _llama3("70B", 80, 8192, 64, 28672, 70.6e9, "70.6B"),
        _llama3("405B", 126, 16384, 128, 53248, 406e9, "406B"),
        _llama2("7B", 32, 4096, 32, 32, 11008, 6.74e9, "6.74B"),
        _llama2("70B", 80, 8192, 64, 8, 28672, 69e9, "69B"),
        # GPT-3: Table 2.1 prints 6.7B and 175.0B; its stated dimensions give 6.66B and 174.6B (biases, norms and
        # both embedding tables counted): the table rounds 6.7B to 2 digits and 175.0B is 0.23% above its own shape
        _gpt3("gpt3-6.7b", 32, 4096, 32, 6.7e9, 0.0075),
        _gpt3("gpt3-175b", 96, 12288, 96, 175.0e9, 0.0025),
    )
}


def shape_config(name: str, seq: int = 0) -> Any:
    """The GPTConfig of a published shape. seq: the training sequence length; learned positions
    need seq <= the shape's context (the table has that many rows)."""
    from plugins.common.gpt import GPTConfig

    if name not in SHAPES:
        raise ValueError(f"unknown shape {name!r}: one of {', '.join(SHAPES)}")
    s = SHAPES[name]
    if seq > s.context and s.pos == "learned":
        raise ValueError(f"{name}: --seq {seq} exceeds its learned position table ({s.context} positions)")
    return GPTConfig(
        n_layer=s.layers,
        n_head=s.heads,
        d_model=s.d_model,
        block_size=max(s.context, seq),
        vocab_size=s.vocab,
        bias=s.bias,
        n_kv_head=s.kv_heads if s.kv_heads != s.heads else 0,
        ffn_hidden=s.ffn,
        mlp=s.mlp,
        norm=s.norm,
        pos=s.pos,
        rope_theta=s.rope_theta,
        tie_embeddings=s.tie,
        # Llama's own layout (Meta's reference code, torchtitan, Hugging Face): separate wq/wk/wv and w1/w3
        # matrices; it decides which outputs torchtitan's selective checkpointing keeps (every other matmul)
        split_proj=s.name.startswith("llama"),
    )


def param_count(cfg: Any) -> int:
    """Exact parameter count of the GPT `cfg` builds (plugins/common/gpt.py; a tied weight once).
    Per layer: qkv d(d + 2 kv hd) (+ bias), proj d^2 (+ d), MLP d(k f) + f d (+ k f + d; k = 2 for
    SwiGLU), two norms (LayerNorm 2d with bias else d; RMSNorm d); then the token table V d, the
    head V d when untied, the position table block_size d when learned, the final norm."""
    d, a = cfg.d_model, cfg.n_head
    kv = cfg.n_kv_head or a
    hd = d // a
    f = cfg.ffn_hidden or 4 * d
    k = 2 if cfg.mlp == "swiglu" else 1
    b = 1 if cfg.bias else 0
    qkv = d * (d + 2 * kv * hd) + b * (d + 2 * kv * hd)
    proj = d * d + b * d
    mlp = d * k * f + f * d + b * (k * f + d)
    norm = d if cfg.norm == "rmsnorm" else (2 * d if cfg.bias else d)
    layer = qkv + proj + mlp + 2 * norm
    emb = cfg.vocab_size * d * (1 if cfg.tie_embeddings else 2)
    pos = cfg.block_size * d if cfg.pos == "learned" else 0
    return cfg.n_layer * layer + emb + pos + norm


def largest_module_params(cfg: Any) -> int:
    """Parameters of the largest single module (its own, not its children's): DeepSpeed's
    `largest_layer_params` (deepspeed/runtime/zero/stage3.py, model_to_params) for this GPT."""
    d, a = cfg.d_model, cfg.n_head
    kv = cfg.n_kv_head or a
    f = cfg.ffn_hidden or 4 * d
    k = 2 if cfg.mlp == "swiglu" else 1
    b = 1 if cfg.bias else 0
    hd = d // a
    if getattr(cfg, "split_proj", False):  # separate q (the largest of q, k, v) and gate / up matrices
        k = 1
        mods = [cfg.vocab_size * d, d * d + b * d, d * f + b * f, f * d + b * d]
    else:
        mods = [
            cfg.vocab_size * d,  # wte (and lm_head when untied)
            d * (d + 2 * kv * hd) + b * (d + 2 * kv * hd),
            d * k * f + b * k * f,
            f * d + b * d,
        ]
    if cfg.pos == "learned":
        mods.append(cfg.block_size * d)
    return max(mods)


def table_rows() -> list[list[str]]:
    """The shapes table (`bench list --plugin gpuplan`): one row per shape, each dimension's source."""
    rows = []
    for s in SHAPES.values():
        n = param_count(shape_config(s.name))
        rows.append(
            [
                s.name,
                str(s.layers),
                str(s.d_model),
                str(s.heads),
                str(s.kv_heads),
                str(s.ffn),
                str(s.vocab),
                str(s.context),
                f"{s.mlp}/{s.norm}/{s.pos}",
                f"{n:,}",
                f"{s.published / 1e9:g}B {s.published_source}",
                f"{100 * (n / s.published - 1):+.2f}%",
                "; ".join(f"{k}: {v}" for k, v in s.sources.items()),
            ]
        )
    return rows


TABLE_HEADER = [
    "shape",
    "layers",
    "d_model",
    "heads",
    "kv heads",
    "FFN",
    "vocab",
    "context",
    "mlp/norm/pos",
    "params (built, exact)",
    "published",
    "vs published",
    "sources",
]


def sources_text() -> str:
    """The table's source keys."""
    return "\n".join(f"[{k}] {v}" for k, v in REFS.items())


def replace(cfg: Any, **kw: Any) -> Any:
    """A config with some fields changed (e.g. fewer layers)."""
    return dataclasses.replace(cfg, **kw)
