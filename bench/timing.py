"""Timing: warm-up, then adaptive sampling until the median is known well enough.

Warm-up: calls until warmup_s has passed (at least min_warmup), each one waited for (CUDA:
synchronized), so the warm-up measures the device's time per call and never fills the launch
queue. Blocked timing: when one call is shorter than min_sample_s (1 ms; the timer and loop cost
are ~0.1 us), each sample times a block of `inner` calls and records the per-call mean; the block
size is kept with the samples (as torch.utils.benchmark's blocked_autorange and nvbench's batch
mode do). Measured against torch.utils.benchmark (blocks of >= 10 ms for a us-op; 1 thread, 64^2 /
128^2 / 256^2 fp32 matmuls, 8-12 alternating rounds, load 0.9 on 2 cores): median ratio 1.030 /
0.998 / 1.003 with 1 ms blocks, 1.022 / 0.999 / 1.000 with 10 ms blocks -- no difference worth 10x
the samples' duration; under contention (load 1.6) 1 ms blocks read 7-10% below the reference
(they dodge other processes' time slices that longer blocks absorb): extra["cpu_share"] shows that.
Stop rule: sample until the 95% CI half-width of the median is within target_rel_ci (default CPU
2%, GPU 1%) AND the samples span at least min_time_s (0.1 s: some ten scheduler periods of a few
ms, so one quiet or busy moment of the machine cannot pass for its typical state;
torch.utils.benchmark's blocked_autorange takes 0.2 s), or the time cap is reached, or
max_samples. The CI reported allows for dependent samples (bench.stats.median_ci(serial=True):
widened by the samples' sign autocorrelation), so runs of slow or fast samples do not make it look
tighter than a rerun would agree with; the stop rule uses the independent-samples CI, so a
drifting machine does not run every timing to its cap (the reported CI may then exceed the target:
it says what the samples support). The stop reason, every raw sample, and the noise are recorded.
GPU: CUDA events around each sample, then synchronize; the device's energy over the timed window
from NVML's total-energy counter (bench/energy.py) where it has one. CPU: time.perf_counter with
the torch thread count recorded.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from bench.stats import iqr_rel, median_ci, sign_autocorr

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


def call_cost(fn: Callable[[], Any], device: torch.device | str = "cpu") -> float:
    """Seconds one call of fn costs, for budgets. CUDA: wall time, synchronized. CPU: the smaller of
    wall time and the process's CPU time: other work on a busy machine delays a kernel (wall grows,
    CPU time does not), so it does not make the kernel look slow; a single-threaded slow kernel is
    never underestimated (its CPU time is its wall time on a quiet machine)."""
    device = torch.device(device)
    _sync(device)
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    _sync(device)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    if device.type == "cuda":
        return wall
    return min(wall, cpu)


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
    min_time_s: float = 0.1,
    serial_ci: bool = True,
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
    next_check = min_samples  # the stop rule sorts the samples: checked every ~6% more samples, not every one
    e0 = meter.read() if meter.available else 0.0
    cpu0 = time.process_time()  # CPU time of this process, all threads: how much of the window it ran
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
        n, spent = len(samples), time.perf_counter() - start_all
        if n >= next_check and spent >= min_time_s:
            next_check = n + max(1, n // 16)
            if median_ci(samples).rel_halfwidth <= target:
                reason = "ci_target"
                break
        if spent >= max_time_s and n >= 3:
            reason = "time_cap"
            break
    energy = None
    if meter.available:
        _sync(device)
        energy = (meter.read() - e0) / (len(samples) * inner)
    ci = median_ci(samples, serial=serial_ci)
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
        extra=_window(samples, start_all, cpu0, device),
    )


def _window(samples: list[float], start_all: float, cpu0: float, device: torch.device) -> dict[str, Any]:
    """Facts about the timed window: its length (s), the samples' sign autocorrelation, and on CPU the
    share of the window's thread-seconds this process got (process CPU time / (wall x torch threads);
    ~1 on a machine to itself -- OpenMP threads spin while they wait -- lower when other work took
    the cores: then the samples measure the contention, not the op)."""
    wall = time.perf_counter() - start_all
    out: dict[str, Any] = {"timed_s": wall, "sign_autocorr": sign_autocorr(samples)}
    if device.type == "cpu" and wall > 0:
        out["cpu_share"] = (time.process_time() - cpu0) / (wall * torch.get_num_threads())
    return out
