"""Attention kernels: naive vs PyTorch SDPA backends vs FlexAttention (claims attn.*).

Per case: one kernel, one shape. q, k, v and the output are [B, H, n, d] (batch, heads, sequence
length, head dim). Each kernel is first checked against a float64 naive reference, then timed
(ctx.time), its TFLOP/s computed from the attention FLOP formula (ctx.throughput: % of the dtype's
dense peak on a GPU in bench/flops.py's table, % of the measured matmul), and its peak memory above
the inputs measured (ctx.peak_above).

Implementations (--impl):
  naive           softmax(Q K^T / sqrt(d)) V in the input dtype, materialising the B*H*n*n scores
  sdpa_math       F.scaled_dot_product_attention under sdpa_kernel(SDPBackend.MATH)
  sdpa_flash      ... SDPBackend.FLASH_ATTENTION       (CPU: a fused flash-style kernel)
  sdpa_efficient  ... SDPBackend.EFFICIENT_ATTENTION   (xFormers memory-efficient; CUDA only)
  sdpa_cudnn      ... SDPBackend.CUDNN_ATTENTION       (CUDA only)
  flex            torch.compile(flex_attention); causal through a BlockMask (CPU: forward only)
A backend torch has no kernel for here becomes a `skipped` row whose message is torch's own error.

FLOPs (formula; FlashAttention-2 benchmark convention, Dao 2023 arXiv 2307.08691 sec. 4.1 and
flash-attn benchmarks/benchmark_flash_attention.py `flops()`):
  forward  = 4 * B * H * n^2 * d    (Q K^T and P V: two n x n x d matmuls, 2 FLOPs per multiply-add)
  causal   = half of that
  backward = 2.5 x forward          (5 matmuls: dV, dP, dQ, dK and the recomputed Q K^T)
  fwd+bwd  = 3.5 x forward
The same nominal count is used for every kernel, so TFLOP/s compare kernels on the same work.

Summary: across each sequence sweep (one impl, dtype, mode, the other parameters fixed) the power-law
exponent in n of extra memory and of time (bench/fit.py: least squares in log-log, with stderr and
R^2). The naive kernel's memory exponent is attn.quadratic (expected 2), a fused kernel's is
attn.flash_linear (expected 1); head-count sweeps give attn.heads; on CUDA the flash backend's best %
of dense peak gives attn.fa_speed.
"""
from __future__ import annotations

import contextlib
import math
import statistics
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator

from bench.contract import Evidence, Launch, Metric, Plugin, Record, Row, Section, param
from plugins.attention.claims import CLAIMS

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from bench.context import Context

IMPLS = ("naive", "sdpa_math", "sdpa_flash", "sdpa_efficient", "sdpa_cudnn", "flex")
SDPA_BACKENDS = {  # impl -> torch.nn.attention.SDPBackend member name
    "sdpa_math": "MATH",
    "sdpa_flash": "FLASH_ATTENTION",
    "sdpa_efficient": "EFFICIENT_ATTENTION",
    "sdpa_cudnn": "CUDNN_ATTENTION",
}
FUSED = ("sdpa_flash", "sdpa_efficient", "sdpa_cudnn", "flex")  # kernels that never hold the n x n scores
DTYPES = ("fp32", "bf16", "fp16")
MODES = ("fwd", "fwdbwd")
BWD_FACTOR = 2.5  # backward FLOPs / forward FLOPs (FlashAttention-2 convention, see module doc)

# Correctness tolerance: max |out - ref| / max |ref| against the float64 reference. fp32 leaves room
# for a different summation order; 16-bit for the rounding of P (bf16: 8-bit mantissa, fp16: 11-bit).
REL_TOL = {"fp32": 1e-3, "bf16": 5e-2, "fp16": 1e-2}
GRAD_TOL_FACTOR = 4.0  # gradients go through more rounded products than the output
REF_ROWS = 256  # query rows the float64 reference covers (evenly spaced; all keys)

