"""The attention plugin: kernels against the float64 reference, the FLOP formula, the exponent fit
and claim evidence on synthetic sweeps, real measurements of memory, skipped rows and bad flags
through the CLI."""
from __future__ import annotations

import json
import math

import pytest
import torch
from click.testing import CliRunner

from bench.cli import main as cli_main
from bench.context import Context
from plugins import attention as A
from tests.conftest import run_bench

CPU = torch.device("cpu")


def inputs(impl: str = "naive", seq: int = 300, dtype: str = "fp32", mode: str = "fwd", causal: bool = False):
    # n=300 > REF_ROWS: the reference covers a subset of query rows, the path large cases take
    p = A.AttentionParams(impl=impl, seq=seq, heads=3, head_dim=32, batch=2, causal=causal, dtype=dtype, mode=mode)
    return p, A.make_inputs(p, CPU, seed=1)


# --- FLOP formula ------------------------------------------------------------------------------
def test_flop_formula_matches_counted_forward_and_scales():
    p, (q, k, v, _) = inputs(seq=128)
    f = A.attention_flops(2, 3, 128, 32, False, "fwd")
    assert f == 4 * 2 * 3 * 128**2 * 32
    from bench.flops import count_flops

    assert count_flops(lambda: A.naive_attention(q, k, v)) == f  # two matmuls, 2 FLOPs per MAC
    kern = A.make_kernel("sdpa_math", False, 128, CPU)
    with kern.scope():
        assert count_flops(lambda: kern.fn(q, k, v)) == f
    assert A.attention_flops(2, 3, 128, 32, True, "fwd") == f / 2
    assert A.attention_flops(2, 3, 128, 32, False, "fwdbwd") == 3.5 * f  # FlashAttention-2 convention


