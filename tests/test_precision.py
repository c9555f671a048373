"""The precision plugin: bit-exact casts, layouts and ranges, the fp16-scale and bf16-rounding probes,
storage bytes, matmul/block rows each within a per-format budget (a slow or failing fp8 kernel costs
only its own row), short training runs, training memory by phase and at the notes' scale, claim
evidence from typed rows, every plugin verdict fed a breaking value, estimates, and the CLI."""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import time

import pytest
import torch
from conftest import bench_cli, run_bench

from bench.claims import check_value, evaluate
from bench.context import Context
from bench.contract import Record, Row
from bench.results import load_rows
from plugins.common import numerics as N
from plugins.precision import PrecisionPlugin
from plugins.precision import budget as B
from plugins.precision import verdicts as V
from plugins.precision.claims import CLAIMS
from plugins.precision.params import WHATS, PrecisionParams

CPU = torch.device("cpu")
PLUGIN = PrecisionPlugin()
CLAIM = {c.id: c for c in CLAIMS}


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models (conftest.py)


@pytest.fixture
def unbounded(monkeypatch):
    """Budgets no busy machine exceeds: for tests about what a row holds, not about the budget."""
    for table in B.FORMAT_BUDGET_S.values():
        for prof in ("quick", "full"):
            monkeypatch.setitem(table, prof, 1e6)


def ctx(max_time_s: float = 0.05, profile: str = "quick") -> Context:
    return Context(device=CPU, max_time_s=max_time_s, profile=profile)


def run(profile: str = "quick", **kw) -> list[Record]:
    return PLUGIN.run(PrecisionParams(**kw), ctx(profile=profile))


def as_rows(records: list[Record], params: PrecisionParams) -> list[Row]:
    """Records -> the typed rows summarize() receives (through JSON, as on disk)."""
    from bench.results import clean

    return [
        Row.from_json(
            clean(
                {
                    "schema": "bench.row/1",
                    "run_id": "t",
                    "plugin": "precision",
                    "params": dataclasses.asdict(params),
                    "fingerprint": {"label": "cpu-test"},
                    **r.to_json(),
                }
            )
        )
        for r in records
    ]


def evidence(records: list[Record], params: PrecisionParams) -> dict[str, list]:
    out: dict[str, list] = {}
    for r in PLUGIN.summarize(as_rows(records, params)):
        for cid, e in r.evidence.items():
            out.setdefault(cid, []).append(e)
    return out


def by_format(records: list[Record]) -> dict:
    return {(r.labels["format"], r.labels.get("scaler"), r.labels.get("probe")): r for r in records}


# --- casts, layouts, ranges, probes ------------------------------------------------------------------
@pytest.mark.parametrize(
    "fmt, decimal, bits, lay",
    [
        ("fp32", "3.1415920257568359375", "0x40490FD8", "1/8/23"),
        ("tf32", "3.140625", "0x40490000", "1/8/10"),
        ("fp16", "3.140625", "0x4248", "1/5/10"),
        ("bf16", "3.140625", "0x4049", "1/8/7"),
        ("fp8_e4m3", "3.25", "0x45", "1/4/3"),
        ("fp8_e5m2", "3", "0x42", "1/5/2"),
        ("int8", "3", "0x03", "8-bit two's complement"),
    ],
)
def test_pi_casts_are_bit_exact(fmt, decimal, bits, lay):
    t = N.cast(N.PI6, fmt)
    assert N.exact_decimal(N.cast_value(t)) == decimal
    assert N.bits_hex(t) == bits
    assert N.layout(fmt).text() == lay


def test_exact_decimal_and_fields():
    assert N.exact_decimal(0.1) == "0.1000000000000000055511151231257827021181583404541015625"
    assert N.exact_decimal(65504.0) == "65504"
    assert N.bit_fields(N.cast(N.PI6, "fp32"), N.layout("fp32")) == "0 10000000 10010010000111111011000"
    assert N.bit_fields(N.cast(N.PI6, "fp16"), N.layout("fp16")) == "0 10000 1001001000"