FLOP_NOTE = (
    "tflops = attention FLOPs / median time; FLOPs (formula): forward 4*B*H*n^2*d (QK^T and PV, "
    "2 FLOPs per multiply-add), halved when causal; fwd+bwd = 3.5x forward (backward 2.5x: 5 matmuls "
    "incl. the recomputed QK^T; FlashAttention-2 benchmark convention, arXiv 2307.08691)"
)
CHECK_NOTE = (
    f"checked before timing against a float64 naive reference on up to {REF_ROWS} evenly spaced query "
    "rows (all keys; fwdbwd: grad_out zero outside those rows, so dQ, dK, dV are exact); "
    "rel_error = max|out - ref| / max|ref|"
)
MEM_NOTE = "extra_mib = peak bytes allocated during one call above the live inputs (ctx.peak_above)"
FP16_CPU_NOTE = (
    "no pct_matmul for fp16 on CPU: an fp16 matmul runs at ~1 GFLOP/s here, so measuring it would take minutes"
)


@dataclass(frozen=True)
class AttentionParams:
    impl: str = param("sdpa_flash", "kernel: naive, SDPA with a forced backend, or FlexAttention", choices=IMPLS)
    seq: int = param(1024, "sequence length n (queries = keys)")
    heads: int = param(12, "attention heads H")
    head_dim: int = param(64, "head dimension d")
    batch: int = param(1, "batch size B")
    causal: bool = param(False, "causal mask (lower triangle; FLOPs halved)")
    dtype: str = param("fp32", "dtype of q, k, v and the kernel's arithmetic", choices=DTYPES)
    mode: str = param("fwd", "fwd: forward only; fwdbwd: forward + backward", choices=MODES)


def attention_flops(batch: int, heads: int, seq: int, head_dim: int, causal: bool, mode: str) -> float:
    """Nominal attention FLOPs of one call (see the module doc for the convention and its source)."""
    f = 4.0 * batch * heads * seq * seq * head_dim
    if causal:
        f /= 2
    return f * (1.0 + BWD_FACTOR) if mode == "fwdbwd" else f


def torch_dtype(name: str) -> "torch.dtype":
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


# --- kernels ------------------------------------------------------------------------------------
def causal_mask(n: int, device: Any) -> "torch.Tensor":
    """[n, n] bool, True above the diagonal: key j > query i is masked (SDPA is_causal alignment)."""
    import torch

    return torch.ones(n, n, dtype=torch.bool, device=device).triu(1)


def naive_attention(q: "torch.Tensor", k: "torch.Tensor", v: "torch.Tensor",
                    mask: "torch.Tensor | None" = None) -> "torch.Tensor":  # fmt: skip
    """softmax(Q K^T / sqrt(d)) V with the [B, H, n, n] scores materialised, in q's dtype."""
    import torch

    s = (q * (1.0 / math.sqrt(q.shape[-1]))) @ k.transpose(-2, -1)  # [B, H, n, n]
    if mask is not None:
        s = s.masked_fill(mask, float("-inf"))
    return torch.softmax(s, dim=-1) @ v  # [B, H, n, d]


@dataclass
class Kernel:
    fn: Callable[[Any, Any, Any], Any]  # (q, k, v) -> out
    scope: Callable[[], contextlib.AbstractContextManager]  # entered around every use (SDPA backend choice)
    what: str  # how torch names it


def make_kernel(impl: str, causal: bool, n: int, device: Any) -> Kernel:
    """The kernel for impl; its inputs (masks, compiled function) are built here, outside any measurement."""
    import torch.nn.functional as F

    if impl == "naive":
        mask = causal_mask(n, device) if causal else None
        return Kernel(lambda q, k, v: naive_attention(q, k, v, mask), contextlib.nullcontext, "explicit matmul/softmax")
    if impl in SDPA_BACKENDS:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        backend = getattr(SDPBackend, SDPA_BACKENDS[impl])
        return Kernel(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=causal),
                      lambda: sdpa_kernel(backend), f"SDPBackend.{backend.name}")  # fmt: skip
    if impl == "flex":
        import torch
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        compiled = torch.compile(flex_attention, dynamic=False)
        block_mask = None
        if causal:
            def causal_mod(b: Any, h: Any, qi: Any, ki: Any) -> Any:
                return qi >= ki

            block_mask = create_block_mask(causal_mod, None, None, n, n, device=str(device))
        return Kernel(lambda q, k, v: compiled(q, k, v, block_mask=block_mask), contextlib.nullcontext,
                      "torch.compile(flex_attention)")  # fmt: skip
    raise ValueError(f"unknown impl {impl!r}")


