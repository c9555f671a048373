"""A small GPT-style decoder (nanoGPT-like): token + position embeddings, pre-norm blocks of
causal self-attention (SDPA) and a 4x GELU MLP, final LayerNorm, tied LM head.

Shapes: idx (B, T) int64 -> logits (B, T, vocab). Parameter count, untied embedding counted
once: 12 * L * d^2 (blocks: 4d^2 attention + 8d^2 MLP) + (vocab + block_size) * d + biases/norms.
GPTConfig's options (grouped-query attention, SwiGLU, RMSNorm, RoPE, an untied head) build the published
shapes of plugins/common/shapes.py; their defaults leave the GPT above exactly as it is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass(frozen=True)
class GPTConfig:
    n_layer: int = 4
    n_head: int = 4
    d_model: int = 256
    block_size: int = 256  # max sequence length
    vocab_size: int = 256  # byte-level text
    dropout: float = 0.0
    bias: bool = True
    # Options for the published shapes of plugins/common/shapes.py; the defaults are the GPT above.
    n_kv_head: int = 0  # key/value heads; 0 = n_head; fewer = grouped-query attention (Ainslie et al. 2023)
    ffn_hidden: int = 0  # MLP width; 0 = 4 * d_model
    mlp: str = "gelu"  # "gelu": fc -> GELU -> proj; "swiglu": proj(silu(gate) * up) (Shazeer 2020), gate|up fused in fc
    norm: str = "layernorm"  # or "rmsnorm" (Zhang & Sennrich 2019; weight only)
    pos: str = "learned"  # "learned": wpe table of block_size rows; "rope": rotary, no parameters (Su et al. 2021)
    rope_theta: float = 10000.0  # RoPE base (Llama 3: 500000)
    tie_embeddings: bool = True  # lm_head shares wte's weight (GPT-2); False: its own vocab x d matrix
    checkpoint: bool = False  # activation checkpointing per block (torch.utils.checkpoint, non-reentrant)


# Named sizes. The numbers in the comments are parameter counts with vocab 256.
PRESETS: dict[str, GPTConfig] = {
    "tiny": GPTConfig(n_layer=2, n_head=2, d_model=64, block_size=128),  # ~0.12M
    "small": GPTConfig(n_layer=4, n_head=4, d_model=256, block_size=256),  # ~3.3M
    "medium": GPTConfig(n_layer=6, n_head=8, d_model=512, block_size=512),  # ~19.3M
    "large": GPTConfig(n_layer=12, n_head=12, d_model=768, block_size=1024),  # ~86M
    "1b": GPTConfig(n_layer=24, n_head=16, d_model=2048, block_size=2048),  # ~1.2B
}


def rope(x: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotary position embedding (Su et al. 2021, arXiv 2104.09864, eq. 34; the half-split pairing of
    Llama's reference code): x (B, H, T, hd) rotated by position * theta^(-2i/hd), i < hd/2."""
    T, hd = x.size(-2), x.size(-1)
    inv = theta ** (-torch.arange(0, hd, 2, device=x.device, dtype=torch.float32) / hd)  # (hd/2,)
    ang = torch.outer(torch.arange(T, device=x.device, dtype=torch.float32), inv)  # (T, hd/2)
    cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
    x1, x2 = x[..., : hd // 2], x[..., hd // 2 :]
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        assert cfg.d_model % cfg.n_head == 0
        self.n_kv = cfg.n_kv_head or cfg.n_head
        assert cfg.n_head % self.n_kv == 0, "n_head must be a multiple of n_kv_head"
        hd = cfg.d_model // cfg.n_head
        # one fused projection: q (n_head*hd) | k (n_kv*hd) | v (n_kv*hd); 3d outputs without GQA
        self.qkv = nn.Linear(cfg.d_model, cfg.d_model + 2 * self.n_kv * hd, bias=cfg.bias)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=cfg.bias)
        self.n_head = cfg.n_head
        self.dropout = cfg.dropout
        self.rope_theta = cfg.rope_theta if cfg.pos == "rope" else 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        hd = C // self.n_head
        if self.n_kv == self.n_head:
            q, k, v = self.qkv(x).split(C, dim=2)
            # (B, T, C) -> (B, H, T, C/H)
            q, k, v = (t.view(B, T, self.n_head, hd).transpose(1, 2) for t in (q, k, v))
        else:  # grouped-query: (B, T, n_kv * hd) -> (B, n_kv, T, hd) for k and v
            q, k, v = self.qkv(x).split((C, self.n_kv * hd, self.n_kv * hd), dim=2)
            q = q.view(B, T, self.n_head, hd).transpose(1, 2)
            k, v = (t.view(B, T, self.n_kv, hd).transpose(1, 2) for t in (k, v))
        if self.rope_theta:
            q, k = rope(q, self.rope_theta), rope(k, self.rope_theta)
        gqa = {"enable_gqa": True} if self.n_kv != self.n_head else {}  # K/V heads shared by n_head/n_kv queries
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0, **gqa
        )
        return self.proj(y.transpose(1, 2).contiguous().view(B, T, C))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        width = cfg.ffn_hidden or 4 * cfg.d_model
        self.swiglu = cfg.mlp == "swiglu"
        # SwiGLU: gate and up projections fused into one (d, 2 * width) matrix
        self.fc = nn.Linear(cfg.d_model, (2 if self.swiglu else 1) * width, bias=cfg.bias)
        self.proj = nn.Linear(width, cfg.d_model, bias=cfg.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.swiglu:
            gate, up = self.fc(x).chunk(2, dim=-1)
            return self.proj(F.silu(gate) * up)
        return self.proj(F.gelu(self.fc(x)))


def make_norm(cfg: GPTConfig) -> nn.Module:
    if cfg.norm == "rmsnorm":
        return nn.RMSNorm(cfg.d_model, eps=1e-5)
    return nn.LayerNorm(cfg.d_model, bias=cfg.bias)


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln1 = make_norm(cfg)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = make_norm(cfg)
        self.mlp = MLP(cfg)
        self.checkpoint = cfg.checkpoint

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.checkpoint and torch.is_grad_enabled():
            # keeps only the block's input; backward recomputes the block (inside the module, so an FSDP
            # wrapper's hooks see one forward)
            from torch.utils.checkpoint import checkpoint

            return checkpoint(self._forward, x, use_reentrant=False)
        return self._forward(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.wpe = nn.Embedding(cfg.block_size, cfg.d_model) if cfg.pos == "learned" else None
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.n_layer)])
        self.ln_f = make_norm(cfg)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.wte.weight  # weight tying (GPT-2)
        self.apply(self._init)
        for n, p in self.named_parameters():  # GPT-2 scaled init of residual projections
            if n.endswith("proj.weight"):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, 0.0, 0.02)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        _, T = idx.shape
        if self.wpe is not None:
            pos = torch.arange(T, device=idx.device)
            x = self.wte(idx) + self.wpe(pos)
        else:  # rotary positions are applied inside attention
            x = self.wte(idx)
        for b in self.blocks:
            x = b(x)
        logits = self.lm_head(self.ln_f(x))
        if targets is None:
            return logits
        return logits, F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.view(-1))

    def num_params(self, non_embedding: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())  # tied weight counted once
        if non_embedding:
            n -= self.wte.weight.numel() + (self.wpe.weight.numel() if self.wpe is not None else 0)
        return n


def config_from(preset: str | None = None, **over: int) -> GPTConfig:
    """A preset, with explicit fields (n_layer, d_model, ...) overriding it where given (non-zero)."""
    base = PRESETS[preset or "small"]
    fields = {k: v for k, v in over.items() if v}
    if "d_model" in fields and "n_head" not in fields:
        fields["n_head"] = max(1, fields["d_model"] // 64)
    return GPTConfig(**{**base.__dict__, **fields})
