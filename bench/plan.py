"""`bench run --plan`: every case a run would start, per plugin, with an estimate of its time from
stated assumptions -- checkable without the device the run is for.

estimate = start-up of the case's process(es) (below) + the plugin's own estimate of its work
(Plugin.estimate_s(params, device_type)), capped by the case's time limit. A plugin that gives no
estimate is charged UNKNOWN_WORK_S and flagged, so a plan never looks cheaper than it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench.contract import Plugin

# Start-up per case, seconds. Sources: CPU fresh process 1.3 s measured here (interpreter + torch
# import, results/cpu-amd-epyc-overhead.txt); torchrun 6-13 s per launch on 2 cores (shared/design.md);
# CUDA context creation and first kernel ~3 s more per process (an assumption: no GPU measured yet);
# a warm worker's next case ~0.05 s (no interpreter start).
STARTUP_S = {
    ("process", "cpu"): 1.3,
    ("process", "cuda"): 4.5,
    ("reuse", "cpu"): 0.05,
    ("reuse", "cuda"): 0.05,
    ("torchrun", "cpu"): 9.0,
    ("torchrun", "cuda"): 12.0,
}
FIRST_WARM_S = {"cpu": 1.3, "cuda": 4.5}  # the warm worker's own start, once per plugin
UNKNOWN_WORK_S = 30.0
ASSUMPTIONS = (
    "start-up per case: fresh process 1.3 s on CPU (measured), 4.5 s with CUDA (assumed: +3 s context); "
    "torchrun 9 s on CPU (design.md: 6-13 s), 12 s with CUDA (assumed); warm-worker cases 0.05 s "
    f"after its first start; work: the plugin's estimate_s, or {UNKNOWN_WORK_S:g} s where it gives none; "
    "each case capped at its time limit"
)


@dataclass
class Planned:
    plugin: str
    params: Any
    kind: str  # process | reuse | torchrun
    startup_s: float
    work_s: float
    limit_s: float
    known: bool  # the plugin estimated its work

    @property
    def total_s(self) -> float:
        return min(self.startup_s + self.work_s, self.limit_s)


def plan(plugin: Plugin, cases: Sequence[Any], device_type: str, timeout_s: float | None = None) -> list[Planned]:
    import torch

    local = "cuda" if torch.cuda.is_available() else "cpu"
    out = []
    warm_started = False
    for p in cases:
        launch = plugin.launch(p)
        kind = "reuse" if launch.reuse and launch.kind == "process" else launch.kind
        start = STARTUP_S[(kind, device_type)]
        if kind == "reuse" and not warm_started:
            start, warm_started = FIRST_WARM_S[device_type], True
        if device_type == local and plugin.available(p):  # elsewhere this machine cannot tell
            out.append(Planned(plugin.name, p, "skipped", 0.0, 0.0, 0.0, True))
            continue
        est = plugin.estimate_s(p, device_type)
        work = float(est) if est is not None else UNKNOWN_WORK_S
        out.append(Planned(plugin.name, p, kind, start, work, float(timeout_s or launch.timeout_s), est is not None))
    return out


def render(planned: Sequence[Planned], budget_s: float | None = None, margin: float = 0.3) -> str:
    """One line per case, a total per plugin and overall, the assumptions; against a budget with margin."""
    from tabulate import tabulate

    from bench.runner import case_label

    rows: list[list[str]] = []
    totals: dict[str, float] = {}
    for c in planned:
        totals[c.plugin] = totals.get(c.plugin, 0.0) + c.total_s
        rows.append(
            [
                c.plugin,
                case_label(c.params),
                c.kind,
                f"{c.startup_s:.1f}",
                f"{c.work_s:.1f}" + ("" if c.known else " (no estimate)"),
                f"{c.total_s:.1f}",
            ]
        )
    text = [tabulate(rows, headers=["plugin", "case", "launch", "start-up [s]", "work [s]", "estimate [s]"])]
    text.append("")
    text += [
        f"{p}: {n} cases, {t:.0f} s (estimate)"
        for p, t, n in ((p, t, sum(1 for c in planned if c.plugin == p)) for p, t in totals.items())
    ]
    total = sum(totals.values())
    line = f"total: {len(planned)} cases, {total:.0f} s (estimate)"
    if budget_s:
        need = total * (1 + margin)
        fits = need <= budget_s
        line += f"; with a {margin:.0%} margin {need:.0f} s {'fits' if fits else 'does NOT fit'} the budget of {budget_s:.0f} s"
    text.append(line)
    text.append(f"assumptions: {ASSUMPTIONS}")
    return "\n".join(text)