def test_tf32_rounding_is_nearest_even_at_10_fraction_bits():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(20000, generator=g) * torch.exp(torch.randn(20000, generator=g) * 8)
    ties = torch.tensor([1 + k / 1024 + 2**-11 for k in range(8)], dtype=torch.float32)  # exact ties
    x = torch.cat([x, -x, ties, torch.tensor([0.0, -0.0, float("inf"), float("-inf"), 3.4e38])])
    got = N.round_to_tf32(x)

    def ref(v: float) -> float:
        if not math.isfinite(v) or v == 0:
            return v
        m, e = math.frexp(v)
        return math.ldexp(round(m * 2**11), e - 11)  # Python's round(): half to even

    assert [ref(v) for v in x.tolist()] == got.tolist()
    assert torch.isnan(N.round_to_tf32(torch.tensor([float("nan")]))).all()


def test_cast_rows_and_their_claims():
    recs = run(what="cast")
    rows = by_format(recs)
    assert {k[0] for k in rows if not k[2]} == {*N.FORMATS, "int8"}
    assert rows[("fp32", None, None)].metrics["value"].value == "3.1415920257568359375"
    assert rows[("fp16", None, None)].metrics["max"].value == 65504
    assert rows[("int8", None, None)].metrics["min"].value == -128
    ev = evidence(recs, PrecisionParams(what="cast"))
    assert [ev[f"prec.pi_{f}"][0].value for f in ("fp32", "fp16", "bf16", "int8")] == [
        "3.1415920257568359375",
        "3.140625",
        "3.140625",
        "3",
    ]
    for cid in ("prec.pi_fp32", "prec.pi_fp16", "prec.pi_bf16", "prec.pi_int8"):
        assert check_value(CLAIM[cid].check, ev[cid][0])[0] == "holds"
    assert ev["prec.ranges"][0].verdict == "holds" and "at the digits the notes give" in ev["prec.ranges"][0].detail
    # the notes' words on how fp16 and bf16 are made from fp32: both fail, with the numbers
    fp16, bf16 = ev["prec.fp16_scaling"][0], ev["prec.bf16_truncation"][0]
    assert fp16.verdict == "fails" and fp16.value == 0 and "scale 1" in fp16.detail
    assert bf16.verdict == "holds" and "fraction bits 7 (notes: 7)" in bf16.detail  # the notes' words: the layout
    cast = ev["prec.bf16_truncation.torch_cast"][0]  # the finding about torch, apart and unjudged
    assert cast.verdict is None and "0.10009765625" in cast.detail and "0.099609375" in cast.detail
    probe = rows[("bf16", None, "rounding")].metrics
    assert probe["differ_from_truncation"].value >= 1 and probe["layout"].value == "1/8/7"


def test_plugin_verdicts_fail_on_breaking_values():
    got = {"fp32": torch.finfo(torch.float32).max, "fp16": 65504.0, "bf16": torch.finfo(torch.bfloat16).max}
    assert V.judge_ranges(got)[0] == "holds"
    assert V.judge_ranges({**got, "fp16": 65536.0})[0] == "fails"  # a wrong maximum
    assert V.judge_ranges(got, {**V.STATED_MAX, "bf16": ("3.4e38", 2)})[0] == "holds"  # rounds the same
    assert V.judge_ranges(got, {**V.STATED_MAX, "bf16": ("3.38e38", 3)})[0] == "fails"
    # fp16: a cast that scaled into range would keep 1e5 finite and 1e-8 non-zero -> the notes would hold
    vals = [1e5, 1e-8, 0.1]
    assert V.judge_fp16_scaling(vals, [V.fp16_unscaled(v) for v in vals])[0] == "fails"
    s = 0.5
    assert V.judge_fp16_scaling(vals, [V.fp16_unscaled(v * s) / s for v in vals])[0] == "holds"
    # bf16: the notes' words are the layout (8 exponent bits as fp32, 7 fraction bits instead of 23)
    assert V.judge_bf16_truncation("1/8/7", "1/8/23")[0] == "holds"
    assert V.judge_bf16_truncation("1/5/10", "1/8/23")[0] == "fails"  # fp16's layout
    # torch's conversion is reported apart: truncation and rounding agree on pi (3.140625); 0.1 tells them apart
    assert "all 1 probe values" in V.bf16_cast_finding([N.PI6], [3.140625])
    assert "1 of 1 probe values differ" in V.bf16_cast_finding([0.1], [0.10009765625])
    # mem.train_24x: peak within 24 +- 10% and states exactly 16
    sc = V.Scale(
        params=10**9,
        batch=2,
        seq=2048,
        total=24.5,
        weights=4,
        gradients=0,
        optimizer=8,
        activations=12.5,
        at_rest=16.0,
        source="simulated",
    )
    assert V.judge_train_24x(sc, (3000, 5000))[0] == "holds"
    assert V.judge_train_24x(dataclasses.replace(sc, total=20.0), (3000, 5000))[0] == "fails"
    assert V.judge_train_24x(dataclasses.replace(sc, at_rest=16.5), (3000, 5000))[0] == "fails"
    # over a sweep of batches (the notes give none): holds where a point lies within 24 +- 10%, and says where
    pts = [dataclasses.replace(sc, batch=b, total=t) for b, t in ((1, 20.0), (2, 23.0), (4, 29.0))]
    v, d = V.judge_train_24x_range(pts, (3646, 5491))
    assert v == "holds" and "holds at 2 x 2048 = 4,096 tokens" in d and "not at 1 x 2048" in d and "extrapolated" in d
    assert V.judge_train_24x_range([pts[0], pts[2]], None)[0] == "fails"  # at none of the batches run
    assert V.judge_train_24x_range([dataclasses.replace(p, at_rest=16.5) for p in pts], None)[0] == "fails"
    assert V.tokens_window(0.001, 12.0, floor=27.0) is None  # the update alone is above 24 +10%
    lo, hi = V.tokens_window(0.001, 12.0, floor=20.0)
    assert (round(lo), round(hi)) == (9600, 14400)