# --- correctness -------------------------------------------------------------------------------
@pytest.mark.parametrize("impl", ["naive", "sdpa_math", "sdpa_flash"])
@pytest.mark.parametrize("dtype", ["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("mode", ["fwd", "fwdbwd"])
def test_backend_matches_float64_reference(impl, dtype, causal, mode):
    p, (q, k, v, go) = inputs(impl, dtype=dtype, mode=mode, causal=causal)
    kern = A.make_kernel(impl, causal, p.seq, CPU)
    errs = A.check(kern, q, k, v, go, causal, mode)
    assert 0 <= errs["rel_error"] < A.REL_TOL[dtype], errs
    if mode == "fwdbwd":
        assert errs["grad_rel_error"] < A.REL_TOL[dtype] * A.GRAD_TOL_FACTOR, errs
        assert q.grad is None  # the check leaves no gradients behind


def test_check_catches_wrong_kernels():
    p, (q, k, v, go) = inputs(mode="fwdbwd")
    import contextlib

    unscaled = A.Kernel(lambda q, k, v: torch.softmax(q @ k.transpose(-2, -1), -1) @ v, contextlib.nullcontext, "bad")
    assert A.check(unscaled, q, k, v, go, False, "fwd")["rel_error"] > 1e-2
    # right forward, wrong gradient: k is detached, so dK comes out zero
    nograd_k = A.Kernel(lambda q, k, v: A.naive_attention(q, k.detach(), v), contextlib.nullcontext, "bad")
    e = A.check(nograd_k, q, k, v, go, False, "fwdbwd")
    assert e["rel_error"] < 1e-5 and e["grad_rel_error"] > 0.5
    # causal kernel against the non-causal reference
    p, (q, k, v, go) = inputs()
    wrong = A.make_kernel("sdpa_math", True, p.seq, CPU)
    assert A.check(wrong, q, k, v, go, False, "fwd")["rel_error"] > 1e-2


@pytest.mark.slow
def test_flex_forward_matches_reference_and_has_no_cpu_backward():
    for causal in (False, True):
        p, (q, k, v, go) = inputs("flex", seq=256, causal=causal)
        kern = A.make_kernel("flex", causal, p.seq, CPU)
        with torch.no_grad():
            errs = A.check(kern, q, k, v, go, causal, "fwd")
        assert errs["rel_error"] < A.REL_TOL["fp32"], (causal, errs)
    # the plugin turns torch's refusal into a skipped row with torch's message
    p = A.AttentionParams(impl="flex", seq=256, heads=3, head_dim=32, batch=2, mode="fwdbwd")
    recs = A.AttentionPlugin().run(p, Context(device=CPU, max_time_s=0.1))
    assert recs[0].status == "skipped" and "backward" in recs[0].message and "NotImplementedError" in recs[0].message


# --- real measurements in-process --------------------------------------------------------------
def test_run_measures_naive_scores_and_flash_below_them():
    plugin = A.AttentionPlugin()
    ctx = Context(device=CPU, max_time_s=0.1)
    out = {}
    for impl in ("naive", "sdpa_flash"):
        p = A.AttentionParams(impl=impl, seq=512, heads=4, head_dim=32, mode="fwdbwd")
        (rec,) = plugin.run(p, ctx)
        assert rec.status == "ok", rec.message
        m = {k: v.value for k, v in rec.metrics.items()}
        assert m["time_ms"] > 0 and m["tflops"] > 0 and m["grad_rel_error"] < 1e-4
        assert m["flops"] == A.attention_flops(1, 4, 512, 32, False, "fwdbwd")
        out[impl] = m
    # naive holds at least one B*H*n*n score matrix above its inputs; the fused kernel far less
    assert out["naive"]["extra_mib"] >= out["naive"]["scores_mib"]
    assert out["sdpa_flash"]["extra_mib"] < 0.5 * out["sdpa_flash"]["scores_mib"]


# --- summarize on synthetic sweeps -------------------------------------------------------------
def row(impl, seq, mem, ms, heads=12, mfu=None, dtype="fp32", mode="fwd"):
    params = dict(impl=impl, seq=seq, heads=heads, head_dim=64, batch=1, causal=False, dtype=dtype, mode=mode)
    metrics = {"extra_mib": {"value": mem, "unit": "MiB"}, "time_ms": {"value": ms, "unit": "ms"}}
    if mfu is not None:
        metrics["mfu"] = {"value": mfu, "unit": "% of 989.4 TFLOP/s bf16 dense peak"}
        metrics["tflops"] = {"value": mfu * 9.894, "unit": "TFLOP/s"}
    return {"kind": "case", "status": "ok", "plugin": "attention", "params": params, "metrics": metrics,
            "fingerprint": {"label": "synthetic"}}  # fmt: skip


def wobble(i: int) -> float:
    return 1.0 + 0.02 * math.sin(7.0 * i)  # deterministic +-2% noise


SEQS = (256, 512, 1024, 2048, 4096)


def by_impl(recs, analysis="seq_sweep"):
    return {r.labels["impl"]: r for r in recs if r.labels.get("analysis") == analysis}


def test_summarize_fits_known_power_laws_and_attaches_evidence():
    rows = [row("naive", n, 3e-6 * n**2 * wobble(i), 1e-5 * n**1.5 * wobble(i + 3)) for i, n in enumerate(SEQS)]
    rows += [row("sdpa_flash", n, 2e-3 * n * wobble(i + 1), 2e-6 * n**2) for i, n in enumerate(SEQS)]
    rows += [row("sdpa_flash", 1024, 0.1 * h, 0.5 * h, heads=h) for h in (16, 32)]  # + heads=12 from the sweep
    rows.append(dict(row("sdpa_math", 512, 1, 1), status="skipped"))  # not ok: ignored
    recs = A.AttentionPlugin().summarize(rows)
    sw = by_impl(recs)
    naive = {k: v.value for k, v in sw["naive"].metrics.items()}
    assert naive["mem_exponent"] == pytest.approx(2.0, abs=0.03)
    assert naive["time_exponent"] == pytest.approx(1.5, abs=0.03)
    assert 0 < naive["mem_stderr"] < 0.05 and naive["mem_r2"] > 0.99
    flash = {k: v.value for k, v in sw["sdpa_flash"].metrics.items()}
    assert flash["mem_exponent"] == pytest.approx(1.0, abs=0.03) and flash["time_exponent"] == pytest.approx(2.0, abs=1e-9)
    assert "sdpa_math" not in sw
    ev_q = sw["naive"].evidence["attn.quadratic"]
    assert ev_q.value == pytest.approx(naive["mem_exponent"]) and "256" in ev_q.detail and "R^2" in ev_q.detail
    assert naive["verdict"].startswith("holds")
    ev_l = sw["sdpa_flash"].evidence["attn.flash_linear"]
    assert ev_l.value == pytest.approx(flash["mem_exponent"]) and flash["verdict"].startswith("holds")
    heads = by_impl(recs, "heads_sweep")["sdpa_flash"]
    assert heads.evidence["attn.heads"].value == "12,16,32"
    assert not any("attn.fa_speed" in r.evidence for r in recs)  # no CUDA rows: nothing to say


def test_summarize_verdict_fails_when_the_exponent_is_off():
    # a "naive" kernel whose memory grows linearly: the registry's check (2.0 +-0.2) must fail it
    rows = [row("naive", n, 1e-3 * n, 1e-3 * n) for n in SEQS]
    (rec,) = [r for r in A.AttentionPlugin().summarize(rows) if "attn.quadratic" in r.evidence]
    assert rec.evidence["attn.quadratic"].value == pytest.approx(1.0)
    assert rec.metrics["verdict"].value.startswith("fails")


def test_summarize_fa_speed_from_cuda_rows_only():
    rows = [row("sdpa_flash", n, 1e-3 * n, 1e-6 * n**2, mfu=m, dtype="bf16") for n, m in zip(SEQS, (20, 35, 48, 51, 50))]
    rows += [row("naive", n, 1e-6 * n**2, 1e-5 * n**2, mfu=m, dtype="bf16") for n, m in zip(SEQS, (5, 9, 11, 12, 12))]
    recs = A.AttentionPlugin().summarize(rows)
    (fa,) = [r for r in recs if "attn.fa_speed" in r.evidence]
    assert fa.evidence["attn.fa_speed"].value == 51
    assert fa.metrics["best_mfu_naive"].value == 12 and "n=2048" in fa.evidence["attn.fa_speed"].detail


# --- the CLI -----------------------------------------------------------------------------------
@pytest.mark.skipif(torch.cuda.is_available(), reason="efficient/cuDNN exist with CUDA")
def test_cli_unavailable_backends_are_skipped_rows_with_torchs_reason(tmp_path):
    out = tmp_path / "a.jsonl"
    r = run_bench("run", "--plugin", "attention", "--impl", "naive,sdpa_efficient,sdpa_cudnn", "--seq", "128",
                  "--heads", "2", "--head-dim", "16", "--batch", "1", "--dtype", "fp32", "--mode", "fwd",
                  "--causal", "false", "--max-time", "0.1", "--out", str(out), "--format", "none")  # fmt: skip
    assert r.returncode == 0, r.stderr
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
