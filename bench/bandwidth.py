"""Measured memory bandwidth of a device: one large tensor copy, timed once per machine.

dst.copy_(src) over `nbytes` reads nbytes and writes nbytes, so GB/s = 2 * nbytes / time / 1e9
(the STREAM "copy" convention, McCalpin 1995). Sizes are far above the last-level cache so the
copy streams from memory: CPU 1 GiB per tensor (LLCs reach a few hundred MiB), CUDA 2 GiB (H100 /
H200 L2: 50-60 MB). Timed with bench.timing.measure (warm-up, median, CUDA events on a GPU).

The figure is what "% of measured bandwidth" columns divide by: the bandwidth this device reaches
with a plain copy here, not a datasheet number. Measured once per machine (fingerprint machine_id),
device, size and thread count, and kept in a per-user cache file beside bench.flops' matmul peak
(bench/cache.py); BENCH_NO_CACHE=1 measures afresh.
"""

from __future__ import annotations

import functools

from bench.cache import machine_cached

GIB = 2**30
DEFAULT_BYTES = {"cpu": 1 * GIB, "cuda": 2 * GIB}


def copy_gbps(device_str: str, nbytes: int, max_time_s: float = 0.5) -> float:
    """GB/s of dst.copy_(src) for two nbytes tensors on the device: 2 * nbytes / median time / 1e9."""
    import torch

    from bench.timing import measure

    device = torch.device(device_str)
    n = max(1, nbytes // 4)
    src = torch.ones(n, dtype=torch.float32, device=device)  # touched: no page faults in the timing
    dst = torch.zeros(n, dtype=torch.float32, device=device)
    t = measure(lambda: dst.copy_(src), device, max_time_s=max_time_s, min_samples=3)
    return 2 * n * 4 / t.median_s / 1e9


@functools.cache
def measured_bandwidth(device_str: str, nbytes: int | None = None) -> tuple[float, str]:
    """(copy bandwidth in GB/s of this device, where it came from), measured once per machine."""
    import torch

    device = torch.device(device_str)
    size = int(nbytes or DEFAULT_BYTES.get(device.type, GIB))
    key = f"{device_str}|copy {size} bytes|{torch.get_num_threads()} threads"
    # plausible GB/s: above 1 MB/s, below 100x the fastest HBM (B200: 8 TB/s)
    gbps, where = machine_cached("copy_bandwidth", key, lambda: copy_gbps(device_str, size), (1e-3, 1e6))
    return gbps, f"{where}; dst.copy_(src) of {size / GIB:g} GiB, GB/s = 2 x bytes / time"
