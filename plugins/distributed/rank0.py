"""Simulating rank 0 of N without building per-rank objects for all N ranks (issue 21).

Where the time went (cProfile, torch 2.13, fake process group + FakeTensorMode, stage 3):
  1. FSDP2 shards each parameter with `_chunk_with_empty(param, N, dim=0)`
     (torch/distributed/fsdp/_fully_shard/_fsdp_common.py): `torch.chunk` into N views, twice per parameter
     (FSDPParam._init_sharded_param and _init_sharded_post_forward_param_metadata). Under fake tensors each view
     is a FakeTensor built by the dispatcher (~20 us): 2 x parameters x N of them, of which rank 0 reads two
     (its own chunk and chunk 0, the padded size). 70B (65 layers, 784 tensors) at N = 16,384: 25.7 million
     views, the whole of the > 380 s the issue measured.
  2. MemTracker._update_peak_stats (torch/distributed/_tools/mem_tracker.py) walks every module it has seen,
     through a WeakIdKeyDictionary, at every tracked operation, to update the few that are active: cost
     operations x modules, i.e. layers^2 (not N; 10% of a 60-layer simulation, more at 198 layers).

`rank0_only()` replaces both while a simulation runs, and restores torch's own functions on exit:
  1. `_chunk_with_empty` returns `LazyChunks`: a sequence of the same N chunks whose item i is built on
     first access with `narrow` (torch.chunk's own views: split -> narrow, the same sizes, strides and
     storage offsets; chunks past the last non-empty one are `chunk0.new_empty(0)`, as torch pads them).
  2. `_update_peak_stats` visits only the active modules (MemTracker's `_mod_tracker.parents`) through an
     index fqn -> module stats rebuilt when a module is added; each module's update is the same code on the
     same snapshot, and modules are independent, so the peaks and snapshots are identical.
The held bytes per rank are unchanged (tests/test_simulator.py compares both paths at a small world size).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from copy import deepcopy
from typing import Any

import torch

STATS = {"chunks_built": 0}  # chunk views built by LazyChunks since import (tests count them)


class LazyChunks(Sequence):
    """torch.chunk(t, n, dim) padded to n items with empty tensors, built item by item on access.
    torch.chunk: chunk size c = ceil(size / n); ceil(size / c) non-empty chunks, the last one shorter."""

    def __init__(self, t: torch.Tensor, n: int, dim: int) -> None:
        self.t, self.n, self.dim = t, n, dim
        size = t.size(dim)
        self.c = -(-size // n) if size else 0
        self.nonempty = -(-size // self.c) if self.c else 0

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self.n))]
        if i < 0:
            i += self.n
        if not 0 <= i < self.n:
            raise IndexError(i)
        STATS["chunks_built"] += 1
        if i < self.nonempty:
            start = i * self.c
            return self.t.narrow(self.dim, start, min(self.c, self.t.size(self.dim) - start))
        return self[0].new_empty(0)


def _lazy_chunk_with_empty(tensor: torch.Tensor, num_chunks: int, dim: int) -> Any:
    return LazyChunks(tensor, num_chunks, dim)


def _update_peak_stats_active(self: Any, peak_state: Any) -> None:
    """MemTracker._update_peak_stats (torch 2.13), visiting the active modules only."""
    from torch.distributed._tools.mem_tracker import _TOTAL_KEY

    curr_snap = self._curr_mem_snap
    n = len(self.memory_tracking)
    idx = self.__dict__.get("_bench_fqn_index")
    if idx is None or idx[0] != n:
        index: dict[str, list[Any]] = {}
        for mod_stats in self.memory_tracking.values():
            index.setdefault(mod_stats.mod_fqn, []).append(mod_stats)
        idx = (n, index)
        self.__dict__["_bench_fqn_index"] = idx
    for fqn in self._mod_tracker.parents:
        for mod_stats in idx[1].get(fqn, ()):
            if peak_state in mod_stats.snapshots:
                for dev, dev_snap in curr_snap.items():
                    if mod_stats.local_peak.get(dev, 0) < dev_snap[_TOTAL_KEY]:
                        mod_stats.local_peak[dev] = dev_snap[_TOTAL_KEY]
                        mod_stats.snapshots[peak_state][-1][dev] = deepcopy(dev_snap)
    for dev, dev_snap in curr_snap.items():
        if self._peak_mem.get(dev, 0) < dev_snap[_TOTAL_KEY]:
            self._peak_mem[dev] = dev_snap[_TOTAL_KEY]
            self._peak_mem_snap[dev] = deepcopy(dev_snap)


@contextlib.contextmanager
def rank0_only(enabled: bool = True) -> Iterator[None]:
    """While active: FSDP2 builds only the chunks rank 0 reads; MemTracker updates only active modules.
    enabled=False: torch's own code (the reference path the tests compare against)."""
    if not enabled:
        yield
        return
    import torch.distributed._tools.mem_tracker as mt
    import torch.distributed.fsdp._fully_shard._fsdp_param as fp

    saved = (fp._chunk_with_empty, mt.MemTracker._update_peak_stats)
    fp._chunk_with_empty = _lazy_chunk_with_empty
    mt.MemTracker._update_peak_stats = _update_peak_stats_active  # type: ignore[method-assign]
    try:
        yield
    finally:
        fp._chunk_with_empty, mt.MemTracker._update_peak_stats = saved  # type: ignore[method-assign]
