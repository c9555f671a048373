"""`bench regress`: exit codes 0/1/2/3, direction per metric, deterministic metrics compared exactly,
timings by statistics + a confirming rerun (faked in-process, and once through the real CLI with the
`toy` plugin), the refusal to call timing differences across machines a regression, portable vs
machine-bound metrics (machine-class baselines found or recorded), noisy timings listed not failed,
and NaN / Infinity / missing values failing, never passing."""

from __future__ import annotations

import dataclasses
import json
import math
import random
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import run_bench

from bench.cli import main
from bench.regress import GateConfig, compare_samples, direction, evaluate
from bench.regress_rerun import param_flags
from bench.results import append_rows, load_rows
from bench.rows import Metric, Row


def samples(ms: float, n: int = 30, noise: float = 0.01, seed: int = 0) -> list[float]:
    """n timings (seconds) around ms milliseconds with relative gaussian noise."""
    rng = random.Random(seed)
    return [ms / 1e3 * (1 + noise * rng.gauss(0, 1)) for _ in range(n)]


def row(
    params: dict[str, Any],
    metrics: dict[str, Any],
    time_s: list[float] | None = None,
    *,
    plugin: str = "toy",
    machine: str = "m1",
    status: str = "ok",
    run: str = "r1",
    labels: dict[str, Any] | None = None,
) -> Row:
    ms = {}
    for k, v in metrics.items():
        ms[k] = v if isinstance(v, dict) else {"value": v, "unit": "", "source": "measured"}
    if time_s:
        ms["time_ms"] = {"value": sorted(time_s)[len(time_s) // 2] * 1e3, "unit": "ms", "source": "measured"}
    return Row.from_json(
        {
            "schema": "bench.row/1",
            "run_id": run,
            "case_id": f"{plugin}-001",
            "plugin": plugin,
            "profile": "quick",
            "kind": "case",
            "params": params,
            "labels": labels or {},
            "status": status,
            "message": "boom" if status == "error" else "",
            "metrics": ms,
            "samples": {"time_s": time_s} if time_s else {},
            "notes": [],
            "evidence": {},
            "fingerprint": {"label": f"cpu-{machine}", "machine_id": machine},
        }
    )


def det(v: Any, unit: str = "bytes", **kw: Any) -> dict[str, Any]:
    return {"value": v, "unit": unit, "source": "measured", "deterministic": True, **kw}


def write(path: Path, rows: list[Row], raw: bool = False) -> Path:
    """Through the results store, or raw: json.dumps as a hand-made or foreign file would have it
    (NaN and Infinity literals; the store writes them as null)."""
    if raw:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r.to_json()) + "\n" for r in rows))
    else:
        append_rows(path, rows)
    return path


def gate(tmp_path: Path, base: list[Row], cur: list[Row], *args: str, raw: bool = False):
    b, c = write(tmp_path / "base.jsonl", base, raw), write(tmp_path / "cur.jsonl", cur, raw)
    return CliRunner().invoke(main, ["regress", "--baseline", str(b), "--current", str(c), *args])


# --- direction and the decision rule --------------------------------------------------------
def test_direction_per_metric():
    lower = [
        "time_ms",
        "step_ms",
        "train_s",
        "peak_mib",
        "model_state_bytes",
        "bytes_per_param",
        "final_loss",
        "rel_error",
        "comm_bytes_per_step",
        "time_noise_pct",
    ]
    higher = ["tflops", "tokens_per_s", "mfu", "pct_matmul", "throughput"]
    assert [direction(m) for m in lower] == ["lower"] * len(lower)
    assert [direction(m) for m in higher] == ["higher"] * len(higher)
    assert direction("flops") is None and direction("ratio_6n") is None
    assert direction("score", Metric(1.0, better="higher")) == "higher"  # the row's own direction wins
    assert direction("time_ms", Metric(1.0, better="higher")) == "higher"


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
        calls.append(r.params)
        return [row(r.params, {}, samples(1.25, seed=3), run="r3")]

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
    rep = evaluate(base, cur, GateConfig(), rerun=lambda r: [row(r.params, {}, samples(1.0, seed=4))])
    assert rep.exit_code == 0
    assert rep.items[0].verdict == "same" and "not reproduced" in rep.items[0].note
    rep = evaluate(base, cur, GateConfig(), rerun=lambda r: [row(r.params, {}, samples(0.7, seed=5))])
    assert rep.exit_code == 2 and rep.items[0].verdict == "unstable"


