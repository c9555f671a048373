"""What `bench run` says while it runs (on stderr): the plan's total estimate at the start, one line
per case start and end with the time left (ETA), and on a terminal a live line with the elapsed
time of the running case (rich.progress, cleared when the case ends). --quiet: none of it.

ETA: the plan's estimates of the cases not yet run (bench/plan.py), scaled by how the finished
cases compared with their own estimates (actual / planned so far), so a machine slower than the
plan's assumptions is accounted for after its first case.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from typing import IO, Any

from bench.tables import clip, term_width


def hms(s: float) -> str:
    """Seconds as m:ss, or h:mm:ss from an hour."""
    s = max(0, round(s))
    h, rest = divmod(s, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


def _as_dict(params: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(params) and not isinstance(params, type):
        return dataclasses.asdict(params)
    return dict(params)


def case_text(params: Any, varying: Sequence[str]) -> str:
    """A case as the parameters that tell it from its plugin's other cases (all of them when none vary)."""
    d = _as_dict(params)
    keys = [k for k in d if k in varying] or list(d)
    return " ".join(f"{k}={d[k]}" for k in keys)


def varying_params(cases: Sequence[Any]) -> list[str]:
    ds = [_as_dict(c) for c in cases]
    keys = list(dict.fromkeys(k for d in ds for k in d))
    return [k for k in keys if len({json.dumps(d.get(k), default=str) for d in ds}) > 1]


class Progress:
    """One run's progress lines. estimates: seconds per case, in run order (None: no plan)."""

    def __init__(
        self,
        stream: IO[str] | None = None,
        total: int = 0,
        estimates: Sequence[float] | None = None,
        quiet: bool = False,
        live: bool | None = None,
    ):
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = quiet
        self.estimates = list(estimates) if estimates is not None else None
        self.live = (not quiet and self.stream.isatty()) if live is None else live
        self.total = total  # cases in the run (all plugins)
        self.done = 0  # cases finished in this run
        self.planned_done = 0.0  # their planned seconds
        self.actual_done = 0.0  # their seconds
        self.t0 = time.time()
        self._bar: Any = None
        self.width = term_width()

    def say(self, text: str) -> None:
        if not self.quiet:
            print(clip(text, self.width), file=self.stream, flush=True)

    def total_estimate(self) -> float | None:
        return sum(self.estimates) if self.estimates is not None else None

    def eta(self) -> float | None:
        if self.estimates is None:
            return None
        rest = sum(self.estimates[self.done :])
        scale = self.actual_done / self.planned_done if self.planned_done > 0 and self.actual_done > 0 else 1.0
        return rest * scale

    def start(self, i: int, n: int, plugin: str, label: str) -> None:
        self.say(f"[{i}/{n}] {plugin}: {label}")
        if self.live and not self.quiet:
            from rich.console import Console
            from rich.progress import Progress as Bar
            from rich.progress import SpinnerColumn, TextColumn, TimeElapsedColumn

            con = Console(file=self.stream, width=self.width, highlight=False)
            self._bar = Bar(
                SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=con, transient=True
            )
            self._bar.add_task(f"      {plugin} case {i}/{n} running", total=None)
            self._bar.start()

    def close(self) -> None:
        """Clear the live line (a case ended, or the run was interrupted)."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def end(self, status: str, message: str, secs: float) -> None:
        self.close()
        if self.estimates is not None and self.done < len(self.estimates):
            self.planned_done += self.estimates[self.done]
            self.actual_done += secs
        self.done += 1
        eta = self.eta()
        left = max(self.total - self.done, 0)
        tail = f"elapsed {hms(time.time() - self.t0)}, {left} left" + (
            f", about {hms(eta)} to go" if eta is not None and left else ""
        )
        note = f": {message}" if status != "ok" and message else ""
        self.say(f"      -> {status}{note} ({secs:.1f} s; {tail})")
