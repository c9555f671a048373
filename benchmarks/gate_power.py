"""Power of the regression gate: false alarms on A/A comparisons, and the slowdowns it catches.

Run: python benchmarks/gate_power.py [--quick] [--reps N] [--slowdowns 0.02,0.05,...] [--threads T] [--processes] [--ab]
     python benchmarks/gate_power.py --interleaved [--pairs 16]   (= make gate-power: A/A and 5%; ~11 min on 2 busy cores)

Each trial measures a real step (an n x n fp32 matmul, ~1 ms on one core) twice with the core
timing engine (bench.timing.measure, its default stop rule: 95% CI of the median within 2% over at
least 0.1 s of samples):
the baseline, then the current code = the same step plus a busy-wait of X% of the step's
median (the injected slowdown; X = 0 is an A/A comparison of the same code). Both sets of raw
samples become result rows and go through bench.regress.evaluate with the default GateConfig,
including its confirming rerun (which measures the current step again). A trial is caught
when the gate exits 1 (a confirmed regression); for A/A any exit 1 is a false alarm and exit 2
an inconclusive verdict. With --processes every run (baseline, current, rerun) is measured in a
fresh interpreter, so between-process variation (what CI sees between two `bench run`s) is in
the samples too. With --ab every trial also runs under the rules before the current ones (engine
without a minimum window, independent-samples CIs, a noisy timing -> inconclusive), alternating
with them, so both sets of figures see the same machine. With --interleaved every trial also runs
the A/B mode of `bench regress --ab` (bench/regress_ab.py), alternating with the current mode under
the same load: --pairs blocks, each one run of A (the step) and one of B (the step + X%) back to back
in balanced shuffled order, each run in its own forked process (torch imported once: the start-up is
outside the timed window anyway), the run's median as its value; the pairs go through
bench.regress_ab.gate (Wilcoxon signed-rank on log ratios, >= 2% geo-mean floor) and a slowdown
through its confirming round of --pairs fresh blocks, exactly as the command does. Measured on this
machine; nothing here is simulated.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

import torch
from tabulate import tabulate

from bench.regress import GateConfig, evaluate
from bench.rows import Row
from bench.timing import measure


def busy_wait(seconds: float) -> None:
    """Spin (not sleep: sleep overshoots by ~50-100 us) for the injected slowdown."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def make_step(n: int, extra_s: float):
    a, b = torch.randn(n, n), torch.randn(n, n)

    def step() -> None:
        a @ b
        if extra_s:
            busy_wait(extra_s)

    return step


def as_row(samples: list[float], n: int, run: str) -> Row:
    med = statistics.median(samples)
    return Row.from_json(
        {
            "schema": "bench.row/1",
            "run_id": run,
            "case_id": "gate-001",
            "plugin": "gate-power",
            "profile": "quick",
            "kind": "case",
            "params": {"n": n},
            "labels": {},
            "status": "ok",
            "message": "",
            "metrics": {
                "time_ms": {"value": med * 1e3, "unit": "ms", "source": "measured"},
                "flops": {"value": 2 * n**3, "unit": "FLOP", "source": "formula", "deterministic": True},
            },
            "samples": {"time_s": samples},
            "fingerprint": {"label": "cpu-local", "machine_id": "local"},
        }
    )


# --ab: the rules before this change, run trial by trial beside the current ones under the same load.
# Engine: stop at the CI target with no minimum window, CI of independent samples; gate: independent-
# samples CIs, and a timing too noisy to gate makes the gate inconclusive (exit 2).
OLD_MEASURE: dict[str, Any] = {"min_time_s": 0.0, "serial_ci": False}
RULES = ("current", "old")


def config(rules: str) -> GateConfig:
    return GateConfig(serial_ci=False, fail_on_noisy=True) if rules == "old" else GateConfig()


CHILD = """
import json, sys, torch
sys.path.insert(0, {here!r})
torch.set_num_threads({threads})
from gate_power import make_step
from bench.timing import measure
print(json.dumps(measure(make_step({n}, {extra!r}), "cpu", max_time_s={max_time!r}, **{kw!r}).samples_s))
"""


