"""The caching-allocator model (plugins/distributed/allocator.py) and the allocation trace it replays
(alloctrace.py): the rules of c10/cuda/CUDACachingAllocator.cpp on hand-made traces, the trace against the
CPU allocator's own events (torch.profiler), and the logits freed before backward. In process, ~5 s."""

from __future__ import annotations

import pytest
import torch

from plugins.distributed.allocator import (
    K_LARGE_BUFFER,
    K_SMALL_BUFFER,
    CachingAllocator,
    allocation_size,
    replay,
    round_size,
)

# The CPU allocator's events include intra-op temporaries whose size follows the thread count: one thread,
# whatever an earlier test in this worker set (conftest.py).
pytestmark = pytest.mark.usefixtures("one_torch_thread")

MiB = 2**20


def test_rounding_and_segment_sizes():
    """round_size: >= 512, multiples of 512; get_allocation_size: 2 MiB (<= 1 MiB), 20 MiB (< 10 MiB), else
    the request rounded up to 2 MiB."""
    assert [round_size(n) for n in (1, 512, 513, 1000)] == [512, 512, 1024, 1024]
    assert allocation_size(round_size(1)) == allocation_size(MiB) == K_SMALL_BUFFER
    assert allocation_size(MiB + 512) == allocation_size(10 * MiB - 512) == K_LARGE_BUFFER
    assert allocation_size(10 * MiB) == 10 * MiB and allocation_size(11 * MiB) == 12 * MiB


def test_small_requests_share_a_2mib_segment():
    a = CachingAllocator()
    hs = [a.malloc(100_000) for _ in range(20)]  # 100,352 bytes each after rounding: 20 fit in 2 MiB
    assert a.stats.reserved == K_SMALL_BUFFER and a.stats.segments == 1
    assert a.allocated == 20 * round_size(100_000)
    a.malloc(100_000)  # the 21st does not fit the remaining 2,097,152 - 2,007,040 bytes
    assert a.stats.segments == 2
    for h in hs:
        a.free(h)
    assert a.allocated == round_size(100_000) and a.stats.reserved == 2 * K_SMALL_BUFFER  # cached, not returned


def test_large_pool_split_rule_and_best_fit():
    """Large blocks split only when more than 1 MiB remains; a free block is reused best-fit."""
    a = CachingAllocator()
    h = a.malloc(2 * MiB)  # miss: a 20 MiB segment, split (18 MiB remain)
    assert a.stats.reserved == 20 * MiB and a.allocated == 2 * MiB
    h2 = a.malloc(18 * MiB - 512)  # takes the 18 MiB remainder: 512 bytes left, not split off
    assert a.stats.reserved == 20 * MiB and a.allocated == 20 * MiB  # the whole block counts
    a.free(h2)
    a.free(h)  # merged back into one 20 MiB block
    h3 = a.malloc(12 * MiB)
    assert a.stats.reserved == 20 * MiB and a.allocated == 12 * MiB
    a.free(h3)
    big = a.malloc(30 * MiB)  # no free block holds it: a new segment of exactly 30 MiB
    assert a.stats.reserved == 50 * MiB
    a.free(big)
    a.malloc(25 * MiB)  # best fit is the 30 MiB block (the 20 MiB one is too small)
    assert a.stats.reserved == 50 * MiB


def test_streams_do_not_share_blocks():
    a = CachingAllocator()
    a.free(a.malloc(12 * MiB, stream=0))
    a.malloc(12 * MiB, stream=1)  # the cached block belongs to stream 0
    assert a.stats.reserved == 24 * MiB


def test_expandable_segments_grow_in_pages():
    """One segment per stream and pool, grown by 20 MiB pages (large) / 2 MiB (small); no 20 MiB rounding per
    request, so a sequence of odd sizes packs tightly."""
    sizes = [11 * MiB, 13 * MiB, 11 * MiB]
    events = [(1, i, s, 0) for i, s in enumerate(sizes)]
    assert replay(events).peak_reserved == (12 + 14 + 12) * MiB  # three segments rounded to 2 MiB
    assert replay(events, expandable=True).peak_reserved == 40 * MiB  # 35 MiB mapped as two 20 MiB pages
    # a free block at the end of the segment grows in place
    ev = [(1, 1, 5 * MiB, 0), (1, 2, 30 * MiB, 0)]
    assert replay(ev, expandable=True).peak_reserved == 40 * MiB


def test_fragmentation_raises_reserved_above_allocated():
    """Free 12 MiB holes between live blocks cannot hold a 20 MiB request: reserved > allocated."""
    ev = [(1, i, 12 * MiB, 0) for i in range(6)] + [(0, i, 0, 0) for i in range(0, 6, 2)] + [(1, 9, 20 * MiB, 0)]
    st = replay(ev)
    assert st.peak_allocated == 6 * 12 * MiB and st.peak_reserved == 6 * 12 * MiB + 20 * MiB


