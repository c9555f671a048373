"""The core's measurement pieces on known inputs: exact bytes, exact FLOPs, statistics, fits."""

from __future__ import annotations

import dataclasses
import json
import math
import random

import pytest
import torch

from bench import memory
from bench.cli import RUN_OPTIONS
from bench.contract import Check, Claim, NoParams, Plugin, param, plugin_problem
from bench.discovery import discover
from bench.fit import fit_power_law
from bench.flops import PEAK_TFLOPS, count_flops, peak_key
from bench.params import UsageError, expand_grid, parse_flags
from bench.results import ResultsError, append_rows, load_frame, read_rows
from bench.stats import median, median_ci
from bench.timing import measure


@dataclasses.dataclass(frozen=True)
class P:
    stage: int = param(3, choices=(0, 1, 2, 3))
    seq: int = param(128)
    ratio: float = param(0.5)
    causal: bool = param(False)
    name: str = param("a", choices=("a", "b"))


class Demo(Plugin):
    name = "demo"
    Params = P

    def grid(self, profile):
        return [{"stage": s} for s in (0, 1, 2, 3)]


def test_flags_parse_validate_and_expand():
    d = Demo()
    assert parse_flags(d, ["--stage", "3", "--seq=512,1024", "--causal", "--ratio", "2.5e-1"]) == {
        "stage": [3],
        "seq": [512, 1024],
        "causal": [True],
        "ratio": [0.25],
    }
    assert parse_flags(d, ["--seq", "7.5e3"]) == {"seq": [7500]}  # whole numbers in e-notation
    with pytest.raises(UsageError, match="allowed values: 0, 1, 2, 3"):
        parse_flags(d, ["--stage", "4"])
    with pytest.raises(UsageError, match="not a valid int"):
        parse_flags(d, ["--seq", "12.5"])
    with pytest.raises(UsageError, match="did you mean --stage"):
        parse_flags(d, ["--stagee", "1"])
    cases = expand_grid(d, "quick", {"stage": [3]})
    assert [c.stage for c in cases] == [3]
    cases = expand_grid(d, "quick", {"seq": [1, 2]})
    assert len(cases) == 8 and {(c.stage, c.seq) for c in cases} == {(s, n) for s in range(4) for n in (1, 2)}


def test_builtin_plugins_keep_the_contract():
    found = discover()
    for name in ("attention", "precision", "quantization", "ddp", "fsdp", "scaling"):
        assert found[name].plugin is not None, (name, found[name].load_error)
    for name, f in found.items():
        if f.plugin is None:
            continue
        flags = {fl.name.replace("_", "-") for fl in dataclasses.fields(f.plugin.Params)}
        assert not flags & set(RUN_OPTIONS), (name, flags & set(RUN_OPTIONS))


def test_the_contract_check_refuses_a_broken_plugin():
    @dataclasses.dataclass
    class Mutable:
        n: int = param(1)

    @dataclasses.dataclass(frozen=True)
    class Shadow:
        out: str = param("x")

    class Bad(Plugin):
        name = "bad"

    bad = Bad()
    Bad.Params = Mutable
    assert "frozen" in plugin_problem(bad)
    Bad.Params = Shadow
    assert "--out" in plugin_problem(bad)
    Bad.Params = NoParams
    assert plugin_problem(bad) is None
    Bad.claims = (Claim("bad.x", "c", "s", "e", "t", Check("rel", tol=0.1), "n", metric="nope"),)
    assert "not declared" in plugin_problem(bad)
    Bad.metrics = {"nope": "a metric"}
    assert plugin_problem(bad) is None
    Bad.claims = (Claim("bad.x", "c", "s", "e", "t", Check("range", lo=1), "n", metric="nope"),)
    assert "needs hi" in plugin_problem(bad)


def test_median_ci_covers_the_true_median():
    rng = random.Random(0)
    misses = 0
    for _ in range(200):
        xs = [rng.gauss(10, 1) for _ in range(41)]
        ci = median_ci(xs)
        assert ci.low <= median(xs) <= ci.high
        misses += not (ci.low <= 10 <= ci.high)
    assert misses <= 20  # nominal 5% of 200 = 10; a generous bound


def test_power_law_fit_recovers_exponent():
    xs = [256, 512, 1024, 2048, 4096]
    f = fit_power_law(xs, [3.0 * x**1.7 for x in xs])
    assert (
        f.exponent == pytest.approx(1.7, abs=1e-9) and f.prefactor == pytest.approx(3.0) and f.r2 == pytest.approx(1.0)
    )
    rng = random.Random(1)
    f = fit_power_law(xs, [x**2 * math.exp(rng.gauss(0, 0.05)) for x in xs])
    assert abs(f.exponent - 2) < 4 * f.stderr + 0.05
    with pytest.raises(ValueError):
        fit_power_law([1], [1])


