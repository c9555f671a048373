"""Figures measured once per machine (a matmul peak, a copy bandwidth): kept in a per-user cache
file so that every case that reports "% of" them does not pay for measuring them again.

Keyed by the fingerprint's machine_id (what decides speed: the CPU part and its dispatch features,
cores, kernel set, torch/MKL/oneDNN versions, GPU, CUDA, driver: bench.fingerprint) plus the figure's own key (device, dtype, size, thread count). $BENCH_CACHE_DIR, else
$XDG_CACHE_HOME/bench, else ~/.cache/bench; BENCH_NO_CACHE=1 measures afresh. Written atomically,
so concurrent cases never read half a file.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path


def cache_dir() -> Path:
    """$BENCH_CACHE_DIR, else $XDG_CACHE_HOME/bench, else ~/.cache/bench (bench.flops uses the same)."""
    base = os.environ.get("BENCH_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "bench"
    )
    return Path(base)


def machine_cached(figure: str, key: str, measure: Callable[[], float]) -> tuple[float, str]:
    """(value, where it came from) of a figure measured once per machine: looked up under
    `machine_id|key` in cache_dir()/<figure>.json, else measured now and stored (a positive value
    only; written atomically, so concurrent cases never read half a file)."""
    from bench.fingerprint import fingerprint

    full = f"{fingerprint()['machine_id']}|{key}"
    path = cache_dir() / f"{figure}.json"
    use_cache = not os.environ.get("BENCH_NO_CACHE")
    if use_cache:
        try:
            hit = json.loads(path.read_text()).get(full)
            if hit and float(hit.get("value", 0)) > 0:
                return float(hit["value"]), f"measured on this machine {hit['at']} (cached)"
        except (OSError, ValueError, AttributeError, TypeError):
            pass
    value = float(measure())
    stamp = time.strftime("%Y-%m-%d %H:%M")
    if use_cache and value > 0:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                data = json.loads(path.read_text())
                data = data if isinstance(data, dict) else {}
            except (OSError, ValueError):
                data = {}
            data[full] = {"value": value, "at": stamp}
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(data, indent=1))
            os.replace(tmp, path)
        except OSError:
            pass
    return value, f"measured on this machine {stamp}"