def make_inputs(p: AttentionParams, device: Any, seed: int) -> tuple[Any, Any, Any, Any]:
    """q, k, v, grad_out: [B, H, n, d] standard normal (fixed seed), cast to the case's dtype."""
    import torch

    g = torch.Generator().manual_seed(seed)
    shape = (p.batch, p.heads, p.seq, p.head_dim)
    dt = torch_dtype(p.dtype)
    q, k, v, go = (torch.randn(shape, generator=g).to(device=device, dtype=dt) for _ in range(4))
    if p.mode == "fwdbwd":
        for t in (q, k, v):
            t.requires_grad_(True)
    return q, k, v, go


def reference_rows(n: int, m: int = REF_ROWS) -> list[int]:
    """Up to m evenly spaced query rows, first and last included."""
    if n <= m:
        return list(range(n))
    return sorted({round(i * (n - 1) / (m - 1)) for i in range(m)})


def reference(q: Any, k: Any, v: Any, rows: list[int], causal: bool, grad_rows: Any = None) -> dict[str, Any]:
    """float64 attention for the query rows `rows` against all keys: out [B, H, m, d]; with grad_rows
    ([B, H, m, d], the output gradient on those rows, zero elsewhere) also dq [B, H, m, d], dk, dv [B, H, n, d]."""
    import torch

    idx = torch.tensor(rows, device=q.device)
    qs = q.detach()[..., idx, :].double().requires_grad_(grad_rows is not None)
    kd = k.detach().double().requires_grad_(grad_rows is not None)
    vd = v.detach().double().requires_grad_(grad_rows is not None)
    with torch.enable_grad():
        s = (qs @ kd.transpose(-2, -1)) / math.sqrt(q.shape[-1])  # [B, H, m, n]
        if causal:
            keys = torch.arange(k.shape[-2], device=q.device)
            s = s.masked_fill(keys[None, :] > idx[:, None], float("-inf"))
        out = torch.softmax(s, dim=-1) @ vd
        res = {"out": out.detach()}
        if grad_rows is not None:
            out.backward(grad_rows.double())
            res.update(dq=qs.grad, dk=kd.grad, dv=vd.grad)
    return res


def _rel(a: Any, ref: Any) -> tuple[float, float]:
    err = float((a.double() - ref).abs().max())
    scale = float(ref.abs().max())
    return err, err / scale if scale > 0 else err


def check(kern: Kernel, q: Any, k: Any, v: Any, go: Any, causal: bool, mode: str) -> dict[str, float]:
    """Errors of the kernel against the float64 reference: max_abs_err, rel_error (output) and, in
    fwdbwd mode, grad_rel_error (worst of dQ, dK, dV)."""
    import torch

    n = q.shape[-2]
    rows = reference_rows(n)
    idx = torch.tensor(rows, device=q.device)
    out_errs: dict[str, float] = {}
    if mode == "fwdbwd":
        g = torch.zeros_like(go)
        g[..., idx, :] = go[..., idx, :]
        ref = reference(q, k, v, rows, causal, grad_rows=go[..., idx, :])
        for t in (q, k, v):
            t.grad = None
        with kern.scope():
            out = kern.fn(q, k, v)
            out.backward(g)
        dq_ref = torch.zeros_like(q, dtype=torch.float64)
        dq_ref[..., idx, :] = ref["dq"]
        got = [t.grad if t.grad is not None else torch.zeros_like(t) for t in (q, k, v)]  # None: no gradient flowed
        grad_rel = max(_rel(got[0], dq_ref)[1], _rel(got[1], ref["dk"])[1], _rel(got[2], ref["dv"])[1])
        out_errs["grad_rel_error"] = grad_rel
        for t in (q, k, v):
            t.grad = None
    else:
        ref = reference(q, k, v, rows, causal)
        with torch.no_grad(), kern.scope():
            out = kern.fn(q, k, v)
    abs_err, rel = _rel(out.detach()[..., idx, :], ref["out"])
    out_errs.update(max_abs_err=abs_err, rel_error=rel)
    return out_errs


def _no_kernel(e: BaseException) -> bool:
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
def _recorded_warnings() -> Iterator[list[warnings.WarningMessage]]:
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        yield w