def test_registry_checks_fail_on_breaking_values():
    from bench.contract import Evidence

    for cid, bad in (
        ("mem.store_fp32", 4.5),
        ("mem.store_16bit", 4),
        ("prec.bf16_training", 2.5),
        ("mem.act_layer", 5.1),
        ("prec.pi_fp32", "3.14159202575683"),
        ("prec.pi_int8", "4"),
    ):
        assert check_value(CLAIM[cid].check, Evidence(bad))[0] == "fails", cid
    assert check_value(CLAIM["mem.act_layer"].check, Evidence(0.0))[0] == "holds"
    assert CLAIM["prec.fp16_scaling"].known_error and not CLAIM["prec.bf16_truncation"].known_error
    assert "exact" not in CLAIM["prec.ranges"].tolerance.split(",")[0]


# --- storage -----------------------------------------------------------------------------------------
def test_storage_bytes_per_param_are_exact():
    from plugins.common.gpt import PRESETS

    assert tuple(PRESETS) == N.PRESET_NAMES
    recs = run(what="storage", model="tiny")
    size = {"fp32": 4, "tf32": 4, "fp16": 2, "bf16": 2, "fp8_e4m3": 1, "fp8_e5m2": 1}
    for r in recs:
        assert r.metrics["bytes"].value == r.metrics["params"].value * size[r.labels["format"]]
    ev = evidence(recs, PrecisionParams(what="storage", model="tiny"))
    assert [e.value for e in ev["mem.store_fp32"]] == [4.0] and [e.value for e in ev["mem.store_16bit"]] == [2.0, 2.0]


def test_storage_auto_includes_the_1b_preset_on_meta():
    by = {r.labels["preset"]: r for r in run(what="storage", dtype="fp32")}
    assert set(by) == {"small", "1b"} and by["1b"].metrics["params"].value > 1e9


# --- matmul and block: per-format budgets ------------------------------------------------------------
def test_matmul_rows_every_format(unbounded):
    rows = by_format(run(what="matmul", size=64))
    assert rows[("tf32", None, None)].status == "skipped" and "CUDA" in rows[("tf32", None, None)].message
    tol = {"fp32": 1e-5, "fp16": 2e-3, "bf16": 2e-2, "fp8_e4m3": 0.1, "fp8_e5m2": 0.2}
    for fmt, t in tol.items():
        r = rows[(fmt, None, None)]
        assert r.status == "ok", r.message
        assert r.metrics["flops"].value == 2 * 64**3 and 0 <= r.metrics["rel_error"].value < t


