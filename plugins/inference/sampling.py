"""Next-token selection from logits, implemented once: greedy, temperature, top-k, top-p.

The course notes (week 1, "Generative configuration"): greedy decoding always picks the most
probable token; random sampling draws with the probabilities as weights; temperature reshapes the
softmax (higher = more random); top-k samples among the k most probable tokens; top-p among the
top-ranked tokens by cumulative probability. Top-p here is Holtzman et al. 2019 (arXiv 1904.09751,
eq. 2): the nucleus is the SMALLEST set of top-ranked tokens whose cumulative probability is >= p
(the notes write "<= p"; see claims.py, infer.top_p). Order as in Hugging Face's generate:
temperature, then top-k, then top-p on the renormalised distribution, then one draw.

Shapes: logits (B, V) -> token ids (B,) int64. Probabilities are computed in fp32 whatever the
logits' dtype (bf16 logits would round probabilities to 8 bits).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

NEG_INF = float("-inf")


@dataclass(frozen=True)
class Sampler:
    """temperature 0 = greedy (argmax); top_k 0 = off; top_p 1.0 = off."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def name(self) -> str:
        if self.greedy:
            return "greedy"
        bits = [f"T={self.temperature:g}"]
        if self.top_k:
            bits.append(f"top_k={self.top_k}")
        if self.top_p < 1.0:
            bits.append(f"top_p={self.top_p:g}")
        return ", ".join(bits)

    def probs(self, logits: torch.Tensor) -> torch.Tensor:
        """The distribution a draw uses (B, V), fp32: zeros outside the kept set."""
        if self.greedy:
            return torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).float()
        x = logits.float() / self.temperature
        if self.top_k:
            x = top_k_filter(x, self.top_k)
        if self.top_p < 1.0:
            x = top_p_filter(x, self.top_p)
        return torch.softmax(x, dim=-1)

    def __call__(self, logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.greedy:
            return logits.argmax(-1)
        return torch.multinomial(self.probs(logits), 1, generator=generator).view(-1)


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """-inf everywhere but the k largest logits of each row (exactly k kept, ties broken by topk)."""
    k = min(k, logits.shape[-1])
    idx = logits.topk(k, dim=-1).indices
    return torch.full_like(logits, NEG_INF).scatter(-1, idx, logits.gather(-1, idx))


def nucleus_mask(probs: torch.Tensor, p: float) -> torch.Tensor:
    """Bool (B, V): the smallest set of top-ranked tokens whose cumulative probability is >= p.
    A token is kept when the probability ranked above it sums to < p (the top token always is)."""
    sorted_p, order = probs.sort(dim=-1, descending=True)
    before = sorted_p.cumsum(-1) - sorted_p  # mass ranked strictly above each token
    keep_sorted = before < p
    return torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """-inf outside the nucleus of softmax(logits) (Holtzman et al. 2019)."""
    keep = nucleus_mask(torch.softmax(logits.float(), dim=-1), p)
    return logits.masked_fill(~keep, NEG_INF)


def notes_top_p_mask(probs: torch.Tensor, p: float) -> torch.Tensor:
    """The notes' wording taken literally: top-ranked tokens whose cumulative probability is <= p
    (empty when the most probable token alone exceeds p)."""
    sorted_p, order = probs.sort(dim=-1, descending=True)
    keep_sorted = sorted_p.cumsum(-1) <= p
    return torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)


def entropy_bits(probs: torch.Tensor) -> torch.Tensor:
    """Shannon entropy per row, bits (0 log 0 = 0)."""
    logp = torch.where(probs > 0, probs.log2(), torch.zeros_like(probs))
    return -(probs * logp).sum(-1)


def total_variation(counts: torch.Tensor, probs: torch.Tensor) -> float:
    """TV distance between the empirical distribution of counts (V,) and probs (V,): 0.5 * sum |f - p|."""
    f = counts.double() / counts.sum().double()
    return float(0.5 * (f - probs.double()).abs().sum())


def tv_noise_bound(probs: torch.Tensor, draws: int, z: float = 4.0) -> float:
    """A bound the TV distance of n honest draws from probs exceeds with probability <= exp(-z^2 / 2)
    (z=4: 3e-4): E[TV] <= 0.5 * sum sqrt(p (1 - p) / n) (Jensen), plus z * 0.5 / sqrt(n) (McDiarmid:
    one draw moves TV by at most 1/n, so P(TV - E[TV] >= t) <= exp(-2 n t^2))."""
    p = probs.double()
    mean = 0.5 * float((p * (1 - p) / draws).sqrt().sum())
    return mean + z * 0.5 / draws**0.5
