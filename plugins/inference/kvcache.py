"""Autoregressive generation over plugins/common/gpt.py's GPT with a preallocated KV cache.

The GPT's own forward recomputes every position; this module reuses its modules (wte, wpe, each
block's ln1 / attn.qkv / attn.proj / ln2 / mlp, ln_f, lm_head) and keeps each layer's keys and
values so that a decode step runs one new position per sequence:

  prefill   positions 0..P-1 of the prompt in one forward: fills cache[:, :, :P], logits of the
            last position (the first generated token: time to first token)
  decode    one position t per step: writes cache[:, :, t], attends to cache[:, :, :t+1]

Cache layout (gpt-fast / HF StaticCache style, allocated once for the whole generation):
  k, v per layer: (batch, kv_heads, max_tokens, head_dim) in the model's activation dtype, so
  bytes = 2 (K and V) * layers * kv_heads * head_dim * element_size * max_tokens * batch.
kv_heads = cfg.n_kv_head where the config has grouped-query attention (Ainslie et al. 2023,
arXiv 2305.13245), else n_head; the fused qkv Linear's output is split [q | k | v] with widths
n_head*hd, kv*hd, kv*hd, and SDPA repeats each K/V head for n_head/kv query heads (enable_gqa).
Positions: the learned table (wpe) at the new positions, or, with cfg.pos == "rope", q and k rotated
at their absolute positions before k enters the cache (the GPT's own rope(), offset by the cache
length; Su et al. 2021). The MLP (GELU or SwiGLU) and the norms are the blocks' own modules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F


def kv_heads(cfg: Any) -> int:
    """KV heads of a config: n_kv_head where grouped-query attention sets it, else n_head."""
    return int(getattr(cfg, "n_kv_head", None) or cfg.n_head)


def head_dim(cfg: Any) -> int:
    return int(cfg.d_model // cfg.n_head)


def kv_formula_bytes(cfg: Any, element_size: int, tokens: int, batch: int) -> int:
    """2 (K and V) * layers * kv_heads * head_dim * bytes per element * tokens * batch."""
    return 2 * int(cfg.n_layer) * kv_heads(cfg) * head_dim(cfg) * int(element_size) * int(tokens) * int(batch)


@dataclass
class KVCache:
    """Per-layer K and V, (batch, kv_heads, max_tokens, head_dim); `length` positions are filled."""

    k: list[torch.Tensor]
    v: list[torch.Tensor]
    length: int = 0

    @classmethod
    def allocate(cls, cfg: Any, batch: int, max_tokens: int, dtype: torch.dtype, device: torch.device) -> KVCache:
        shape = (batch, kv_heads(cfg), max_tokens, head_dim(cfg))
        k = [torch.empty(shape, dtype=dtype, device=device) for _ in range(cfg.n_layer)]
        v = [torch.empty(shape, dtype=dtype, device=device) for _ in range(cfg.n_layer)]
        return cls(k, v, 0)

    @property
    def max_tokens(self) -> int:
        return int(self.k[0].shape[2])

    def nbytes(self) -> int:
        """numel * element_size of every cache tensor."""
        return sum(int(t.numel() * t.element_size()) for t in self.k + self.v)

    def bytes_used(self) -> int:
        """Bytes of the filled positions (what a decode step at this length reads)."""
        return self.nbytes() * self.length // self.max_tokens


def rope_at(x: torch.Tensor, theta: float, start: int) -> torch.Tensor:
    """plugins/common/gpt.rope (half-split pairing) for x (B, H, T, hd) at positions start..start+T-1."""
    T, hd = x.size(-2), x.size(-1)
    inv = theta ** (-torch.arange(0, hd, 2, device=x.device, dtype=torch.float32) / hd)  # (hd/2,)
    ang = torch.outer(torch.arange(start, start + T, device=x.device, dtype=torch.float32), inv)  # (T, hd/2)
    cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
    x1, x2 = x[..., : hd // 2], x[..., hd // 2 :]
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


def activation_dtype(model: torch.nn.Module) -> torch.dtype:
    """The dtype activations flow in: the embedding's (quantized layers keep 16-bit embeddings)."""
    return model.wte.weight.dtype  # type: ignore[union-attr]