class AttentionPlugin(Plugin):
    name = "attention"
    description = "naive attention vs SDPA backends vs FlexAttention: time, TFLOP/s, memory, exponent in n"
    version = "1"
    Params = AttentionParams
    claims = CLAIMS
    metrics = {
        "mem_exponent": "fitted exponent of extra_mib in the swept parameter (log-log least squares)",
        "time_ms": "median time per call",
        "tflops": "achieved TFLOP/s (FLOPs: 4*B*H*n^2*d forward, 3.5x for fwd+bwd)",
    }
    table_metrics = ("time_ms", "tflops", "pct_matmul", "mfu", "extra_mib", "scores_mib", "rel_error")

    # --- grids ------------------------------------------------------------------------------
    def grid(self, profile: str) -> list[dict[str, Any]]:
        def case(impl: str, seq: int = 1024, heads: int = 12, head_dim: int = 64, batch: int = 1,
                 causal: bool = False, dtype: str = "fp32", mode: str = "fwd") -> dict[str, Any]:  # fmt: skip
            return dict(impl=impl, seq=seq, heads=heads, head_dim=head_dim, batch=batch, causal=causal,
                        dtype=dtype, mode=mode)  # fmt: skip

        cases: list[dict[str, Any]] = []
        if profile == "quick":  # 2 CPU cores, ~3 minutes: 23 cases
            seqs = (256, 512, 1024, 2048)
            for impl in ("naive", "sdpa_math", "sdpa_flash"):
                cases += [case(impl, seq=n) for n in seqs]
            cases += [case("sdpa_flash", heads=h) for h in (16, 32)]  # attn.heads: 12 (in the sweep), 16, 32
            for impl in ("naive", "sdpa_flash"):
                cases += [case(impl, dtype="bf16"), case(impl, mode="fwdbwd")]
            cases += [case("sdpa_flash", causal=True)]
            cases += [case("sdpa_efficient"), case("sdpa_cudnn")]  # CUDA only: skipped rows on CPU
            cases += [case("flex"), case("flex", mode="fwdbwd")]  # one compile (~20 s); CPU has no flex backward
        elif profile == "full":
            seqs = (256, 512, 1024, 2048, 4096)
            for impl in ("naive", "sdpa_math", "sdpa_flash"):
                for dtype in ("fp32", "bf16"):
                    for mode in MODES:
                        cases += [case(impl, seq=n, dtype=dtype, mode=mode) for n in seqs]
            for impl in ("naive", "sdpa_flash"):
                cases += [case(impl, heads=h) for h in (16, 32, 64, 96)]
                cases += [case(impl, head_dim=128), case(impl, dtype="fp16", seq=512)]
            cases += [case("sdpa_flash", seq=n, causal=True) for n in seqs]
            cases += [case("flex", seq=n) for n in (256, 512, 1024, 2048)]
            cases += [case("flex", causal=True), case("flex", mode="fwdbwd")]
            cases += [case(i, mode=m) for i in ("sdpa_efficient", "sdpa_cudnn") for m in MODES]
        elif profile == "gpu":  # bf16, n up to 16k, every backend, fwd and fwd+bwd; ~50 cases for an 8-minute suite
            big = dict(heads=16, head_dim=128, dtype="bf16")
            for mode in MODES:
                cases += [case("sdpa_flash", seq=n, mode=mode, **big) for n in (512, 1024, 2048, 4096, 8192, 16384)]
                for impl in ("naive", "sdpa_math", "sdpa_efficient", "sdpa_cudnn"):  # three points fit an exponent
                    cases += [case(impl, seq=n, mode=mode, **big) for n in (1024, 4096, 16384)]
                cases += [case("flex", seq=n, mode=mode, **big) for n in (1024, 16384)]  # each compiles afresh
            for impl in ("sdpa_flash", "sdpa_cudnn"):
                cases += [case(impl, seq=16384, causal=True, mode=m, **big) for m in MODES]
            cases += [case("sdpa_flash", seq=16384, heads=16, head_dim=128, dtype="fp16")]
            cases += [case("sdpa_flash", seq=4096, heads=h, head_dim=128, dtype="bf16") for h in (12, 32, 64)]
            cases += [case("sdpa_flash", seq=4096, heads=16, head_dim=128, dtype="fp32")]  # flash needs 16-bit: skipped
        return cases

    def validate(self, p: AttentionParams) -> str | None:
        for f in ("seq", "heads", "head_dim", "batch"):
            if getattr(p, f) < 1:
                return f"--{f.replace('_', '-')} must be >= 1, got {getattr(p, f)}"
        return None

    def launch(self, p: AttentionParams) -> Launch:
        return Launch(timeout_s=900.0 if p.impl == "flex" else 600.0)

    def describe(self) -> str:
        return "kernels: " + ", ".join(IMPLS) + "; " + FLOP_NOTE

    # --- one case ---------------------------------------------------------------------------
    def run(self, p: AttentionParams, ctx: "Context") -> list[Record]:
        import torch

        from bench.context import timing_metrics

        dev = ctx.device
        q, k, v, go = make_inputs(p, dev, ctx.seed)
        kern = make_kernel(p.impl, p.causal, p.seq, dev)

        def clear() -> None:
            for t in (q, k, v):
                t.grad = None

        def step() -> Any:
            if p.mode == "fwdbwd":
                clear()
                out = kern.fn(q, k, v)
                out.backward(go)
                return out
            with torch.no_grad():
                return kern.fn(q, k, v)

        # First call: torch says here whether it has a kernel (flex also compiles here).
        with _recorded_warnings() as warned:
            try:
                with kern.scope():
                    step()
            except (RuntimeError, NotImplementedError) as e:
                if not _no_kernel(e):
                    raise
                why = f"{p.impl} ({kern.what}) cannot run on {dev.type} for this case: torch: {type(e).__name__}: {e}".strip()
                extra = sorted({str(w.message).strip() for w in warned if str(w.message).strip()})
                if extra:
                    why += " | torch warnings: " + " | ".join(extra)
                return [Record(status="skipped", message=why[:1500])]
        clear()

        errs = check(kern, q, k, v, go, p.causal, p.mode)
        m: dict[str, Metric] = {
            "max_abs_err": Metric(errs["max_abs_err"], "abs, vs float64 reference"),
            "rel_error": Metric(errs["rel_error"], "max|err|/max|ref|, vs float64 reference"),
        }
        tol = REL_TOL[p.dtype]
        bad = [f"output rel error {errs['rel_error']:.3g} > {tol:g}"] if errs["rel_error"] > tol else []
        if "grad_rel_error" in errs:
            m["grad_rel_error"] = Metric(errs["grad_rel_error"], "max|err|/max|ref| of dQ, dK, dV, vs float64 reference")
            if errs["grad_rel_error"] > tol * GRAD_TOL_FACTOR:
                bad.append(f"gradient rel error {errs['grad_rel_error']:.3g} > {tol * GRAD_TOL_FACTOR:g}")
        notes = [FLOP_NOTE, CHECK_NOTE, MEM_NOTE]
        if bad:
            return [Record(metrics=m, notes=notes, status="error",
                           message=f"{p.impl} {p.dtype}: {'; '.join(bad)} (not timed)")]  # fmt: skip

        with kern.scope():
            clear()
            extra_bytes, method = ctx.peak_above(step)
            t = ctx.time(step)
            counted = None if p.impl == "flex" else ctx.count_flops(step)  # FlopCounterMode cannot see into compiled code
        clear()

        elt = torch.empty((), dtype=torch_dtype(p.dtype)).element_size()
        mib = 2**20
        flops = attention_flops(p.batch, p.heads, p.seq, p.head_dim, p.causal, p.mode)
        tm, samples = timing_metrics(t)
        m.update(tm)
        with_matmul = not (dev.type == "cpu" and p.dtype == "fp16")
        if not with_matmul:
            notes.append(FP16_CPU_NOTE)
        m.update(ctx.throughput(flops, t.median_s, torch_dtype(p.dtype), with_matmul=with_matmul))
        m["flops"] = Metric(flops, "FLOP (attention formula, see note)", "formula", deterministic=True)
        if counted == 0:  # e.g. the CPU flash op: FlopCounterMode has no formula registered for it
            notes.append("flops_counted left out where FlopCounterMode counts 0 (no FLOP formula registered for the op)")
        elif counted is not None:
            m["flops_counted"] = Metric(counted, "FLOP (FlopCounterMode: matmul/SDPA ops as run; causal not discounted)",
                                        "measured", deterministic=True)  # fmt: skip
        m["extra_mib"] = Metric(extra_bytes / mib, f"MiB ({method})")
        m["scores_mib"] = Metric(p.batch * p.heads * p.seq**2 * elt / mib, "MiB (one B*H*n*n score matrix in dtype)",
                                 "formula", deterministic=True)  # fmt: skip
        m["inputs_mib"] = Metric(3 * p.batch * p.heads * p.seq * p.head_dim * elt / mib, "MiB (q, k, v)",
                                 "formula", deterministic=True)  # fmt: skip
        return [Record(metrics=m, samples=samples, notes=notes)]

    # --- across cases -----------------------------------------------------------------------
    def summarize(self, rows: list[Row]) -> list[Record]:
        ok = [r for r in rows if r.kind == "case" and r.status == "ok"
              and r.value("extra_mib") is not None and r.value("time_ms") is not None]  # fmt: skip
        out: list[Record] = []
        sweeps = [s for s in _groups(ok, "seq") if len(s.xs) >= 2]
        for s in sweeps:
            out.append(s.record())
        quad = _pick(sweeps, ("naive",))
        if quad:
            quad.claim(out, "attn.quadratic", sweeps, ("naive",))
        lin = _pick(sweeps, FUSED)
        if lin:
            lin.claim(out, "attn.flash_linear", sweeps, FUSED)
        heads = [h for h in _groups(ok, "heads") if len(h.xs) >= 2]
        for h in heads:
            out.append(h.record())
        if heads:
            counts = sorted({x for h in heads for x in h.xs})
            detail = "; ".join(h.text() for h in heads)
            out[-len(heads)].evidence["attn.heads"] = Evidence(",".join(map(str, counts)), "heads", "measured", detail)
        fa = _fa_speed(ok)
        if fa:
            out.append(fa)
        return out

    def report(self, rows: list[Row], out_dir: Any) -> list[Section]:
        from plugins.attention.report import plot_attention

        return plot_attention(rows, out_dir)


