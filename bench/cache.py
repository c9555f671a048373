"""Figures measured once per machine (a matmul peak, a copy bandwidth): kept in a per-user cache
file so that every case that reports "% of" them does not pay for measuring them again.

Keyed by the fingerprint's machine_id (what decides speed: the CPU part and its dispatch features,
cores, kernel set, torch/MKL/oneDNN versions, GPU, CUDA, driver: bench.fingerprint) plus the figure's own key (device, dtype, size, thread count). $BENCH_CACHE_DIR, else
$XDG_CACHE_HOME/bench, else ~/.cache/bench; BENCH_NO_CACHE=1 measures afresh. Written atomically,
so concurrent cases never read half a file.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path


def cache_dir() -> Path:
    """$BENCH_CACHE_DIR, else $XDG_CACHE_HOME/bench, else ~/.cache/bench (bench.flops uses the same)."""
    base = os.environ.get("BENCH_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "bench"
    )
    return Path(base)


def machine_cached(
    figure: str, key: str, measure: Callable[[], float], plausible: tuple[float, float] = (0.0, math.inf)
) -> tuple[float, str]:
    """(value, where it came from) of a figure measured once per machine: looked up under
    `machine_id|key` in cache_dir()/<figure>.json, else measured now and stored (written atomically,
    so concurrent cases never read half a file). plausible: the open range (lo, hi) a value must lie in
    to be used from, or stored in, the cache; a cached value outside it (a poisoned or corrupt cache:
    1e-300, Infinity, a string) is ignored with a warning, measured again and replaced."""
    from bench.fingerprint import fingerprint

    lo, hi = plausible
    full = f"{fingerprint()['machine_id']}|{key}"
    path = cache_dir() / f"{figure}.json"
    use_cache = not os.environ.get("BENCH_NO_CACHE")

    def ok(v: object) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and lo < v < hi

    if use_cache:
        try:
            hit = json.loads(path.read_text()).get(full)
        except (OSError, ValueError, AttributeError, TypeError, RecursionError):
            hit = None
        if isinstance(hit, dict) and ok(hit.get("value")):
            return float(hit["value"]), f"measured on this machine {hit.get('at', '?')} (cached)"
        if hit is not None:
            shown = json.dumps(hit.get("value") if isinstance(hit, dict) else hit, default=str)[:40]
            print(
                f"warning: {path}: cached {figure} {shown} is not a finite number in ({lo:g}, {hi:g}); measuring again",
                file=sys.stderr,
            )
    value = float(measure())
    stamp = time.strftime("%Y-%m-%d %H:%M")
    if use_cache and ok(value):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                data = json.loads(path.read_text())
                data = data if isinstance(data, dict) else {}
            except (OSError, ValueError, RecursionError):
                data = {}
            data[full] = {"value": value, "at": stamp}
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(data, indent=1))
            os.replace(tmp, path)
        except OSError:
            pass
    return value, f"measured on this machine {stamp}"
