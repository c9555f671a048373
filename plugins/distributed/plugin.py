"""The ddp and fsdp plugins: grids, validation, launch, time estimates, and one case on every rank.

Real runs go through torchrun (the core initialises gloo on CPU, NCCL on GPU); a world-size-1 case runs as
a plain process with its own one-rank group (torchrun's start-up, 6-13 s on 2 cores, buys nothing there).
--simulate runs one process with a fake process group and fake tensors (sim.py), in the warm worker shared
by simulated cases (no interpreter start-up each; a fake-tensor run cannot exhaust memory or touch a device).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from bench.contract import Launch, Plugin, Record, Row, Section
from bench.fingerprint import usable_cpus
from plugins.distributed.claims import CLAIMS
from plugins.distributed.formulas import FIGURE1_ND, FIGURE1_PARAMS
from plugins.distributed.params import (
    UNTIMED_STEPS,
    DDPParams,
    FSDPParams,
    ac_label,
    config_label,
    hybrid_of,
    model_config,
    stage_of,
)
from plugins.distributed.strategies import PRECISIONS, STAGES, build_strategy, local_group, make_mesh
from plugins.distributed.summary import summarize_rows
from plugins.distributed.training import train_and_measure

# Quick grid's simulations: GPT shapes of 86M (L=12, d=768) and 1.5B parameters (L=19, d=2560; sim.py's shape
# picker), bf16, 64 ranks. The 86M at stages 0-3 gives the simulated reductions near their limits; both sizes
# at stages 0 and 3 judge fsdp.ddp_oom against one 16 GB GPU (the default --gpu-gb; V100 16GB / T4): DDP's 16
# bytes/param of bf16 model states fit 86M (1.4 GB), not 1.5B (24 GB). Given as --params, so `--simulate false`
# on this grid is refused (exit 2), never trained for real. The simulator's cost grows with the layers (see
# estimate below): ~2 s and ~3.5 s here. The full grid adds GPT-3 XL / 6.7B (Brown et al. 2020, Table 2.1)
# against 80 GB and ZeRO Figure 1 (7.5B, 64 ranks).
QUICK_SIM = (8.6e7, 1.5e9)
FULL_OOM = {"params": (1.3e9, 6.7e9), "world_size": 8, "gpu_gb": 80.0}
SIM_ND = FIGURE1_ND  # the quick grid's simulated ranks: Figure 1's Nd, where the reductions near their limits

# --- estimate_s: stated assumptions (bench run --plan) ----------------------------------------------------
# real: setup + (UNTIMED_STEPS + 1 + steps) steps + the memory tracker's bookkeeping.
#   step FLOPs = 6*N*tokens + 12*L*d*seq*tokens per rank (PaLM appendix B); rate per rank: CPU 5e10 FLOP/s
#   (this project's 2-core EPYC: a 'small' fp32 step, 1.0e10 FLOPs, took 140-210 ms on one thread,
#   results/cpu-amd-epyc-quick.jsonl); CUDA 3e14 bf16 / 5e13 fp32 (H100/H200 datasheet, derated).
#   setup: CPU 1.5 s (torch.distributed / FSDP imports, the group, the model), CUDA 3 s (+ context, NCCL).
# tracker: 8 ms x layers^2 (MemTracker walks every live tensor at each update) for real runs;
# simulation (rank 0 only, plugins/distributed/rank0.py): 0.5 s + 0.3 s per layer whatever the world size
#   (measured, 2 cores, load ~2: 70B / 80 layers x 16,384 ranks 18-28 s; 405B / 126 layers 57 s).
RATE = {("cpu", "fp32"): 5e10, ("cpu", "bf16"): 5e10, ("cuda", "fp32"): 5e13, ("cuda", "bf16"): 3e14}
SETUP_S = {"cpu": 1.5, "cuda": 3.0}
TRACK_S_PER_LAYER2 = 8e-3
SIM_S_PER_LAYER = 0.3


def _shape(p: Any) -> tuple[int, int, int, int]:
    """(layers, width, block size, parameter count) of a case's GPT, without building it."""
    from plugins.distributed.sim import gpt_param_count, gpt_shape_for

    if getattr(p, "shape", ""):
        from plugins.common.shapes import param_count, shape_config

        cfg = shape_config(p.shape, p.seq)
        return cfg.n_layer, cfg.d_model, cfg.block_size, param_count(cfg)
    if p.params:
        n_layer, d = gpt_shape_for(p.params, p.seq)
        block = p.seq
    else:
        cfg = model_config(p)
        n_layer, d, block = cfg.n_layer, cfg.d_model, cfg.block_size
    return n_layer, d, block, gpt_param_count(n_layer, d, block)