def test_unconfirmed_and_confirm_0(tmp_path):
    base = [row({"n": 64}, {}, samples(1.0, seed=1), plugin="pytest-benchmark")]
    cur = [row({"n": 64}, {}, samples(1.3, seed=2), plugin="pytest-benchmark", run="r2")]
    r = gate(tmp_path, base, cur)  # rows bench cannot rerun: a slowdown stays unconfirmed
    assert r.exit_code == 2, r.output
    assert "UNCONFIRMED" in r.output and "INCONCLUSIVE" in r.output
    r = gate(tmp_path / "x", base, cur, "--confirm", "0")
    assert r.exit_code == 1, r.output
    assert re.search(
        r"SLOWER pytest-benchmark n=64: time_ms 1\.0\d* -> 1\.[23]\d* ms \(\+(2[5-9]|3[0-5])\.\d% worse\)", r.output
    ), r.output


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
    r = gate(
        tmp_path / "b",
        base,
        [row({"n": 1}, {"params_bytes": det(1_000_000), "final_loss": det(2.5 * (1 + 1e-7), "nats")})],
    )
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
    cur[0].metrics["flops"].value = 256
    r = gate(tmp_path / "b", base, cur)
    assert r.exit_code == 1 and "CHANGED toy n=1: flops" in r.output, r.output
    # only timings, all across machines: nothing was gated -> inconclusive, not a pass
    r = gate(tmp_path / "c", base, cur, "--only", "timing")
    assert r.exit_code == 2 and "nothing was gated" in r.output, r.output


# --- non-finite and missing values never pass (issue 20.2) ---------------------------------------
@pytest.mark.parametrize(
    ("base_v", "cur_v", "says"),
    [
        (4096, float("nan"), "current value is NaN"),  # was "improved beyond tolerance"
        (4096, float("inf"), "current value is Infinity"),  # was "same": inf <= rtol * inf
        (4096.0, float("-inf"), "current value is -Infinity"),
        (4096, None, "current value is null"),
        (float("nan"), 4096, "baseline value is NaN"),
        (float("nan"), float("nan"), "baseline value is NaN"),
        (float("inf"), float("inf"), "baseline value is Infinity"),
    ],
)
def test_non_finite_deterministic_values_fail(tmp_path, base_v, cur_v, says):
    base, cur = [row({"n": 1}, {"peak_bytes": det(base_v)})], [row({"n": 1}, {"peak_bytes": det(cur_v)}, run="r2")]
    r = gate(tmp_path, base, cur, raw=True)  # a hand-made or foreign file: NaN / Infinity literals
    assert r.exit_code == 1, r.output
    assert "INVALID toy n=1: peak_bytes" in r.output and says in r.output and "never passes" in r.output
    # written by bench (NaN/inf stored as null): the same failure, named as null
    r = gate(tmp_path / "store", base, cur)
    assert r.exit_code == 1 and "INVALID toy n=1: peak_bytes" in r.output and "null" in r.output, r.output


def test_non_finite_timing_samples_fail(tmp_path):
    base = [row({"n": 1}, {}, samples(1.0))]
    nan = float("nan")
    for name, xs, says in [
        ("all NaN", [nan] * 30, "current: 30 of 30 raw samples are NaN"),  # was "same"
        ("one inf", [*samples(1.0, seed=3)[:-1], float("inf")], "current: 1 of 30 raw samples are inf"),
    ]:
        r = gate(tmp_path / name.replace(" ", "_"), base, [row({"n": 1}, {}, xs, run="r2")], raw=True)
        assert r.exit_code == 1 and "INVALID toy n=1: time_ms" in r.output and says in r.output, (name, r.output)
    # across machines too: a broken timing is not "not comparable"
    r = gate(tmp_path / "x", base, [row({"n": 1}, {}, [nan] * 30, run="r2", machine="m2")], raw=True)
    assert r.exit_code == 1 and "INVALID" in r.output, r.output
    # in the baseline: the same failure, named as the baseline's
    r = gate(tmp_path / "b", [row({"n": 1}, {}, [nan] * 30)], base, raw=True)
    assert r.exit_code == 1 and "baseline: 30 of 30 raw samples are NaN" in r.output, r.output
    # the statistics alone never call non-finite samples the same
    assert compare_samples([nan] * 30, [nan] * 30).invalid


