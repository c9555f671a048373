"""The quantization plugin: bytes per parameter of quantized Linear layers with their scales counted
(int8 within 2% of 1 byte, 4-bit within 2% of 0.5 byte plus the stated scales), output error of the
naive cast vs per-row scales, claim evidence, a skipped row when a library is missing, and the CLI."""
from __future__ import annotations

import csv
import dataclasses
import importlib.util
import io
import json

import pytest
import torch

from bench.context import Context
from bench.results import load_rows
from plugins.common import numerics as N
from plugins import quantization as Q
from tests.conftest import run_bench

CPU = torch.device("cpu")
PLUGIN = Q.QuantizationPlugin()
HAS_BNB = importlib.util.find_spec("bitsandbytes") is not None
needs_bnb = pytest.mark.skipif(not HAS_BNB, reason="bitsandbytes is not installed")
IN, OUT = 512, 1024  # one Linear: 524288 weights


def linear(seed: int = 0) -> torch.nn.Linear:
    torch.manual_seed(seed)
    lin = torch.nn.Linear(IN, OUT)
    torch.nn.init.normal_(lin.weight, 0.0, 0.02)
    return lin


def as_rows(records: list, params: Q.QuantParams) -> list[dict]:
    from bench.results import _clean

    return json.loads(json.dumps(_clean([{"kind": "case", "status": r.status, "params": dataclasses.asdict(params),
                                          "labels": r.labels, "metrics": {k: m.to_json() for k, m in r.metrics.items()}}
                                         for r in records])))  # fmt: skip


def test_batch_sizes():
    assert Q.batch_sizes(64) == [1, 16, 64]
    assert Q.batch_sizes(256) == [1, 16, 256]
    assert Q.batch_sizes(1) == [1]


# --- bytes: plain torch ------------------------------------------------------------------------------
def test_rowwise_int8_bytes_are_codes_plus_one_fp32_scale_per_row():
    _, rowwise = Q._int8_layers()
    lb = N.linear_bytes([rowwise(linear(), torch.bfloat16)])
    assert lb.params == IN * OUT
    assert lb.bytes["weights"] == IN * OUT  # 1 byte per weight
    assert lb.bytes["scales"] == 4 * OUT  # one fp32 per output row
    assert lb.bytes["bias"] == 2 * OUT and lb.bytes["tables"] == 0
    assert abs(lb.per_param() - 1.0) <= 0.02


def test_fp16_reference_bytes():
    lb = N.linear_bytes([linear().half()])
    assert lb.bytes["weights"] == 2 * IN * OUT and lb.per_param() == 2.0


# --- bytes: bitsandbytes -----------------------------------------------------------------------------
@needs_bnb
def test_llm_int8_bytes_one_byte_plus_row_scales():
    lin = linear()
    q = Q._bnb_layer("llm_int8", lin, torch.bfloat16, CPU, 6.0)
    before = N.linear_bytes([q])
    with torch.no_grad():
        q(torch.randn(3, IN, dtype=torch.bfloat16))  # the first forward moves CB/SCB into q.state
    after = N.linear_bytes([q])
    for lb in (before, after):
        assert lb.bytes["weights"] == IN * OUT
        assert lb.bytes["scales"] == 4 * OUT  # SCB: fp32 absmax per row
        assert abs(lb.per_param() - 1.0) <= 0.02
        assert lb.per_param() == 1 + 4 / IN