# --- summary helpers ----------------------------------------------------------------------------
SWEEP_KEYS = ("impl", "dtype", "mode", "seq", "heads", "head_dim", "batch", "causal")


@dataclass
class Sweep:
    """One parameter swept (seq or heads) with every other parameter fixed; medians per x."""

    var: str
    fixed: dict[str, Any]
    xs: list[int]
    mem: list[float]  # extra_mib per x
    time: list[float]  # time_ms per x
    rec: Record | None = None

    def fits(self) -> dict[str, Any]:
        from bench.fit import fit_power_law

        res: dict[str, Any] = {}
        for what, ys in (("mem", self.mem), ("time", self.time)):
            try:
                res[what] = fit_power_law(self.xs, ys)
            except ValueError:
                res[what] = None
        return res

    def label(self) -> str:
        f = self.fixed
        bits = f"{f['impl']} {f['dtype']} {f['mode']}" + (" causal" if f.get("causal") else "")
        other = ", ".join(f"{k}={f[k]}" for k in ("seq", "heads", "head_dim", "batch") if k in f)
        return f"{bits} ({other})"

    def record(self) -> Record:
        fits = self.fits()
        m: dict[str, Metric] = {
            "points": Metric(f"{self.var}=" + ",".join(map(str, self.xs)), "swept values"),
            "extra_mib_max": Metric(max(self.mem), "MiB (largest point)"),
        }
        for what, name in (("mem", "extra_mib"), ("time", "time_ms")):
            fit = fits[what]
            if fit is None:
                continue
            m[f"{what}_exponent"] = Metric(fit.exponent, f"exponent of {name} in the swept parameter (log-log fit)")
            m[f"{what}_stderr"] = Metric(fit.stderr if fit.stderr == fit.stderr else None, "stderr of the exponent")
            m[f"{what}_r2"] = Metric(fit.r2, "R^2 (log-log)")
        labels = {"analysis": f"{self.var}_sweep", **self.fixed}
        self.rec = Record(metrics=m, labels=labels)
        return self.rec

    def text(self) -> str:
        fits = self.fits()
        pts = ", ".join(f"{x}: {y:.3g} MiB / {t:.3g} ms" for x, y, t in zip(self.xs, self.mem, self.time))
        parts = [f"{self.label()} over {self.var} [{pts}]"]
        for what in ("mem", "time"):
            f = fits[what]
            if f is not None:
                se = f"{f.stderr:.2g}" if f.stderr == f.stderr else "n/a (2 points)"
                parts.append(f"{what} exponent {f.exponent:.3f} (stderr {se}, R^2 {f.r2:.4f})")
        return "; ".join(parts)

    def claim(self, out: list[Record], claim_id: str, sweeps: list["Sweep"], impls: tuple[str, ...]) -> None:
        """Attach claim_id evidence (memory exponent) to this sweep's record, the other sweeps of
        those impls in the detail, and show the registry's verdict beside it."""
        fit = self.fits()["mem"]
        if fit is None or self.rec is None:
            return
        others = [s.text() for s in sweeps if s is not self and s.fixed["impl"] in impls]
        detail = self.text() + (" | other sweeps: " + " | ".join(others) if others else "")
        ev = Evidence(fit.exponent, "exponent", "measured", detail)
        self.rec.evidence[claim_id] = ev
        self.rec.labels["claim"] = claim_id
        from bench.claims import judge

        claim = next(c for c in CLAIMS if c.id == claim_id)
        self.rec.metrics["verdict"] = Metric(f"{judge(claim, ev)} ({claim.expected} {claim.tolerance})", "bench claims check")