def test_missing_metric_fails_unless_allowed(tmp_path):
    base = [row({"n": 1}, {"peak_bytes": det(4096), "flops": det(10, "FLOP")})]
    cur = [row({"n": 1}, {"flops": det(10, "FLOP")}, run="r2")]
    r = gate(tmp_path, base, cur)
    assert r.exit_code == 1 and "MISSING toy n=1: peak_bytes" in r.output and "absent" in r.output, r.output
    assert gate(tmp_path / "a", base, cur, "--allow-missing").exit_code == 0


# --- noisy timings are listed, not failed (issue 13) -----------------------------------------------
def test_noisy_timing_is_not_gated_unless_asked(tmp_path):
    # multiplicative noise (e^(0.6 z)): positive durations, as real ones are (issue 30 item 5: <= 0 is invalid)
    rng1, rng2 = random.Random(1), random.Random(2)
    noisy = [1e-3 * math.exp(0.6 * rng1.gauss(0, 1)) for _ in range(40)]
    noisy2 = [1e-3 * math.exp(0.6 * rng2.gauss(0, 1)) for _ in range(40)]
    base = [row({"n": 1}, {"flops": det(10, "FLOP")}, noisy)]
    cur = [row({"n": 1}, {"flops": det(10, "FLOP")}, noisy2, run="r2")]
    r = gate(tmp_path, base, cur)
    assert r.exit_code == 0, r.output
    assert (
        re.search(r"not gated: could detect only a slowdown >= \d+\.\d% at this noise", r.output)
        and "WARNING: 1 timing(s) not gated" in r.output
    )
    assert "1 noisy" in r.output and "result: PASS" in r.output
    r = gate(tmp_path / "f", base, cur, "--fail-on-noisy")
    assert r.exit_code == 2 and "INCONCLUSIVE" in r.output, r.output


def test_committed_file_against_itself_passes():
    """A file compared with itself: every change is 0.0%; timings too noisy to gate are listed."""
    from conftest import ROOT

    f = ROOT / "results" / "baseline" / "quick-cpu.jsonl"
    r = CliRunner().invoke(main, ["regress", "--baseline", str(f), "--current", str(f)])
    assert r.exit_code == 0, r.output
    assert "result: PASS (exit 0)" in r.output and " changed" not in r.output and "INCONCLUSIVE" not in r.output


# --- portable vs machine-bound (issue 13) ----------------------------------------------------------
def loss(v: float, flagged: bool = True) -> dict[str, Any]:
    return det(v, "nats/token", **({"portable": False} if flagged else {}))


def suite(machine: str, *, loss_v: float = 2.5, bytes_v: int = 4096, run: str = "r1") -> list[Row]:
    """Two cases: exact byte and FLOP counts (portable), a flagged loss and an unflagged measured float."""
    return [
        row(
            {"n": 1},
            {
                "peak_bytes": det(bytes_v),
                "flops": det(128, "FLOP"),
                "final_loss": loss(loss_v),
                "zero_grad_pct": det(3.9, "%"),
            },
            machine=machine,
            run=run,
        ),
        row(
            {"n": 2},
            {"bytes_per_param": det(2.0, "bytes/param"), "train_loss": loss(loss_v, flagged=False)},
            machine=machine,
            run=run,
        ),
    ]


def test_machine_bound_metrics_gate_only_on_their_machine(tmp_path):
    base = suite("amd")
    # another machine class: its losses differ (other kernels) -> not gated, the portable part gates
    r = gate(tmp_path / "a", base, suite("intel", loss_v=2.52, run="r2"), "-v")
    assert r.exit_code == 0, r.output
    assert "portable (exact on every machine; against the baseline): 3 metrics: 3 same" in r.output
    assert re.search(r"machine-bound \(1 flagged portable=false, 2 unflagged .*: 3 metrics: 3 not gated", r.output)
    # the injected real change: one byte more fails on any machine
    r = gate(tmp_path / "b", base, suite("intel", loss_v=2.52, bytes_v=4097, run="r2"))
    assert r.exit_code == 1 and "CHANGED toy n=1: peak_bytes 4096 -> 4097" in r.output, r.output
    # on the baseline's own machine a changed loss fails (flagged or not)
    r = gate(tmp_path / "c", base, suite("amd", loss_v=2.52, run="r2"))
    assert r.exit_code == 1 and "CHANGED toy n=1: final_loss" in r.output and "CHANGED toy n=2: train_loss" in r.output


