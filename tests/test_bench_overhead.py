"""The harness's own overhead per case, as pytest-benchmark benchmarks.

`make bench-overhead` runs these with timing on and prints pytest-benchmark's table:
fresh-process startup of one case, writing one result row, plugin discovery.
Under `make test` (benchmarks disabled) each runs once, as a check that it works.
"""

from __future__ import annotations

import re
import sys

from conftest import ROOT

from bench.discovery import discover
from bench.results import append_rows
from bench.runner import RunOptions, run_case


def test_overhead_fresh_process_case(benchmark, thirdparty, monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(thirdparty))
    monkeypatch.setenv("PYTHONPATH", str(thirdparty))
    from bench.discovery import get_plugin

    plugin = get_plugin("faulty")  # mode ok: the smallest possible case, so this is pure overhead
    params = plugin.Params()
    opts = RunOptions(out=tmp_path / "x.jsonl", run_id="bench", progress=None)
    res = benchmark.pedantic(run_case, args=(plugin, params, opts, "c1"), rounds=3, iterations=1)
    assert res.status == "ok" and res.records


def test_overhead_write_one_row(benchmark, tmp_path):
    row = {
        "schema": "bench.row/1",
        "run_id": "r",
        "plugin": "p",
        "params": {"n": 1},
        "status": "ok",
        "metrics": {"t": {"value": 1.0, "unit": "ms", "source": "measured"}},
        "samples": {"t": [1e-3] * 200},
    }
    path = tmp_path / "w.jsonl"
    benchmark(append_rows, path, [row])
    assert path.read_text().count("\n") >= 1


def test_overhead_plugin_discovery(benchmark):
    found = benchmark(discover)
    assert "attention" in found


def _agreement():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import timing_agreement
    finally:
        sys.path.pop(0)
    return timing_agreement


def test_timing_agreement_script_prints_its_table(capsys):
    """Runs (quick) and prints both medians side by side with a verdict per op; exit 0, or 1 when an
    op disagrees (a measured outcome: not asserted here)."""
    code = _agreement().main(["--quick"])
    out = capsys.readouterr().out
    assert code in (0, 1), out
    assert "torch.utils.benchmark median [us]" in out and "matmul fp32 64x64" in out and "ratio engine/ref" in out
    assert re.search(r"\d+ of 3 ops judged: \d+ agree, \d+ disagree; \d+ too noisy to judge", out), out


def test_timing_agreement_verdicts():
    """The judge on made-up figures: the reported +24% with +/-2% fails; noise is named, not judged."""
    ta = _agreement()
    side = ta.Side
    us = 1e-6
    assert (
        ta.judge(side(19.2 * us, 0.02 * 19.2 * us, 66, 50, 1.0), side(15.5 * us, 0.01 * 15.5 * us, 1000, 20, 1.0))[0]
        == "DISAGREE"
    )
    assert (
        ta.judge(side(15.7 * us, 0.02 * 15.7 * us, 66, 50, 1.0), side(15.5 * us, 0.01 * 15.5 * us, 1000, 20, 1.0))[0]
        == "agree"
    )
    v, why = ta.judge(side(19.2 * us, 0.02 * 19.2 * us, 66, 50, 0.4), side(15.5 * us, 0.01 * 15.5 * us, 1000, 20, 1.0))
    assert v == "too noisy to judge" and "engine CPU share 40% < 90%" in why
    v, why = ta.judge(side(19.2 * us, 0.02 * 19.2 * us, 66, 50, 1.0), side(15.5 * us, 0.2 * 15.5 * us, 1000, 20, 0.95))
    assert v == "too noisy to judge" and "reference CI +/-20.0% > 5%" in why


def test_blocked_timing_window_and_dependent_ci():
    """A short op is timed in blocks (block size recorded), the samples span min_time_s, and the CI of
    dependent samples (runs of slow and fast) is wider than the independent one, never narrower."""
    import random

    import torch

    from bench.stats import median_ci, sign_autocorr
    from bench.timing import measure

    a = torch.randn(32, 32)
    t = measure(lambda: a @ a, "cpu", max_time_s=1.0, min_time_s=0.05)
    assert t.inner > 1 and t.extra["timed_s"] >= 0.05 and t.extra["cpu_share"] > 0
    rng = random.Random(0)
    iid = [1 + 0.1 * rng.gauss(0, 1) for _ in range(200)]
    runs = sorted(iid[:100]) + sorted(iid[100:], reverse=True)  # the same values, in two long runs
    assert abs(sign_autocorr(iid)) < 0.2 and sign_autocorr(runs) > 0.8
    assert median_ci(runs, serial=True).rel_halfwidth > 2 * median_ci(runs).rel_halfwidth
    assert median_ci(iid, serial=True).rel_halfwidth >= median_ci(iid).rel_halfwidth
