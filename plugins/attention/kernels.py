"""The attention kernels a case times, their inputs, and the guards around their first call.

Implementations (--impl):
  naive           softmax(Q K^T / sqrt(d)) V in the input dtype, materialising the B*H*n*n scores
  sdpa_math       F.scaled_dot_product_attention under sdpa_kernel(SDPBackend.MATH)
  sdpa_flash      ... SDPBackend.FLASH_ATTENTION       (CPU: a fused flash-style kernel)
  sdpa_efficient  ... SDPBackend.EFFICIENT_ATTENTION   (xFormers memory-efficient; CUDA only)
  sdpa_cudnn      ... SDPBackend.CUDNN_ATTENTION       (CUDA only)
  flex            torch.compile(flex_attention); causal through a BlockMask (CPU: forward only)
A backend torch has no kernel for here becomes a `skipped` row whose message is torch's own error.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from bench.contract import Skip
from plugins.attention.params import SDPA_BACKENDS, AttentionParams


def torch_dtype(name: str) -> torch.dtype:
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


def causal_mask(n: int, device: Any) -> torch.Tensor:
    """[n, n] bool, True above the diagonal: key j > query i is masked (SDPA is_causal alignment)."""
    return torch.ones(n, n, dtype=torch.bool, device=device).triu(1)


def naive_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """softmax(Q K^T / sqrt(d)) V with the [B, H, n, n] scores materialised, in q's dtype."""
    s = (q * (1.0 / math.sqrt(q.shape[-1]))) @ k.transpose(-2, -1)  # [B, H, n, n]
    if mask is not None:
        s = s.masked_fill(mask, float("-inf"))
    return torch.softmax(s, dim=-1) @ v  # [B, H, n, d]


@dataclass
class Kernel:
    fn: Callable[[Any, Any, Any], Any]  # (q, k, v) -> out
    scope: Callable[[], contextlib.AbstractContextManager[Any]]  # entered around every use (SDPA backend choice)
    what: str  # how torch names it


def make_kernel(impl: str, causal: bool, n: int, device: Any) -> Kernel:
    """The kernel for impl; its inputs (masks, compiled function) are built here, outside any measurement."""
    if impl == "naive":
        mask = causal_mask(n, device) if causal else None
        return Kernel(lambda q, k, v: naive_attention(q, k, v, mask), contextlib.nullcontext, "explicit matmul/softmax")
    if impl in SDPA_BACKENDS:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        backend = getattr(SDPBackend, SDPA_BACKENDS[impl])
        return Kernel(
            lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=causal),
            lambda: sdpa_kernel(backend),
            f"SDPBackend.{backend.name}",
        )
    if impl == "flex":
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        compiled = torch.compile(flex_attention, dynamic=False)
        block_mask = None
        if causal:

            def causal_mod(b: Any, h: Any, qi: Any, ki: Any) -> Any:
                return qi >= ki

            block_mask = create_block_mask(causal_mod, None, None, n, n, device=str(device))
        return Kernel(
            lambda q, k, v: compiled(q, k, v, block_mask=block_mask),
            contextlib.nullcontext,
            "torch.compile(flex_attention)",
        )
    raise ValueError(f"unknown impl {impl!r}")


def make_inputs(p: AttentionParams, device: Any, seed: int) -> tuple[Any, Any, Any, Any]:
    """q, k, v, grad_out: [B, H, n, d] standard normal (fixed seed), made on the device in the case's dtype."""
    g = torch.Generator(device=device).manual_seed(seed)
    shape = (p.batch, p.heads, p.seq, p.head_dim)
    dt = torch_dtype(p.dtype)
    q, k, v, go = (torch.randn(shape, generator=g, device=device, dtype=torch.float32).to(dt) for _ in range(4))
    if p.mode == "fwdbwd":
        for t in (q, k, v):
            t.requires_grad_(True)
    return q, k, v, go


def flex_refusal(p: AttentionParams, device: Any) -> str | None:
    """torch's own reason when FlexAttention refuses this case here (CPU: no backward), from the
    eager function's input validation on a [1, 1, 16, 16] input -- before anything is compiled (a
    compile costs ~20 s on 2 CPU cores). Forward-only cases are not probed (the eager function itself
    goes through dynamo): None."""
    if p.mode != "fwdbwd":
        return None
    from torch.nn.attention.flex_attention import flex_attention

    x = [torch.randn(1, 1, 16, 16, device=device).to(torch_dtype(p.dtype)).requires_grad_(True) for _ in range(3)]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "flex_attention called without torch.compile()"
            flex_attention(*x).sum().backward()
    except (RuntimeError, NotImplementedError, ValueError) as e:
        return f"{type(e).__name__}: {e}".strip()
    return None


def no_kernel(e: BaseException) -> bool:
    """Is this torch saying it has no kernel for this backend/config (rather than a bug or an OOM)?"""
    from bench.worker import is_oom

    if is_oom(e):
        return False
    if isinstance(e, NotImplementedError):
        return True
    text = str(e).lower()
    if "cuda error" in text or "illegal memory access" in text:  # a crash, not a missing kernel
        return False
    return any(w in text for w in ("no available kernel", "no viable backend", "kernel", "backend", "not support"))


@contextlib.contextmanager
def recorded_warnings() -> Iterator[list[warnings.WarningMessage]]:
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        yield w


class _OverBudget(BaseException):
    """Raised by the watchdog's signal handler. A BaseException, so that torch.compile's own
    `except Exception` fallbacks cannot swallow it."""


@contextlib.contextmanager
def within(seconds: float, what: str) -> Iterator[None]:
    """Run the block for at most `seconds` of wall time: past that, SIGALRM interrupts it and Skip
    says how long it ran. For one-off work that cannot be sized down (a torch.compile), in a case
    that owns its process (Launch without reuse): the interrupted work is abandoned with it.
    Outside the main thread (no signals there) the block runs unbounded."""
    if threading.current_thread() is not threading.main_thread() or seconds <= 0:
        yield
        return
    t0 = time.perf_counter()
    done = False

    def fire(signum: int, frame: Any) -> None:
        if not done:  # the block may have ended between the alarm and its cancellation
            raise _OverBudget

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
        done = True
    except _OverBudget:
        raise Skip(
            f"{what}: not finished after {time.perf_counter() - t0:.1f} s (interrupted at the budget of {seconds:g} s)"
        ) from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def call_cost_s(fn: Callable[[], Any], device: Any) -> tuple[float, float]:
    """(cost, wall) of one call in seconds. On CUDA cost = wall (synchronized). On a CPU cost =
    min(wall, process CPU time / torch threads): what the kernel costs on this CPU, not how long a
    machine busy with other work took to give it the cores (a kernel this CPU emulates, e.g. fp16
    without native half, has a high CPU time too)."""
    dev = torch.device(device)
    c0, t0 = time.process_time(), time.perf_counter()
    fn()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        return time.perf_counter() - t0, time.perf_counter() - t0
    wall = time.perf_counter() - t0
    return min(wall, (time.process_time() - c0) / max(1, torch.get_num_threads())), wall


def half_matmul_s(device: Any, n: int = 256) -> float:
    """Seconds of one n x n x n fp16 matmul (after one warm-up): CPUs without native half emulate it
    ~100x slower than fp32, which decides whether an fp16 matmul peak is worth measuring."""
    a = torch.randn(n, n, device=device).half()
    a @ a
    t0 = time.perf_counter()
    a @ a
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0
