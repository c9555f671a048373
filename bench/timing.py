"""Timing: warm-up, then adaptive sampling until the median is known well enough.

Warm-up: calls until warmup_s has passed (at least min_warmup), each one waited for (CUDA:
synchronized), so the warm-up measures the device's time per call and never fills the launch
queue. Blocked timing: when one call is shorter than min_sample_s (1 ms; the timer and loop cost
are ~0.1 us), each sample times a block of `inner` calls and records the per-call mean; the block
size is kept with the samples (as torch.utils.benchmark's blocked_autorange and nvbench's batch
mode do).
Stop rule: sample until the 95% CI half-width of the median is within target_rel_ci (default CPU
2%, GPU 1%), or the time cap is reached, or max_samples. The stop reason, every raw sample, and
the noise are recorded.
GPU: CUDA events around each sample, then synchronize; the device's energy over the timed window
from NVML's total-energy counter (bench/energy.py) where it has one. CPU: time.perf_counter with
the torch thread count recorded.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import torch

from bench.stats import iqr_rel, median_ci

DEFAULT_TARGET = {"cpu": 0.02, "cuda": 0.01}


@dataclass
class Timing:
    samples_s: list[float]  # seconds per call (each sample averages `inner` calls)
    median_s: float
    ci_low_s: float
    ci_high_s: float
    rel_ci: float  # 95% CI half-width of the median / median
    noise_iqr: float  # IQR / median
    stop_reason: str  # "ci_target" | "time_cap" | "max_samples"
    warmup_calls: int
    inner: int
    method: str  # "cuda_events" | "perf_counter"
    threads: int
    target_rel_ci: float
    energy_j: float | None = None  # joules per call over the timed window (NVML), None: not available
    energy_why: str = ""  # why energy_j is None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(
    fn: Callable[[], Any],
    device: torch.device | str = "cpu",
    *,
    target_rel_ci: float | None = None,
    max_time_s: float = 2.0,
    warmup_s: float = 0.1,
    warmup_max_s: float = 10.0,
    min_warmup: int = 2,
    min_samples: int = 8,
    max_samples: int = 2000,
    min_sample_s: float = 1e-3,
) -> Timing:
    """Time fn() on device. fn must do the whole step (e.g. forward+backward)."""
    device = torch.device(device)
    target = target_rel_ci if target_rel_ci is not None else DEFAULT_TARGET.get(device.type, 0.02)

    # Warm-up: at least min_warmup calls and warmup_s seconds (caches, autotuning, lazy init); each
    # call waited for, so per_call is the device's time, not the launch rate. Bounded by warmup_max_s
    # (a slow kernel is not warmed up forever) and 1000 calls.
    calls = 0
    t0 = time.perf_counter()
    _sync(device)
    while calls < min_warmup or time.perf_counter() - t0 < warmup_s:
        fn()
        _sync(device)
        calls += 1
        if calls >= 1000 or time.perf_counter() - t0 >= warmup_max_s:
            break
    per_call = (time.perf_counter() - t0) / calls
    # Batch very fast calls so one sample is >= min_sample_s (timer resolution, launch jitter).
    inner = max(1, math.ceil(min_sample_s / max(per_call, 1e-9))) if per_call < min_sample_s else 1

    use_events = device.type == "cuda"
    from bench.energy import EnergyMeter

    meter = EnergyMeter.open(device)
    samples: list[float] = []
    reason = "max_samples"
    e0 = meter.read() if meter.available else 0.0
    start_all = time.perf_counter()
    while len(samples) < max_samples:
        if use_events:
            a = torch.cuda.Event(enable_timing=True)
            b = torch.cuda.Event(enable_timing=True)
            a.record()
            for _ in range(inner):
                fn()
            b.record()
            torch.cuda.synchronize(device)
            samples.append(a.elapsed_time(b) / 1e3 / inner)
        else:
            s = time.perf_counter()
            for _ in range(inner):
                fn()
            samples.append((time.perf_counter() - s) / inner)
        if len(samples) >= min_samples and median_ci(samples).rel_halfwidth <= target:
            reason = "ci_target"
            break
        if time.perf_counter() - start_all >= max_time_s and len(samples) >= 3:
            reason = "time_cap"
            break
    energy = None
    if meter.available:
        _sync(device)
        energy = (meter.read() - e0) / (len(samples) * inner)
    ci = median_ci(samples)
    return Timing(
        samples_s=samples,
        median_s=ci.median,
        ci_low_s=ci.low,
        ci_high_s=ci.high,
        rel_ci=ci.rel_halfwidth,
        noise_iqr=iqr_rel(samples),
        stop_reason=reason,
        warmup_calls=calls,
        inner=inner,
        method="cuda_events" if use_events else "perf_counter",
        threads=torch.get_num_threads(),
        target_rel_ci=target,
        energy_j=energy,
        energy_why=meter.why,
    )