def estimate(p: Any, device_type: str) -> float:
    n_layer, d, _, psi = _shape(p)
    track = TRACK_S_PER_LAYER2 * n_layer**2
    if p.simulate:
        return 0.5 + SIM_S_PER_LAYER * n_layer
    tokens = p.batch * p.seq
    flops = 6 * psi * tokens + 12 * n_layer * d * p.seq * tokens
    steps = UNTIMED_STEPS + 1 + p.steps
    return SETUP_S[device_type] + steps * flops / RATE[(device_type, p.precision)] + track


def _cpu_rank_limit() -> int:
    cores = usable_cpus()
    return min(8, max(4, 2 * cores))  # 4 ranks anywhere (oversubscribed for timing); never > 8


class DDPPlugin(Plugin):
    name = "ddp"
    description = (
        "DistributedDataParallel GPT training: per-rank model-state bytes, peak, step time, collective bytes, loss"
    )
    version = "2"
    Params = DDPParams
    claims: tuple = ()  # the fsdp plugin declares the ZeRO/FSDP claims; ddp rows count as their evidence too
    metrics = {
        "model_state_bytes": "per-rank parameters + gradients + optimizer state bytes (summary rows)",
        "n_params": "the model's parameter count Psi (case rows; formula: counted from its shape)",
        "comm_vs_ddp": "collective bytes per step of a stage / DDP's, same configuration (x)",
        "reduction_limit": "DDP's model-state bytes / a stage's replicated bytes: the reduction as Nd grows (x)",
        "scaling_efficiency": "per-rank TFLOP/s at the largest world size / at the smallest (x)",
        "largest_fit_stage3_params": "largest model whose simulated stage-3 per-rank step peak fits one GPU",
        "tflops": "TFLOP/s per rank (counted FLOPs of a step / the median step)",
    }
    normalised = (
        "vs_ddp",
        "rest_vs_ddp",
        "comm_vs_ddp",
        "vs_formula",
        "efficiency",
        "peak_vs_sim",
        "cuda_vs_sim",
        "reserved_vs_sim",
    )
    table_metrics = (
        "params_bytes",
        "grads_bytes",
        "optim_bytes",
        "model_state_bytes",
        "formula_bytes",
        "model_state_step_bytes",
        "peak_mib",
        "reserved_peak_gib",
        "allocated_peak_gib",
        "cuda_max_allocated_mib",
        "step_ms",
        "tokens_per_s",
        "tflops",
        "comm_bytes_per_step",
        "loss",
    )

    def grid(self, profile: str) -> list[dict[str, Any]]:
        if profile == "gpu":
            return [{"world_size": 1, "model": "1b", "batch": 4, "seq": 1024, "precision": "bf16"}]
        if profile == "full":
            return [{"world_size": 2}, {"world_size": 4}, {"world_size": 2, "precision": "bf16"}]
        return [{}]

    def validate(self, p: Any) -> str | None:
        stage = stage_of(p)
        if p.world_size < 1:
            return "--world-size must be >= 1"
        if p.batch < 1 or p.seq < 2 or p.steps < 1:
            return "--batch and --steps must be >= 1 and --seq >= 2"
        if p.width and (p.width < 0 or (p.width > 64 and p.width % 64)):
            return f"--width {p.width}: use a multiple of 64 (heads = width/64)"
        if p.layers < 0:
            return "--layers must be >= 0"
        if not p.gpu_gb > 0:
            return "--gpu-gb must be > 0 (GB = 1e9 bytes)"
        if p.ac_every < 0 or (p.ac_every and p.ac != "selective"):
            return f"--ac-every {p.ac_every}: give K >= 1 with --ac selective (every K-th block checkpointed in full)"
        if p.expandable_segments and not p.simulate:
            return (
                "--expandable-segments sets the simulator's allocator model; a real run reads PYTORCH_CUDA_ALLOC_CONF"
            )
        if hybrid_of(p):
            if stage < 2:
                return f"--hybrid is HSDP (FSDP2 on a 2-D mesh): stage {stage} has no hybrid form; use --stage 2 or 3"
            if p.world_size < 4 or p.world_size % 2:
                return f"--hybrid needs an even --world-size >= 4 (2 replicas x world/2 shards), not {p.world_size}"
        if p.simulate:
            if p.fault != "none":
                return "--fault needs a real run (no --simulate)"
            if p.world_size > 1_000_000:
                return "--world-size above 1e6 is not simulated"
            if p.params and not 1e5 <= p.params <= 1e15:  # 1e200 would overflow the shape's float formulas
                return f"--params {p.params:g}: give a parameter count in [1e5, 1e15] (e.g. 7.5e9)"
            est, limit = estimate(p, "cpu"), self.launch(p).timeout_s
            if est > limit:
                return (
                    f"--params {p.params:g}: simulating its {_shape(p)[0]} layers would take ~{est:.0f} s, over the "
                    f"case limit of {limit:g} s"
                )
            return None
        if p.shape:
            return "--shape picks a published model for --simulate only; real runs take --model/--layers/--width"
        if p.params:
            return "--params picks a shape for --simulate only; real runs take --model/--layers/--width"
        if p.fault != "none" and p.world_size < 2:
            return f"--fault {p.fault} needs --world-size >= 2"
        if torch.cuda.is_available() and os.environ.get("CUDA_VISIBLE_DEVICES", None) != "":
            n = torch.cuda.device_count()
            if p.world_size > n:
                return f"--world-size {p.world_size}: this machine has {n} GPU(s) (one rank per GPU); use --simulate for more"
        else:
            lim = _cpu_rank_limit()
            if p.world_size > lim:
                return (
                    f"--world-size {p.world_size} is more than this machine can hold on CPU ({usable_cpus()} usable cores: "
                    f"at most {lim} ranks); use --simulate for larger world sizes"
                )
        return None

    def available(self, p: Any) -> str | None:
        import torch.distributed as dist

        if not dist.is_available():
            return "torch.distributed is not available in this torch build"
        return None

    def launch(self, p: Any) -> Launch:
        if p.simulate:
            return Launch("process", 1, 300.0, reuse=True)
        big = p.model in ("large", "1b") or p.width >= 1024
        limit = 600.0 if big else 300.0
        if p.world_size == 1:
            return Launch("process", 1, limit)
        return Launch("torchrun", p.world_size, limit)

    def estimate_s(self, p: Any, device_type: str) -> float | None:
        return estimate(p, device_type)

    def describe(self) -> str:
        return STAGES[0] + ".\n" + PRECISIONS["fp32"] + ".\n" + PRECISIONS["bf16"] + "."

    def run(self, p: Any, ctx: Any) -> list[Record]:
        if p.simulate:
            from plugins.distributed.sim import run_simulated

            return run_simulated(p, ctx)
        if p.precision == "bf16" and ctx.device.type == "cuda" and not torch.cuda.is_bf16_supported():
            return [Record(status="skipped", message="bf16 is not supported on this GPU")]
        import torch.distributed as dist

        from plugins.common.gpt import GPT
        from plugins.common.text import get_batch

        own_group = local_group(ctx.device)  # world size 1 as a plain process: no torchrun
        try:
            stage, world = stage_of(p), dist.get_world_size()
            cfg = model_config(p)
            torch.manual_seed(ctx.seed)  # the same initial weights on every rank
            with ctx.device:  # initialise on the device (a 1B model's init on the host is slow)
                model = GPT(cfg)
            mesh = make_mesh(ctx.device.type, world, hybrid_of(p)) if stage >= 2 else None
            st = build_strategy(
                model, stage, p.precision, world, ctx.device, mesh, hybrid_of(p), reduce_dtype=p.reduce_dtype
            )
            gen = torch.Generator().manual_seed(1000 * ctx.seed + ctx.rank + 1)  # each rank its own data
            n = UNTIMED_STEPS + 1 + p.steps
            batches = [get_batch("train", p.batch, p.seq, gen, ctx.device) for _ in range(n)]
            m, samples, notes = train_and_measure(p, ctx, st, batches, simulate=False)
        finally:
            if own_group:
                dist.destroy_process_group()
        launched = "a plain process with a one-rank group" if own_group else "torchrun"
        notes.append(
            f"model: {config_label(p, cfg, st.psi)}; activation checkpointing: {ac_label(p)}; world size {world} "
            f"({launched}), device {ctx.device.type}"
        )
        return [Record(metrics=m, samples=samples, notes=notes, labels={"rank": ctx.rank} if own_group else {})]

    def summarize(self, rows: list[Row]) -> list[Record]:
        return summarize_rows(rows)

    def report(self, rows: list[Row], out_dir: Path) -> list[Section]:
        from plugins.distributed.report import sections

        if self.name == "ddp" and any(r.plugin == "fsdp" for r in rows):  # one set of sections for both plugins
            note = "the ddp rows are drawn beside the ZeRO stages in the fsdp sections (memory by stage, weak scaling)"
            return [Section("DDP", "ddp", notes=[note])]
        return sections(rows, out_dir)


