"""Attention kernels: naive vs PyTorch SDPA backends vs FlexAttention (claims attn.*).

Per case: one kernel, one shape. The kernel's first call says whether torch has it here (else a
`skipped` row with torch's reason; FlexAttention compiles in this call, within its budget); one
more call is timed, and a kernel too slow for the case's budget is `skipped` naming that time.
Then the kernel is checked against a float64 naive reference, timed (ctx.time), its TFLOP/s
computed from the attention FLOP formula (ctx.throughput: % of the dtype's dense peak on a GPU,
% of the measured matmul), and its peak memory above the inputs measured (ctx.peak_above).
Modules: params (parameters, FLOP formula), kernels, reference (the float64 check), budget
(budgets, launch, estimates), grid (cases per profile), summary (exponent fits, claim evidence),
claims, report.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.contract import Launch, Metric, Plugin, Record, Row, Section, Skip
from plugins.attention import budget as B
from plugins.attention.claims import CLAIMS
from plugins.attention.grid import GRIDS
from plugins.attention.params import (
    CHECK_NOTE,
    FLOP_NOTE,
    GRAD_TOL_FACTOR,
    IMPLS,
    MEM_NOTE,
    REL_TOL,
    AttentionParams,
    flops_of,
    inputs_bytes,
    scores_bytes,
)

if TYPE_CHECKING:  # pragma: no cover
    from bench.context import Context

HALF_MATMUL_SLOW_S = 5e-3  # one 256^3 fp16 matmul slower than this (< 6.7 GFLOP/s): the CPU emulates half


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
        "mfu": "% of the dtype's dense peak (CUDA devices in bench/flops.py's table)",
    }
    table_metrics = ("time_ms", "tflops", "pct_matmul", "mfu", "extra_mib", "scores_mib", "rel_error")

    def grid(self, profile: str) -> list[dict[str, Any]]:
        return GRIDS[profile]() if profile in GRIDS else [{}]

    def validate(self, p: AttentionParams) -> str | None:
        for f in ("seq", "heads", "head_dim", "batch"):
            if getattr(p, f) < 1:
                return f"--{f.replace('_', '-')} must be >= 1, got {getattr(p, f)}"
        return None

    def launch(self, p: AttentionParams) -> Launch:
        if B.warm(p):
            return Launch(timeout_s=300.0, reuse=True)
        return Launch(timeout_s=600.0)

    def estimate_s(self, p: AttentionParams, device_type: str) -> float:
        return B.estimate_s(p, device_type)

    def describe(self) -> str:
        return "kernels: " + ", ".join(IMPLS) + "; " + FLOP_NOTE

    def run(self, p: AttentionParams, ctx: Context) -> list[Record]:
        import torch

        from bench.contract import timing_metrics
        from plugins.attention import kernels as K
        from plugins.attention.reference import check

        dev = ctx.device
        notes = [FLOP_NOTE, CHECK_NOTE, MEM_NOTE]
        if p.impl == "flex":
            why = K.flex_refusal(p, dev)
            if why:
                raise Skip(f"flex (FlexAttention) cannot run on {dev.type} for this case: torch: {why}")
            # no compile-worker pool: one compile at a time in this process, so that the budget's interrupt
            # leaves no worker behind (a pool's shutdown at exit would wait for the abandoned compile)
            import torch._inductor.config as inductor_config

            inductor_config.compile_threads = 1
            notes.append("flex compiled with torch._inductor.config.compile_threads = 1 (interruptible by its budget)")
        q, k, v, go = K.make_inputs(p, dev, ctx.seed)
        kern = K.make_kernel(p.impl, p.causal, p.seq, dev)

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

        def timed_call() -> float:
            return K.call_cost_s(step, dev)[1]  # wall time

        # 1. First call: torch says here whether it has a kernel (flex compiles here, within its budget).
        compile_budget = B.budget(B.COMPILE_BUDGET_S, ctx.profile)
        with K.recorded_warnings() as warned:
            try:
                with kern.scope():
                    if p.impl == "flex":
                        with K.within(compile_budget, f"torch.compile(flex_attention) on {dev.type} (first call)"):
                            first_s = timed_call()
                    else:
                        first_s = timed_call()
            except (RuntimeError, NotImplementedError) as e:
                if not K.no_kernel(e):
                    raise
                why = f"{p.impl} ({kern.what}) cannot run on {dev.type} for this case: torch: {type(e).__name__}: {e}".strip()
                extra = sorted({str(w.message).strip() for w in warned if str(w.message).strip()})
                if extra:
                    why += " | torch warnings: " + " | ".join(extra)
                raise Skip(why[:1500]) from None
        # 2. One timed call: the measurement (~CALLS_PER_CASE calls) must fit the case's budget.
        with kern.scope():
            one_s, wall_s = K.call_cost_s(step, dev)
        clear()
        case_budget = B.budget(B.CASE_BUDGET_S, ctx.profile)
        # With --fixed-sizes (the CI gate) the case runs on every host, whatever it costs here: a host a little
        # slower than the baseline's must not skip a row the gate compares (the timing below is capped anyway).
        if one_s * B.CALLS_PER_CASE > case_budget and not ctx.fixed_sizes:
            raise Skip(
                f"{p.impl} {p.dtype} {p.mode} at n={p.seq}: one call cost {one_s:.3g} s on {dev.type} (measured; "
                f"wall {wall_s:.3g} s); ~{B.CALLS_PER_CASE} calls would need {one_s * B.CALLS_PER_CASE:.3g} s, over the "
                f"{ctx.profile} profile's budget of {case_budget:g} s per case"
            )
        m: dict[str, Metric] = {
            "first_call_s": Metric(first_s, "s (first call" + (", incl. compile)" if p.impl == "flex" else ")"))
        }

        errs = check(kern, q, k, v, go, p.causal, p.mode)
        m["max_abs_err"] = Metric(errs["max_abs_err"], "abs, vs float64 reference")
        m["rel_error"] = Metric(errs["rel_error"], "max|err|/max|ref|, vs float64 reference")
        tol = REL_TOL[p.dtype]
        bad = [f"output rel error {errs['rel_error']:.3g} > {tol:g}"] if errs["rel_error"] > tol else []
        if "grad_rel_error" in errs:
            m["grad_rel_error"] = Metric(
                errs["grad_rel_error"], "max|err|/max|ref| of dQ, dK, dV, vs float64 reference"
            )
            if errs["grad_rel_error"] > tol * GRAD_TOL_FACTOR:
                bad.append(f"gradient rel error {errs['grad_rel_error']:.3g} > {tol * GRAD_TOL_FACTOR:g}")
        if bad:
            return [
                Record(
                    metrics=m, notes=notes, status="error", message=f"{p.impl} {p.dtype}: {'; '.join(bad)} (not timed)"
                )
            ]

        cap = min(ctx.max_time_s, B.budget(B.TIMING_CAP_S, ctx.profile))
        with kern.scope():
            clear()
            extra_bytes, method = ctx.peak_above(step)
            t = ctx.time(step, max_time_s=cap)
            counted = (
                None if p.impl == "flex" else ctx.count_flops(step)
            )  # FlopCounterMode cannot see into compiled code
        clear()

        mib = 2**20
        flops = flops_of(p)
        tm, samples = timing_metrics(t)
        m.update(tm)
        with_matmul = True
        if dev.type == "cpu" and p.dtype == "fp16":
            half_s = K.half_matmul_s(dev)
            with_matmul = half_s <= HALF_MATMUL_SLOW_S
            if not with_matmul:
                notes.append(
                    f"no pct_matmul: one 256^3 fp16 matmul took {half_s * 1e3:.3g} ms here (measured; "
                    f"> {HALF_MATMUL_SLOW_S * 1e3:g} ms: this CPU emulates half), so its peak is not worth measuring"
                )
        m.update(ctx.throughput(flops, t.median_s, K.torch_dtype(p.dtype), with_matmul=with_matmul))
        m["flops"] = Metric(flops, "FLOP (attention formula, see note)", "formula", deterministic=True)
        if counted == 0:  # e.g. the CPU flash op: FlopCounterMode has no formula registered for it
            notes.append(
                "flops_counted left out where FlopCounterMode counts 0 (no FLOP formula registered for the op)"
            )
        elif counted is not None:
            m["flops_counted"] = Metric(
                counted,
                "FLOP (FlopCounterMode: matmul/SDPA ops as run; causal not discounted)",
                "measured",
                deterministic=True,
            )
        m["extra_mib"] = Metric(extra_bytes / mib, f"MiB ({method})")
        m["scores_mib"] = Metric(
            scores_bytes(p) / mib, "MiB (one B*H*n*n score matrix in dtype)", "formula", deterministic=True
        )
        m["inputs_mib"] = Metric(inputs_bytes(p) / mib, "MiB (q, k, v)", "formula", deterministic=True)
        if t.stop_reason == "time_cap" and cap < ctx.max_time_s:
            notes.append(
                f"timing capped at {cap:g} s in the {ctx.profile} profile (the CI half-width says how well the median is known)"
            )
        return [Record(metrics=m, samples=samples, notes=notes)]

    def summarize(self, rows: list[Row]) -> list[Record]:
        from plugins.attention.summary import summarize

        return summarize(rows)

    def report(self, rows: list[Row], out_dir: Path) -> list[Section]:
        from plugins.attention.report import plot_attention

        return plot_attention(rows, out_dir)