def test_state_bytes_are_exact_for_adamw():
    torch.manual_seed(0)
    m = torch.nn.Linear(64, 32)  # 64*32 + 32 = 2080 params, fp32
    opt = torch.optim.AdamW(m.parameters())
    m(torch.randn(4, 64)).sum().backward()
    opt.step()
    b = memory.state_bytes(m, opt)
    assert b["parameters"] == 2080 * 4 and b["gradients"] == 2080 * 4
    # exp_avg + exp_avg_sq (fp32) per param, plus one fp32 `step` scalar per parameter tensor
    assert b["optimizer_state"] == 2 * 2080 * 4 + 2 * 4


def test_track_step_breaks_down_the_peak():
    m = torch.nn.Sequential(torch.nn.Linear(256, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256))
    opt = torch.optim.AdamW(m.parameters(), foreach=False)
    x = torch.randn(64, 256)

    def step():
        m(x).pow(2).mean().backward()
        opt.step()
        opt.zero_grad()

    step()
    rep = memory.track_step(step, m, opt)
    nparam = sum(p.numel() for p in m.parameters())
    assert rep.at_peak["parameters"] == nparam * 4
    assert rep.at_peak["optimizer_state"] >= 2 * nparam * 4
    assert rep.peak_bytes >= sum(rep.at_peak.values()) - 1 and rep.method == "MemTracker"


def test_peak_above_sees_a_known_allocation():
    def fn():
        a = torch.empty(1 << 20, dtype=torch.uint8)  # 1 MiB
        a.fill_(1)
        b = torch.empty(1 << 19, dtype=torch.uint8)
        del a, b

    peak, method = memory.peak_above(fn)
    assert (1 << 20) + (1 << 19) <= peak < (1 << 20) + (1 << 19) + 4096, peak
    assert "profiler" in method


def test_flop_count_of_a_matmul_is_2mnk():
    a, b = torch.randn(8, 16), torch.randn(16, 32)
    assert count_flops(lambda: a @ b) == 2 * 8 * 16 * 32


def test_peak_table_is_dense_and_matches_device_names():
    assert peak_key("NVIDIA H100 80GB HBM3") == "H100 SXM" and peak_key("NVIDIA H200") == "H200"
    assert peak_key("NVIDIA H100 PCIe") == "H100 PCIe" and peak_key("AMD EPYC") is None
    assert PEAK_TFLOPS["H100 SXM"]["bf16"] == 989.4  # not the 1979 sparse figure
    assert PEAK_TFLOPS["A100"]["bf16"] == 312.0


def test_timing_records_samples_and_stop_reason():
    t = measure(lambda: torch.randn(64, 64) @ torch.randn(64, 64), "cpu", max_time_s=0.5)
    assert len(t.samples_s) >= 3 and t.stop_reason in ("ci_target", "time_cap", "max_samples")
    assert t.ci_low_s <= t.median_s <= t.ci_high_s and t.threads == torch.get_num_threads()
    assert t.method == "perf_counter"
    if t.stop_reason == "ci_target":  # the stop rule's CI (independent samples) met the target;
        assert median_ci(t.samples_s).rel_halfwidth <= t.target_rel_ci  # the reported one may be wider
    assert t.rel_ci >= median_ci(t.samples_s).rel_halfwidth  # widened for dependent samples, never narrowed


def test_results_round_trip_and_frame(tmp_path):
    p = tmp_path / "r.jsonl"
    row = {
        "schema": "bench.row/1",
        "run_id": "r",
        "plugin": "p",
        "params": {"n": 1},
        "labels": {"rank": 0},
        "status": "ok",
        "metrics": {
            "t": {"value": float("nan"), "unit": "ms", "source": "measured"},
            "b": {"value": 8, "unit": "bytes", "source": "formula"},
        },
        "fingerprint": {"label": "cpu-x"},
    }
    append_rows(p, [row, row])
    rows = read_rows(p)
    assert len(rows) == 2 and rows[0].value("t") is None  # NaN -> null: strict JSON
    json.loads(p.read_text().splitlines()[0])
    df = load_frame(p)
    assert list(df["b"]) == [8, 8] and df.attrs["units"]["b"] == "bytes" and df.attrs["sources"]["b"] == ["formula"]
    assert "param.n" in df and "label.rank" in df
    (tmp_path / "bin.jsonl").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ResultsError, match=r"bin\.jsonl"):
        read_rows(tmp_path / "bin.jsonl")
