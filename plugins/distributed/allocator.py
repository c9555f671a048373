"""A model of PyTorch's CUDA caching allocator: replays a trace of allocations and frees (alloctrace.py) and
returns what torch.cuda.max_memory_reserved / max_memory_allocated would read. Units: bytes.

Rules and constants from c10/cuda/CUDACachingAllocator.cpp (pytorch/pytorch, read at commit 001074d2; the
same in torch 2.x releases):
  kMinBlockSize  = 512        every request rounded up to a multiple of 512 bytes (round_size; the default
                              roundup_power2_divisions is off)
  kSmallSize     = 1 MiB      requests <= 1 MiB go to the small pool, larger ones to the large pool (get_pool)
  kSmallBuffer   = 2 MiB      a small-pool miss cudaMallocs a 2 MiB segment (get_allocation_size)
  kLargeBuffer   = 20 MiB     a large-pool miss below kMinLargeAlloc cudaMallocs a 20 MiB segment
  kMinLargeAlloc = 10 MiB
  kRoundLarge    = 2 MiB      larger misses cudaMalloc the request rounded up to 2 MiB
  best fit         pool.blocks.lower_bound((stream, size)): the smallest free block of the same stream and
                   pool that holds the request, the lowest address among equal sizes (BlockComparatorSize)
  should_split     small pool: remaining >= kMinBlockSize; large pool: remaining > kSmallSize (max_split_size
                   unset by default); expandable segments: remaining >= kMinBlockSize
  free             the block merges with its free neighbours of the same segment (try_merge_blocks)
  allocated bytes  the block's size after the split (stats.allocated_bytes += block->size): a request that
                   takes a whole unsplit block counts the whole block
  expandable_segments (Note [Expandable Segments]): one segment per stream and pool whose mapped size grows
                   by pages of 2 MiB (small pool) / 20 MiB (large pool) when no free block fits; blocks inside
                   are split and merged as above.
Not modelled (said in every row that uses it): the OOM path (when cudaMalloc fails torch frees cached
blocks and retries, so a prediction above the GPU's memory may still run), max_split_size_mb /
roundup_power2_divisions / garbage_collection_threshold settings, empty_cache(), cross-stream use
(record_stream / events delaying a block's reuse), CUDA graphs' private pools, memory outside the allocator
(CUDA context, NCCL's own buffers, cuBLAS/cuDNN workspaces that bypass it).
"""

from __future__ import annotations

from bisect import bisect_left, insort
from dataclasses import dataclass, field

K_MIN_BLOCK = 512
K_SMALL_SIZE = 1 << 20
K_SMALL_BUFFER = 2 << 20
K_LARGE_BUFFER = 20 << 20
K_MIN_LARGE_ALLOC = 10 << 20
K_ROUND_LARGE = 2 << 20
SOURCE = "c10/cuda/CUDACachingAllocator.cpp (round_size, get_allocation_size, should_split, get_free_block)"
NOT_MODELLED = (
    "not modelled: the OOM retry (cached blocks released when cudaMalloc fails), max_split_size / "
    "roundup_power2_divisions settings, record_stream/event delays, memory outside the allocator "
    "(CUDA context, NCCL buffers, cuBLAS workspace)"
)


