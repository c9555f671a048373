"""The parameters of a ddp / fsdp case and what they select: the ZeRO stage, HSDP, the GPT to train.

`stage_of` is the one accessor of the stage, for a case's Params and for a result row alike: the ddp
plugin has no `stage` parameter and is stage 0 (DDP), so every reader gets the same default.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, make_dataclass
from typing import Any

from bench.contract import Row, param
from plugins.common.gpt import PRESETS, GPTConfig, config_from
from plugins.common.shapes import SHAPES

UNTIMED_STEPS = 3  # warm-up, memory-tracked, comm-counted (+ probe); then `steps` timed steps


@dataclass(frozen=True)
class DDPParams:
    world_size: int = param(
        2,
        "ranks: torchrun processes (gloo on CPU, NCCL on GPU; 1: a plain process); with --simulate the simulated ranks",
    )
    model: str = param("small", "GPT preset (plugins/common/gpt.py PRESETS)", choices=tuple(PRESETS))
    layers: int = param(0, "override the preset's layer count (0: the preset's)")
    width: int = param(0, "override the preset's d_model (0: the preset's); heads = width/64")
    precision: str = param(
        "fp32", "fp32, or bf16 mixed precision (see `bench list --plugin fsdp`)", choices=("fp32", "bf16")
    )
    batch: int = param(4, "sequences per rank per step")
    seq: int = param(128, "tokens per sequence")
    steps: int = param(5, f"timed training steps, after {UNTIMED_STEPS} untimed ones (warm-up, memory, collectives)")
    simulate: bool = param(
        False, "one process, fake process group + fake tensors: per-rank memory for any size/world size"
    )
    params: float = param(
        0.0,
        "with --simulate: target parameter count, e.g. 7.5e9 (picks a GPT shape; replaces --model/--layers/--width)",
    )
    shape: str = param(
        "",
        "with --simulate: a published model shape (plugins/common/shapes.py; `bench list --plugin gpuplan`), "
        "replaces --model/--params",
        choices=("", *SHAPES),
    )
    ac: str = param(
        "none",
        "activation checkpointing of each block: none; full (torch.utils.checkpoint, non-reentrant); selective "
        "(torchtitan's `op` policy: keep the outputs of every other matmul and of attention, recompute the rest; "
        "with --ac-every K: full checkpointing of every K-th block instead)",
        choices=("none", "full", "selective"),
    )
    ac_every: int = param(
        0, "with --ac selective: checkpoint every K-th block in full (torchtitan's selective_ac_option=K)"
    )
    reduce_dtype: str = param(
        "bf16",
        "with bf16 at stages 2/3: FSDP2's reduce-scatter dtype (fp32: torchtitan's mixed_precision_reduce default)",
        choices=("bf16", "fp32"),
    )
    expandable_segments: bool = param(
        False, "with --simulate: the caching-allocator model with PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True"
    )
    gpu_gb: float = param(
        16.0,
        "one GPU's memory in GB (1e9 bytes) a simulated per-rank step peak must fit (claim fsdp.ddp_oom; "
        "16: V100 16GB / T4 class)",
    )
    fault: str = param(
        "none",
        "debug: kill_rank1 = rank 1 SIGKILLs itself after the forward of its first step; "
        "hang_rank1 = rank 1 sleeps there (the case time limit ends the group)",
        choices=("none", "kill_rank1", "hang_rank1"),
    )


_TYPES = {"int": int, "bool": bool, "str": str, "float": float}
_STAGE_HELP = (
    "ZeRO stage: 0 DDP, 1 ZeroRedundancyOptimizer over DDP, 2 FSDP2 reshard_after_forward=False, "
    "3 FSDP2 reshard_after_forward=True"
)
_HYBRID_HELP = "HSDP: FSDP2 on a 2-D mesh (2 replicas x world/2 shards); stages 2/3, even world size >= 4"
# fsdp's parameters: the ZeRO stage and HSDP first, then every ddp field (same defaults, help, choices)
FSDPParams = make_dataclass(
    "FSDPParams",
    [
        ("stage", int, param(3, _STAGE_HELP, choices=(0, 1, 2, 3))),
        ("hybrid", bool, param(False, _HYBRID_HELP)),
    ]
    + [(f.name, _TYPES[str(f.type)], field(default=f.default, metadata=f.metadata)) for f in fields(DDPParams)],
    frozen=True,
    namespace={"__module__": __name__},
)


def stage_of(x: Any) -> int:
    """The ZeRO stage of a case (its Params) or of a row (label, else parameter); ddp = stage 0."""
    v = x.get("stage") if isinstance(x, Row) else getattr(x, "stage", None)
    return 0 if v is None else int(v)


def hybrid_of(x: Any) -> bool:
    """HSDP (a 2-D mesh) for a case's Params or a row; ddp never is."""
    v = x.get("hybrid") if isinstance(x, Row) else getattr(x, "hybrid", None)
    return bool(v)


def model_config(p: Any) -> GPTConfig:
    """The GPT a real run trains: the preset with --layers/--width overrides, block size >= --seq.
    (--params is a simulation option: the simulator picks a shape for it.)"""
    if p.params:
        raise ValueError("--params picks a shape for --simulate only (plugins/distributed/sim.py)")
    cfg = config_from(p.model, n_layer=p.layers, d_model=p.width)
    return with_ac(GPTConfig(**{**cfg.__dict__, "block_size": max(cfg.block_size, p.seq)}), p)


def with_ac(cfg: GPTConfig, p: Any) -> GPTConfig:
    """cfg with the case's activation checkpointing (--ac, --ac-every)."""
    from dataclasses import replace

    return replace(cfg, ac=getattr(p, "ac", "none"), ac_every=getattr(p, "ac_every", 0))


def ac_label(p: Any) -> str:
    ac = getattr(p, "ac", "none")
    if ac == "selective":
        k = getattr(p, "ac_every", 0)
        return f"selective (every {k}th block in full)" if k > 0 else "selective (torchtitan's op policy)"
    return ac


def config_label(p: Any, cfg: GPTConfig, psi: int) -> str:
    name = f"{p.params:.3g} params" if p.params else p.model
    return f"{name} (L={cfg.n_layer}, d={cfg.d_model}, Psi={psi:,})"
