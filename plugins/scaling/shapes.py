"""Model shapes and training budgets of the scaling plugin: names -> GPTConfig, parameter counts,
and how a token (D) or compute (C) budget becomes batch x steps.

Shapes: "LxD" = n_layer x d_model (heads = d/32, at least 1) or a GPT preset (plugins/common/gpt.py),
optionally "@T" for that shape's sequence length. N_total (vocab 256, T=64) of the "LxD" ladder:
  1x8 3.4k, 1x16 8.4k, 1x32 23k, 2x40 52k, 2x64 121k, 3x80 259k, 4x96 478k, 4x128 834k,
  6x128 1.23M, 6x192 2.7M, 8x256 6.4M, 8x384 14.4M
No torch at import: `bench list` and summarize() stay light.
"""

from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # pragma: no cover
    from plugins.common.gpt import GPTConfig

HEAD_DIM = 32  # heads = d_model / 32 for the "LxD" shapes (at least 1)
SHAPE_RE = re.compile(r"^(\d+)x(\d+)$")
BUDGET_RE = re.compile(r"^\s*([CDcd])\s*=\s*([0-9.]+(?:[eE][+]?[0-9]+)?)\s*$")
MIN_STEPS = 200  # a run gets at least this many optimizer steps: the batch shrinks below --batch (batch_for)


class Budgeted(Protocol):
    """What batch/steps need from the case parameters (ScalingParams, a frozen dataclass)."""

    @property
    def budget(self) -> str: ...

    @property
    def batch(self) -> int: ...


def parse_shapes(text: str) -> list[str]:
    return [s.strip() for s in text.split("+") if s.strip()]


def split_seq(shape: str, seq: int) -> tuple[str, int]:
    """'medium@256' -> ('medium', 256); 'medium' -> ('medium', seq)."""
    name, at, t = shape.partition("@")
    return name, (int(t) if at and t.isdigit() else seq)


def shape_config(shape: str, seq: int) -> GPTConfig:
    """GPTConfig of one shape ('LxD' or a preset, optionally '@T') at block size T, no dropout."""
    from plugins.common.gpt import PRESETS, GPTConfig, config_from

    name, seq = split_seq(shape, seq)
    m = SHAPE_RE.match(name)
    if m:
        n_layer, d = int(m.group(1)), int(m.group(2))
        cfg = config_from("tiny", n_layer=n_layer, d_model=d, n_head=max(1, d // HEAD_DIM), block_size=seq)
    elif name in PRESETS:
        cfg = config_from(name, block_size=seq)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return GPTConfig(**{**cfg.__dict__, "dropout": 0.0})


def shape_error(shape: str) -> str | None:
    """Why a shape name is invalid, or None."""
    from plugins.common.gpt import PRESETS

    name, at, t = shape.partition("@")
    if at and not (t.isdigit() and int(t) >= 1):
        return f"shape {shape!r}: '@T' needs a whole sequence length >= 1"
    m = SHAPE_RE.match(name)
    if m:
        n_layer, d = int(m.group(1)), int(m.group(2))
        if n_layer < 1 or d < 1:
            return f"shape {name!r}: layers and width must be >= 1"
        if d % max(1, d // HEAD_DIM):
            return f"shape {name!r}: d_model {d} is not divisible by its {d // HEAD_DIM} heads (d/32)"
        return None
    if name in PRESETS:
        return None
    return f"shape {name!r} is neither 'LxD' (n_layer x d_model, e.g. 2x64) nor a preset ({', '.join(PRESETS)})"


@functools.lru_cache(maxsize=256)
def param_counts(cfg: GPTConfig) -> tuple[int, int]:
    """(N_nonemb, N_total) of a GPTConfig, by building the model on the meta device (no memory).
    N_nonemb (Kaplan) excludes token and position embeddings (the tied LM head is the token
    embedding); N_total (Chinchilla) counts every parameter once."""
    import torch

    from plugins.common.gpt import GPT

    with torch.device("meta"):
        m = GPT(cfg)
    return m.num_params(non_embedding=True), m.num_params()


def parse_budget(text: str) -> tuple[str, float] | None:
    """'C=1e11' -> ("C", 1e11); 'D=8e5' -> ("D", 8e5); '' or malformed -> None."""
    m = BUDGET_RE.match(text or "")
    if not m:
        return None
    try:
        v = float(m.group(2))
    except ValueError:
        return None
    return (m.group(1).upper(), v) if v > 0 else None


def budget_c(text: str) -> float:
    """The compute budget C of a 'C=...' budget, else 0."""
    b = parse_budget(text)
    return b[1] if b and b[0] == "C" else 0.0


def target_tokens(p: Budgeted, n_total: int) -> float:
    """D asked for: D=<tokens>, or C / (6 N_total) with C=<FLOPs> (C = 6 N D, Kaplan sec. 2.1)."""
    kind, v = parse_budget(p.budget) or ("D", 0.0)
    return v if kind == "D" else v / (6.0 * n_total)


def batch_for(p: Budgeted, n_total: int, seq: int) -> int:
    """Sequences per step: --batch, reduced (down to 1) so that the run gets at least MIN_STEPS steps.
    Small token budgets need small batches (the critical batch grows as the loss falls: Kaplan sec. 5.1,
    McCandlish et al. 2018); a fixed batch would starve the large models of an isoFLOP profile of steps."""
    return max(1, min(p.batch, int(target_tokens(p, n_total) // (MIN_STEPS * seq))))


def steps_for(p: Budgeted, n_total: int, seq: int) -> int:
    """Optimizer steps: D / (batch x seq) tokens, rounded, at least 1."""
    return max(1, round(target_tokens(p, n_total) / (batch_for(p, n_total, seq) * seq)))


def fmt_n(x: float) -> str:
    """3448 -> '3.45k', 1.2e6 -> '1.2M'."""
    for unit, f in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= f:
            return f"{x / f:.3g}{unit}"
    return f"{x:.3g}"
