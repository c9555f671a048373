"""The fp32 reference of a case: the seeded GPT built on the device it runs on, and real text through
it (the input of block 0's mlp.fc is kept: the activations behind the error and speed figures).

A warm worker runs several schemes one after another on the same preset and seed: the reference is
built once per process and reused (the same seeded weights a fresh process would build; no case
modifies it: schemes apply to a copy). One entry is kept, so memory does not grow with presets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from plugins.quantization.params import TEXT_BATCH, TEXT_SEQ


@dataclass
class Reference:
    model: Any  # the fp32 GPT, eval mode
    tokens: torch.Tensor  # [TEXT_BATCH, seq] byte ids of real text (validation split)
    logits: torch.Tensor  # [TEXT_BATCH, seq, vocab] fp32
    act: torch.Tensor  # [TEXT_BATCH * seq, d] fp32: the input of block 0's mlp.fc (a LayerNorm output)
    out: torch.Tensor  # [TEXT_BATCH * seq, 4 d] fp32: block 0's mlp.fc on act


_CACHE: dict[tuple[str, int, str], Reference] = {}


def build_gpt(preset: str, seed: int, device: torch.device) -> Any:
    """The seeded GPT, built where it runs: no CPU init of a 1.2B model before a move."""
    from plugins.common.gpt import GPT, config_from

    torch.manual_seed(seed)
    with torch.device(device):
        return GPT(config_from(preset))


def reference(preset: str, seed: int, device: torch.device) -> Reference:
    key = (preset, seed, str(device))
    if key in _CACHE:
        return _CACHE[key]
    from plugins.common.text import get_batch

    model = build_gpt(preset, seed, device).eval()
    gen = torch.Generator().manual_seed(seed)
    tokens, _ = get_batch("val", TEXT_BATCH, min(TEXT_SEQ, model.cfg.block_size), gen, device)
    seen: dict[str, torch.Tensor] = {}

    def keep_input(mod: Any, inp: tuple[Any, ...], out: Any) -> None:
        seen.setdefault("x", inp[0].detach())

    fc = model.blocks[0].mlp.fc
    hook = fc.register_forward_hook(keep_input)
    with torch.no_grad():
        logits = model(tokens)
    hook.remove()
    act = seen["x"].reshape(-1, model.cfg.d_model)
    with torch.no_grad():
        ref = Reference(model, tokens, logits, act, fc(act))
    _CACHE.clear()
    _CACHE[key] = ref
    return ref
