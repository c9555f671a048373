"""The attention plugin: kernels against the float64 reference, the FLOP formula, the budgets (a slow
kernel and an over-long compile become skipped rows naming the time), the exponent fit and claim
evidence on synthetic sweeps (each check fed a value that breaks it), real measurements of memory,
the plan's estimates, skipped rows and bad flags through the CLI."""

from __future__ import annotations

import contextlib
import json
import math
import time

import pytest
import torch
from click.testing import CliRunner

from bench.claims import judge
from bench.cli import main as cli_main
from bench.context import Context
from bench.contract import Metric, Row, Skip
from bench.params import make_params
from bench.plan import plan
from plugins.attention import AttentionPlugin
from plugins.attention import budget as B
from plugins.attention import kernels as K
from plugins.attention.claims import CLAIMS
from plugins.attention.params import GRAD_TOL_FACTOR, REL_TOL, AttentionParams, attention_flops
from plugins.attention.reference import check

CPU = torch.device("cpu")
PLUGIN = AttentionPlugin()
CLAIM = {c.id: c for c in CLAIMS}


def inputs(impl: str = "naive", seq: int = 300, dtype: str = "fp32", mode: str = "fwd", causal: bool = False):
    # n=300 > REF_ROWS: the reference covers a subset of query rows, the path large cases take
    p = AttentionParams(impl=impl, seq=seq, heads=3, head_dim=32, batch=2, causal=causal, dtype=dtype, mode=mode)
    return p, K.make_inputs(p, CPU, seed=1)


# --- FLOP formula ------------------------------------------------------------------------------
def test_flop_formula_matches_counted_forward_and_scales():
    _, (q, k, v, _) = inputs(seq=128)
    f = attention_flops(2, 3, 128, 32, False, "fwd")
    assert f == 4 * 2 * 3 * 128**2 * 32
    from bench.flops import count_flops

    assert count_flops(lambda: K.naive_attention(q, k, v)) == f  # two matmuls, 2 FLOPs per MAC
    kern = K.make_kernel("sdpa_math", False, 128, CPU)
    with kern.scope():
        assert count_flops(lambda: kern.fn(q, k, v)) == f
    assert attention_flops(2, 3, 128, 32, True, "fwd") == f / 2
    assert attention_flops(2, 3, 128, 32, False, "fwdbwd") == 3.5 * f  # FlashAttention-2 convention


