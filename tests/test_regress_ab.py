"""The timing noise rule (issue 30 item 5) and the A/B mode of the gate (issue 33): `bench regress --ab REV`.

Noise rule: a timing too noisy to gate says what it could have detected, and a change far beyond
that fails (a 1000x slowdown at 60% noise); A/A at that noise passes; zero, negative and "+inf%"
timings never pass. A/B: the paired decision (Wilcoxon on log ratios of pairs measured close in
time) against drift that ruins a comparison of pooled runs; the balanced schedule; and one real
comparison of two revisions of a plugin in a git repo, the current one 2 ms per step slower.
"""

from __future__ import annotations

import math
import random
import re
import shutil
import subprocess

import pytest
from click.testing import CliRunner
from conftest import FIXTURES, run_bench
from test_regress import det, gate, row

from bench.cli import main
from bench.regress import GateConfig, evaluate
from bench.regress_ab import schedule
from bench.regress_rules import compare_paired, compare_samples


def lognormal(ms: float, n: int, sigma: float, seed: int) -> list[float]:
    """n durations (s) around ms with multiplicative noise (always positive, as real timings are)."""
    rng = random.Random(seed)
    return [ms / 1e3 * math.exp(sigma * rng.gauss(0, 1)) for _ in range(n)]


# --- the noise rule (issue 30 item 5) ----------------------------------------------------------------
def test_noisy_1000x_slowdown_fails_and_noisy_aa_passes(tmp_path):
    f = {"flops": det(10, "FLOP")}  # something gated besides the noisy timing
    base = [row({"n": 1}, f, lognormal(1.0, 40, 0.6, seed=1))]
    slow = [row({"n": 1}, f, [x * 1000 for x in lognormal(1.0, 40, 0.6, seed=2)], run="r2")]
    same = [row({"n": 1}, f, lognormal(1.0, 40, 0.6, seed=2), run="r2")]
    r = compare_samples(base[0].samples["time_s"], slow[0].samples["time_s"])
    assert r.verdict == "slower" and not r.noisy and "far beyond the noise" in r.why, r
    # the gate, its confirming rerun (the same 1000x slower code) included: exit 1 (was "not gated", exit 0)
    rep = evaluate(base, slow, GateConfig(), rerun=lambda _r: slow)
    assert rep.exit_code == 1, [i.note for i in rep.items]
    r = gate(tmp_path / "slow", base, slow, "--confirm", "0")
    assert r.exit_code == 1 and "SLOWER toy n=1: time_ms" in r.output and "far beyond the noise" in r.output, r.output
    # A/A at the same noise: not gated, and says what it could have detected
    r = gate(tmp_path / "aa", base, same, "--confirm", "0")
    assert r.exit_code == 0 and "1 noisy" in r.output, r.output
    assert re.search(r"not gated: could detect only a slowdown >= \d+\.\d% at this noise", r.output), r.output


@pytest.mark.parametrize(
    "base_s, cur_s, says",
    [
        ([0.0] * 20, [1e-3] * 20, "baseline: 20 of 20 raw samples are zero or negative"),  # was "+inf%", passed
        ([0.0] * 20, [0.0] * 20, "baseline: 20 of 20 raw samples are zero or negative"),  # all zero
        ([1e-3] * 20, [-1e-3] * 20, "current: 20 of 20 raw samples are zero or negative"),  # negative
    ],
)
def test_zero_and_negative_timings_fail(tmp_path, base_s, cur_s, says):
    r = gate(tmp_path, [row({"n": 1}, {}, base_s)], [row({"n": 1}, {}, cur_s, run="r2")], "--confirm", "0")
    assert r.exit_code == 1 and "INVALID toy n=1: time_ms" in r.output and says in r.output, r.output


def test_zero_timing_without_samples_fails(tmp_path):
    ms = {"value": 0.0, "unit": "ms", "source": "measured"}
    r = gate(tmp_path, [row({"n": 1}, {"time_ms": ms})], [row({"n": 1}, {"time_ms": {**ms, "value": 2.0}}, run="r2")])
    assert r.exit_code == 1 and "baseline value is 0 (a duration is positive)" in r.output, r.output