def round_size(n: int) -> int:
    """round_size: at least kMinBlockSize, a multiple of it."""
    return K_MIN_BLOCK if n < K_MIN_BLOCK else K_MIN_BLOCK * -(-n // K_MIN_BLOCK)


def allocation_size(size: int) -> int:
    """get_allocation_size: the segment cudaMalloc'd on a miss for a rounded request."""
    if size <= K_SMALL_SIZE:
        return K_SMALL_BUFFER
    if size < K_MIN_LARGE_ALLOC:
        return K_LARGE_BUFFER
    return K_ROUND_LARGE * -(-size // K_ROUND_LARGE)


class _Block:
    __slots__ = ("addr", "free", "next", "pool", "prev", "size")

    def __init__(self, addr: int, size: int, pool: tuple[int, bool]) -> None:
        self.addr, self.size, self.pool = addr, size, pool
        self.prev: _Block | None = None
        self.next: _Block | None = None
        self.free = True


@dataclass
class AllocatorStats:
    """What the replay read. Bytes."""

    peak_reserved: int = 0  # max_memory_reserved
    peak_allocated: int = 0  # max_memory_allocated (block sizes)
    peak_requested: int = 0  # the requested bytes at their peak (no rounding)
    reserved: int = 0  # at the end of the trace
    segments: int = 0  # cudaMalloc calls (or mapped pages' growths with expandable segments)
    mallocs: int = 0
    notes: list[str] = field(default_factory=list)


class CachingAllocator:
    """One device's caching allocator. malloc(nbytes, stream) -> handle; free(handle)."""

    def __init__(self, expandable: bool = False) -> None:
        self.expandable = expandable
        self.pools: dict[tuple[int, bool], list[tuple[int, int]]] = {}  # (stream, small) -> sorted (size, addr)
        self.by_addr: dict[int, _Block] = {}  # free blocks by address
        self.tail: dict[tuple[int, bool], _Block] = {}  # expandable: the last block of each segment
        self.next_addr = 0
        self.allocated = 0
        self.requested = 0
        self.stats = AllocatorStats()

    # --- pools ---------------------------------------------------------------------------------------------
    def _insert(self, b: _Block) -> None:
        b.free = True
        self.by_addr[b.addr] = b
        insort(self.pools.setdefault(b.pool, []), (b.size, b.addr))

    def _remove(self, b: _Block) -> None:
        pool = self.pools[b.pool]
        i = bisect_left(pool, (b.size, b.addr))
        del pool[i]
        del self.by_addr[b.addr]
        b.free = False

    def _new_segment(self, size: int, pool: tuple[int, bool]) -> _Block:
        b = _Block(self.next_addr, size, pool)
        self.next_addr += size + K_ROUND_LARGE  # segments never touch: blocks merge within a segment only
        self.stats.reserved += size
        self.stats.segments += 1
        self.stats.peak_reserved = max(self.stats.peak_reserved, self.stats.reserved)
        return b

    def _grow(self, pool: tuple[int, bool], size: int) -> _Block:
        """Expandable segments: map pages at the end of the pool's segment until a free block holds size."""
        page = K_SMALL_BUFFER if pool[1] else K_LARGE_BUFFER
        last = self.tail.get(pool)
        if last is not None and last.free:
            self._remove(last)
            need = size - last.size
            last.size += page * -(-need // page)
            grown = page * -(-need // page)
            b = last
        else:
            grown = page * -(-size // page)
            addr = self.next_addr if last is None else last.addr + last.size
            b = _Block(addr, grown, pool)
            b.prev = last
            if last is not None:
                last.next = b
            self.next_addr = max(self.next_addr, addr + grown)
            self.tail[pool] = b
        self.stats.reserved += grown
        self.stats.segments += 1
        self.stats.peak_reserved = max(self.stats.peak_reserved, self.stats.reserved)
        return b

    # --- the allocator's calls -----------------------------------------------------------------------------
    def malloc(self, nbytes: int, stream: int = 0) -> tuple[_Block, int]:
        size = round_size(nbytes)
        pool = (stream, size <= K_SMALL_SIZE)
        free = self.pools.get(pool, [])
        i = bisect_left(free, (size, -1))
        if i < len(free):
            b = self.by_addr[free[i][1]]
            self._remove(b)
        elif self.expandable:
            b = self._grow(pool, size)
        else:
            b = self._new_segment(allocation_size(size), pool)
        remaining = b.size - size
        split = remaining >= K_MIN_BLOCK if (pool[1] or self.expandable) else remaining > K_SMALL_SIZE
        if split:
            rest = _Block(b.addr + size, remaining, pool)
            rest.prev, rest.next = b, b.next
            if b.next is not None:
                b.next.prev = rest
            b.next = rest
            b.size = size
            if self.tail.get(pool) is b:
                self.tail[pool] = rest
            self._insert(rest)
        b.free = False
        self.allocated += b.size
        self.requested += nbytes
        st = self.stats
        st.mallocs += 1
        st.peak_allocated = max(st.peak_allocated, self.allocated)
        st.peak_requested = max(st.peak_requested, self.requested)
        return b, nbytes

    def free(self, handle: tuple[_Block, int]) -> None:
        b, nbytes = handle
        self.allocated -= b.size
        self.requested -= nbytes
        for nb in (b.prev, b.next):  # try_merge_blocks
            if nb is not None and nb.free:
                self._remove(nb)
                if nb is b.prev:
                    b.addr, b.prev = nb.addr, nb.prev
                    if nb.prev is not None:
                        nb.prev.next = b
                else:
                    b.next = nb.next
                    if nb.next is not None:
                        nb.next.prev = b
                    if self.tail.get(b.pool) is nb:
                        self.tail[b.pool] = b
                b.size += nb.size
        self._insert(b)


def replay(events: list[tuple[int, int, int, int]], expandable: bool = False) -> AllocatorStats:
    """Replay a trace: (kind, id, nbytes, stream) with kind 1 = allocate nbytes as `id`, 0 = free `id`.
    Zero-byte requests allocate nothing (torch returns a null pointer for them)."""
    a = CachingAllocator(expandable)
    live: dict[int, tuple[_Block, int]] = {}
    for kind, eid, nbytes, stream in events:
        if kind:
            if nbytes > 0:
                live[eid] = a.malloc(nbytes, stream)
        else:
            h = live.pop(eid, None)
            if h is not None:
                a.free(h)
    return a.stats
