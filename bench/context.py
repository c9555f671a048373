"""What the core hands a plugin's run(): the device, the rank, and the measurement services.

Plugins call these instead of timing or measuring memory themselves, so every plugin's
figures come from one implementation (timing.py, memory.py, flops.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    fixed_sizes: bool = False  # `bench run --fixed-sizes`: afford() probes nothing and returns the smallest size

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

    def throughput(
        self, flops: float, seconds: float, dtype: Any, with_matmul: bool = True, energy_j: float | None = None
    ) -> dict[str, Metric]:
        """TFLOP/s, MFU, % of the measured matmul; J/TFLOP when energy_j (a Timing's) is given."""
        return _flops.throughput_metrics(flops, seconds, dtype, self.device, with_matmul=with_matmul, energy_j=energy_j)

    # --- budgets -----------------------------------------------------------------------------
    def afford(
        self,
        build: Callable[[int], Callable[[], Any]],
        sizes: Sequence[int],
        budget_s: float,
        *,
        exponent: float = 3.0,
        calls: int = 12,
        what: str = "the kernel",
    ) -> tuple[int, str]:
        """Probe a kernel whose speed depends on the machine (fp8 on a CPU, an emulated dtype, a
        fallback path): cost one call at the smallest size (after one warm-up call; bench.timing.
        call_cost: on a CPU the smaller of wall and CPU time, so other work on a busy machine delays a
        kernel but does not make it look slow), extrapolate as size^exponent, and return
        the largest size whose measurement (~`calls` calls) fits budget_s, with a note of what was
        measured. raise Skip when even the smallest size does not fit. With fixed_sizes (`bench run
        --fixed-sizes`, the CI gate): no probe, never Skip, the smallest size. The size chosen is the row's
        identity (a label), never a gated metric."""
        from bench.contract import Skip

        n0 = min(sizes)
        if self.fixed_sizes:  # the same size on every host, whatever it costs here (the gate's rows must match)
            build(n0)
            return n0, f"{what}: fixed size {n0} (--fixed-sizes: no probe; the smallest of {sorted(sizes)})"
        fn = build(n0)
        first = _timing.call_cost(fn, self.device)
        if first * calls > budget_s:
            raise Skip(
                f"{what}: one call at size {n0} took {first:.3g} s (first call); ~{calls} calls would "
                f"need {first * calls:.3g} s, over the budget of {budget_s:g} s"
            )
        one = max(_timing.call_cost(fn, self.device), 1e-9)
        fits = [n for n in sizes if one * (n / n0) ** exponent * calls <= budget_s]
        if not fits:
            raise Skip(
                f"{what}: one call at size {n0} took {one:.3g} s; ~{calls} calls would need "
                f"{one * calls:.3g} s, over the budget of {budget_s:g} s"
            )
        n = max(fits)
        note = f"{what}: probed one call at size {n0}: {one * 1e3:.3g} ms (cost); budget {budget_s:g} s -> size {n}" + (
            f" (capped from {max(sizes)})" if n < max(sizes) else ""
        )
        return n, note