def _fake_scaled_mm(monkeypatch, seconds_at_64: float, exponent: float = 3.0) -> None:
    """torch._scaled_mm replaced by a busy wait that grows with n (and a quick bf16 product), so the test
    does not depend on this machine's own fp8 speed. A busy wait, not a sleep: the probe costs a call by
    its CPU time (bench.timing.call_cost), as a real slow kernel spends it."""

    def slow(a, b, scale_a, scale_b, out_dtype=torch.bfloat16, **kw):
        end = time.process_time() + seconds_at_64 * (a.shape[0] / 64) ** exponent
        while time.process_time() < end:
            pass
        return ((a.float() * scale_a) @ (b.float() * scale_b)).to(out_dtype)

    monkeypatch.setattr(torch, "_scaled_mm", slow)


def test_a_slow_fp8_kernel_is_a_skipped_row_naming_its_time(monkeypatch):
    """The Xeon case of issue 13 (fp8 _scaled_mm exists but takes seconds): a skipped row, within the budget."""
    _fake_scaled_mm(monkeypatch, 0.2, exponent=0)  # 12 calls = 2.4 s > the quick budget of 1.5 s
    t0 = time.perf_counter()
    r = run(what="matmul", size=1024, dtype="fp8_e4m3")[0]
    assert r.status == "skipped" and "took" in r.message and "budget" in r.message, r.message
    assert time.perf_counter() - t0 < 30  # bounded: the probe's calls, not the 1024^3 case


def test_a_slowish_fp8_kernel_is_capped_and_says_so(monkeypatch):
    monkeypatch.setitem(B.FORMAT_BUDGET_S["matmul"], "quick", 10.0)
    _fake_scaled_mm(monkeypatch, 0.002)  # 64: 2 ms, 256: 0.13 s, 1024: 8 s a call: 1024 never fits 10 s
    r = run(what="matmul", size=1024, dtype="fp8_e5m2")[0]
    assert r.status == "ok" and r.labels["n"] < 1024 and r.metrics["n_requested"].value == 1024
    assert any("capped from 1024" in n for n in r.notes)


def test_failing_fp8_costs_only_its_rows_and_e5m2_falls_back(unbounded, monkeypatch):
    real = torch._scaled_mm

    def no_e5m2_pair(a, b, **kw):  # current torch refuses e5m2 x e5m2 with ValueError
        if a.dtype == torch.float8_e5m2 and b.dtype == torch.float8_e5m2:
            raise ValueError("Multiplication of two Float8_e5m2 matrices is not supported")
        return real(a, b, **kw)

    monkeypatch.setattr(torch, "_scaled_mm", no_e5m2_pair)
    r = run(what="matmul", size=64, dtype="fp8_e5m2")[0]
    assert r.status == "ok" and any("e4m3 x e5m2" in n for n in r.notes)

    def none(*a, **kw):
        raise RuntimeError("_scaled_mm is only supported on CUDA devices with compute capability >= 9.0")

    monkeypatch.setattr(torch, "_scaled_mm", none)
    rows = by_format(run(what="matmul", size=64))
    assert (
        rows[("fp8_e4m3", None, None)].status == "skipped"
        and "compute capability" in rows[("fp8_e4m3", None, None)].message
    )
    assert (
        rows[("fp32", None, None)].status in ("ok", "skipped") and rows[("bf16", None, None)].labels["format"] == "bf16"
    )


def test_block_rows_and_fp8_skips(unbounded, monkeypatch):
    rows = by_format(run(what="block", model="tiny", batch=2, seq=16))
    for fmt in ("fp32", "bf16", "fp16"):
        r = rows[(fmt, None, None)]
        assert r.status == "ok", r.message
        assert r.labels["preset"] == "tiny"
    assert rows[("fp32", None, None)].metrics["rel_error"].value < 1e-5
    assert all(rows[(f, None, None)].status == "skipped" for f in ("tf32", "fp8_e4m3", "fp8_e5m2"))
    import plugins.precision.block as BL

    monkeypatch.setattr(BL.importlib.util, "find_spec", lambda name: None)
    assert "torchao" in BL.fp8_block_skip("cuda")  # a GPU without torchao: skipped, not an error


