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
    # Activation checkpointing as torchtitan configures it (torchtitan/parallelisms/parallelize_llama.py at commit
    # 9dec370, the one docs/performance.md's tables name): "none"; "full": every block (= checkpoint=True);
    # "selective": ac_every = 0 -> the `op` policy (SAVE_OPS below), ac_every = k > 0 -> full checkpointing of every
    # k-th block (torchtitan's selective_ac_option = k)
    ac: str = "none"
    ac_every: int = 0
    split_proj: bool = False  # separate Q, K, V and gate, up matrices (Meta's / torchtitan's Llama layout)


# torchtitan's `op` policy (parallelize_llama.py, _save_list and _custom_policy at 9dec370): the outputs of these
# ops are saved, the rest recomputed in backward, and of the matmuls only every other one (the 1st, 3rd, ... of a
# block's forward). Added here: the CPU kernel of flash attention (a simulation runs on CPU, where SDPA
# dispatches to it; it is the same op's CPU backend) and addmm (a Linear with a bias: the default GPT's matmuls).
def _save_ops() -> tuple[set, set]:
    a = torch.ops.aten
    mm = {a.mm.default, a.addmm.default}
    save = mm | {
        a._scaled_dot_product_efficient_attention.default,
        a._scaled_dot_product_flash_attention.default,
        a._scaled_dot_product_flash_attention_for_cpu.default,
        torch.ops._c10d_functional.reduce_scatter_tensor.default,
        a.abs.default,
        a.max.default,
    }
    return save, mm


def op_policy_context() -> tuple:
    """torchtitan's selective_checkpointing_context_fn: a fresh matmul count per block and forward/recompute."""
    from collections import defaultdict

    from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts

    save, mm = _save_ops()
    meta: dict[str, int] = defaultdict(int)

    def policy(ctx, func, *args, **kwargs):  # type: ignore[no-untyped-def]
        key = "recompute" if ctx.is_recompute else "forward"
        if func in mm:
            meta[key] += 1
        keep = func in save and not (func in mm and meta[key] % 2 == 0)
        return CheckpointPolicy.MUST_SAVE if keep else CheckpointPolicy.PREFER_RECOMPUTE

    return create_selective_checkpoint_contexts(policy)


def block_ac(cfg: GPTConfig, index: int) -> str:
    """The checkpointing of block `index` (0-based): "", "full" or "op". torchtitan counts blocks from 1 and
    checkpoints those whose count is a multiple of k."""
    if cfg.checkpoint or cfg.ac == "full":
        return "full"
    if cfg.ac == "selective":
        if cfg.ac_every <= 0:
            return "op"
        return "full" if (index + 1) % cfg.ac_every == 0 else ""
    return ""


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
        self.split = cfg.split_proj
        if self.split:  # wq, wk, wv as Meta's Llama (three matmuls, in that order)
            self.q = nn.Linear(cfg.d_model, cfg.d_model, bias=cfg.bias)
            self.k = nn.Linear(cfg.d_model, self.n_kv * hd, bias=cfg.bias)
            self.v = nn.Linear(cfg.d_model, self.n_kv * hd, bias=cfg.bias)
        else:  # one fused projection: q (n_head*hd) | k (n_kv*hd) | v (n_kv*hd); 3d outputs without GQA
            self.qkv = nn.Linear(cfg.d_model, cfg.d_model + 2 * self.n_kv * hd, bias=cfg.bias)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=cfg.bias)
        self.n_head = cfg.n_head
        self.dropout = cfg.dropout
        self.rope_theta = cfg.rope_theta if cfg.pos == "rope" else 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        hd = C // self.n_head
        if self.split:
            q = self.q(x).view(B, T, self.n_head, hd).transpose(1, 2)
            k, v = (lin(x).view(B, T, self.n_kv, hd).transpose(1, 2) for lin in (self.k, self.v))
        elif self.n_kv == self.n_head:
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
        self.split = self.swiglu and cfg.split_proj
        # SwiGLU: gate and up projections fused into one (d, 2 * width) matrix; split: gate (w1) and up (w3)
        self.fc = nn.Linear(cfg.d_model, (1 if self.split or not self.swiglu else 2) * width, bias=cfg.bias)
        if self.split:
            self.up = nn.Linear(cfg.d_model, width, bias=cfg.bias)
        self.proj = nn.Linear(width, cfg.d_model, bias=cfg.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.split:  # torchtitan's w2(silu(w1(x)) * w3(x)): gate's matmul first
            return self.proj(F.silu(self.fc(x)) * self.up(x))
        if self.swiglu:
            gate, up = self.fc(x).chunk(2, dim=-1)
            return self.proj(F.silu(gate) * up)
        return self.proj(F.gelu(self.fc(x)))


def make_norm(cfg: GPTConfig) -> nn.Module:
    if cfg.norm == "rmsnorm":
        return nn.RMSNorm(cfg.d_model, eps=1e-5)
    return nn.LayerNorm(cfg.d_model, bias=cfg.bias)


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig, index: int = 0):
        super().__init__()
        self.ln1 = make_norm(cfg)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = make_norm(cfg)
        self.mlp = MLP(cfg)
        self.ac = block_ac(cfg, index)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.ac and torch.is_grad_enabled():
            # full: keeps only the block's input; op: also the outputs the policy saves; backward recomputes the
            # rest (inside the module, so an FSDP wrapper's hooks see one forward)
            from torch.utils.checkpoint import checkpoint

            if self.ac == "op":
                return checkpoint(self._forward, x, use_reentrant=False, context_fn=op_policy_context)
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
        self.blocks = nn.ModuleList([Block(cfg, i) for i in range(cfg.n_layer)])
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
