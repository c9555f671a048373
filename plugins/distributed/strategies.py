"""How each ZeRO stage maps to torch, and building it: DDP, ZeroRedundancyOptimizer over DDP, FSDP2
(fully_shard, optionally on a 2-D HSDP mesh), with fp32 or bf16 mixed precision.

Stage -> torch (STAGES is what `bench list` and `bench run` print):
  0  DDP                                  nothing sharded
  1  ZeroRedundancyOptimizer over DDP     optimizer state sharded
  2  FSDP2 reshard_after_forward=False    + gradients sharded (torch: parameters sharded at rest too)
  3  FSDP2 reshard_after_forward=True     + parameters sharded
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from plugins.distributed.optim import MasterAdamW

STAGES: dict[int, str] = {
    0: "stage 0 = DDP: DistributedDataParallel (gradient_as_bucket_view=True; torch's allreduce comm hook); "
    "parameters, gradients and optimizer state replicated",
    1: "stage 1 = ZeRO-1: torch.distributed.optim.ZeroRedundancyOptimizer over DDP; optimizer state sharded by a "
    "greedy whole-tensor partition, gradients all-reduced in full, each rank broadcasts the parameters it updated",
    2: "stage 2 = ZeRO-2: FSDP2 fully_shard(reshard_after_forward=False) on every block and the root; gradients "
    "reduce-scattered and kept sharded. Unlike the paper, torch keeps parameters sharded AT REST too and holds the "
    "full (all-gathered) parameters only from forward to backward",
    3: "stage 3 = ZeRO-3: FSDP2 fully_shard(reshard_after_forward=True) on every block and the root (set "
    "explicitly: torch's default leaves the root unsharded after forward); parameters all-gathered per block in "
    "forward and again in backward",
}
DIFFERENCES = (
    "torch vs the ZeRO paper: (1) stage 2 keeps parameters sharded at rest (the paper keeps 2*Psi replicated); "
    "(2) ZeRO-1 all-reduces full gradients and then broadcasts parameters (3*Psi moved vs the paper's 2*Psi); "
    "(3) bf16 with FSDP2 keeps fp32 gradient shards and no 16-bit parameter shard (the fp32 shard is the master "
    "copy, cast to bf16 before each all-gather)."
)
PRECISIONS: dict[str, str] = {
    "fp32": "fp32: parameters, gradients, AdamW exp_avg/exp_avg_sq all fp32 (4+4+8 bytes/param)",
    "bf16": "bf16 = the paper's mixed precision. Stages 0/1: bf16 parameters and gradients (DDP all-reduces bf16), "
    "MasterAdamW keeps fp32 master weights + exp_avg + exp_avg_sq (2+2+12 bytes/param). Stages 2/3: FSDP2 "
    "MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=bf16): fp32 parameter shards (the master copy), bf16 "
    "all-gathered parameters for compute, bf16 reduce-scatter into fp32 gradient shards, fp32 AdamW state",
}
TRAIN: dict[str, Any] = {"lr": 1e-3, "betas": (0.9, 0.95), "weight_decay": 0.1}  # AdamW


@dataclass
class Strategy:
    model: torch.nn.Module  # what forward is called on
    opt: Any
    psi: int  # global parameter count (tied weights once)
    shapes: list[tuple[int, ...]]
    rest_bytes: dict[str, int]  # bytes of each parameter as held at rest on this rank (by name)
    sharded: set[str]  # names of the parameters that are DTensor shards at rest (FSDP2)
    how: str
    nd: int  # ranks a model state is sharded over (hybrid: the shard group)


def make_mesh(device_type: str, world: int, hybrid: bool) -> Any:
    from torch.distributed.device_mesh import init_device_mesh

    if hybrid:
        return init_device_mesh(device_type, (2, world // 2), mesh_dim_names=("replicate", "shard"))
    return init_device_mesh(device_type, (world,), mesh_dim_names=("shard",))


def local_group(device: torch.device) -> bool:
    """A one-rank process group for a world-size-1 case run as a plain process (no torchrun, whose
    start-up costs 6-13 s on 2 cores): an in-process HashStore, gloo on CPU, NCCL on CUDA. Returns
    True when it created the group (the caller destroys it)."""
    import torch.distributed as dist

    if dist.is_initialized():
        return False
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
    return True


def is_dtensor(t: torch.Tensor) -> bool:
    return hasattr(t, "to_local") and hasattr(t, "placements")


def build_strategy(
    model: torch.nn.Module,
    stage: int,
    precision: str,
    world: int,
    device: torch.device,
    mesh: Any = None,
    hybrid: bool = False,
    simulate: bool = False,
    reduce_dtype: str = "bf16",
) -> Strategy:
    """Wrap `model` for the stage and make its optimizer. reduce_dtype: FSDP2's gradient reduce-scatter dtype with
    bf16 (stages 2/3). simulate: no DDP (its C++ reducer
    cannot run on fake tensors; with gradient_as_bucket_view=True its buckets are the
    gradients, so per-rank bytes are the same) and foreach=False (design notes)."""
    from bench.memory import param_count, tensor_bytes

    psi = param_count(model)
    shapes = [tuple(p.shape) for p in model.parameters()]
    foreach = False if simulate else None
    how = STAGES[stage]
    nd = world
    if stage <= 1:
        if precision == "bf16":
            with torch.no_grad():  # .data keeps tied weights tied and works on fake tensors (module.to does not)
                for prm in model.parameters():
                    prm.data = prm.data.to(torch.bfloat16)
        wrapped = model
        if not simulate:
            from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [device.index] if device.type == "cuda" else None
            wrapped = DDP(model, device_ids=ids, gradient_as_bucket_view=True, broadcast_buffers=False)
            wrapped.register_comm_hook(None, default_hooks.allreduce_hook)  # Python all_reduce: counted
        opt_cls: Any = torch.optim.AdamW if precision == "fp32" else MasterAdamW
        kw = dict(TRAIN, foreach=foreach) if opt_cls is torch.optim.AdamW else dict(TRAIN)
        if stage == 1:
            from torch.distributed.optim import ZeroRedundancyOptimizer

            opt: Any = ZeroRedundancyOptimizer(wrapped.parameters(), optimizer_class=opt_cls, **kw)
        else:
            opt = opt_cls(wrapped.parameters(), **kw)
    else:
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        if precision == "fp32":
            mp = MixedPrecisionPolicy()
        else:
            # reduce_dtype fp32: torchtitan's default (training.mixed_precision_reduce = "float32")
            red = torch.float32 if reduce_dtype == "fp32" else torch.bfloat16
            mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=red)
        fkw = {"mesh": mesh, "reshard_after_forward": stage == 3, "mp_policy": mp}
        for b in model.blocks:
            fully_shard(b, **fkw)
        fully_shard(model, **fkw)
        wrapped = model
        opt = torch.optim.AdamW(model.parameters(), **TRAIN, foreach=foreach)
        if precision == "bf16" and reduce_dtype == "fp32":
            how += "; reduce_dtype fp32 (gradients reduce-scattered in fp32, torchtitan's default)"
        if hybrid:
            nd = world // 2
            how += f"; HSDP: 2-D mesh (2 replicas x {nd} shards), gradients all-reduced across replicas"
    rest = {n: tensor_bytes(p) for n, p in wrapped.named_parameters()}
    sharded = {n for n, p in wrapped.named_parameters() if is_dtensor(p)}
    return Strategy(wrapped, opt, psi, shapes, rest, sharded, how, nd)


def held_param_bytes(model: torch.nn.Module, rest: dict[str, int], sharded: set[str]) -> int:
    """Parameter bytes held right now: every parameter's at-rest storage, plus the full copy of
    those FSDP2 has all-gathered. FSDP2 registers a sharded parameter as a DTensor and swaps in a
    plain tensor while it is unsharded; the shard it came from stays allocated next to it."""
    from bench.memory import tensor_bytes

    cur = dict(model.named_parameters())
    total = 0
    for n, b in rest.items():
        total += b
        t = cur.get(n)
        if n in sharded and t is not None and not is_dtensor(t):
            total += tensor_bytes(t)
    return total