def forked(fn: Any) -> Any:
    """fn() in a forked child process (a fresh process per run, as each `bench run` case); its JSON result."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(r)
        try:
            data = json.dumps(fn()).encode()
        except BaseException:
            data = b"null"
        with os.fdopen(w, "wb") as f:
            f.write(data)
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    out = json.loads(data)
    if out is None:
        raise RuntimeError("a forked measurement failed")
    return out


def trial_ab(n: int, base_s: float, slowdown: float, max_time: float, pairs: int, rng: Any) -> dict[str, Any]:
    """One A/B comparison as `bench regress --ab` makes it: interleaved pairs, paired gate, confirming round."""
    from bench.regress import finish
    from bench.regress_ab import Case, gate, schedule
    from bench.regress_rules import compare_paired

    extra = slowdown * base_s

    def run(extra_s: float, run_id: str) -> Row:
        xs = forked(lambda: measure(make_step(n, extra_s), "cpu", max_time_s=max_time).samples_s)
        return as_row(xs, n, run_id)

    def blocks() -> list[tuple[list[Row], list[Row]]]:
        out = []
        for blk in schedule(1, pairs, rng):
            a_first = blk[0][1]
            got = {}
            for who in ("A", "B") if a_first else ("B", "A"):
                got[who] = run(0.0 if who == "A" else extra, who)
            out.append(([got["A"]], [got["B"]]))
        return out

    cfg = GateConfig()
    case = Case("gate-power", {"n": n}, 0.0)
    first = blocks()
    items, msgs, compared = gate([case], {0: first}, cfg, lambda c: blocks())
    rep = finish(items, msgs, compared, cfg)
    it = next(i for i in rep.items if i.metric == "time_ms")
    key = it.key
    from bench.regress_ab import paired_values

    r = compare_paired(*paired_values(first, key, "time_ms"), "lower", cfg)
    return {
        "exit": rep.exit_code,
        "first": "slower" if it.reruns else it.verdict,
        "change": it.change,
        "noisy": it.verdict == "noisy",
        "thr": r.detect,
        "p": it.p,
        "n": (pairs, pairs),
        "reruns": len(it.reruns),
    }


def timed(n: int, extra_s: float, max_time: float, processes: bool, rules: str = "current") -> list[float]:
    """Raw samples of one measurement: in this process, or (--processes) in a fresh interpreter
    each time, as separate `bench run` invocations would be."""
    kw = OLD_MEASURE if rules == "old" else {}
    if not processes:
        return measure(make_step(n, extra_s), "cpu", max_time_s=max_time, **kw).samples_s
    code = CHILD.format(
        here=os.path.dirname(os.path.abspath(__file__)),
        threads=torch.get_num_threads(),
        n=n,
        extra=extra_s,
        max_time=max_time,
        kw=kw,
    )
    env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env, timeout=300)
    return json.loads(out.stdout.strip().splitlines()[-1])


def trial(
    n: int, base_s: float, slowdown: float, max_time: float, processes: bool, rules: str = "current"
) -> dict[str, Any]:
    base = timed(n, 0.0, max_time, processes, rules)
    cur = timed(n, slowdown * base_s, max_time, processes, rules)
    reruns = []

    def rerun(row: Row) -> list[Row]:
        t = timed(n, slowdown * base_s, max_time, processes, rules)
        reruns.append(t)
        return [as_row(t, n, "rerun")]

    rep = evaluate([as_row(base, n, "base")], [as_row(cur, n, "cur")], config(rules), rerun=rerun)
    it = next(i for i in rep.items if i.metric == "time_ms")
    return {
        "exit": rep.exit_code,
        "first": it.verdict if not it.reruns else "slower",
        "change": it.change,
        "noisy": it.verdict == "noisy",
        "thr": it.threshold,
        "p": it.p,
        "n": (len(base), len(cur)),
        "reruns": len(reruns),
    }


HEADERS = [
    "injected slowdown",
    "trials",
    "flagged before rerun",
    "exit 1 (confirmed)",
    "exit 0 (pass)",
    "exit 2 (inconclusive)",
    "not gated (noisy)",
    "median change [%]",
    "change range [%]",
    "median min effect [%]",
    "median p",
    "samples/run",
]


def level_row(x: float, res: list[dict[str, Any]]) -> list[Any]:
    ex = [r["exit"] for r in res]
    changes = [r["change"] for r in res if r["change"] is not None]
    thr = [r["thr"] for r in res if r["thr"] is not None and r["thr"] == r["thr"]]
    ps = [r["p"] for r in res if r["p"] is not None]
    return [
        "0% (A/A)" if x == 0 else f"{100 * x:g}%",
        len(res),
        sum(1 for r in res if r["first"] == "slower"),
        ex.count(1),
        ex.count(0),
        ex.count(2),
        sum(1 for r in res if r["noisy"]),
        f"{100 * statistics.median(changes):+.1f}" if changes else "",
        f"{100 * min(changes):+.1f} .. {100 * max(changes):+.1f}" if changes else "",
        f"{100 * statistics.median(thr):.1f}" if thr else "",
        f"{statistics.median(ps):.2g}" if ps else "",
        f"{statistics.median([r['n'][0] for r in res]):g}",
    ]


def verdicts(levels: list[float], results: dict[float, list[dict[str, Any]]], reps: int) -> list[str]:
    caught = {x: sum(1 for r in results[x] if r["exit"] == 1) for x in levels}
    need = reps - max(1, reps // 20)  # 19 of 20
    reliable = [x for x in levels if x > 0 and caught[x] >= need and all(caught[y] >= need for y in levels if y >= x)]
    out = []
    if 0.0 in results:
        ex = [r["exit"] for r in results[0.0]]
        out.append(
            f"A/A: {ex.count(1)} false alarms (exit 1) and {ex.count(2)} inconclusive (exit 2) in {reps} comparisons"
        )
    if 0.2 in caught:
        out.append(f"20% slowdown: caught in {caught[0.2]} of {reps}")
    out.append(
        f"smallest slowdown caught in >= {need} of {reps} (and every larger one): "
        + (f"{100 * min(reliable):g}%" if reliable else "none of the levels tried")
    )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="5 trials per level, fewer levels (about 10 s)")
    ap.add_argument("--reps", type=int, default=None, help="trials per slowdown level (default 20; quick 5)")
    ap.add_argument(
        "--slowdowns", default=None, help="comma-separated fractions (default 0,0.02,0.05,0.075,0.1,0.15,0.2)"
    )
    ap.add_argument("--n", type=int, default=256, help="matmul size (default 256: ~0.3 ms on one core)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--max-time", type=float, default=2.0, help="time cap per measurement, s (the engine's default)")
    ap.add_argument(
        "--processes",
        action="store_true",
        help="measure each run in a fresh interpreter (between-process noise, as in CI; ~2 s per run)",
    )
    ap.add_argument(
        "--interleaved",
        action="store_true",
        help="also run every trial in the A/B mode of `bench regress --ab` (interleaved pairs, paired test), "
        "alternating with the current mode under the same load",
    )
    ap.add_argument("--pairs", type=int, default=16, help="--interleaved: A/B pairs per comparison (default 16)")
    ap.add_argument(
        "--ab",
        action="store_true",
        help="also run every trial with the old rules (no minimum window, independent-samples CIs, "
        "noisy -> inconclusive), alternating with the current ones under the same load",
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    reps = args.reps or (5 if args.quick else 20)
    levels = (
        [float(x) for x in args.slowdowns.split(",")]
        if args.slowdowns
        else (
            [0.0, 0.05, 0.2]
            if args.quick
            else ([0.0, 0.05] if args.interleaved else [0.0, 0.02, 0.05, 0.075, 0.1, 0.15, 0.2])
        )
    )
    if args.ab and args.interleaved:
        ap.error("--ab (old rules) and --interleaved: one at a time")
    rules: tuple[str, ...] = RULES if args.ab else (("current", "A/B") if args.interleaved else RULES[:1])
    base_s = measure(make_step(args.n, 0.0), "cpu", max_time_s=1.0).median_s
    import random

    rng = random.Random(0)
    t0, load0 = time.time(), os.getloadavg()[0]
    results: dict[str, dict[float, list[dict[str, Any]]]] = {r: {x: [] for x in levels} for r in rules}
    for x in levels:
        for k in range(reps):
            for r in rules if k % 2 == 0 else rules[::-1]:  # alternating order: drift hits both alike
                if r == "A/B":
                    results[r][x].append(trial_ab(args.n, base_s, x, args.max_time, args.pairs, rng))
                else:
                    results[r][x].append(trial(args.n, base_s, x, args.max_time, args.processes, r))
    cfg = GateConfig()
    print(
        f"regression gate power: {reps} trials per level; step = {args.n}x{args.n} fp32 matmul, median "
        f"{base_s * 1e3:.3f} ms on {args.threads} torch thread(s), {os.cpu_count()} CPU cores (shared machine); "
        f"slowdown = busy-wait of X% of the step; each run measured "
        f"{'in a fresh process' if args.processes else 'in this process'}; all measured; load average "
        f"{load0:.1f} -> {os.getloadavg()[0]:.1f} (above {os.cpu_count()}: other work shared the cores, and "
        "the figures measure that contention too)"
    )
    print(
        f"gate: default GateConfig (alpha {cfg.alpha}, min effect max({100 * cfg.min_effect:g}%, {cfg.ci_k:g} x CI, "
        f"{cfg.iqr_k:g} x IQR), {cfg.confirm} confirming rerun); timing engine stop rule: CI <= 2% over >= 0.1 s, "
        f"or {args.max_time:g} s"
    )
    for r in rules:
        if args.interleaved:
            print(
                f"\n{r} mode"
                + (
                    ": baseline run, then current run (as `bench regress --baseline --current`), as above"
                    if r == "current"
                    else f": `bench regress --ab`: {args.pairs} interleaved A/B pairs per comparison (balanced "
                    "shuffled order, a forked process per run); paired Wilcoxon, >= 2% geo-mean floor, a confirming "
                    f"round of {args.pairs} pairs; 'median min effect' = the pairs' detectable effect (80% power) "
                    "in the first round; samples/run = pairs"
                )
            )
        elif args.ab:
            print(
                f"\n{r} rules"
                + (
                    ": engine without a minimum window, independent-samples CIs; noisy -> exit 2"
                    if r == "old"
                    else ": as above"
                )
            )
        print(tabulate([level_row(x, results[r][x]) for x in levels], headers=HEADERS))
        print("\n".join(verdicts(levels, results[r], reps)))
    print(f"({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
