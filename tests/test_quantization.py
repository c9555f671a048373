"""The quantization plugin: bytes per parameter of quantized Linear layers with their scales counted
(int8 within 2% of 1 byte, 4-bit within 2% of 0.5 byte plus the stated scales), the error of the naive
cast vs per-tensor and per-row scales, budgets (a slow kernel loses its speed rows, never its bytes),
claim evidence with each check fed a value that breaks it, a skipped row when a library is missing,
the plan's estimates, and the CLI."""

from __future__ import annotations

import csv
import importlib.util
import io

import pytest
import torch
from click.testing import CliRunner

from bench.claims import evaluate, judge
from bench.cli import main as cli_main
from bench.context import Context
from bench.contract import Evidence, Metric, Row, Skip
from bench.params import make_params
from bench.plan import plan
from bench.results import load_rows
from plugins.common import numerics as N
from plugins.quantization import QuantizationPlugin
from plugins.quantization import errors as E
from plugins.quantization import schemes as S
from plugins.quantization import speed as V
from plugins.quantization.claims import CLAIMS, f_nf4_bits
from plugins.quantization.params import QuantParams, batch_sizes
from plugins.quantization.summary import quant_error

CPU = torch.device("cpu")
PLUGIN = QuantizationPlugin()
CLAIM = {c.id: c for c in CLAIMS}
HAS_BNB = importlib.util.find_spec("bitsandbytes") is not None
needs_bnb = pytest.mark.skipif(not HAS_BNB, reason="bitsandbytes is not installed")
IN, OUT = 512, 1024  # one Linear: 524288 weights


def linear(seed: int = 0) -> torch.nn.Linear:
    torch.manual_seed(seed)
    lin = torch.nn.Linear(IN, OUT)
    torch.nn.init.normal_(lin.weight, 0.0, 0.02)
    return lin


def synthetic(scheme: str, **metrics: float) -> Row:
    params = {"scheme": scheme, "model": "small", "dtype": "bf16"}
    return Row(
        "r", "quantization", params, metrics={k: Metric(v) for k, v in metrics.items()}, fingerprint={"label": "x"}
    )


def test_batch_sizes():
    assert batch_sizes(64) == [1, 16, 64]
    assert batch_sizes(256) == [1, 16, 256]
    assert batch_sizes(1) == [1]


# --- bytes: plain torch ------------------------------------------------------------------------------
def test_int8_bytes_are_codes_plus_the_stated_scales():
    for how, scales in (("row", 4 * OUT), ("tensor", 4), ("naive", 0)):
        lb = N.linear_bytes([S.Int8Linear(linear(), how, torch.bfloat16)])
        assert lb.params == IN * OUT and lb.bytes["weights"] == IN * OUT  # 1 byte per weight
        assert lb.bytes["scales"] == scales  # fp32 per output row / per tensor / none
        assert lb.bytes["bias"] == 2 * OUT and lb.bytes["tables"] == 0
        assert abs(lb.per_param() - 1.0) <= 0.02


def test_int8_quantizers_round_trip():
    w = torch.tensor([[0.5, -1.0, 0.25], [100.0, -3.0, 2.9]])
    codes, scale = S.int8_quantize(w, "row")
    assert codes.tolist() == [[64, -127, 32], [127, -4, 4]] and scale.shape == (2, 1)
    assert S.int8_quantize(w, "tensor")[1].item() == pytest.approx(100 / 127)
    naive, none = S.int8_quantize(w, "naive")
    assert naive.tolist() == [[0, -1, 0], [100, -3, 2]] and none is None  # truncation toward zero, no scale


# --- bytes: bitsandbytes -----------------------------------------------------------------------------
@needs_bnb
def test_llm_int8_bytes_one_byte_plus_row_scales():
    q = S.bnb_layer("llm_int8", linear(), torch.bfloat16, CPU, 6.0)
    before = N.linear_bytes([q])
    with torch.no_grad():
        y = q(torch.randn(3, IN, dtype=torch.bfloat16))  # the first forward moves CB/SCB into q.state
    assert y.shape == (3, OUT)
    after = N.linear_bytes([q])
    for lb in (before, after):
        assert lb.bytes["weights"] == IN * OUT
        assert lb.bytes["scales"] == 4 * OUT  # SCB: fp32 absmax per row
        assert lb.per_param() == 1 + 4 / IN


