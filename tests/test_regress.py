"""`bench regress`: exit codes 0/1/2/3, direction per metric, deterministic metrics compared exactly,
timings by statistics + a confirming rerun (faked in-process, and once through the real CLI with the
`toy` plugin), and the refusal to call timing differences across machines a regression."""
from __future__ import annotations

import json
import random
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from bench.cli import main
from bench.regress import GateConfig, compare_samples, direction, evaluate, param_flags
from bench.results import append_rows, load_rows
from conftest import run_bench


def samples(ms: float, n: int = 30, noise: float = 0.01, seed: int = 0) -> list[float]:
    """n timings (seconds) around ms milliseconds with relative gaussian noise."""
    rng = random.Random(seed)
    return [ms / 1e3 * (1 + noise * rng.gauss(0, 1)) for _ in range(n)]


def row(params: dict[str, Any], metrics: dict[str, Any], time_s: list[float] | None = None, *, plugin: str = "toy",
        machine: str = "m1", status: str = "ok", run: str = "r1", labels: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    ms = {}
    for k, v in metrics.items():
        ms[k] = v if isinstance(v, dict) else {"value": v, "unit": "", "source": "measured"}
    if time_s:
        ms["time_ms"] = {"value": sorted(time_s)[len(time_s) // 2] * 1e3, "unit": "ms", "source": "measured"}
    return {"schema": "bench.row/1", "run_id": run, "case_id": f"{plugin}-001", "plugin": plugin, "profile": "quick",
            "kind": "case", "params": params, "labels": labels or {}, "status": status, "message": "boom" if status == "error" else "",
            "metrics": ms, "samples": {"time_s": time_s} if time_s else {}, "notes": [], "evidence": {},
            "fingerprint": {"label": f"cpu-{machine}", "machine_id": machine}}  # fmt: skip


def det(v: Any, unit: str = "bytes", **kw: Any) -> dict[str, Any]:
    return {"value": v, "unit": unit, "source": "measured", "deterministic": True, **kw}


def write(path: Path, rows: list[dict[str, Any]]) -> Path:
    append_rows(path, rows)
    return path


def gate(tmp_path: Path, base: list[dict[str, Any]], cur: list[dict[str, Any]], *args: str):
    b, c = write(tmp_path / "base.jsonl", base), write(tmp_path / "cur.jsonl", cur)
    return CliRunner().invoke(main, ["regress", "--baseline", str(b), "--current", str(c), *args])


# --- direction and the decision rule --------------------------------------------------------
def test_direction_per_metric():
    lower = ["time_ms", "step_ms", "train_s", "peak_mib", "model_state_bytes", "bytes_per_param", "final_loss",
             "rel_error", "comm_bytes_per_step", "time_noise_pct"]  # fmt: skip
    higher = ["tflops", "tokens_per_s", "mfu", "pct_matmul", "throughput"]
    assert [direction(m) for m in lower] == ["lower"] * len(lower)
    assert [direction(m) for m in higher] == ["higher"] * len(higher)
    assert direction("flops") is None and direction("ratio_6n") is None
    assert direction("score", {"better": "higher"}) == "higher"  # the row's own direction wins
    assert direction("time_ms", {"better": "higher"}) == "higher"


def test_direction_decides_deterministic_verdicts(tmp_path):
    base = [row({"n": 1}, {"tokens_per_s": det(1000.0, "tokens/s"), "peak_bytes": det(4096)})]
    # throughput down and memory up: both worse
    r = gate(tmp_path, base, [row({"n": 1}, {"tokens_per_s": det(900.0, "tokens/s"), "peak_bytes": det(8192)})], "-v")
    assert r.exit_code == 1, r.output
    assert "CHANGED toy n=1: tokens_per_s" in r.output and "CHANGED toy n=1: peak_bytes" in r.output
    assert "+100.0% worse" in r.output and "+10.0% worse" in r.output
    # throughput up and memory down: improvements pass, with a note to update the baseline
    r = gate(tmp_path / "b", base, [row({"n": 1}, {"tokens_per_s": det(1100.0, "tokens/s"), "peak_bytes": det(2048)})])
    assert r.exit_code == 0, r.output
    assert r.output.count("update the baseline") == 2


def test_timing_rule_significance_and_min_effect():
    cfg = GateConfig()
    a = samples(1.0, seed=1)
    assert compare_samples(a, samples(1.0, seed=2), "lower", cfg).verdict == "same"
    r = compare_samples(a, samples(1.2, seed=3), "lower", cfg)
    assert r.verdict == "slower" and 0.15 < r.change < 0.25 and r.p < 1e-6
    assert compare_samples(a, samples(0.8, seed=4), "lower", cfg).verdict == "faster"
    # significant but below the 5% floor: same
    r = compare_samples(samples(1.0, 200, 0.005, seed=5), samples(1.02, 200, 0.005, seed=6), "lower", cfg)
    assert r.p < 1e-6 and r.verdict == "same"
    # the min effect adapts to the measured noise: 12% more is within 20% IQR noise
    r = compare_samples(samples(1.0, 40, 0.3, seed=7), samples(1.12, 40, 0.3, seed=8), "lower", cfg)
    assert r.threshold > 0.15 and r.verdict in ("same", "ambiguous")
    # higher is better: a throughput series falling is the slowdown
    assert compare_samples(samples(100, seed=9), samples(80, seed=10), "higher", cfg).verdict == "slower"


# --- exit codes through the CLI --------------------------------------------------------------
def test_exit_0_on_same_code(tmp_path):
    base = [row({"n": n}, {"flops": det(2 * n**3, "FLOP")}, samples(n / 10, seed=n)) for n in (16, 32)]
    cur = [row({"n": n}, {"flops": det(2 * n**3, "FLOP")}, samples(n / 10, seed=100 + n), run="r2") for n in (16, 32)]
    r = gate(tmp_path, base, cur)
    assert r.exit_code == 0, r.output
    assert "result: PASS (exit 0)" in r.output and "2 deterministic and 2 timing metrics" in r.output


def test_exit_1_confirmed_regression_in_process():
    base = [row({"n": 64}, {}, samples(1.0, seed=1))]
    cur = [row({"n": 64}, {}, samples(1.25, seed=2), run="r2")]
    calls = []

    def rerun(r):  # the regression is real: the rerun is slow too
        calls.append(r["params"])
        return [row(r["params"], {}, samples(1.25, seed=3), run="r3")]

    rep = evaluate(base, cur, GateConfig(), rerun=rerun)
    assert rep.exit_code == 1 and calls == [{"n": 64}]
    (it,) = rep.by_outcome("regression")
    assert it.metric == "time_ms" and it.verdict == "slower" and 0.2 < it.change < 0.3 and len(it.reruns) == 1
    assert "confirmed by rerun 1" in it.note
    # two confirming reruns: both must be slow
    rep = evaluate(base, cur, GateConfig(confirm=2), rerun=rerun)
    assert rep.exit_code == 1 and len(calls) == 3


def test_not_reproduced_passes_and_contradicted_is_unstable():
    base = [row({"n": 64}, {}, samples(1.0, seed=1))]
    cur = [row({"n": 64}, {}, samples(1.25, seed=2), run="r2")]
    rep = evaluate(base, cur, GateConfig(), rerun=lambda r: [row(r["params"], {}, samples(1.0, seed=4))])
    assert rep.exit_code == 0
    assert rep.items[0].verdict == "same" and "not reproduced" in rep.items[0].note
    rep = evaluate(base, cur, GateConfig(), rerun=lambda r: [row(r["params"], {}, samples(0.7, seed=5))])
    assert rep.exit_code == 2 and rep.items[0].verdict == "unstable"


def test_unconfirmed_and_confirm_0(tmp_path):
    base = [row({"n": 64}, {}, samples(1.0, seed=1), plugin="pytest-benchmark")]
    cur = [row({"n": 64}, {}, samples(1.3, seed=2), plugin="pytest-benchmark", run="r2")]
    r = gate(tmp_path, base, cur)  # rows bench cannot rerun: a slowdown stays unconfirmed
    assert r.exit_code == 2, r.output
    assert "UNCONFIRMED" in r.output and "INCONCLUSIVE" in r.output
    r = gate(tmp_path / "x", base, cur, "--confirm", "0")
    assert r.exit_code == 1, r.output
    assert re.search(r"SLOWER pytest-benchmark n=64: time_ms 1\.0\d* -> 1\.[23]\d* ms \(\+(2[5-9]|3[0-5])\.\d% worse\)", r.output), r.output


def test_exit_2_ambiguous_and_missing(tmp_path):
    # a large apparent change on too few samples: cannot be called either way
    base = [row({"n": 1}, {}, [1e-3, 1.01e-3])]
    cur = [row({"n": 1}, {}, [1.4e-3, 1.5e-3], run="r2")]
    r = gate(tmp_path, base, cur)
    assert r.exit_code == 2 and "ambiguous" in r.output, r.output
    # a baseline row the current run lacks
    base = [row({"n": n}, {"b": det(n)}) for n in (1, 2)]
    r = gate(tmp_path / "m", base, base[:1])
    assert r.exit_code == 2 and "missing" in r.output, r.output
    assert gate(tmp_path / "m2", base, base[:1], "--allow-missing").exit_code == 0


def test_failed_case_is_a_regression(tmp_path):
    base = [row({"n": 1}, {"b": det(1)})]
    r = gate(tmp_path, base, [row({"n": 1}, {}, status="error")])
    assert r.exit_code == 1 and "FAILED toy n=1" in r.output, r.output


def test_deterministic_exact_and_tolerances(tmp_path):
    base = [row({"n": 1}, {"params_bytes": det(1_000_000), "final_loss": det(2.5, "nats")})]
    # one byte more: caught exactly
    r = gate(tmp_path / "a", base, [row({"n": 1}, {"params_bytes": det(1_000_001), "final_loss": det(2.5, "nats")})])
    assert r.exit_code == 1, r.output
    assert "CHANGED toy n=1: params_bytes 1000000 -> 1000001" in r.output and "tolerance exact" in r.output
    # a float within rel 1e-6 is the same; beyond it, changed; --tol widens one metric
    r = gate(tmp_path / "b", base, [row({"n": 1}, {"params_bytes": det(1_000_000), "final_loss": det(2.5 * (1 + 1e-7), "nats")})])
    assert r.exit_code == 0, r.output
    worse = [row({"n": 1}, {"params_bytes": det(1_000_000), "final_loss": det(2.5001, "nats")})]
    assert gate(tmp_path / "c", base, worse).exit_code == 1
    assert gate(tmp_path / "d", base, worse, "--tol", "final_loss=1e-3").exit_code == 0
    # --only deterministic ignores a timing slowdown
    slow_t = [row({"n": 1}, {"params_bytes": det(1_000_000), "final_loss": det(2.5, "nats")}, samples(2.0))]
    base_t = [row({"n": 1}, {"params_bytes": det(1_000_000), "final_loss": det(2.5, "nats")}, samples(1.0))]
    r = gate(tmp_path / "e", base_t, slow_t, "--only", "deterministic")
    assert r.exit_code == 0 and "0 timing metrics" in r.output, r.output


def test_cross_machine_timings_are_not_regressions(tmp_path):
    base = [row({"n": 1}, {"flops": det(128, "FLOP")}, samples(1.0), machine="h100")]
    cur = [row({"n": 1}, {"flops": det(128, "FLOP")}, samples(1.5, seed=9), machine="a100", run="r2")]
    r = gate(tmp_path, base, cur, "-v")
    assert r.exit_code == 0, r.output
    assert "NOT COMPARABLE" in r.output and "not a regression" in r.output and "not comparable" in r.output
    assert "SLOWER" not in r.output
    # deterministic metrics still gate across machines
    cur[0]["metrics"]["flops"]["value"] = 256
    r = gate(tmp_path / "b", base, cur)
    assert r.exit_code == 1 and "CHANGED toy n=1: flops" in r.output, r.output
    # only timings, all across machines: nothing was gated -> inconclusive, not a pass
    r = gate(tmp_path / "c", base, cur, "--only", "timing")
    assert r.exit_code == 2 and "nothing was gated" in r.output, r.output


def test_harness_errors_exit_3(tmp_path):
    good = write(tmp_path / "g.jsonl", [row({"n": 1}, {"b": det(1)})])
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    other = write(tmp_path / "o.jsonl", [row({"n": 2}, {"b": det(1)})])
    cases = [
        ["--baseline", str(tmp_path / "nope.jsonl"), "--current", str(good)],
        ["--baseline", str(tmp_path / "bad.jsonl"), "--current", str(good)],
        ["--baseline", str(good), "--current", str(other)],  # nothing matches
        ["--baseline", str(good), "--current", str(good), "--tol", "oops"],
        ["--baseline", str(good), "--current", str(good), "--no-such-flag"],
        ["--baseline", str(good)],
    ]
    for args in cases:
        r = CliRunner().invoke(main, ["regress", *args])
        assert r.exit_code == 3, (args, r.output)
    r = CliRunner().invoke(main, ["regress", "--help"])
    assert r.exit_code == 0 and "--confirm" in r.output and "exit 0 pass, 1 confirmed regression" in r.output


def test_param_flags():
    assert param_flags({"n": 64, "extra_ms": 0.5, "flash": True, "x": None, "dtype": "bf16"}) == [
        "--n", "64", "--extra-ms", "0.5", "--flash", "true", "--dtype", "bf16"]  # fmt: skip


# --- the real CLI, with a real rerun ----------------------------------------------------------
RERUN_SLOW = """\
import json, subprocess, sys
out, rest = sys.argv[1], sys.argv[2:]
raw = out + ".raw"
subprocess.run([sys.executable, "-m", "bench.cli", "run", *rest, "--extra-ms", "2", "--out", raw, "--format", "none"], check=True)
with open(out, "a") as f:
    for line in open(raw):
        r = json.loads(line)
        r["params"]["extra_ms"] = 0.0  # the code is slower; the case is the same
        f.write(json.dumps(r) + "\\n")
"""


def test_real_cli_confirming_rerun(tmp_path, thirdparty):
    """toy n=64 (one thread): a current run with an injected 2 ms sleep per step, recorded as the
    same case. The default rerun (the real `bench run`, without the sleep) does not reproduce it:
    pass. A rerun command that keeps the sleep confirms it: exit 1."""
    pp = [thirdparty]
    base, cur = tmp_path / "base.jsonl", tmp_path / "cur.jsonl"
    for out, extra in ((base, "0"), (cur, "2")):
        r = run_bench("run", "--plugin", "toy", "--n", "64", "--extra-ms", extra, "--threads", "1", "--out", str(out),
                      "--format", "none", pythonpath=pp)  # fmt: skip
        assert r.returncode == 0, r.stderr
    rows = load_rows([cur])
    for rr in rows:
        rr["params"]["extra_ms"] = 0.0
        rr.pop("_file")
    cur.write_text("".join(json.dumps(rr) + "\n" for rr in rows))

    # --min-effect 0.5: the injected slowdown is ~300x; separate processes on this shared machine
    # differ by several % (the default 5% floor is the gate's, not this test's subject)
    r = run_bench("regress", "--baseline", str(base), "--current", str(cur), "--min-effect", "0.5", pythonpath=pp)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "confirming rerun:" in r.stderr and "--threads 1" in r.stderr and "--n 64" in r.stderr
    assert "not reproduced by rerun 1" in r.stdout

    script = tmp_path / "rerun_slow.py"
    script.write_text(RERUN_SLOW)
    r = run_bench("regress", "--baseline", str(base), "--current", str(cur), "--json", str(tmp_path / "v.json"), "--min-effect", "0.5",
                  "--rerun-cmd", f"{{python}} {script} {{out}} --plugin {{plugin}} {{flags}} {{run_opts}}", pythonpath=pp)  # fmt: skip
    assert r.returncode == 1, r.stdout + r.stderr
    assert "SLOWER toy n=64 extra_ms=0.0: time_ms" in r.stdout and "confirmed by rerun 1" in r.stdout
    v = json.loads((tmp_path / "v.json").read_text())
    assert v["exit_code"] == 1 and [i["metric"] for i in v["items"] if i["outcome"] == "regression"] == ["time_ms"]
    # a rerun command that fails is a harness error
    r = run_bench("regress", "--baseline", str(base), "--current", str(cur), "--rerun-cmd", "false", pythonpath=pp)
    assert r.returncode == 3 and "rerun exited 1" in r.stderr, r.stdout + r.stderr


def test_module_import_is_light():
    import subprocess

    code = "import sys, bench.regress, bench.compare, bench.pytest_benchmark_io; print(any(m in sys.modules for m in ('pandas', 'scipy', 'torch')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"