def test_row_skipped_on_another_machine_is_listed_not_gated(tmp_path):
    """A case another machine cannot afford in its budget (ctx.afford -> skipped) is not a code change."""
    base = suite("amd")
    cur = suite("intel", run="r2")
    cur[1] = row({"n": 2}, {}, status="skipped", machine="intel", run="r2")
    r = gate(tmp_path / "a", base, cur)
    assert r.exit_code == 0, r.output
    assert "WARNING: 1 row(s) ok in the baseline were skipped on this machine" in r.output
    # on the baseline's own machine a row that stopped running is not waved through
    cur = suite("amd", run="r2")
    cur[1] = row({"n": 2}, {}, status="skipped", machine="amd", run="r2")
    r = gate(tmp_path / "b", base, cur)
    assert r.exit_code == 2 and "missing" in r.output, r.output


def test_machine_class_baseline_recorded_then_gated(tmp_path):
    mb = tmp_path / "machine-baselines"
    b = write(tmp_path / "base.jsonl", suite("amd"))

    def run(cur: list[Row], name: str, *args: str):
        c = write(tmp_path / f"{name}.jsonl", cur)
        return CliRunner().invoke(
            main,
            [
                "regress",
                "--baseline",
                str(b),
                "--current",
                str(c),
                "--only",
                "deterministic",
                "--machine-baselines",
                str(mb),
                *args,
            ],
        )

    r = run(suite("intel", loss_v=2.52, run="r2"), "first")  # first run on this class: recorded, said so
    assert r.exit_code == 0, r.output
    (rec,) = mb.glob("cpu-intel-intel-*.jsonl")
    assert f"RECORDED the machine-bound baseline of machine intel: {rec}" in r.output and "not gated" in r.output
    assert {x.params["n"] for x in load_rows([rec])} == {1, 2} and not any(x.samples for x in load_rows([rec]))
    r = run(suite("intel", loss_v=2.52, run="r3"), "same")  # the next run here gates against it
    assert r.exit_code == 0, r.output
    assert f"machine-class baseline: {rec}" in r.output and "3 metrics: 3 same" in r.output
    r = run(suite("intel", loss_v=2.53, run="r4"), "changed")  # a real change of the losses on this class
    assert r.exit_code == 1 and "CHANGED toy n=1: final_loss 2.52 -> 2.53" in r.output, r.output
    assert "against this machine class's baseline" in r.output
    r = run(suite("intel", loss_v=float("nan"), run="r5"), "nan")
    assert r.exit_code == 1 and "INVALID" in r.output
    # an intended change re-records the committed baseline: the class file is stale, a fresh one is recorded
    b.write_text(b.read_text().replace('"r1"', '"r1b"'))
    r = run(suite("intel", loss_v=2.53, run="r6"), "after")
    assert r.exit_code == 0 and "ignored 1 stale machine-class baseline(s) of intel" in r.output, r.output
    assert len(list(mb.glob("cpu-intel-intel-*.jsonl"))) == 2
    # a run that fails is not recorded as a baseline
    mb2 = tmp_path / "mb2"
    r = run(suite("arm", bytes_v=8192, run="r7"), "bad", "--machine-baselines", str(mb2))
    assert r.exit_code == 1 and "none recorded because this run did not pass" in r.output and not mb2.exists()


def test_gate_on_another_machine_with_the_committed_baseline():
    """The committed baseline (recorded on the AMD CI machine) against itself as if run on another CPU:
    machine-bound figures drift there (losses, overflow counts), portable ones do not -> pass;
    one injected byte more -> fail."""
    import copy

    from conftest import ROOT

    base = load_rows([ROOT / "results" / "baseline" / "quick-cpu.jsonl"])
    cur = copy.deepcopy(base)
    bumped = 0
    for r in cur:
        r.fingerprint = {**r.fingerprint, "machine_id": "another-cpu", "label": "cpu-other"}
        if r.fingerprint.get("numerics_id"):  # native kernels on another CPU: other numerics too
            r.fingerprint["numerics_id"] = "another-cpu-native"
        for k, m in r.metrics.items():
            if m.deterministic and isinstance(m.value, float) and "loss" in k:
                m.value *= 1.014  # another CPU's kernels: +1.4% after 150 steps (issue 13)
                bumped += 1
    assert bumped > 20
    cfg = GateConfig(only="deterministic")
    rep = evaluate(base, cur, cfg)
    assert rep.exit_code == 0, [(i.plugin, i.metric, i.note) for i in rep.by_outcome("regression")][:5]
    assert sum(1 for i in rep.items if i.part == "portable" and i.verdict == "same") > 1000
    victim = next(
        r
        for r in cur
        if r.ok
        and any(k.endswith("bytes") and isinstance(m.value, int) and m.deterministic for k, m in r.metrics.items())
    )
    name = next(
        k for k, m in victim.metrics.items() if k.endswith("bytes") and isinstance(m.value, int) and m.deterministic
    )
    victim.metrics[name].value += 1
    rep = evaluate(base, cur, cfg)
    assert rep.exit_code == 1 and [i.metric for i in rep.by_outcome("regression")] == [name]


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
    assert r.exit_code == 0 and "--confirm" in r.output and "exit 0 pass, 1 regression" in r.output


