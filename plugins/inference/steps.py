"""Per-step timing of a stateful sequence (a generation: one start call, then n dependent steps).

bench.timing.measure times a call that can be repeated as is; a decode step cannot (each one
extends the KV cache), and its latency depends on the step's position. This helper times whole
sequences: each repeat calls start() once (the prefill) and then step(state, i) for i < n, timing
every call separately; repeats continue until the median end-to-end time is known to
target_rel_ci (95% CI half-width, bench.stats.median_ci) or max_time_s has passed (at least
min_repeats). One untimed sequence first (warm-up: allocator, kernels' first calls).

CPU: time.perf_counter around each call. CUDA: an event between consecutive calls and one
synchronize per sequence, so the steps run back to back as in real decoding (a gap where the GPU
waits for the host's next launch is part of the step's time, as it is of the user's latency).
Energy: NVML's total-energy counter over all timed sequences (bench/energy.py), else the reason.

Generic (nothing here knows a model): a candidate for the core (bench/timing.py) if another
plugin needs it.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from bench.stats import median, median_ci


@dataclass
class SequenceTiming:
    start_s: list[float]  # per repeat: seconds of start() (the prefill)
    steps_s: list[list[float]]  # per repeat: seconds of each step, in order
    method: str  # perf_counter | cuda_events
    stop_reason: str  # ci_target | time_cap | max_repeats
    energy_j: float | None  # joules per repeat (start + all steps), None: not available
    energy_why: str
    last_state: Any = None  # what start() returned in the last timed repeat, after its steps

    @property
    def total_s(self) -> list[float]:
        """End-to-end seconds per repeat: start + every step."""
        return [a + sum(s) for a, s in zip(self.start_s, self.steps_s)]

    @property
    def step_samples(self) -> list[float]:
        return [x for rep in self.steps_s for x in rep]

    def step_median(self) -> list[float]:
        """Median over repeats of step i's time, for each i."""
        n = min((len(r) for r in self.steps_s), default=0)
        return [median([r[i] for r in self.steps_s]) for i in range(n)]

    def percentile(self, q: float) -> float:
        """q-th percentile (0-100) of all step times, nearest rank (nan without steps)."""
        xs = sorted(self.step_samples)
        if not xs:
            return float("nan")
        rank = max(1, min(len(xs), -(-len(xs) * q // 100)))  # ceil(n q / 100), in 1..n
        return xs[int(rank) - 1]


def _energy_meter(device: torch.device) -> Any:
    from bench.energy import EnergyMeter

    return EnergyMeter.open(device)


def time_sequence(
    start: Callable[[], Any],
    step: Callable[[Any, int], Any],
    n_steps: int,
    device: torch.device,
    *,
    max_time_s: float = 2.0,
    min_repeats: int = 3,
    max_repeats: int = 200,
    target_rel_ci: float = 0.02,
) -> SequenceTiming:
    """Time `start()` then `step(state, i)` for i in range(n_steps), repeatedly (see module doc)."""
    cuda = device.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    last: list[Any] = [None]

    def one() -> tuple[float, list[float]]:
        if cuda:
            ev = [torch.cuda.Event(enable_timing=True) for _ in range(n_steps + 2)]
            ev[0].record()
            state = start()
            ev[1].record()
            for i in range(n_steps):
                step(state, i)
                ev[i + 2].record()
            torch.cuda.synchronize(device)
            ms = [ev[j].elapsed_time(ev[j + 1]) / 1e3 for j in range(n_steps + 1)]
            last[0] = state
            return ms[0], ms[1:]
        t0 = time.perf_counter()
        state = start()
        marks = [time.perf_counter()]
        for i in range(n_steps):
            step(state, i)
            marks.append(time.perf_counter())
        last[0] = state
        return marks[0] - t0, [b - a for a, b in itertools.pairwise(marks)]

    sync()
    one()  # warm-up, untimed
    meter = _energy_meter(device)
    e0 = meter.read() if meter.available else 0.0
    starts: list[float] = []
    steps: list[list[float]] = []
    reason = "max_repeats"
    t_begin = time.perf_counter()
    while len(starts) < max_repeats:
        a, s = one()
        starts.append(a)
        steps.append(s)
        n = len(starts)
        totals = [x + sum(y) for x, y in zip(starts, steps)]
        if n >= max(min_repeats, 6) and median_ci(totals).rel_halfwidth <= target_rel_ci:
            reason = "ci_target"
            break
        if n >= min_repeats and time.perf_counter() - t_begin >= max_time_s:
            reason = "time_cap"
            break
    energy = None
    if meter.available:
        sync()
        energy = (meter.read() - e0) / len(starts)
    return SequenceTiming(starts, steps, "cuda_events" if cuda else "perf_counter", reason, energy, meter.why, last[0])
