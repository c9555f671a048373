"""Count the bytes that torch.distributed collectives move, per rank.

CommCounter patches the Python collectives of torch.distributed (the module namespace and
distributed_c10d, where they are defined) while it is active, and restores them on exit.
Every path the distributed plugins use goes through them:
  DDP        the C++ reducer calls the registered comm hook; we register torch's default
             allreduce_hook, which calls dist.all_reduce (same math as DDP's built-in path)
  ZeRO-1     ZeroRedundancyOptimizer broadcasts updated parameters with dist.broadcast
  FSDP2      dist.all_gather_single / dist.reduce_scatter_single (and dist.all_reduce across
             replicas for HSDP), see torch/distributed/fsdp/_fully_shard/_fsdp_collectives.py
Nested calls (all_gather_into_tensor -> all_gather_single) count once.

Convention (the ZeRO paper's, Rajbhandari et al. 2019, sec. 7.1): bytes per rank per call,
ignoring the ring's (Nd-1)/Nd factor:
  all-reduce of a P-byte payload     2P  (ring = reduce-scatter + all-gather)
  all-gather to a P-byte output       P
  reduce-scatter of a P-byte input    P
  broadcast / reduce of P bytes       P  (every rank, sender and receivers)
  all-to-all of P bytes               P
With it DDP moves 2*Psi*bytes_per_grad per step and ZeRO stage 3 3*Psi (1.5x).
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch

CONVENTION = (
    "bytes per rank per step, ZeRO paper sec. 7.1 accounting: all-reduce of P bytes = 2P, "
    "all-gather = P (full output), reduce-scatter = P (full input), broadcast = P on every rank"
)

# name -> (multiplier, which argument holds the payload: name or position)
_OPS: dict[str, tuple[float, str, int]] = {
    "all_reduce": (2.0, "tensor", 0),
    "all_reduce_coalesced": (2.0, "tensors", 0),
    "all_gather_single": (1.0, "output_tensor", 0),
    "all_gather_into_tensor": (1.0, "output_tensor", 0),
    "_all_gather_base": (1.0, "output_tensor", 0),
    "all_gather": (1.0, "tensor_list", 0),
    "reduce_scatter_single": (1.0, "input", 1),
    "reduce_scatter_tensor": (1.0, "input", 1),
    "_reduce_scatter_base": (1.0, "input", 1),
    "reduce_scatter": (1.0, "input_list", 1),
    "broadcast": (1.0, "tensor", 0),
    "reduce": (1.0, "tensor", 0),
    "all_to_all_single": (1.0, "input", 1),
}


def _nbytes(x: Any) -> int:
    if torch.is_tensor(x):
        return int(x.numel() * x.element_size())
    if isinstance(x, (list, tuple)):
        return sum(_nbytes(t) for t in x)
    return 0


class CommCounter:
    """`with CommCounter() as cc: step()` -> cc.bytes (total), cc.by_op {op: bytes}, cc.calls."""

    def __init__(self) -> None:
        self.by_op: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._saved: list[tuple[Any, str, Callable]] = []

    @property
    def bytes(self) -> int:
        return int(sum(self.by_op.values()))

    def _wrap(self, name: str, fn: Callable) -> Callable:
        mult, key, pos = _OPS[name]

        def counted(*args: Any, **kwargs: Any) -> Any:
            depth = getattr(self._local, "depth", 0)
            if depth == 0:
                payload = kwargs.get(key, args[pos] if len(args) > pos else None)
                with self._lock:
                    self.by_op[name] += mult * _nbytes(payload)
                    self.calls[name] += 1
            self._local.depth = depth + 1
            try:
                return fn(*args, **kwargs)
            finally:
                self._local.depth = depth

        counted.__wrapped__ = fn  # type: ignore[attr-defined]
        return counted

    def __enter__(self) -> CommCounter:
        import torch.distributed as dist
        import torch.distributed.distributed_c10d as c10d

        for mod in (dist, c10d):
            for name in _OPS:
                fn = getattr(mod, name, None)
                if fn is None:
                    continue
                self._saved.append((mod, name, fn))
        originals = {name: fn for _, name, fn in self._saved}
        wrapped = {name: self._wrap(name, fn) for name, fn in originals.items()}
        for mod, name, _ in self._saved:
            setattr(mod, name, wrapped[name])
        return self

    def __exit__(self, *exc: Any) -> None:
        for mod, name, fn in reversed(self._saved):
            setattr(mod, name, fn)
        self._saved.clear()
