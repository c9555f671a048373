"""The harness's own overhead per case, as pytest-benchmark benchmarks.

`make bench-overhead` runs these with timing on and prints pytest-benchmark's table:
fresh-process startup of one case, writing one result row, plugin discovery.
Under `make test` (benchmarks disabled) each runs once, as a check that it works.
"""
from __future__ import annotations

import subprocess
import sys

from bench.discovery import discover
from bench.results import append_rows
from bench.runner import RunOptions, run_case
from conftest import ROOT


def test_overhead_fresh_process_case(benchmark, thirdparty, monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(thirdparty))
    monkeypatch.setenv("PYTHONPATH", str(thirdparty))
    from bench.discovery import get_plugin

    plugin = get_plugin("faulty")  # mode ok: the smallest possible case, so this is pure overhead
    params = plugin.Params()
    opts = RunOptions(out=tmp_path / "x.jsonl", run_id="bench", progress=None)
    status, _, recs, _ = benchmark.pedantic(run_case, args=(plugin, params, opts, "c1"), rounds=3, iterations=1)
    assert status == "ok" and recs


def test_overhead_write_one_row(benchmark, tmp_path):
    row = {"schema": "bench.row/1", "run_id": "r", "plugin": "p", "params": {"n": 1}, "status": "ok",
           "metrics": {"t": {"value": 1.0, "unit": "ms", "source": "measured"}}, "samples": {"t": [1e-3] * 200}}  # fmt: skip
    path = tmp_path / "w.jsonl"
    benchmark(append_rows, path, [row])
    assert path.read_text().count("\n") >= 1


def test_overhead_plugin_discovery(benchmark):
    found = benchmark(discover)
    assert "attention" in found


def test_timing_agreement_script_prints_its_table():
    r = subprocess.run([sys.executable, "benchmarks/timing_agreement.py", "--quick"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "torch.utils.benchmark median [us]" in r.stdout and "matmul fp32 128x128" in r.stdout