def _groups(rows: list[Row], var: str) -> list[Sweep]:
    """Rows grouped by every parameter but `var`; medians of extra_mib and time_ms per value of var."""
    groups: dict[tuple, dict[int, list[tuple[float, float]]]] = {}
    fixed_of: dict[tuple, dict[str, Any]] = {}
    for r in rows:
        p = r.params
        if var not in p:
            continue
        fixed = {k: p.get(k) for k in SWEEP_KEYS if k != var}
        key = tuple(sorted((k, repr(v)) for k, v in fixed.items()))
        fixed_of[key] = fixed
        groups.setdefault(key, {}).setdefault(int(p[var]), []).append((float(r.value("extra_mib")), float(r.value("time_ms"))))
    out = []
    for key, by_x in groups.items():
        xs = sorted(by_x)
        mem = [statistics.median(a for a, _ in by_x[x]) for x in xs]
        tim = [statistics.median(b for _, b in by_x[x]) for x in xs]
        out.append(Sweep(var, fixed_of[key], xs, mem, tim))
    order = {i: n for n, i in enumerate(IMPLS)}
    out.sort(key=lambda s: (order.get(s.fixed["impl"], 99), str(s.fixed)))
    return out


def _pick(sweeps: list[Sweep], impls: tuple[str, ...]) -> Sweep | None:
    """The best-established sweep among impls: earlier impl first, forward, not causal, most points, fp32 first."""
    cands = [s for s in sweeps if s.fixed["impl"] in impls and s.fits()["mem"] is not None]
    if not cands:
        return None
    dt = {d: i for i, d in enumerate(DTYPES)}
    return min(cands, key=lambda s: (impls.index(s.fixed["impl"]), s.fixed["mode"] != "fwd", bool(s.fixed["causal"]),
                                     -len(s.xs), dt.get(s.fixed["dtype"], 9)))  # fmt: skip


