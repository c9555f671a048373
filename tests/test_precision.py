"""The precision plugin: bit-exact casts, bit layouts and ranges, storage bytes per dtype, matmul and
block rows, short training runs (determinism, GradScaler bookkeeping), training-memory bytes per
parameter on a real step, claim evidence, skipped tf32 rows on CPU, and the CLI end to end."""
from __future__ import annotations

import csv
import io
import json
import math

import pytest
import torch

from bench.context import Context
from bench.results import load_rows
from plugins.common import numerics as N
from plugins import precision as P
from tests.conftest import run_bench

CPU = torch.device("cpu")
PLUGIN = P.PrecisionPlugin()


def ctx(max_time_s: float = 0.05) -> Context:
    return Context(device=CPU, max_time_s=max_time_s)


def run(**kw) -> list:
    return PLUGIN.run(P.PrecisionParams(**kw), ctx())


def as_rows(records: list, params: P.PrecisionParams) -> list[dict]:
    """Records -> the row dicts summarize() receives (through JSON, as on disk)."""
    import dataclasses

    from bench.results import _clean

    return json.loads(json.dumps(_clean([{"kind": "case", "status": r.status, "params": dataclasses.asdict(params),
                                          "labels": r.labels, "metrics": {k: m.to_json() for k, m in r.metrics.items()}}
                                         for r in records])))  # fmt: skip


def by_format(records: list) -> dict:
    return {(r.labels["format"], r.labels.get("scaler"), r.labels.get("optim")): r for r in records}


# --- casts, layouts, ranges --------------------------------------------------------------------------
@pytest.mark.parametrize("fmt, decimal, bits, lay", [
    ("fp32", "3.1415920257568359375", "0x40490FD8", "1/8/23"),
    ("tf32", "3.140625", "0x40490000", "1/8/10"),
    ("fp16", "3.140625", "0x4248", "1/5/10"),
    ("bf16", "3.140625", "0x4049", "1/8/7"),
    ("fp8_e4m3", "3.25", "0x45", "1/4/3"),
    ("fp8_e5m2", "3", "0x42", "1/5/2"),
    ("int8", "3", "0x03", "8-bit two's complement"),
])  # fmt: skip
def test_pi_casts_are_bit_exact(fmt, decimal, bits, lay):
    t = N.cast(N.PI6, fmt)
    assert N.exact_decimal(N.cast_value(t)) == decimal
    assert N.bits_hex(t) == bits
    assert N.layout(fmt).text() == lay


def test_exact_decimal_and_fields():
    assert N.exact_decimal(0.1) == "0.1000000000000000055511151231257827021181583404541015625"
    assert N.exact_decimal(65504.0) == "65504"
    t = N.cast(N.PI6, "fp32")
    assert N.bit_fields(t, N.layout("fp32")) == "0 10000000 10010010000111111011000"
    assert N.bit_fields(N.cast(N.PI6, "fp16"), N.layout("fp16")) == "0 10000 1001001000"


def test_tf32_rounding_is_nearest_even_at_10_fraction_bits():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(20000, generator=g) * torch.exp(torch.randn(20000, generator=g) * 8)
    # exact ties: 1 + k/2^10 + 2^-11 rounds to the even neighbour
    ties = torch.tensor([1 + k / 1024 + 2**-11 for k in range(8)], dtype=torch.float32)
    x = torch.cat([x, -x, ties, torch.tensor([0.0, -0.0, float("inf"), float("-inf"), 3.4e38])])
    got = N.round_to_tf32(x)

    def ref(v: float) -> float:
        if not math.isfinite(v) or v == 0:
            return v
        m, e = math.frexp(v)
        return math.ldexp(round(m * 2**11), e - 11)  # Python's round(): half to even

    assert [ref(v) for v in x.tolist()] == got.tolist()
    assert got[-13:-5].tolist() == [ref(v) for v in ties.tolist()]
    assert torch.isnan(N.round_to_tf32(torch.tensor([float("nan")]))).all()


def test_cast_rows_ranges_and_claims():
    recs = run(what="cast")
    rows = by_format(recs)
    assert {k[0] for k in rows} == {*N.FORMATS, "int8"}
    assert rows[("fp32", None, None)].metrics["value"].value == "3.1415920257568359375"
    assert rows[("fp16", None, None)].metrics["max"].value == 65504.0
    assert rows[("fp32", None, None)].metrics["max"].value == torch.finfo(torch.float32).max
    assert rows[("bf16", None, None)].metrics["max"].value == torch.finfo(torch.bfloat16).max
    assert rows[("int8", None, None)].metrics["min"].value == -128
    summary = PLUGIN.summarize(as_rows(recs, P.PrecisionParams(what="cast")))
    ev = {cid: e for r in summary for cid, e in r.evidence.items()}
    assert ev["prec.pi_fp32"].value == "3.1415920257568359375"
    assert [ev[f"prec.pi_{f}"].value for f in ("fp16", "bf16", "int8")] == ["3.140625", "3.140625", "3"]
    assert ev["prec.ranges"].verdict == "holds"
    assert all(N.registry_verdict(c, ev[c]) == "holds" for c in ("prec.pi_fp32", "prec.pi_fp16", "prec.pi_bf16", "prec.pi_int8"))