# --- the paired rule -----------------------------------------------------------------------------------
def drifting_pairs(effect: float, n: int, seed: int) -> tuple[list[float], list[float]]:
    """n A/B pairs on a drifting machine: each block's level moves by up to +-30% (uniform), the two
    runs of a pair differ by 1% noise around the injected effect."""
    rng = random.Random(seed)
    a, b = [], []
    for _ in range(n):
        level = 1e-3 * (1 + rng.uniform(-0.3, 0.3))
        a.append(level * math.exp(0.01 * rng.gauss(0, 1)))
        b.append(level * (1 + effect) * math.exp(0.01 * rng.gauss(0, 1)))
    return a, b


def test_paired_rule_catches_5pct_under_drift_that_pooled_runs_miss():
    a, b = drifting_pairs(0.05, 12, seed=3)
    r = compare_paired(a, b)
    assert r.verdict == "slower" and r.p is not None and r.p < 0.01 and r.ci is not None, r
    assert 0.04 < r.change < 0.06 and r.ci[0] > 0.02 and r.ci[1] < 0.08, r
    assert r.detect is not None and r.detect < 0.03 and r.pairs == 12
    assert "12 pairs, geo-mean change +" in r.why and "Wilcoxon p=" in r.why and "95% CI" in r.why
    # the same values as two pooled runs: the drift hides the 5% (not "slower")
    assert compare_samples(a, b).verdict != "slower"


def test_paired_rule_aa_and_directions():
    for seed in range(10):  # A/A under the same drift: never slower
        a, b = drifting_pairs(0.0, 12, seed=seed)
        assert compare_paired(a, b).verdict == "same", seed
    a, b = drifting_pairs(0.10, 12, seed=1)
    assert compare_paired(b, a).verdict == "faster"
    # higher is better (a throughput): B 10% lower is worse
    r = compare_paired(a, [x / 1.1 for x in a], better="higher")
    assert r.verdict == "slower" and abs(r.change - 0.1) < 1e-9, r
    # a change under the 2% floor passes even when significant
    r = compare_paired(a, [x * 1.01 for x in a])
    assert r.verdict == "same" and r.p is not None and r.p < 0.05 and "below floor 2%" in r.why, r


def test_paired_rule_too_few_pairs_invalid_and_noisy():
    a, b = drifting_pairs(0.5, 4, seed=0)
    r = compare_paired(a, b)
    assert r.verdict == "ambiguous" and r.p is None and "too few pairs to test (< 6)" in r.why, r
    assert compare_paired([1e-3] * 8, [0.0] * 8).invalid
    with pytest.raises(ValueError):
        compare_paired([1.0, 2.0], [1.0])
    # pairs so noisy (x/÷ e^1 per pair) that only a huge change is detectable: A/A not gated, 1000x fails
    rng = random.Random(5)
    a = [1e-3 * math.exp(rng.gauss(0, 1)) for _ in range(12)]
    noisy = [x * math.exp(rng.gauss(0, 1)) for x in a]
    r = compare_paired(a, noisy)
    assert r.noisy and "not gated: could detect only a change >=" in r.why and r.detect and r.detect > 0.5, r
    r = compare_paired(a, [x * 1000 for x in noisy])  # significant: decided whatever the noise
    assert r.verdict == "slower" and not r.noisy and r.p is not None and r.p < 0.001, r


def test_schedule_is_balanced_and_interleaved():
    blocks = schedule(3, 8, random.Random(0))
    assert len(blocks) == 8 and all(sorted(c for c, _ in blk) == [0, 1, 2] for blk in blocks)
    for c in range(3):
        firsts = [f for blk in blocks for cc, f in blk if cc == c]
        assert firsts.count(True) == 4 and firsts.count(False) == 4  # A first in half the blocks
    orders = {tuple(c for c, _ in blk) for blk in blocks}
    assert len(orders) > 1  # the case order is shuffled between blocks


def test_ab_usage_errors_exit_3(tmp_path):
    r = CliRunner().invoke(main, ["regress", "--plugin", "toy"])
    assert r.exit_code == 3 and "plugin options need --ab REV" in r.output, r.output
    r = CliRunner().invoke(main, ["regress", "--ab", "HEAD", "--baseline", str(tmp_path)])
    assert r.exit_code == 3 and "without --baseline/--current" in r.output, r.output
    r = CliRunner().invoke(main, ["regress"])
    assert r.exit_code == 3 and "or --ab REV" in r.output, r.output


def blocks_of(pairs: list[tuple[float, float]]) -> list[tuple[list, list]]:
    """A/B blocks of one toy case from (A seconds, B seconds) medians (each run: 9 samples around it)."""
    out = []
    for a, b in pairs:
        out.append(
            (
                [row({"n": 1}, {"flops": det(10, "FLOP")}, [a] * 9)],
                [row({"n": 1}, {"flops": det(10, "FLOP")}, [b] * 9, run="b")],
            )
        )
    return out