def _step_fn(ret_logits: bool):
    from plugins.common.gpt import GPT, GPTConfig

    torch.manual_seed(0)
    m = GPT(GPTConfig(n_layer=2, n_head=2, d_model=64, block_size=64, vocab_size=4096))
    opt = torch.optim.AdamW(m.parameters(), foreach=False)
    x = torch.randint(0, 4096, (4, 64))
    y = torch.randint(0, 4096, (4, 64))

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        if ret_logits:
            _, loss = m(x, y)  # the logits stay bound to `_` through backward
        else:
            loss = m(x, y)[1]
        loss.backward()
        opt.step()

    step()
    return m, opt, (x, y), step


def _traced_peak(ret_logits: bool) -> tuple[int, int, int]:
    """(requested peak of the trace above what existed before, the profiler's, the logits' bytes)."""
    from bench.memory import peak_above
    from plugins.distributed.alloctrace import AllocTrace

    m, opt, batch, step = _step_fn(ret_logits)
    prof, _ = peak_above(step, "cpu")
    tr = AllocTrace()
    before = [*m.parameters(), *batch, *[v for s in opt.state.values() for v in s.values()]]
    for t in before:
        tr.add(t)
    base = sum(e[2] for e in tr.events)
    with tr.on():
        step()
    return replay(tr.events).peak_requested - base, prof, 4 * 64 * 4096 * 4


@pytest.mark.parametrize("ret_logits", [False, True])
def test_trace_matches_the_cpu_allocators_events(ret_logits):
    """The trace's peak of a real CPU step equals the CPU allocator's own (profiler allocator events) within
    1%: nothing allocated is missed, nothing freed late."""
    traced, prof, _ = _traced_peak(ret_logits)
    assert traced == pytest.approx(prof, rel=0.01)


def test_logits_freed_before_backward():
    """Bound to a name, the logits live through backward; `model(x, y)[1]` frees them (torchtitan: del pred):
    the peak drops by the logits' bytes (measured by the CPU allocator's events as well)."""
    kept, prof_kept, logits = _traced_peak(True)
    freed, prof_freed, _ = _traced_peak(False)
    assert kept - freed == pytest.approx(logits, rel=0.05)
    assert prof_kept - prof_freed == pytest.approx(logits, rel=0.05)


def _kept_after_forward(ac: str, every: int = 0) -> int:
    """Bytes a real CPU forward leaves allocated for backward (the trace's live bytes after it)."""
    from plugins.common.gpt import GPT, GPTConfig
    from plugins.distributed.alloctrace import AllocTrace

    cfg = GPTConfig(
        n_layer=4,
        n_head=4,
        n_kv_head=2,
        d_model=64,
        ffn_hidden=96,
        block_size=16,
        vocab_size=128,
        bias=False,
        mlp="swiglu",
        norm="rmsnorm",
        pos="rope",
        tie_embeddings=False,
        split_proj=True,
        ac=ac,
        ac_every=every,
    )
    torch.manual_seed(0)
    m = GPT(cfg)
    x = torch.randint(0, 128, (2, 16))
    tr = AllocTrace()
    with tr.on():
        loss = m(x, x)[1]
        live: dict[int, int] = {}
        for kind, i, b, _ in tr.events:
            if kind:
                live[i] = b
            else:
                live.pop(i, None)
        kept = sum(live.values())
    loss.backward()  # the kept tensors serve their purpose
    return kept


def test_selective_checkpointing_keeps_what_torchtitans_op_policy_keeps():
    """torchtitan's `op` policy keeps, per block beyond full checkpointing's input, the outputs of the 1st, 3rd,
    5th and 7th matmul (wq, wv, w1, w2 of Llama's wq wk wv wo w1 w3 w2) and attention's output and logsumexp.
    Counted on a real CPU forward (fp32, 2 x 16 tokens, d 64, 4 heads of 16, 2 KV heads, FFN 96)."""
    n, d, kv, f, heads, b, t = 32, 64, 2 * 16, 96, 4, 2, 16
    per_block = 4 * n * (d + kv + f + d) + 4 * n * d + 4 * b * heads * t  # wq wv w1 w2 | SDPA out | logsumexp
    full, op, none = _kept_after_forward("full"), _kept_after_forward("selective"), _kept_after_forward("none")
    assert op - full == 4 * per_block
    assert none > op > full
    # every 2nd block in full: blocks 2 and 4 (torchtitan counts from 1) keep their input only
    assert full < _kept_after_forward("selective", 2) < none


def test_checkpointing_changes_memory_not_gradients():
    """The same gradients (float64 tolerance of fp32 recomputation) with none, full, selective and every-2nd."""
    from plugins.common.gpt import GPT, GPTConfig

    grads = []
    for ac, every in (("none", 0), ("full", 0), ("selective", 0), ("selective", 2)):
        cfg = GPTConfig(
            n_layer=2, n_head=2, d_model=32, block_size=8, vocab_size=64, split_proj=True, ac=ac, ac_every=every
        )
        torch.manual_seed(0)
        m = GPT(cfg)
        x = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(1))
        m(x, x)[1].backward()
        grads.append(torch.cat([p.grad.flatten() for p in m.parameters()]))
    for g in grads[1:]:
        torch.testing.assert_close(g, grads[0])