def _fa_speed(rows: list[Row]) -> Record | None:
    """CUDA only (rows with an mfu against the table's dense peak): best % of peak per backend; the
    flash backend's best is attn.fa_speed."""
    with_peak = [r for r in rows if r.value("mfu") is not None]
    if not with_peak:
        return None
    best: dict[str, Row] = {}
    for r in with_peak:
        impl = r.params["impl"]
        if impl not in best or r.value("mfu") > best[impl].value("mfu"):
            best[impl] = r

    def line(r: Row) -> str:
        p = r.params
        dev = r.device
        return (f"{p['impl']}: {r.value('tflops'):.1f} TFLOP/s = {r.value('mfu'):.1f}% "
                f"{r.metrics['mfu'].unit} on {dev} ({p['dtype']} {p['mode']}{' causal' if p['causal'] else ''}, "
                f"B={p['batch']} H={p['heads']} n={p['seq']} d={p['head_dim']})")  # fmt: skip

    order = {i: n for n, i in enumerate(IMPLS)}
    impls = sorted(best, key=lambda i: order.get(i, 99))
    m = {f"best_mfu_{i}": Metric(best[i].value("mfu"), "% of dense peak", "measured") for i in impls}
    m.update({f"best_tflops_{i}": Metric(best[i].value("tflops"), "TFLOP/s", "measured") for i in impls})
    rec = Record(metrics=m, labels={"analysis": "fa_speed"})
    if "sdpa_flash" in best:
        f = best["sdpa_flash"]
        rec.evidence["attn.fa_speed"] = Evidence(
            f.value("mfu"), "% of peak", "measured",
            "best of the flash backend: " + line(f) + " | every backend's best: " + " | ".join(line(best[i]) for i in impls),
        )  # fmt: skip
    return rec
