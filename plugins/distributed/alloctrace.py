"""The allocation trace of a simulated step: every storage the step creates or frees, in order, with its
bytes and its stream, for the caching-allocator model (allocator.py). Works under FakeTensorMode.

  allocate  a storage first seen as an op's output (TorchDispatchMode), a storage registered up front
            (parameters, buffers, inputs: `add`), or an UntypedStorage.resize_ to n > 0 bytes (FSDP2 frees
            and re-allocates its unsharded parameters with resize_; torch's MemTracker tracks it the same way)
  free      the storage's Python object is collected (weakref.finalize: torch keeps a storage's PyObject
            alive as long as the storage), or resize_(0)
  stream    the innermost `device_handle.stream(s)` block: FSDP2 allocates its all-gather buffers in the
            copy-in stream and the reduce-scatter output (and so the gradient shards) in the reduce-scatter
            stream (torch/distributed/fsdp/_fully_shard/_fsdp_collectives.py); the simulation runs on CPU,
            so `torch.cpu.stream` (FSDP2's device handle there) is watched while the trace is on.
A tensor subclass (DTensor) is traced through its inner tensors: the ops DTensor runs on its local tensors run
while this mode is popped, so their outputs are registered when the DTensor op returns.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode, is_traceable_wrapper_subclass
from torch.utils._pytree import tree_leaves
from torch.utils.weak import WeakIdKeyDictionary

Event = tuple[int, int, int, int]  # (1 allocate | 0 free, id, bytes, stream)


class AllocTrace(TorchDispatchMode):
    """Records allocations and frees while active (use `with trace.on():`)."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[Event] = []
        self._cells: Any = WeakIdKeyDictionary()  # storage -> [event id or None]
        self._next = 0
        self._streams: list[int] = []
        self._stream_ids: dict[int, int] = {}
        self._keep: list[Any] = []  # stream objects seen (ids stay unique)

    # --- events ------------------------------------------------------------------------------------------
    def _stream(self) -> int:
        return self._streams[-1] if self._streams else 0

    def _alloc(self, nbytes: int) -> int | None:
        if nbytes <= 0:
            return None
        self._next += 1
        self.events.append((1, self._next, nbytes, self._stream()))
        return self._next

    def _free(self, cell: list[int | None]) -> None:
        if cell[0] is not None:
            self.events.append((0, cell[0], 0, 0))
            cell[0] = None

    def add(self, t: Any) -> None:
        """Register a tensor's storage (an allocation, if not seen before)."""
        if not isinstance(t, torch.Tensor):
            return
        if is_traceable_wrapper_subclass(t):  # DTensor: its local tensor (made while this mode is popped)
            for name in t.__tensor_flatten__()[0]:
                self.add(getattr(t, name))
            return
        st = t.untyped_storage()
        if st in self._cells:
            return
        cell = [self._alloc(st.nbytes())]
        self._cells[st] = cell
        weakref.finalize(st, self._free, cell)

    def _resize(self, st: Any, n: int) -> None:
        cell = self._cells.get(st)
        if cell is None:
            cell = [None]
            self._cells[st] = cell
            weakref.finalize(st, self._free, cell)
        self._free(cell)
        cell[0] = self._alloc(int(n))

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.add(t)
        return out

    # --- switching on --------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def on(self) -> Iterator[AllocTrace]:
        """The dispatch mode plus the resize_ and stream watches, restored on exit."""
        trace = self
        orig_resize = torch.UntypedStorage.resize_
        orig_stream = torch.cpu.stream

        def resize_(st: Any, n: int) -> Any:
            r = orig_resize(st, n)
            trace._resize(st, n)
            return r

        @contextlib.contextmanager
        def stream(s: Any) -> Iterator[None]:
            key = id(s)
            if s is torch.cpu.current_stream():
                sid = 0
            else:
                if key not in trace._stream_ids:
                    trace._stream_ids[key] = len(trace._stream_ids) + 1
                    trace._keep.append(s)
                sid = trace._stream_ids[key]
            trace._streams.append(sid)
            try:
                yield
            finally:
                trace._streams.pop()

        torch.UntypedStorage.resize_ = resize_  # type: ignore[method-assign]
        torch.cpu.stream = stream  # type: ignore[assignment]
        try:
            with self:
                yield self
        finally:
            torch.UntypedStorage.resize_ = orig_resize  # type: ignore[method-assign]
            torch.cpu.stream = orig_stream

    @property
    def streams(self) -> int:
        """Streams that allocated (the default stream included)."""
        return len({e[3] for e in self.events if e[0]})