def test_param_flags():
    assert param_flags({"n": 64, "extra_ms": 0.5, "flash": True, "x": None, "dtype": "bf16"}) == [
        "--n",
        "64",
        "--extra-ms",
        "0.5",
        "--flash",
        "true",
        "--dtype",
        "bf16",
    ]


# --- the real CLI, with a real rerun ----------------------------------------------------------
RERUN_SLOW = """\
import json, subprocess, sys
out, rest = sys.argv[1], sys.argv[2:]
rest[rest.index("--extra-ms") + 1] = "2"  # the slower code: its 2 ms sleep per step
raw = out + ".raw"
subprocess.run([sys.executable, "-m", "bench.cli", "run", *rest, "--out", raw, "--format", "none"], check=True)
with open(out, "a") as f:
    for line in open(raw):
        r = json.loads(line)
        if "extra_ms" in r["params"]:
            r["params"]["extra_ms"] = 0.0  # the code is slower; the case is the same
        f.write(json.dumps(r) + "\\n")
"""


def test_real_cli_confirming_rerun(tmp_path, thirdparty, monkeypatch):
    """toy n=64 (one thread): a real baseline run, and a current file of the same rows 100x slower
    (every timing sample and the median). The default rerun (the real `bench run`) does not
    reproduce it: pass. A rerun command that adds a 2 ms sleep per step confirms it: exit 1. (The
    gate runs in-process; its reruns are real `bench run` processes.)"""
    monkeypatch.setenv("PYTHONPATH", str(thirdparty))
    base, cur = tmp_path / "base.jsonl", tmp_path / "cur.jsonl"
    args = ("run", "--plugin", "toy", "--n", "64", "--threads", "1", "--out", str(base))
    r = run_bench(*args, "--format", "none", pythonpath=[thirdparty])
    assert r.returncode == 0, r.stderr
    rows = load_rows([base])
    for rr in rows:
        if rr.is_case:
            rr.samples["time_s"] = [x * 100 for x in rr.samples["time_s"]]
            rr.metrics["time_ms"] = dataclasses.replace(rr.metrics["time_ms"], value=rr.metrics["time_ms"].value * 100)
    cur.write_text("".join(json.dumps(rr.to_json()) + "\n" for rr in rows))

    def regress(*extra: str):
        return CliRunner().invoke(main, ["regress", "--baseline", str(base), "--current", str(cur), *extra])

    # --min-effect 20 (2000%): the injected slowdown is ~400x (2 ms on a ~5 us step); separate processes
    # on a shared, busy machine differed by up to +61% here (the default 5% floor is the gate's, not
    # this test's subject)
    r = regress("--min-effect", "20")
    assert r.exit_code == 0, r.output
    assert "confirming rerun:" in r.stderr and "--threads 1" in r.stderr and "--n 64" in r.stderr
    assert "not reproduced by rerun 1" in r.stdout

    script = tmp_path / "rerun_slow.py"
    script.write_text(RERUN_SLOW)
    tmpl = f"{{python}} {script} {{out}} --plugin {{plugin}} {{flags}} {{run_opts}}"
    r = regress("--json", str(tmp_path / "v.json"), "--min-effect", "20", "--rerun-cmd", tmpl)
    assert r.exit_code == 1, r.output
    assert "SLOWER toy n=64 extra_ms=0.0: time_ms" in r.stdout and "confirmed by rerun 1" in r.stdout
    v = json.loads((tmp_path / "v.json").read_text())
    assert v["exit_code"] == 1 and [i["metric"] for i in v["items"] if i["outcome"] == "regression"] == ["time_ms"]
    # a rerun command that fails is a harness error
    r = regress("--rerun-cmd", "false")
    assert r.exit_code == 3 and "rerun exited 1" in r.stderr, r.output


def test_module_import_is_light():
    import subprocess

    code = "import sys, bench.regress, bench.compare, bench.pytest_benchmark_io; print(any(m in sys.modules for m in ('pandas', 'scipy', 'torch')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"
