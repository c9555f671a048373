"""What the core hands a plugin's run(): the device, the rank, and the measurement services.

Plugins call these instead of timing or measuring memory themselves, so every plugin's
figures come from one implementation (timing.py, memory.py, flops.py).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from bench import flops as _flops
from bench import memory as _memory
from bench import timing as _timing
from bench.contract import Metric


@dataclass
class Context:
    device: torch.device
    profile: str = "quick"
    rank: int = 0
    world_size: int = 1
    seed: int = 0
    workdir: Path = field(default_factory=lambda: Path(os.environ.get("TMPDIR", "/tmp")))
    max_time_s: float = 2.0  # per timed measurement

    @property
    def distributed(self) -> bool:
        return self.world_size > 1 or (torch.distributed.is_available() and torch.distributed.is_initialized())

    # --- time -------------------------------------------------------------------------
    def time(self, fn: Callable[[], Any], **kw: Any) -> _timing.Timing:
        kw.setdefault("max_time_s", self.max_time_s)
        return _timing.measure(fn, self.device, **kw)

    # --- memory -----------------------------------------------------------------------
    def state_bytes(self, model: torch.nn.Module | None = None, optimizer: Any = None) -> dict[str, int]:
        return _memory.state_bytes(model, optimizer)

    def track_step(self, fn: Callable[[], Any], model: Any = None, optimizer: Any = None) -> _memory.MemoryReport:
        return _memory.track_step(fn, model, optimizer, self.device)

    def peak_above(self, fn: Callable[[], Any]) -> tuple[int, str]:
        return _memory.peak_above(fn, self.device)

    # --- FLOPs ------------------------------------------------------------------------
    def count_flops(self, fn: Callable[[], Any]) -> int:
        return _flops.count_flops(fn)

    def throughput(self, flops: float, seconds: float, dtype: Any, with_matmul: bool = True) -> dict[str, Metric]:
        return _flops.throughput_metrics(flops, seconds, dtype, self.device, with_matmul=with_matmul)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def timing_metrics(t: _timing.Timing, prefix: str = "time") -> tuple[dict[str, Metric], dict[str, list[float]]]:
    """Standard metrics and raw samples for one Timing: median in ms, CI, noise, stop reason."""
    m = {
        f"{prefix}_ms": Metric(t.median_s * 1e3, "ms"),
        f"{prefix}_ci95_pct": Metric(100 * t.rel_ci, "% of median (95% CI half-width)"),
        f"{prefix}_noise_pct": Metric(100 * t.noise_iqr if t.noise_iqr == t.noise_iqr else None, "% of median (IQR)"),
        f"{prefix}_samples": Metric(len(t.samples_s), "count"),
        f"{prefix}_stop": Metric(t.stop_reason, ""),
        "threads": Metric(t.threads, "threads"),
    }
    return m, {f"{prefix}_s": t.samples_s}


def memory_metrics(rep: _memory.MemoryReport, prefix: str = "peak") -> dict[str, Metric]:
    """Peak and its breakdown in MiB (bytes / 2**20), with the method in the unit."""
    mib = 2**20
    out = {f"{prefix}_mib": Metric(rep.peak_bytes / mib, f"MiB ({rep.method})")}
    for c, v in rep.at_peak.items():
        if v:
            out[f"{prefix}_{c}_mib"] = Metric(v / mib, f"MiB at peak ({rep.method})")
    if rep.cuda_max_allocated is not None:
        out["cuda_max_allocated_mib"] = Metric(rep.cuda_max_allocated / mib, "MiB (torch.cuda.max_memory_allocated)")
        out["cuda_max_reserved_mib"] = Metric((rep.cuda_max_reserved or 0) / mib, "MiB (torch.cuda.max_memory_reserved)")
    if rep.nvml_used is not None:
        out["nvml_used_mib"] = Metric(rep.nvml_used / mib, "MiB (NVML device used, incl. context/other processes)")
    return out