def test_ranges_verdict_follows_the_numbers(monkeypatch):
    monkeypatch.setitem(P.STATED_MAX, "fp16", ("65536", 0))  # a wrong statement must fail
    recs = run(what="cast")
    ev = next(r.evidence["prec.ranges"] for r in PLUGIN.summarize(as_rows(recs, P.PrecisionParams())) if "prec.ranges" in r.evidence)
    assert ev.verdict == "fails" and "MISMATCH" in ev.detail


# --- storage -----------------------------------------------------------------------------------------
def test_storage_bytes_per_param_are_exact():
    from plugins.common.gpt import PRESETS

    assert N.PRESET_NAMES == tuple(PRESETS)
    recs = run(what="storage", model="tiny")
    size = {"fp32": 4, "tf32": 4, "fp16": 2, "bf16": 2, "fp8_e4m3": 1, "fp8_e5m2": 1}
    for r in recs:
        n = r.metrics["params"].value
        assert r.metrics["bytes"].value == n * size[r.labels["format"]]
        assert r.metrics["bytes_per_param"].value == size[r.labels["format"]]
    summary = PLUGIN.summarize(as_rows(recs, P.PrecisionParams(what="storage", model="tiny")))
    ev = [(cid, e) for r in summary for cid, e in r.evidence.items()]
    assert ("mem.store_fp32", 4.0) in [(c, e.value) for c, e in ev]
    assert sorted(e.value for c, e in ev if c == "mem.store_16bit") == [2.0, 2.0]
    assert all(N.registry_verdict(c, e) == "holds" for c, e in ev)


def test_storage_auto_includes_the_1b_preset_on_meta():
    recs = run(what="storage", dtype="fp32")
    by = {r.labels["preset"]: r for r in recs}
    assert set(by) == {"small", "1b"}
    assert by["1b"].metrics["params"].value > 1e9 and by["1b"].metrics["bytes_per_param"].value == 4.0


# --- compute rows ------------------------------------------------------------------------------------
def test_tf32_is_a_skipped_row_on_cpu():
    p = P.PrecisionParams(what="matmul", dtype="tf32")
    assert "CUDA" in (PLUGIN.available(p) or "")
    assert PLUGIN.available(P.PrecisionParams(what="cast", dtype="tf32")) is None  # casts run anywhere


def test_matmul_rows_every_format():
    recs = run(what="matmul", size=64)
    rows = by_format(recs)
    assert rows[("tf32", None, None)].status == "skipped" and "CUDA" in rows[("tf32", None, None)].message
    tol = {"fp32": 1e-5, "fp16": 2e-3, "bf16": 2e-2, "fp8_e4m3": 0.1, "fp8_e5m2": 0.2}
    for fmt, t in tol.items():
        r = rows[(fmt, None, None)]
        assert r.status == "ok", r.message
        assert r.metrics["flops"].value == 2 * 64**3
        assert 0 <= r.metrics["rel_error"].value < t
        assert r.metrics["time_ms"].value > 0 and r.metrics["tflops"].value > 0
    assert rows[("fp8_e4m3", None, None)].metrics["rel_error"].value > rows[("bf16", None, None)].metrics["rel_error"].value


def test_block_rows_forward_backward():
    recs = run(what="block", model="tiny", batch=2, seq=16)
    rows = by_format(recs)
    for fmt in ("fp32", "bf16", "fp16"):
        r = rows[(fmt, None, None)]
        assert r.status == "ok", r.message
        assert r.labels["preset"] == "tiny" and r.metrics["flops"].value > 0
    assert rows[("fp32", None, None)].metrics["rel_error"].value < 1e-5 < rows[("bf16", None, None)].metrics["rel_error"].value
    assert all(rows[(f, None, None)].status == "skipped" for f in ("tf32", "fp8_e4m3", "fp8_e5m2"))