# stated scales per weight (QLoRA sec. 3; bitsandbytes blocksize 64): fp32 absmax per 64 weights, or with double
# quantization an 8-bit absmax per 64 plus an fp32 second-level absmax per 256 blocks and one fp32 offset
@needs_bnb
@pytest.mark.parametrize("scheme", ["nf4", "fp4_dq"])
def test_4bit_bytes_half_a_byte_plus_stated_scales(scheme):
    lb = N.linear_bytes([S.bnb_layer(scheme, linear(), torch.bfloat16, CPU, 6.0)])
    n = IN * OUT
    dq = scheme.endswith("_dq")
    stated_scales = (n // 64 + 4 * (n // 64 // 256) + 4) if dq else 4 * (n // 64)  # bytes
    assert lb.bytes["weights"] == n // 2  # two 4-bit codes per byte
    assert lb.bytes["scales"] == stated_scales
    assert lb.bytes["tables"] == 4 * 16 + (4 * 256 if dq else 0)  # the 16-value code book (+ the 8-bit dynamic map)
    if dq:  # QLoRA: 4 + 8/64 + 32/(64*256) = 4.127 bits, plus the code tables of one layer
        assert 8 * (lb.bytes["weights"] + lb.bytes["scales"]) / n == pytest.approx(
            4 + 8 / 64 + 32 / (64 * 256), abs=1e-4
        )


# --- bytes: torchao ----------------------------------------------------------------------------------
@pytest.mark.skipif(importlib.util.find_spec("torchao") is None, reason="torchao is not installed")
@pytest.mark.parametrize("scheme, codes", [("ao_int8_dyn", 1.0), ("ao_int4_wo", 0.5)])
def test_torchao_bytes(scheme, codes):
    from plugins.common.gpt import GPT, config_from

    torch.manual_seed(0)
    ref = GPT(config_from("tiny", d_model=128)).eval()
    try:
        model, _ = S.build(scheme, ref, QuantParams(scheme=scheme, model="tiny", group_size=64), CPU)
    except S.SchemeUnavailable as e:
        pytest.skip(f"{scheme} cannot run here: {e}")
    lins = S.block_linears(model)
    lb = N.linear_bytes(lins)
    assert lb.bytes["weights"] == codes * lb.params
    per_row = sum(lin.out_features for lin in lins)
    if scheme == "ao_int8_dyn":  # fp32 scale + int8 zero point per output row
        assert lb.bytes["scales"] == 5 * per_row
    else:  # bf16 scale and zero point per group of 64 weights
        assert lb.bytes["scales"] == 2 * 2 * lb.params // 64


# --- each check fed a breaking value -----------------------------------------------------------------
def error_rows(naive_act: float, row_act: float, row_w: float) -> tuple[Row, Row]:
    naive = synthetic("int8_naive", act_rel_error=naive_act, rel_error=1.0, act_rms=1.0)
    return naive, synthetic("int8_rowwise", act_rel_error=row_act, rel_error=row_w)


@pytest.mark.parametrize(
    "naive_act, row_act, row_w, verdict",
    [
        (0.6, 0.008, 0.008, "holds"),
        (0.05, 0.01, 0.008, "fails"),  # only 5x worse without scaling: not "dramatic"
        (0.9, 0.03, 0.008, "fails"),  # per-row error on activations not small
        (0.9, 0.008, 0.03, "fails"),  # per-row error on weights not small
    ],
)
def test_quant_error_verdict_follows_the_criterion(naive_act, row_act, row_w, verdict):
    ev = quant_error(*error_rows(naive_act, row_act, row_w), None, None)
    assert ev is not None and ev.verdict == verdict and ev.value == pytest.approx(naive_act / row_act)


def test_byte_claims_fail_on_breaking_values():
    assert judge(CLAIM["mem.store_int8"], Evidence(1.0059, "bytes/param")) == "holds"
    assert judge(CLAIM["mem.store_int8"], Evidence(1.1, "bytes/param")) == "fails"  # scales 10%: not "1 byte"
    assert judge(CLAIM["quant.nf4"], Evidence(0.2586, "x of fp16")) == "holds"
    assert judge(CLAIM["quant.nf4"], Evidence(0.2813, "x of fp16")) == "fails"  # NF4 without double quantization
    printed = {
        "weight_bits": 4,
        "block": 64,
        "absmax_bits": 8,
        "block2": 256,
        "absmax2_bits": 32,
        "ref_bits": 16,
        "printed_bits": 4.127,
        "printed_ratio": 0.258,
        "tol": 0.0005,
    }
    assert f_nf4_bits(printed).verdict == "holds"
    assert f_nf4_bits({**printed, "printed_bits": 4.5}).verdict == "fails"
    assert f_nf4_bits({**printed, "absmax_bits": 32}).verdict == "fails"  # no double quantization: 4.5 bits


def test_int8_half_shows_store_int8s_verdict_and_is_not_counted():
    claims = [("quantization", c) for c in CLAIMS]
    for bpp, verdict in ((1.0059, "holds"), (1.1, "fails")):
        r = synthetic(
            "int8_rowwise",
            bytes_per_param=bpp,
            weight_bytes_per_param=1.0,
            scale_bytes_per_param=bpp - 1,
            table_bytes_per_param=0.0,
            x_fp16=bpp / 2,
            params=1000.0,
            bias_bytes=0.0,
        )
        summary = [
            Row("r", "quantization", {}, kind="summary", evidence=rec.evidence, fingerprint={"label": "x"})
            for rec in PLUGIN.summarize([r])
        ]
        _, res = evaluate(summary, claims)
        by_id = {x.id: x for x in res}
        assert by_id["mem.store_int8"].outcomes["x"].verdict == verdict and by_id["mem.store_int8"].counted
        assert by_id["quant.int8_half"].outcomes["x"].verdict == verdict and not by_id["quant.int8_half"].counted


# --- budgets -----------------------------------------------------------------------------------------
def test_slow_kernel_keeps_its_bytes_and_names_the_time(monkeypatch):
    monkeypatch.setitem(V.SPEED_BUDGET_S, "quick", 1e-6)
    monkeypatch.setitem(E.ERROR_BUDGET_S, "quick", 1e-6)
    (rec,) = PLUGIN.run(QuantParams(scheme="fp16", model="tiny", max_batch=16), Context(device=CPU, max_time_s=0.05))
    assert rec.status == "ok" and rec.metrics["bytes_per_param"].value == 2.0 and "rel_error" in rec.metrics
    assert "time_ms" not in rec.metrics and "logits_rel_error" not in rec.metrics
    text = " ".join(rec.notes)
    assert "speed not measured: fp16 block 0 mlp.fc on cpu: one call at batch 1 cost" in text
    assert "logits_rel_error not measured: one call of block 0 mlp.fc at 256 rows cost" in text


def test_speed_rows_per_batch_with_a_ratio(monkeypatch):
    monkeypatch.setitem(V.SPEED_BUDGET_S, "quick", 1e3)  # every batch size, however busy the machine
    recs = PLUGIN.run(QuantParams(scheme="fp32", model="tiny", max_batch=16), Context(device=CPU, max_time_s=0.05))
    assert [r.labels["batch"] for r in recs] == [1, 16]
    assert all(r.metrics["time_ratio"].value > 0 and r.metrics["logits_rel_error"].value < 1e-2 for r in recs)


def test_plan_fits_the_shares():
    for profile, dev, share in (("quick", "cpu", 35.0), ("gpu", "cuda", 70.0)):
        cases = [make_params(PLUGIN, c) for c in PLUGIN.grid(profile)]
        total = sum(c.total_s for c in plan(PLUGIN, cases, dev))
        assert 0 < total <= share, (profile, total)
    first = make_params(PLUGIN, PLUGIN.grid("gpu")[0])
    assert (first.scheme, first.dtype, first.model) == ("llm_int8", "fp16", "1b")  # bitsandbytes on CUDA first
    assert not PLUGIN.launch(first).reuse and PLUGIN.launch(make_params(PLUGIN, PLUGIN.grid("quick")[0])).reuse


def test_missing_library_gives_a_skipped_row(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name, *a)
    )
    p = QuantParams(scheme="nf4", model="tiny", max_batch=1)
    assert "bitsandbytes is not installed" in PLUGIN.available(p)
    with pytest.raises(Skip, match="bitsandbytes is not installed"):
        PLUGIN.run(p, Context(device=CPU, max_time_s=0.05))


