"""gpuplan: "how many GPUs do I need?" -- the fsdp simulator run over ZeRO stages 0-3, HSDP and world sizes.

For a model (a published shape or a parameter count), a precision, one GPU's memory, a batch x sequence per
GPU and the activation checkpointing, every stage's smallest world size whose need (the simulated per-rank
reserved peak of the caching-allocator model + CUDA context + NCCL buffers, planning.py) fits the GPU, the peak by
category at each world size simulated, the headroom, and beside them the answers of DeepSpeed's and
accelerate's estimators (their published formulas, computed here: estimators.py).

A plugin, not a core command: the simulator, the stages and the estimators are the distributed plugin's
subject, and the core stays plugin-agnostic (the contract's case/summary rows carry the answer table: the
summary row per stage is the answer; `bench show`, `compare`, `report` and `regress` read it as any other).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from bench.contract import Launch, Plugin, Record, Row, param
from plugins.common.shapes import SHAPES, TABLE_HEADER, sources_text, table_rows

GB = 1e9
STAGE_NAMES = {0: "0 (DDP)", 1: "1 (ZeRO-1)", 2: "2 (FSDP2, no reshard)", 3: "3 (FSDP2)"}
DEPTHS = (4, 5, 6)  # layers simulated for the extrapolation (the third checks collinearity)


@dataclass(frozen=True)
class PlanParams:
    model: str = param(
        "1e8", "a published shape (plugins/common/shapes.py: llama3-70b, gpt3-175b, ...) or a parameter count (7e9)"
    )
    precision: str = param("bf16", "bf16 mixed precision (fp32 master + AdamW state) or fp32", choices=("bf16", "fp32"))
    gpu_gb: float = param(80.0, "one GPU's memory in GB (1e9 bytes): 80 for H100/A100 80GB")
    batch: int = param(1, "sequences per GPU per step")
    seq: int = param(4096, "tokens per sequence")
    checkpoint: bool = param(False, "activation checkpointing of every block (torch.utils.checkpoint; = --ac full)")
    ac: str = param(
        "none",
        "activation checkpointing: none, full, selective (torchtitan's op policy; --ac-every K: every K-th block)",
        choices=("none", "full", "selective"),
    )
    ac_every: int = param(0, "with --ac selective: checkpoint every K-th block in full")
    max_world: int = param(16384, "the largest world size tried (powers of two from 1)")
    hybrid: bool = param(True, "also HSDP (2 replicas x N/2 shards) at stages 2 and 3")
    exact: bool = param(False, "simulate every layer at each answer (slower) besides the layer extrapolation")


def model_of(p: Any) -> tuple[Any, str]:
    """(GPTConfig, name) of the case's model: a published shape by name, else a parameter count (the GPT
    fsdp --simulate --params picks for it)."""
    from plugins.common.shapes import shape_config
    from plugins.distributed.sim import params_config

    if p.model in SHAPES:
        cfg, name = shape_config(p.model, p.seq), p.model
    else:
        cfg, name = params_config(float(p.model), p.seq), f"{float(p.model):.3g} params"
    return dataclasses.replace(cfg, ac=ac_of(p), ac_every=p.ac_every), name


def ac_of(p: Any) -> str:
    """The case's activation checkpointing (--checkpoint is --ac full)."""
    return "full" if getattr(p, "checkpoint", False) else str(getattr(p, "ac", "none"))


def ac_text(p: Any) -> str:
    ac = ac_of(p)
    if ac == "selective":
        k = int(getattr(p, "ac_every", 0))
        return f"selective (every {k}th block)" if k > 0 else "selective (op policy)"
    return ac


class GPUPlanPlugin(Plugin):
    name = "gpuplan"
    description = "how many GPUs: the fsdp simulator over ZeRO stages 0-3 / HSDP and world sizes vs one GPU's memory"
    version = "1"
    Params = PlanParams
    metrics = {
        "smallest_world": "the smallest world size whose need (reserved peak + context + NCCL) fits the GPU (ranks)",
        "peak_gb": "simulated per-rank step peak (GB = 1e9 bytes)",
        "headroom_gb": "GPU memory minus the need: reserved peak + CUDA context + NCCL buffers (GB)",
    }
    table_metrics = (
        "fits",
        "peak_gb",
        "reserved_gb",
        "need_gb",
        "headroom_gb",
        "parameters_gb",
        "gradients_gb",
        "optimizer_state_gb",
        "activations_gb",
        "temporaries_gb",
        "unattributed_gb",
        "lower_bound_gb",
        "how",
    )

    def grid(self, profile: str) -> list[dict[str, Any]]:
        if profile == "full":
            return [{"model": "llama3-70b", "checkpoint": c} for c in (False, True)] + [
                {"model": "llama3-405b", "checkpoint": True}
            ]
        if profile == "gpu":
            return []  # a CPU simulation: nothing a GPU adds
        # quick: the defaults, a 100M-parameter GPT (10 layers): every stage fits one GPU, one simulation each.
        # The grid sets nothing, so a user's flags meet the parameters' own defaults.
        return [{}]

    def validate(self, p: Any) -> str | None:
        if p.model not in SHAPES:
            try:
                n = float(p.model)
            except ValueError:
                return f"--model {p.model!r}: a shape ({', '.join(SHAPES)}) or a parameter count such as 7e9"
            if not 1e5 <= n <= 1e14:
                return f"--model {p.model}: give a parameter count between 1e5 and 1e14"
        if p.gpu_gb <= 0 or p.batch < 1 or p.seq < 2 or p.max_world < 1:
            return "--gpu-gb must be > 0, --batch >= 1, --seq >= 2, --max-world >= 1"
        if p.ac_every < 0 or (p.ac_every and ac_of(p) != "selective"):
            return f"--ac-every {p.ac_every}: give K >= 1 with --ac selective"
        if p.max_world > 1_000_000:
            return "--max-world above 1e6 is not simulated"
        if p.model in SHAPES:
            s = SHAPES[p.model]
            if s.pos == "learned" and p.seq > s.context:
                return f"--seq {p.seq}: {p.model} has {s.context} learned positions"
        return None

    def launch(self, p: Any) -> Launch:
        return Launch("process", 1, 600.0, reuse=True)  # fake tensors: cannot exhaust memory or touch a device

    def estimate_s(self, p: Any, device_type: str) -> float | None:
        # CPU seconds on a quiet 2-core host: ~0.3 s per simulated layer (measured: a 100M GPT of 10 layers,
        # 6 whole simulations, 17 s; llama3-70b / 405b, ~12 extrapolation simulations of 4-6 layers, 24-25 s;
        # --exact on llama3-70b adds two simulations of 80 layers, 64 s in all)
        cfg, _ = model_of(p)
        per_layer = 0.3
        if cfg.n_layer <= sum(DEPTHS):
            return 2.0 + 6 * per_layer * cfg.n_layer
        return 5.0 + 12 * per_layer * 5 + (2 * per_layer * cfg.n_layer if p.exact else 0.0)

    def describe(self) -> str:
        from bench.tables import render

        return (
            "Published shapes (--model NAME):\n"
            + render(TABLE_HEADER, table_rows())
            + "\n"
            + sources_text()
            + "\nSearch: plugins/planner/search.py (lower bound, then simulations); estimators: "
            "plugins/planner/estimators.py (DeepSpeed's and accelerate's published formulas)."
        )

    def run(self, p: Any, ctx: Any) -> list[Record]:
        from plugins.planner.planning import plan

        return plan(p, ctx)

    def summarize(self, rows: list[Row]) -> list[Record]:
        from plugins.planner.answer import answer_records

        return answer_records(rows)