# --- training ----------------------------------------------------------------------------------------
def test_training_is_deterministic_and_bf16_tracks_fp32():
    kw = dict(what="train", model="tiny", batch=2, seq=32, steps=12, lr=3e-3)
    a = run(dtype="fp32", **kw)[0]
    b = run(dtype="fp32", **kw)[0]
    assert a.samples["loss"] == b.samples["loss"] and len(a.samples["loss"]) == 12
    assert a.metrics["final_loss"].value == b.metrics["final_loss"].value
    assert a.metrics["train_loss"].value < a.metrics["first_loss"].value  # it learns
    assert not a.metrics["diverged"].value
    bf = run(dtype="bf16", **kw)[0]
    rows = as_rows([a], P.PrecisionParams(dtype="fp32", **kw)) + as_rows([bf], P.PrecisionParams(dtype="bf16", **kw))
    ev = next(r.evidence["prec.bf16_training"] for r in PLUGIN.summarize(rows) if "prec.bf16_training" in r.evidence)
    f32, b16 = a.metrics["final_loss"].value, bf.metrics["final_loss"].value
    assert ev.value == pytest.approx(100 * abs(b16 / f32 - 1))
    assert ev.value < 5  # a short run: bf16 autocast stays close to fp32


def test_fp16_grad_scaler_bookkeeping():
    recs = run(what="train", dtype="fp16", scaler="on", model="tiny", batch=2, seq=32, steps=6)
    r = recs[0]
    assert r.labels == {"format": "fp16", "scaler": "on", "preset": "tiny"}
    skipped = r.metrics["skipped_steps"].value
    # no growth within 2000 steps: every skipped step halved the initial 2^16
    assert r.metrics["final_scale"].value == 2.0**16 * 0.5**skipped
    assert len(r.samples["scale"]) == 6 and skipped == r.metrics["overflow_steps"].value


# --- training memory ---------------------------------------------------------------------------------
def test_trainmem_model_states_are_16_bytes_per_param():
    recs = run(what="trainmem", dtype="all", optim="adamw", model="tiny", seq=128, batch=8)
    rows = by_format(recs)
    f32, b16 = rows[("fp32", None, "adamw")], rows[("bf16", None, "adamw")]
    assert f32.status == "ok" and b16.status == "ok", (f32.message, b16.message)
    m = f32.metrics
    assert (m["params_bytes_per_param"].value, m["grads_bytes_per_param"].value, m["master_bytes_per_param"].value) == (4, 4, 0)
    assert m["state_bytes_per_param_excl_counters"].value == 16.0
    n = m["params"].value
    assert m["optim_bytes_per_param"].value == pytest.approx(8 + m["step_counter_bytes"].value / n, abs=0)
    mb = b16.metrics
    parts = [mb[f"{k}_bytes_per_param"].value for k in ("params", "grads", "master")]
    assert parts == [2, 2, 4] and mb["state_bytes_per_param_excl_counters"].value == 16.0  # ZeRO's 2 + 2 + 12
    for r in (f32, b16):
        assert r.metrics["total_bytes_per_param"].value >= 16
    summary = PLUGIN.summarize(as_rows(recs, P.PrecisionParams(what="trainmem", optim="adamw", model="tiny", seq=128, batch=8)))
    ev = next(r.evidence["mem.train_24x"] for r in summary if "mem.train_24x" in r.evidence)
    assert ev.verdict == "holds" and "exactly 16" in ev.detail
    assert ev.value == m["total_bytes_per_param"].value >= 24
    tok = m["tokens_24"].value
    assert 0 < tok <= m["batch"].value * m["seq"].value


def test_validate_rejects_bad_inputs():
    assert "block_size" in PLUGIN.validate(P.PrecisionParams(what="train", model="tiny", seq=4096))
    assert "--batch" in PLUGIN.validate(P.PrecisionParams(batch=-1))
    assert PLUGIN.validate(P.PrecisionParams(what="train")) is None
    assert PLUGIN.grid("quick") == [{"what": w} for w in P.WHATS]  # `--what X` gives one case


# --- the CLI -----------------------------------------------------------------------------------------
def test_cli_end_to_end(tmp_path):
    out = tmp_path / "prec.jsonl"
    r = run_bench("run", "--plugin", "precision", "--what", "cast,storage", "--model", "tiny", "--out", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "3.1415920257568359375" in r.stdout and "0x40490FD8" in r.stdout and "3.140625" in r.stdout
    rows = load_rows([out])
    assert len([x for x in rows if x["kind"] == "case"]) == 7 + 6  # 7 casts, 6 storage formats
    c = run_bench("claims", "--format", "csv", str(out))
    assert c.returncode == 0, c.stderr
    table = {row["id"]: row for row in csv.DictReader(io.StringIO(c.stdout))}
    verdict = next(k for k in table["prec.pi_fp32"] if k.startswith("verdict"))
    for cid in ("prec.pi_fp32", "prec.pi_fp16", "prec.pi_bf16", "prec.pi_int8", "prec.ranges", "mem.store_fp32",
                "mem.store_16bit"):  # fmt: skip
        assert table[cid][verdict] == "holds", (cid, table[cid])
    bad = run_bench("run", "--plugin", "precision", "--what", "train", "--model", "tiny", "--seq", "4096", "--out", str(out))
    assert bad.returncode == 2 and "block_size" in bad.stderr