@needs_bnb
def test_adam8bit_state_is_about_a_quarter():
    c = Context(device=CPU, max_time_s=0.05)
    recs = {s: PLUGIN.run(QuantParams(scheme=s, model="tiny"), c)[0] for s in ("adamw", "adamw8bit")}
    a, a8 = (recs[s].metrics["optim_bytes_per_param"].value for s in ("adamw", "adamw8bit"))
    assert a == pytest.approx(8, abs=1e-3)  # fp32 m and v (+ 0-d step counters)
    assert (
        2 <= a8 < 2.2
    )  # uint8 m and v + block absmax, quantile maps, tensors under 4096 elements in fp32 (tiny: 2.13)


# --- the CLI: error and claims measured end to end ---------------------------------------------------
def test_cli_naive_cast_per_tensor_and_per_row(tmp_path):
    out = tmp_path / "quant.jsonl"
    flags = f"--scheme int8_naive,int8_tensor,int8_rowwise --model small --out {out}"
    r = CliRunner().invoke(cli_main, ["run", "--plugin", "quantization", *flags.split()])  # the cases: a warm worker
    assert r.exit_code == 0, r.output
    assert "bytes_per_param" in r.output and "quant.error" in r.output
    rows = load_rows([out])
    cases = {x.params["scheme"]: x for x in rows if x.is_case}
    assert {x.status for x in cases.values()} == {"ok"} and not any("time_ms" in x.metrics for x in cases.values())
    naive, tensor, row = cases["int8_naive"], cases["int8_tensor"], cases["int8_rowwise"]
    # weights ~ N(0, 0.02): the truncating cast maps every one to 0, so the layer's output is its bias (0)
    assert naive.number("zero_codes_pct") == 100.0 and naive.number("rel_error") == pytest.approx(1.0)
    # LayerNorm outputs have unit scale: the cast zeroes |x| < 1, not everything
    assert 0.9 < naive.number("act_rms") < 1.2 and 40 < naive.number("act_zero_codes_pct") < 90
    assert row.number("rel_error") < 0.02 and row.number("act_rel_error") < 0.02
    assert row.number("rel_error") <= tensor.number("rel_error")
    # small (d=256): per block 768 + 256 + 1024 + 256 output rows, one fp32 scale each, over 12 d^2 weights
    assert row.number("bytes_per_param") == 1 + 4 * (768 + 256 + 1024 + 256) / (12 * 256**2)
    ev = {cid: e for x in rows for cid, e in x.evidence.items()}
    assert ev["quant.error"].verdict == "holds" and ev["quant.error"].value >= 10
    assert "per-tensor absmax" in ev["quant.error"].detail and "criterion" in ev["quant.error"].detail
    assert "quant.int8_half" not in ev  # one measurement: its verdict is mem.store_int8's (a parts claim)
    c = CliRunner().invoke(cli_main, ["claims", "--format", "csv", str(out)])
    table = {line["id"]: line for line in csv.DictReader(io.StringIO(c.stdout))}
    verdict = next(k for k in table["quant.error"] if k.startswith("verdict"))
    for cid in ("quant.error", "mem.store_int8", "quant.int8_half"):  # int8_rowwise stands in for LLM.int8
        assert table[cid][verdict] == "holds", (cid, table[cid])