def _attend(blk: Any, cfg: Any, h: torch.Tensor, cache: KVCache, i: int, start: int) -> torch.Tensor:
    B, T, _C = h.shape
    nh, kvh, hd = cfg.n_head, kv_heads(cfg), head_dim(cfg)
    q, k, v = blk.attn.qkv(h).split([nh * hd, kvh * hd, kvh * hd], dim=2)
    q = q.view(B, T, nh, hd).transpose(1, 2)  # (B, nh, T, hd)
    k = k.view(B, T, kvh, hd).transpose(1, 2)  # (B, kvh, T, hd)
    v = v.view(B, T, kvh, hd).transpose(1, 2)
    if getattr(cfg, "pos", "learned") == "rope":
        theta = float(cfg.rope_theta)
        q, k = rope_at(q, theta, start), rope_at(k, theta, start)
    end = start + T
    cache.k[i][:, :, start:end] = k
    cache.v[i][:, :, start:end] = v
    keys, values = cache.k[i][:, :, :end], cache.v[i][:, :, :end]
    gqa = {"enable_gqa": True} if kvh != nh else {}
    if T == 1:  # one new position attends to every cached one: no mask
        y = F.scaled_dot_product_attention(q, keys, values, **gqa)
    elif start == 0:  # prefill: plain causal
        y = F.scaled_dot_product_attention(q, keys, values, is_causal=True, **gqa)
    else:  # a chunk after cached positions: query j sees keys 0..start+j
        mask = torch.ones(T, end, dtype=torch.bool, device=h.device).tril(diagonal=start)
        y = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, **gqa)
    return blk.attn.proj(y.transpose(1, 2).contiguous().view(B, T, nh * hd))


@torch.no_grad()
def forward_cached(model: Any, idx: torch.Tensor, cache: KVCache) -> torch.Tensor:
    """Logits (B, T, vocab) of positions cache.length .. cache.length+T-1, filling the cache."""
    cfg = model.cfg
    _B, T = idx.shape
    start = cache.length
    if start + T > cache.max_tokens:
        raise ValueError(f"cache holds {cache.max_tokens} positions; {start} + {T} do not fit")
    x = model.wte(idx)
    if getattr(model, "wpe", None) is not None:
        x = x + model.wpe(torch.arange(start, start + T, device=idx.device))
    for i, blk in enumerate(model.blocks):
        x = x + _attend(blk, cfg, blk.ln1(x), cache, i, start)
        x = x + blk.mlp(blk.ln2(x))
    cache.length = start + T
    return model.lm_head(model.ln_f(x))


@torch.no_grad()
def prefill(model: Any, prompt: torch.Tensor, max_tokens: int) -> tuple[torch.Tensor, KVCache]:
    """A fresh cache for max_tokens positions, filled with the prompt; logits of its last position."""
    cache = KVCache.allocate(model.cfg, prompt.shape[0], max_tokens, activation_dtype(model), prompt.device)
    logits = forward_cached(model, prompt, cache)
    return logits[:, -1], cache


@torch.no_grad()
def decode_step(model: Any, token: torch.Tensor, cache: KVCache) -> torch.Tensor:
    """token (B, 1) at position cache.length -> logits (B, vocab) of the next one."""
    return forward_cached(model, token, cache)[:, -1]


@torch.no_grad()
def recompute_step(model: Any, seq: torch.Tensor) -> torch.Tensor:
    """No cache: the GPT's own forward over the whole prefix (B, t) -> logits (B, vocab) of position t."""
    return model(seq)[:, -1]


@torch.no_grad()
def generate(model: Any, prompt: torch.Tensor, max_new_tokens: int, pick: Any, use_cache: bool = True) -> torch.Tensor:
    """prompt (B, P) -> (B, max_new_tokens) new tokens; pick(logits (B, V)) -> (B,) token ids."""
    out = []
    if use_cache:
        logits, cache = prefill(model, prompt, prompt.shape[1] + max_new_tokens)
        for i in range(max_new_tokens):
            tok = pick(logits).view(-1, 1)
            out.append(tok)
            if i + 1 < max_new_tokens:
                logits = decode_step(model, tok, cache)
    else:
        seq = prompt
        for _ in range(max_new_tokens):
            tok = pick(recompute_step(model, seq)).view(-1, 1)
            out.append(tok)
            seq = torch.cat([seq, tok], dim=1)
    return torch.cat(out, dim=1)