def test_gate_confirming_round():
    """bench.regress_ab.gate: a slower timing fails only when a fresh round of pairs shows it again."""
    from bench.regress import finish
    from bench.regress_ab import Case
    from bench.regress_ab import gate as ab_gate

    cfg = GateConfig()
    case = Case("toy", {"n": 1}, 0.0)
    a, b = drifting_pairs(0.10, 8, seed=2)
    slow = blocks_of(list(zip(a, b, strict=True)))
    a2, b2 = drifting_pairs(0.0, 8, seed=4)
    same = blocks_of(list(zip(a2, b2, strict=True)))
    for fresh, code, says in [
        (slow, 1, "confirmed by rerun 1"),
        (same, 0, "not reproduced by rerun 1"),
        (slow[:3], 2, "UNCONFIRMED: the confirming round got 3 pairs (deadline)"),
    ]:
        items, msgs, n = ab_gate([case], {0: slow}, cfg, lambda _c, f=fresh: f)
        rep = finish(items, msgs, n, cfg)
        it = next(i for i in items if i.metric == "time_ms")
        assert rep.exit_code == code and says in it.note, (code, it.note)
        assert next(i for i in items if i.metric == "flops").verdict == "same"
    # a case that now fails on B: a regression, whatever its timings
    broken = [(ra, [row({"n": 1}, {}, None, status="error", run="b")]) for ra, _ in slow]
    items, msgs, n = ab_gate([case], {0: broken}, cfg, None)
    assert finish(items, msgs, n, cfg).exit_code == 1 and any(i.verdict == "failed" for i in items)


# --- one real A/B comparison: two revisions of a plugin in a git repo -------------------------------
SLOWER = "            if p.extra_ms:\n"


@pytest.mark.long  # 12 real bench runs of two revisions: `make test-long` (CI), not make test
def test_ab_end_to_end_catches_a_slower_commit(tmp_path, thirdparty):
    """A git repo holding the toy plugin's module: A = its commit, B = the working tree where every
    step sleeps 2 ms more (on a ~10 us matmul: ~200x). `bench regress --ab HEAD` checks A out, runs
    both interleaved (6 pairs: 12 real `bench run`s) and fails the timing; the deterministic FLOP
    count is the same. Then an unknown revision and a deadline too short for 6 pairs: exit 3."""
    proj = tmp_path / "proj"
    shutil.copytree(FIXTURES / "thirdparty" / "bench_testplugins", proj / "bench_testplugins")
    git = ["git", "-C", str(proj), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run(["git", "init", "-q", str(proj)], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "A"], check=True)
    src = proj / "bench_testplugins" / "__init__.py"
    text = src.read_text()
    assert SLOWER in text
    src.write_text(text.replace(SLOWER, "            time.sleep(0.002)\n" + SLOWER))
    args = ("regress", "--ab", "HEAD", "--plugin", "toy", "--n", "32", "--threads", "1", "--pairs", "6")
    args += ("--max-time", "0.1", "--confirm", "0")  # the confirming round: test_gate_confirming_round
    r = run_bench(*args, "--deadline", "1200", pythonpath=[thirdparty], cwd=proj, timeout=1300)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert "ab plan: 1 case(s) x 2 revisions x 6 pairs = 12 runs" in out
    assert "its pyproject.toml has the same dependencies and plugins" in out  # this interpreter, REV's source
    assert "SLOWER toy n=32 extra_ms=0.0: time_ms" in out and "not confirmed (--confirm 0)" in out, out
    assert "6 pairs, geo-mean change +" in out and "Wilcoxon p=0.031" in out  # exact: 2 / 2^6
    assert "CHANGED" not in out and "INVALID" not in out  # the deterministic FLOP count: the same
    assert (proj / ".bench-ab").is_dir()
    r = run_bench("regress", "--ab", "nosuchrev", "--plugin", "toy", pythonpath=[thirdparty], cwd=proj)
    assert r.returncode == 3 and "--ab nosuchrev: not a commit of" in r.stderr, r.stderr
    r = run_bench(*args, "--deadline", "2", pythonpath=[thirdparty], cwd=proj)
    assert r.returncode == 3 and "fewer than the 6 a paired test needs" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