# --- training ----------------------------------------------------------------------------------------
def test_training_is_deterministic_and_bf16_tracks_fp32(unbounded):
    kw = dict(what="train", model="tiny", batch=2, seq=32, steps=12, lr=3e-3)
    a, b = run(dtype="fp32", **kw)[0], run(dtype="fp32", **kw)[0]
    assert a.status == "ok", a.message
    assert a.samples["loss"] == b.samples["loss"] and len(a.samples["loss"]) == 12
    assert a.metrics["train_loss"].value < a.metrics["first_loss"].value  # it learns
    assert a.metrics["final_loss"].deterministic and not a.metrics["final_loss"].portable  # machine-bound
    bf = run(dtype="bf16", **kw)[0]
    rows = as_rows([a], PrecisionParams(dtype="fp32", **kw)) + as_rows([bf], PrecisionParams(dtype="bf16", **kw))
    ev = next(r.evidence["prec.bf16_training"] for r in PLUGIN.summarize(rows) if "prec.bf16_training" in r.evidence)
    assert ev.value == pytest.approx(100 * abs(bf.metrics["final_loss"].value / a.metrics["final_loss"].value - 1))


def test_quick_profile_trains_the_claims_pair_and_fp16_books_its_scaler(unbounded):
    quick = by_format(run(what="train", model="tiny", batch=2, seq=16, steps=2))
    assert {k[0] for k in quick} == {"fp32", "bf16"}
    r = run(profile="full", what="train", dtype="fp16", scaler="on", model="tiny", batch=2, seq=32, steps=6)[0]
    assert r.labels == {"format": "fp16", "scaler": "on", "preset": "tiny"}
    skipped = r.metrics["skipped_steps"].value
    assert r.metrics["final_scale"].value == 2.0**16 * 0.5**skipped and len(r.samples["scale"]) == 6
    for k in ("overflow_steps", "skipped_steps", "zero_grad_pct", "final_scale"):
        assert r.metrics[k].deterministic and not r.metrics[k].portable


# --- training memory ---------------------------------------------------------------------------------
def test_trainmem_phases_and_the_scale_verdict(monkeypatch):
    """The small preset measured (and simulated: equal), and the scale path with a small preset standing in for
    the 1B GPT (the real 1B simulation runs in `bench run`: ~10 s)."""
    import plugins.precision.scale as S

    monkeypatch.setattr(S, "SCALE_PRESET", "tiny")
    p = PrecisionParams(what="trainmem", dtype="fp32", model="tiny", batch=2, seq=32, scale_batch=2, scale_seq=64)
    recs = PLUGIN.run(p, ctx())
    measured = next(r for r in recs if r.labels["mode"] == "measured")
    assert measured.status == "ok", measured.message
    m = {k: v.value for k, v in measured.metrics.items()}
    assert (m["params_bytes_per_param"], m["grads_bytes_per_param"], m["state_bytes_per_param_excl_counters"]) == (
        4,
        4,
        16,
    )
    assert m["peak_update_bytes_per_param"] >= 20  # foreach AdamW: one parameter-sized temporary
    assert m["simulated_vs_measured"] == 1.0  # fake tensors reproduce the real step's bytes
    scale = next(r for r in recs if r.labels["mode"] == "simulated")
    assert scale.status == "ok", scale.message
    assert scale.labels["batch"] == 2 and scale.metrics["peak_phase"].value in ("forward+backward", "optimizer update")
    ev = evidence([r for r in recs if r.labels["mode"] == "simulated"], p)["mem.train_24x"][0]
    assert ev.source == "simulated" and ev.verdict in ("holds", "fails") and "4 + 4 + 8 + 8" in ev.detail


def test_trainmem_bf16_master_weights():
    r = run(profile="full", what="trainmem", dtype="bf16", model="tiny", batch=2, seq=16)[0]
    parts = [r.metrics[f"{k}_bytes_per_param"].value for k in ("params", "grads", "master")]
    assert parts == [2, 2, 4] and r.metrics["state_bytes_per_param_excl_counters"].value == 16.0  # ZeRO's 2 + 2 + 12