# stated scales per weight (QLoRA sec. 3; bitsandbytes blocksize 64): fp32 absmax per 64 weights, or with double
# quantization an 8-bit absmax per 64 plus an fp32 second-level absmax per 256 blocks and one fp32 offset
@needs_bnb
@pytest.mark.parametrize("scheme", ["nf4", "fp4", "nf4_dq", "fp4_dq"])
def test_4bit_bytes_half_a_byte_plus_stated_scales(scheme):
    q = Q._bnb_layer(scheme, linear(), torch.bfloat16, CPU, 6.0)
    lb = N.linear_bytes([q])
    n = IN * OUT
    dq = scheme.endswith("_dq")
    stated_scales = (n // 64 + 4 * (n // 64 // 256) + 4) if dq else 4 * (n // 64)  # bytes
    stated_tables = 4 * 16 + (4 * 256 if dq else 0)  # the 16-value 4-bit code book (+ the 8-bit dynamic map)
    assert lb.bytes["weights"] == n // 2  # two 4-bit codes per byte
    assert lb.bytes["scales"] == stated_scales
    assert lb.bytes["tables"] == stated_tables
    expected = 0.5 + stated_scales / n
    assert abs(lb.per_param() / expected - 1) <= 0.02
    assert abs(lb.bytes["weights"] / n - 0.5) <= 0.02 * 0.5
    if scheme == "nf4_dq":  # QLoRA: 4 + 8/64 + 32/(64*256) = 4.127 bits, plus the code tables of one layer
        assert 8 * (lb.bytes["weights"] + lb.bytes["scales"]) / n == pytest.approx(4 + 8 / 64 + 32 / (64 * 256), abs=1e-4)


# --- bytes: torchao ----------------------------------------------------------------------------------
@pytest.mark.skipif(importlib.util.find_spec("torchao") is None, reason="torchao is not installed")
@pytest.mark.parametrize("scheme, codes", [("ao_int8_dyn", 1.0), ("ao_int4_wo", 0.5)])
def test_torchao_bytes(scheme, codes):
    from plugins.common.gpt import GPT, config_from

    torch.manual_seed(0)
    ref = GPT(config_from("tiny", d_model=128)).eval()
    p = Q.QuantParams(scheme=scheme, model="tiny", group_size=64)
    try:
        model, how = Q.build(scheme, ref, p, CPU)
    except Q.SchemeUnavailable as e:
        pytest.skip(f"{scheme} cannot run here: {e}")
    lins = Q.block_linears(model)
    lb = N.linear_bytes(lins)
    assert lb.bytes["weights"] == codes * lb.params
    per_row = sum(lin.out_features for lin in lins)
    if scheme == "ao_int8_dyn":  # fp32 scale + int8 zero point per output row
        assert lb.bytes["scales"] == 5 * per_row
    else:  # bf16 scale and zero point per group of 64 weights
        assert lb.bytes["scales"] == 2 * 2 * lb.params // 64
    assert abs(lb.per_param() / (codes + lb.bytes["scales"] / lb.params) - 1) <= 0.02


# --- error and claims --------------------------------------------------------------------------------
def test_naive_cast_loses_everything_per_row_scales_do_not():
    c = Context(device=CPU, max_time_s=0.05)
    rows = []
    for scheme in ("int8_naive", "int8_rowwise"):
        p = Q.QuantParams(scheme=scheme, model="small", max_batch=1)
        recs = PLUGIN.run(p, c)
        assert [r.status for r in recs] == ["ok"], recs[0].message
        rows += as_rows(recs, p)
    naive, rowwise = rows
    # weights ~ N(0, 0.02): the truncating cast maps every one of them to 0, so the output is the bias (0)
    assert naive["metrics"]["zero_codes_pct"]["value"] == 100.0
    assert naive["metrics"]["rel_error"]["value"] == pytest.approx(1.0)
    assert rowwise["metrics"]["rel_error"]["value"] < 0.02
    # small (d=256): per block 768 + 256 + 1024 + 256 output rows, one fp32 scale each, over 12 d^2 weights
    assert rowwise["metrics"]["bytes_per_param"]["value"] == 1 + 4 * (768 + 256 + 1024 + 256) / (12 * 256**2)
    ev = {cid: e for r in PLUGIN.summarize(rows) for cid, e in r.evidence.items()}
    assert ev["quant.error"].verdict == "holds"
    assert N.registry_verdict("mem.store_int8", ev["mem.store_int8"]) == "holds"  # int8_rowwise stands in for LLM.int8
    assert N.registry_verdict("quant.int8_half", ev["quant.int8_half"]) == "holds"


def test_quant_error_verdict_follows_the_numbers():
    def row(scheme: str, err: float) -> dict:
        return {"kind": "case", "status": "ok", "params": {"scheme": scheme, "model": "small", "dtype": "bf16"},
                "labels": {"batch": 1}, "metrics": {"rel_error": {"value": err}, "logits_rel_error": {"value": err},
                                                    "zero_codes_pct": {"value": 0.0}}}  # fmt: skip

    ev = {cid: e for r in PLUGIN.summarize([row("int8_naive", 0.05), row("int8_rowwise", 0.01)]) for cid, e in r.evidence.items()}
    assert ev["quant.error"].verdict == "fails"  # only 5x worse: not "dramatic"


def test_missing_library_gives_a_skipped_row(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(Q.importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name, *a))
    p = Q.QuantParams(scheme="nf4", model="tiny", max_batch=1)
    assert "bitsandbytes is not installed" in PLUGIN.available(p)
    recs = PLUGIN.run(p, Context(device=CPU, max_time_s=0.05))
    assert [r.status for r in recs] == ["skipped"] and "bitsandbytes" in recs[0].message


@needs_bnb
def test_adam8bit_state_is_about_a_quarter():
    c = Context(device=CPU, max_time_s=0.05)
    recs = {s: PLUGIN.run(Q.QuantParams(scheme=s, model="small"), c)[0] for s in ("adamw", "adamw8bit")}
    a, a8 = (recs[s].metrics["optim_bytes_per_param"].value for s in ("adamw", "adamw8bit"))
    assert a == pytest.approx(8, abs=1e-3)  # fp32 m and v (+ 0-d step counters)
    assert 2 <= a8 < 2.2  # uint8 m and v + block absmax, quantile maps, small tensors in fp32


# --- the CLI -----------------------------------------------------------------------------------------
def test_cli_end_to_end(tmp_path):
    out = tmp_path / "quant.jsonl"
    scaled = "llm_int8" if HAS_BNB else "int8_rowwise"
    r = run_bench("run", "--plugin", "quantization", "--scheme", f"int8_naive,{scaled}", "--model", "small",
                  "--max-batch", "1", "--out", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "bytes_per_param" in r.stdout and "quant.error" in r.stdout
    rows = load_rows([out])
    assert [x["status"] for x in rows if x["kind"] == "case"] == ["ok", "ok"]
    c = run_bench("claims", "--format", "csv", str(out))
    table = {row["id"]: row for row in csv.DictReader(io.StringIO(c.stdout))}
    verdict = next(k for k in table["quant.error"] if k.startswith("verdict"))
    for cid in ("quant.error", "mem.store_int8", "quant.int8_half"):
        assert table[cid][verdict] == "holds", (cid, table[cid])