# --- correctness -------------------------------------------------------------------------------
@pytest.mark.parametrize("impl", ["naive", "sdpa_math", "sdpa_flash"])
@pytest.mark.parametrize("dtype", ["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("causal, mode", [(False, "fwd"), (True, "fwdbwd")])
def test_backend_matches_float64_reference(impl, dtype, causal, mode):
    p, (q, k, v, go) = inputs(impl, dtype=dtype, mode=mode, causal=causal)
    errs = check(K.make_kernel(impl, causal, p.seq, CPU), q, k, v, go, causal, mode)
    assert 0 <= errs["rel_error"] < REL_TOL[dtype], errs
    if mode == "fwdbwd":
        assert errs["grad_rel_error"] < REL_TOL[dtype] * GRAD_TOL_FACTOR, errs
        assert q.grad is None  # the check leaves no gradients behind


def test_check_catches_wrong_kernels():
    p, (q, k, v, go) = inputs(mode="fwdbwd")
    unscaled = K.Kernel(lambda q, k, v: torch.softmax(q @ k.transpose(-2, -1), -1) @ v, contextlib.nullcontext, "bad")
    assert check(unscaled, q, k, v, go, False, "fwd")["rel_error"] > 1e-2
    # right forward, wrong gradient: k is detached, so dK comes out zero
    nograd_k = K.Kernel(lambda q, k, v: K.naive_attention(q, k.detach(), v), contextlib.nullcontext, "bad")
    e = check(nograd_k, q, k, v, go, False, "fwdbwd")
    assert e["rel_error"] < 1e-5 and e["grad_rel_error"] > 0.5
    # causal kernel against the non-causal reference
    p, (q, k, v, go) = inputs()
    assert check(K.make_kernel("sdpa_math", True, p.seq, CPU), q, k, v, go, False, "fwd")["rel_error"] > 1e-2


@pytest.mark.parametrize("causal", [False, True])
def test_flex_kernel_and_block_mask_match_reference(monkeypatch, causal):
    # the compiled kernel costs ~20 s to build on 2 cores (the quick bench run measures it within its
    # budget); here flex_attention runs eagerly, which checks the block mask's alignment
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: fn)
    p, (q, k, v, go) = inputs("flex", seq=256, causal=causal)
    with torch.no_grad():
        assert (
            check(K.make_kernel("flex", causal, p.seq, CPU), q, k, v, go, causal, "fwd")["rel_error"] < REL_TOL["fp32"]
        )


def test_flex_backward_refused_on_cpu_before_compiling(monkeypatch):
    def no_compile(*a, **kw):
        raise AssertionError("compiled although torch refuses the case")

    monkeypatch.setattr(torch, "compile", no_compile)
    p = AttentionParams(impl="flex", seq=256, heads=3, head_dim=32, batch=2, mode="fwdbwd")
    with pytest.raises(Skip, match=r"flex \(FlexAttention\) cannot run on cpu .*NotImplementedError.*backward"):
        PLUGIN.run(p, Context(device=CPU, max_time_s=0.1))


# --- budgets -----------------------------------------------------------------------------------
def test_watchdog_interrupts_and_names_the_time():
    t0 = time.perf_counter()
    over = r"slow thing: not finished after 0\.\d s \(interrupted at the budget of 0.2 s\)"
    with pytest.raises(Skip, match=over), K.within(0.2, "slow thing"):
        while True:
            sum(range(1000))
    assert time.perf_counter() - t0 < 2
    with K.within(5, "fast"):  # ends in time: nothing raised, and the alarm is cancelled
        pass
    time.sleep(0.01)


def test_flex_compile_over_budget_is_a_skipped_row(monkeypatch):
    def slow_compile(fn, **kw):
        def run(*a, **k):
            while True:  # a compile that never ends
                sum(range(1000))

        return run

    monkeypatch.setattr(torch, "compile", slow_compile)
    monkeypatch.setitem(B.COMPILE_BUDGET_S, "quick", 0.3)
    p = AttentionParams(impl="flex", seq=128, heads=2, head_dim=16)
    with pytest.raises(Skip, match=r"torch.compile\(flex_attention\) on cpu \(first call\): not finished after"):
        PLUGIN.run(p, Context(device=CPU, profile="quick", max_time_s=0.1))


def test_kernel_over_the_case_budget_is_skipped_naming_its_time(monkeypatch):
    monkeypatch.setitem(B.CASE_BUDGET_S, "quick", 1e-6)
    p = AttentionParams(impl="naive", seq=128, heads=2, head_dim=16)
    with pytest.raises(
        Skip, match=r"naive fp32 fwd at n=128: one call cost .* s on cpu \(measured; wall .* s\); ~10 calls would need"
    ):
        PLUGIN.run(p, Context(device=CPU, profile="quick", max_time_s=0.1))


def test_with_fixed_sizes_a_kernel_over_the_budget_still_runs(monkeypatch):
    """The CI gate (--fixed-sizes): a host slower than the baseline's must not turn a compared row into a skip."""
    monkeypatch.setitem(B.CASE_BUDGET_S, "quick", 1e-6)
    p = AttentionParams(impl="naive", seq=128, heads=2, head_dim=16)
    (rec,) = PLUGIN.run(p, Context(device=CPU, profile="quick", max_time_s=0.1, fixed_sizes=True))
    assert rec.status == "ok" and rec.metrics["rel_error"].value < REL_TOL["fp32"]


def test_plan_fits_the_shares():
    """Quick on CPU within 35 s and gpu on CUDA within 90 s, start-up included (bench/plan.py's assumptions)."""
    for profile, dev, share in (("quick", "cpu", 35.0), ("gpu", "cuda", 90.0)):
        cases = [make_params(PLUGIN, c) for c in PLUGIN.grid(profile)]
        total = sum(c.total_s for c in plan(PLUGIN, cases, dev))
        assert 0 < total <= share, (profile, total)
    gpu = [make_params(PLUGIN, c) for c in PLUGIN.grid("gpu")]
    assert [c.impl for c in gpu[:6]] == ["sdpa_flash"] * 2 + ["sdpa_efficient"] * 2 + [
        "sdpa_cudnn"
    ] * 2  # fa_speed first
    assert gpu[-1].impl == "flex" and not PLUGIN.launch(gpu[-1]).reuse


# --- real measurements in-process --------------------------------------------------------------
def test_run_measures_naive_scores_and_flash_below_them():
    ctx = Context(device=CPU, max_time_s=0.1)
    out = {}
    for impl in ("naive", "sdpa_flash"):
        p = AttentionParams(impl=impl, seq=512, heads=4, head_dim=32, mode="fwdbwd")
        (rec,) = PLUGIN.run(p, ctx)
        assert rec.status == "ok", rec.message
        m = {k: v.value for k, v in rec.metrics.items()}
        assert m["time_ms"] > 0 and m["tflops"] > 0 and m["grad_rel_error"] < 1e-4
        assert m["flops"] == attention_flops(1, 4, 512, 32, False, "fwdbwd")
        out[impl] = m
    # naive holds at least one B*H*n*n score matrix above its inputs; the fused kernel far less
    assert out["naive"]["extra_mib"] >= out["naive"]["scores_mib"]
    assert out["sdpa_flash"]["extra_mib"] < 0.5 * out["sdpa_flash"]["scores_mib"]


# --- summarize on synthetic sweeps -------------------------------------------------------------
def row(impl, seq, mem, ms, heads=12, mfu=None, dtype="fp32", mode="fwd", status="ok") -> Row:
    params = dict(impl=impl, seq=seq, heads=heads, head_dim=64, batch=1, causal=False, dtype=dtype, mode=mode)
    metrics = {"extra_mib": Metric(mem, "MiB"), "time_ms": Metric(ms, "ms")}
    if mfu is not None:
        metrics["mfu"] = Metric(mfu, "% of 989.4 TFLOP/s bf16 dense peak")
        metrics["tflops"] = Metric(mfu * 9.894, "TFLOP/s")
    return Row("r", "attention", params, status=status, metrics=metrics, fingerprint={"label": "synthetic"})


def wobble(i: int) -> float:
    return 1.0 + 0.02 * math.sin(7.0 * i)  # deterministic +-2% noise


SEQS = (256, 512, 1024, 2048, 4096)


def by_impl(recs, analysis="seq_sweep"):
    return {r.labels["impl"]: r for r in recs if r.labels.get("analysis") == analysis}


def test_summarize_fits_known_power_laws_and_attaches_evidence():
    rows = [row("naive", n, 3e-6 * n**2 * wobble(i), 1e-5 * n**1.5 * wobble(i + 3)) for i, n in enumerate(SEQS)]
    rows += [row("sdpa_flash", n, 2e-3 * n * wobble(i + 1), 2e-6 * n**2) for i, n in enumerate(SEQS)]
    rows += [row("sdpa_flash", 1024, 0.1 * h, 0.5 * h, heads=h) for h in (16, 32)]  # + heads=12 from the sweep
    rows.append(row("sdpa_math", 512, 1, 1, status="skipped"))  # not ok: ignored
    recs = PLUGIN.summarize(rows)
    sw = by_impl(recs)
    naive = {k: v.value for k, v in sw["naive"].metrics.items()}
    assert naive["mem_exponent"] == pytest.approx(2.0, abs=0.03)
    assert naive["time_exponent"] == pytest.approx(1.5, abs=0.03)
    assert 0 < naive["mem_stderr"] < 0.05 and naive["mem_r2"] > 0.99
    flash = {k: v.value for k, v in sw["sdpa_flash"].metrics.items()}
    assert flash["mem_exponent"] == pytest.approx(1.0, abs=0.03) and flash["time_exponent"] == pytest.approx(
        2.0, abs=1e-9
    )
    assert "sdpa_math" not in sw
    ev_q = sw["naive"].evidence["attn.quadratic"]
    assert ev_q.value == pytest.approx(naive["mem_exponent"]) and "256" in ev_q.detail and "R^2" in ev_q.detail
    assert naive["verdict"].startswith("holds")
    ev_l = sw["sdpa_flash"].evidence["attn.flash_linear"]
    assert ev_l.value == pytest.approx(flash["mem_exponent"]) and flash["verdict"].startswith("holds")
    heads = by_impl(recs, "heads_sweep")["sdpa_flash"]
    assert heads.evidence["attn.heads"].value == "12,16,32"
    assert not any("attn.fa_speed" in r.evidence for r in recs)  # no CUDA rows: nothing to say


def test_quadratic_fails_when_the_naive_memory_grows_linearly():
    rows = [row("naive", n, 1e-3 * n, 1e-3 * n) for n in SEQS]
    (rec,) = [r for r in PLUGIN.summarize(rows) if "attn.quadratic" in r.evidence]
    assert rec.evidence["attn.quadratic"].value == pytest.approx(1.0)
    assert rec.metrics["verdict"].value.startswith("fails")
    assert judge(CLAIM["attn.quadratic"], rec.evidence["attn.quadratic"]) == "fails"


def test_flash_linear_fails_when_the_fused_memory_grows_quadratically():
    rows = [row("sdpa_flash", n, 1e-6 * n**2, 1e-3 * n) for n in SEQS]
    (rec,) = [r for r in PLUGIN.summarize(rows) if "attn.flash_linear" in r.evidence]
    assert rec.evidence["attn.flash_linear"].value == pytest.approx(2.0)
    assert judge(CLAIM["attn.flash_linear"], rec.evidence["attn.flash_linear"]) == "fails"


def test_summarize_fa_speed_from_cuda_rows_only():
    rows = [
        row("sdpa_flash", n, 1e-3 * n, 1e-6 * n**2, mfu=m, dtype="bf16") for n, m in zip(SEQS, (20, 35, 48, 51, 50))
    ]
    rows += [row("naive", n, 1e-6 * n**2, 1e-5 * n**2, mfu=m, dtype="bf16") for n, m in zip(SEQS, (5, 9, 11, 12, 12))]
    (fa,) = [r for r in PLUGIN.summarize(rows) if "attn.fa_speed" in r.evidence]
    assert fa.evidence["attn.fa_speed"].value == 51
    assert fa.metrics["best_mfu_naive"].value == 12 and "n=2048" in fa.evidence["attn.fa_speed"].detail


# --- the CLI -----------------------------------------------------------------------------------
@pytest.mark.skipif(torch.cuda.is_available(), reason="efficient/cuDNN exist with CUDA")
def test_cli_unavailable_backends_are_skipped_rows_with_torchs_reason(tmp_path):
    out = tmp_path / "a.jsonl"
    flags = "--impl naive,sdpa_efficient,sdpa_cudnn --seq 128 --heads 2 --head-dim 16 --batch 1 --dtype fp32 --mode fwd"
    flags += f" --causal false --max-time 0.1 --out {out} --format none"
    r = CliRunner().invoke(cli_main, ["run", "--plugin", "attention", *flags.split()])  # the cases: a warm worker
    assert r.exit_code == 0, r.output
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    st = {x["params"]["impl"]: x for x in rows if x["kind"] == "case"}
    assert st["naive"]["status"] == "ok" and st["naive"]["metrics"]["rel_error"]["value"] < 1e-5
    for impl in ("sdpa_efficient", "sdpa_cudnn"):
        assert st[impl]["status"] == "skipped"
        assert "No viable backend" in st[impl]["message"] and impl in st[impl]["message"]


@pytest.mark.parametrize(
    "flags, needle",
    [
        (["--impl", "bogus"], "--impl"),
        (["--dtype", "fp8"], "--dtype"),
        (["--mode", "backward"], "--mode"),
        (["--seq", "0"], "--seq"),
        (["--heads", "-4"], "--heads"),
        (["--head-dim", "abc"], "--head-dim"),
    ],
)
def test_cli_bad_values_exit_2(tmp_path, flags, needle):
    r = CliRunner().invoke(cli_main, ["run", "--plugin", "attention", *flags, "--out", str(tmp_path / "x.jsonl")])
    assert r.exit_code == 2, r.output
    assert needle in r.output
    assert not (tmp_path / "x.jsonl").exists()