class FSDPPlugin(DDPPlugin):
    name = "fsdp"
    description = (
        "ZeRO stages 0-3 (DDP, ZeroRedundancyOptimizer, FSDP2) per rank, measured or simulated, vs the ZeRO formulas"
    )
    Params = FSDPParams
    claims = CLAIMS

    def grid(self, profile: str) -> list[dict[str, Any]]:
        bf16_sim = {"simulate": True, "precision": "bf16"}
        if profile == "gpu":
            # CPU predicts GPU memory: each stage on one GPU (bf16, the paper's mixed precision) and the same
            # configuration simulated on the host, side by side so a run cut short keeps whole pairs. The
            # large preset (86M params, 12 layers) at 4 x 1024 tokens: activations dominate the peak, as in
            # real training, and the 8 cases fit the GPU script's share (MemTracker's bookkeeping grows
            # with layers^2: the 1b preset's 24 layers cost 4x as much per case)
            big = {"world_size": 1, "model": "large", "batch": 4, "seq": 1024, "precision": "bf16"}
            # each pair also compares torch.cuda.max_memory_reserved with the allocator model's prediction
            # (summary: reserved_vs_sim)
            return [{"stage": s, **big, "simulate": sim} for s in range(4) for sim in (False, True)]
        sims_quick = [
            {"stage": s, **bf16_sim, "params": n, "world_size": SIM_ND}
            for n in QUICK_SIM
            for s in ((0, 1, 2, 3) if n == QUICK_SIM[0] else (0, 3))
        ]
        if profile == "full":
            real = [{"stage": s, "world_size": w} for w in (2, 4) for s in range(4)]
            real += [{"stage": s, "precision": "bf16"} for s in range(4)]
            real += [{"stage": s, "hybrid": True, "world_size": 4} for s in (2, 3)]
            real += [{"stage": 3, "world_size": 1}]  # weak scaling of stage 3 over 1, 2, 4 ranks
            fig1 = [{"stage": s, **bf16_sim, "params": FIGURE1_PARAMS, "world_size": FIGURE1_ND} for s in range(4)]
            trend = [
                {"stage": s, **bf16_sim, "params": QUICK_SIM[0], "world_size": n} for n in (8, 1024) for s in range(4)
            ]
            oom = [
                {
                    "stage": s,
                    **bf16_sim,
                    "params": n,
                    "world_size": FULL_OOM["world_size"],
                    "gpu_gb": FULL_OOM["gpu_gb"],
                }
                for n in FULL_OOM["params"]
                for s in (0, 3)
            ]
            return real + fig1 + trend + sims_quick + oom
        return [{"stage": s} for s in range(4)] + sims_quick

    def describe(self) -> str:
        from plugins.distributed.strategies import DIFFERENCES

        stages = "\n".join(STAGES[s] + "." for s in range(4))
        return stages + "\n" + DIFFERENCES + "\n" + "\n".join(v + "." for v in PRECISIONS.values())