# --- the plugin as a whole ---------------------------------------------------------------------------
def test_grid_validate_launch_and_estimates():
    assert PLUGIN.grid("quick") == [{"what": w} for w in WHATS]  # `--what X` gives one case
    assert "block_size" in PLUGIN.validate(PrecisionParams(what="train", model="tiny", seq=4096))
    assert "--batch" in PLUGIN.validate(PrecisionParams(batch=-1))
    assert "--scale-seq" in PLUGIN.validate(PrecisionParams(what="trainmem", scale_seq=4096))
    assert PLUGIN.launch(PrecisionParams(what="cast")).reuse and not PLUGIN.launch(PrecisionParams(what="train")).reuse
    # a matmul is probed and budgeted per format: it shares the warm worker, with every core
    assert (
        PLUGIN.launch(PrecisionParams(what="matmul")).reuse
        and PLUGIN.launch(PrecisionParams(what="matmul")).threads is None
    )
    from bench.plan import FIRST_WARM_S, STARTUP_S

    # quick: 45 s + 22 s for mem.train_24x's two more simulated batches (the notes give no batch: a sweep)
    for profile, dev, limit in (("quick", "cpu", 70), ("gpu", "cuda", 80)):  # the plan's arithmetic, not a timing
        total, warm = 0.0, False
        for c in PLUGIN.grid(profile):
            p = PrecisionParams(**c)
            reuse = PLUGIN.launch(p).reuse and not (dev == "cuda" and p.what == "trainmem")  # a real 1B step on CUDA
            total += PLUGIN.estimate_s(p, dev) + (
                STARTUP_S[("reuse", dev)]
                if reuse and warm
                else FIRST_WARM_S[dev]
                if reuse
                else STARTUP_S[("process", dev)]
            )
            warm |= reuse
        assert 0 < total <= limit, (profile, total)


def test_claims_table_from_a_cast_run():
    recs = run(what="cast")
    rows = as_rows(recs, PrecisionParams(what="cast"))
    rows += [
        Row(
            run_id="t",
            plugin="precision",
            params={},
            kind="summary",
            fingerprint={"label": "cpu-test"},
            metrics=r.metrics,
            labels=r.labels,
            evidence=r.evidence,
        )
        for r in PLUGIN.summarize(rows)
    ]
    _, res = evaluate(rows, [("precision", c) for c in CLAIMS])
    got = {r.id: r.outcomes["cpu-test"] for r in res}
    assert got["prec.fp16_scaling"].verdict == "fails" and got["prec.bf16_truncation"].verdict == "holds"
    assert got["prec.ranges"].verdict == "holds" and got["prec.pi_bf16"].kind == "measured"


def test_report_tables():
    from plugins.precision.activations import Act, _row
    from plugins.precision.report import activation_table

    rec = _row(Act(64, 4, 32, 2, "flash", "fp32"), ctx())
    rec.labels = {**rec.labels}
    header, body = activation_table(as_rows([rec], PrecisionParams(what="activations")))
    assert len(body) == 1 and body[0][header.index("measured / formula")] == "1.0000"


def test_cli_end_to_end(tmp_path):
    out = tmp_path / "prec.jsonl"
    r = run_bench(
        "run",
        "--plugin",
        "precision",
        "--what",
        "cast,storage",
        "--model",
        "tiny",
        "--format",
        "markdown",
        "--out",
        str(out),
    )  # markdown: every column, whatever the terminal width
    assert r.returncode == 0, r.stderr[-2000:]
    assert "3.1415920257568359375" in r.stdout and "0x40490FD8" in r.stdout
    rows = load_rows([out])
    assert len([x for x in rows if x.is_case]) == 9 + 6  # 7 casts + 2 probes, 6 storage formats
    c = bench_cli("claims", "--format", "csv", str(out))
    assert c.returncode == 0, c.stderr
    table = {row["id"]: row for row in csv.DictReader(io.StringIO(c.stdout))}
    verdict = next(k for k in table["prec.pi_fp32"] if k.startswith("verdict"))
    for cid in (
        "prec.pi_fp32",
        "prec.pi_fp16",
        "prec.pi_bf16",
        "prec.pi_int8",
        "prec.ranges",
        "mem.store_fp32",
        "mem.store_16bit",
    ):
        assert table[cid][verdict] == "holds", (cid, table[cid])
    assert table["prec.fp16_scaling"][verdict] == "fails" and table["prec.bf16_truncation"][verdict] == "holds"
    bad = run_bench(
        "run", "--plugin", "precision", "--what", "train", "--model", "tiny", "--seq", "4096", "--out", str(out)
    )
    assert bad.returncode == 2 and "block_size" in bad.stderr
