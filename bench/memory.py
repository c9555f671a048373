"""Memory: exact bytes at rest, peak and its breakdown during a step. Units: bytes.

Methods (recorded in every report):
  state_bytes      numel * element_size of parameters, gradients and optimizer state;
                   DTensor shards count their local shard only (per rank).
  track_step       torch.distributed._tools MemTracker (FSDPMemTracker for FSDP2 modules):
                   bytes by category (parameters, gradients, optimizer state, activations,
                   temporaries, buffers) at the step's peak; on CUDA also the allocator's
                   max_memory_allocated / max_memory_reserved and NVML's device view.
  peak_above       peak bytes allocated while fn runs, above what was live before it:
                   CPU from the profiler's allocator events (they include buffers that fused
                   kernels allocate internally), CUDA from max_memory_allocated.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

CATEGORIES = (
    "parameters",
    "gradients",
    "optimizer_state",
    "activations",
    "temporaries",
    "collective_buffers",
    "buffers",
    "other",
)
# MemTracker's and FSDPMemTracker's categories -> ours. FSDP2 splits parameters and gradients into
# sharded and unsharded (all-gathered) copies and adds its collectives' buffers and the step's inputs
# (torch.distributed._tools.fsdp2_mem_tracker._FSDPRefType).
_MT_NAMES = {
    "Parameter": "parameters",
    "Sharded Param": "parameters",
    "Unsharded Param": "parameters",
    "Gradient": "gradients",
    "Sharded Grad": "gradients",
    "Unsharded Grad": "gradients",
    "Optstate": "optimizer_state",
    "OptState": "optimizer_state",
    "Activation": "activations",
    "Temp": "temporaries",
    "All Gather": "collective_buffers",
    "Reduce Scatter": "collective_buffers",
    "Buffer": "buffers",
    "Inputs": "other",
    "Other": "other",
}


def tensor_bytes(t: torch.Tensor) -> int:
    """Bytes of a tensor's data on this rank (DTensor: the local shard)."""
    local = t.to_local() if hasattr(t, "to_local") else t
    return int(local.numel() * local.element_size())


def _inner_optimizer(opt: Any) -> Any:
    # ZeroRedundancyOptimizer keeps this rank's shard of state in .optim
    return getattr(opt, "optim", opt)


def state_bytes(model: torch.nn.Module | None = None, optimizer: Any = None) -> dict[str, int]:
    """Exact bytes at rest on this rank: parameters, gradients, optimizer state."""
    out = {"parameters": 0, "gradients": 0, "optimizer_state": 0, "buffers": 0}
    if model is not None:
        for p in model.parameters():
            out["parameters"] += tensor_bytes(p)
            if p.grad is not None:
                out["gradients"] += tensor_bytes(p.grad)
        for b in model.buffers():
            out["buffers"] += tensor_bytes(b)
    if optimizer is not None:
        seen: set[int] = set()
        for st in _inner_optimizer(optimizer).state.values():
            for v in st.values():
                if torch.is_tensor(v) and id(v) not in seen:
                    seen.add(id(v))
                    out["optimizer_state"] += tensor_bytes(v)
    return out


def param_count(model: torch.nn.Module) -> int:
    """Global parameter count (DTensor: the full logical size)."""
    return int(sum(p.numel() for p in model.parameters()))


@dataclass
class MemoryReport:
    peak_bytes: int  # total tracked bytes at the peak moment
    at_peak: dict[str, int]  # by category at that moment
    method: str
    cuda_max_allocated: int | None = None
    cuda_max_reserved: int | None = None
    nvml_used: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _is_fsdp2(model: Any) -> bool:
    try:
        from torch.distributed.fsdp import FSDPModule
    except Exception:  # pragma: no cover
        return False
    return isinstance(model, FSDPModule)


def track_step(
    fn: Callable[[], Any],
    model: torch.nn.Module | None = None,
    optimizer: Any = None,
    device: torch.device | str = "cpu",
) -> MemoryReport:
    """Run fn once under a memory tracker; return the peak and its breakdown."""
    device = torch.device(device)
    if model is not None and _is_fsdp2(model):
        from torch.distributed._tools.fsdp2_mem_tracker import FSDPMemTracker

        mt: Any = FSDPMemTracker(model, _inner_optimizer(optimizer))
        method = "FSDPMemTracker"
    else:
        from torch.distributed._tools.mem_tracker import MemTracker

        mt = MemTracker()
        ext = [m for m in (model, _inner_optimizer(optimizer)) if m is not None]
        if ext:
            mt.track_external(*ext)
        method = "MemTracker"
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    with mt:
        fn()
    snap = mt.get_tracker_snapshot("peak")
    dev_snap: dict[Any, int] = {}
    for d, cats in snap.items():
        if torch.device(d).type == device.type:
            dev_snap = cats
    at_peak = {c: 0 for c in CATEGORIES}
    total = 0
    for k, v in dev_snap.items():
        name = getattr(k, "value", k)
        if name == "Total":
            total = int(v)
        elif name in _MT_NAMES:
            at_peak[_MT_NAMES[name]] += int(v)
    rep = MemoryReport(peak_bytes=total, at_peak=at_peak, method=method)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        rep.cuda_max_allocated = int(torch.cuda.max_memory_allocated(device))
        rep.cuda_max_reserved = int(torch.cuda.max_memory_reserved(device))
        rep.nvml_used = nvml_used_bytes(device.index or 0)
    return rep


def peak_above(fn: Callable[[], Any], device: torch.device | str = "cpu") -> tuple[int, str]:
    """Peak bytes allocated during fn() above the bytes live before it; returns (bytes, method)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - base), "cuda max_memory_allocated"
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events.sort(key=lambda e: e.start_ns())
    cur = peak = 0
    for e in events:
        if e.device_type() != torch.autograd.DeviceType.CPU:
            continue
        cur += e.nbytes()
        peak = max(peak, cur)
    return int(peak), "profiler allocator events (CPU)"


def nvml_used_bytes(index: int = 0) -> int | None:
    """Device memory in use as NVML sees it (includes the CUDA context and other processes)."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            h = pynvml.nvmlDeviceGetHandleByIndex(index)
            return int(pynvml.nvmlDeviceGetMemoryInfo(h).used)
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # NVMLError (no driver/GPU) or pynvml missing
        return None
