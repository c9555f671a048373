"""Click option types shared by the commands (bench run, regress, slurm, ...)."""

from __future__ import annotations

import math
from typing import Any

import click


class Finite(click.ParamType):
    """A finite number within [lo, hi]: nan and inf are refused (they would switch limits off)."""

    name = "number"

    def __init__(self, lo: float, hi: float = math.inf, min_open: bool = False):
        self.lo, self.hi, self.min_open = lo, hi, min_open

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        try:
            v = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(v) or not self.lo <= v <= self.hi or (self.min_open and v == self.lo):
            hi = "" if self.hi == math.inf else f" and <= {self.hi:g}"
            lo = f"> {self.lo:g}" if self.min_open else f">= {self.lo:g}"
            self.fail(f"{value!r} must be a finite number {lo}{hi}", param, ctx)
        return v
