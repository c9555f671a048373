"""Published, measured per-GPU memory of FSDP training, with the exact configuration, for the simulator to be
checked against (tests/test_published_memory.py, the README's table). Every figure is the caching allocator's
reserved memory (torchtitan logs torch.cuda.max_memory_reserved as "memory"), in GiB.

torchtitan, docs/performance.md (pytorch/torchtitan, before commit 820504e moved it to
benchmarks/llama3_h100_202412_torchtitan.md): Llama 3.1 8B on H100 96 GB (HBM2e), torch 1963fc8 (2024-12-23),
torchtitan 9dec370 (2024-12-26). The configuration not printed in the tables is that commit's
train_configs/llama3_8b.toml and config_manager.py defaults: seq_len 8192, AdamW (lr 3e-4, foreach), bf16
parameters with fp32 reduce-scatter (training.mixed_precision_reduce = "float32"), FSDP2 reshard after forward
(all blocks but the last), activation checkpointing "selective" with option "op".
Trainy on WhiteFiber, benchmarks/llama3-8b_h200_202506_trainy-whitefiber.md (torchtitan e7c0cae, torch 2.8.0a0):
H200, llama3_8b.toml (seq 8192, selective op), local batch 2, torch.compile, Float8 with float8 all-gather.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

TITAN = "torchtitan docs/performance.md (commit 9dec370 configs)"
TRAINY = "torchtitan benchmarks/llama3-8b_h200_202506_trainy-whitefiber.md"


@dataclass(frozen=True)
class Published:
    key: str
    source: str
    row: str  # the table and row, as printed
    gib: float  # the published figure
    case: dict[str, Any] = field(default_factory=dict)  # fsdp --simulate parameters of the same configuration
    reproducible: bool = True  # False: the configuration uses what the simulator does not model
    why: str = ""  # what the simulator does not model in this row


_8B = {"shape": "llama3-8b", "stage": 3, "precision": "bf16", "reduce_dtype": "fp32", "seq": 8192}
_COMPILE_FP8 = (
    "torch.compile (fused blocks: Table 1 shows it saves 5.4 GiB) and Float8 linears are not modelled: the "
    "simulator runs eager bf16"
)
PUBLISHED = [
    Published(
        "titan_t1",
        TITAN,
        "Table 1, FSDP (8B, 8 GPUs, local batch 2, selective AC)",
        82.4,
        {**_8B, "world_size": 8, "batch": 2, "ac": "selective"},
    ),
    Published(
        "titan_t3",
        TITAN,
        "Table 3, FSDP (8B, 128 GPUs, local batch 2, selective AC)",
        67.0,
        {**_8B, "world_size": 128, "batch": 2, "ac": "selective"},
    ),
    Published(
        "titan_t2",
        TITAN,
        "Table 2, FSDP 8 CP 1, seq 32768 (8B, local batch 1, full AC, torch.compile + Float8)",
        83.9,
        {**_8B, "world_size": 8, "batch": 1, "seq": 32768, "ac": "full"},
        False,
        _COMPILE_FP8,
    ),
    Published(
        "trainy_32",
        TRAINY,
        "NUM_NODES 4 (8B, 32 H200, local batch 2, selective AC, torch.compile + Float8 all-gather)",
        47.96,
        {**_8B, "world_size": 32, "batch": 2, "ac": "selective"},
        False,
        _COMPILE_FP8 + "; torch 2.8 / torchtitan e7c0cae (a later FSDP2 and training loop than the tables above)",
    ),
    Published(
        "trainy_64",
        TRAINY,
        "NUM_NODES 8 (8B, 64 H200, local batch 2, selective AC, torch.compile + Float8 all-gather)",
        46.97,
        {**_8B, "world_size": 64, "batch": 2, "ac": "selective"},
        False,
        _COMPILE_FP8 + "; torch 2.8 / torchtitan e7c0cae (a later FSDP2 and training loop than the tables above)",
    ),
]
DIFFERENCES = (
    "differences left (torchtitan 9dec370 vs the simulator, torch 2.13 FSDP2): AdamW foreach=True's temporary "
    "(one fp32 copy of the shard, during the optimizer step, after activations are freed) and gradient clipping "
    "are not traced (the simulator's optimizer runs foreach=False); torchtitan keeps the last block unsharded "
    "after forward (0.4 GiB of bf16 parameters); repeat_kv's expanded K/V copies (torchtitan) vs SDPA's "
    "enable_gqa here are recomputed under checkpointing (transient); torch of 2024-12 vs 2.13"
)
