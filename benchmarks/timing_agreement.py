"""Timing agreement: the engine's median (bench.timing.measure) vs torch.utils.benchmark's
(Timer.blocked_autorange), for the same ops from ~10 us to ~1 s per call, side by side.

Run: python benchmarks/timing_agreement.py [--quick] [--threads N] [--rounds R]

Per op, both timers measure the same callable in alternating rounds (engine, reference, reference,
engine, ...: a slow drift of the machine hits both alike). The table prints both medians over the
rounds' samples (measured, us per call), their ratio, each one's 95% CI half-width of the median
by the engine's own rule (bench.stats.median_ci(serial=True): order statistics, widened for
dependent samples; for the engine that is the CI it reports, for the reference it is computed from
its raw block times), the block sizes, and the share of the window's thread-seconds each got on
the CPU (process CPU time / (wall x threads)).

Verdict per op (judge()):
  agree             |engine - reference| <= the 95% CI of the difference, hypot(CI_engine, CI_ref)
  DISAGREE          beyond it (exit 1)
  too noisy         either side's CPU share < 90% (other work took the cores: the samples then
                    measure the contention -- a 1 ms block and a 20 ms block absorb another
                    process's time slices differently), a CI half-width > 5%, or one timer's round
                    medians > 5% apart (the machine itself moved between rounds more than a
                    window's CI can show): not judged, said so.
Everything printed is measured on this machine; nothing is simulated.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.utils.benchmark as tub
from tabulate import tabulate

from bench.stats import median, median_ci
from bench.timing import measure

MIN_CPU_SHARE = 0.90  # below: the process waited for the cores >10% of the window
MAX_CI = 0.05  # a 95% CI half-width above 5%: too wide to judge agreement
MAX_DRIFT = 0.05  # one timer's round medians more than 5% apart: the machine moved between rounds


@dataclass
class Side:
    """One timer's figures for one op, over all rounds."""

    median_s: float
    half_s: float  # 95% CI half-width of the median, seconds
    block: str  # calls per sample, per round
    samples: int
    cpu_share: float  # the lowest of the rounds
    round_medians: tuple[float, ...] = ()  # s per call, one per round

    @property
    def drift(self) -> float:
        """How far the rounds' medians moved: (max - min) / median of them (0 with one round)."""
        r = self.round_medians
        return (max(r) - min(r)) / median(r) if len(r) > 1 else 0.0

    @property
    def rel(self) -> float:
        return self.half_s / self.median_s if self.median_s else math.inf


@dataclass
class Run:
    """One timer's raw samples (seconds per call, in time order) of one round."""

    samples: list[float]
    block: int
    cpu_share: float


def judge(e: Side, r: Side) -> tuple[str, str]:
    """(verdict, why) for one op: agree / DISAGREE / too noisy."""
    noisy = []
    for name, s in (("engine", e), ("reference", r)):
        if s.cpu_share < MIN_CPU_SHARE:
            noisy.append(f"{name} CPU share {100 * s.cpu_share:.0f}% < {100 * MIN_CPU_SHARE:.0f}%")
        if math.isinf(s.rel):
            noisy.append(f"{name}: {s.samples} samples, too few for a CI")
        elif s.rel > MAX_CI:
            noisy.append(f"{name} CI +/-{100 * s.rel:.1f}% > {100 * MAX_CI:.0f}%")
        if s.drift > MAX_DRIFT:
            noisy.append(f"{name} rounds {100 * s.drift:.1f}% apart > {100 * MAX_DRIFT:.0f}%")
    if noisy:
        return "too noisy to judge", "; ".join(noisy)
    diff = e.median_s - r.median_s
    allowed = math.hypot(e.half_s, r.half_s)
    within = abs(diff) <= allowed
    why = f"|diff| {100 * abs(diff) / r.median_s:.1f}% {'<=' if within else '>'} CI of the diff {100 * allowed / r.median_s:.1f}%"
    return ("agree" if within else "DISAGREE"), why


def ops(quick: bool) -> Iterator[tuple[str, Callable[[], object]]]:
    """fp32 matmuls from ~10 us (64^3) to ~1 s (4096^3 on one core), and a small MLP forward."""
    sizes = (64, 256, 512) if quick else (64, 128, 256, 512, 1024, 2048, 4096)
    for n in sizes:
        a, b = torch.randn(n, n), torch.randn(n, n)
        yield f"matmul fp32 {n}x{n}", (lambda a=a, b=b: a @ b)
    if not quick:
        mlp = torch.nn.Sequential(torch.nn.Linear(512, 2048), torch.nn.GELU(), torch.nn.Linear(2048, 512))
        x = torch.randn(64, 512)
        yield "MLP 512-2048-512 fwd, batch 64", (lambda: mlp(x))


def engine(fn: Callable[[], object], cap_s: float, min_samples: int) -> Run:
    t = measure(fn, "cpu", max_time_s=cap_s, min_samples=min_samples)
    return Run(t.samples_s, t.inner, t.extra.get("cpu_share", math.nan))


def reference(fn: Callable[[], object], threads: int, min_run_s: float) -> Run:
    cpu0, w0 = time.process_time(), time.perf_counter()
    m = tub.Timer(stmt="fn()", globals={"fn": fn}, num_threads=threads).blocked_autorange(min_run_time=min_run_s)
    share = (time.process_time() - cpu0) / ((time.perf_counter() - w0) * threads)
    return Run([x / m.number_per_run for x in m.raw_times], m.number_per_run, share)  # block times -> s per call


def pooled(runs: list[Run]) -> Side:
    """Median and 95% CI over every round's samples, by the engine's own rule (bench.stats.median_ci(serial=True):
    order statistics, widened for dependent samples); fewer than 6 samples: no CI."""
    xs = [x for r in runs for x in r.samples]
    ci = median_ci(xs, serial=True)
    half = (ci.high - ci.low) / 2 if len(xs) >= 6 else math.inf
    blocks = ",".join(str(r.block) for r in runs)
    rounds = tuple(median(r.samples) for r in runs)
    return Side(ci.median, half, blocks, len(xs), min(r.cpu_share for r in runs), rounds)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="three ops, one round (about 10 s)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for both timers (default 1)")
    ap.add_argument("--rounds", type=int, default=None, help="alternating rounds per op (default 3; quick 1)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cap = 1.0
    rounds = args.rounds or (1 if args.quick else 3)
    load0, t0 = os.getloadavg()[0], time.time()
    rows, verdicts = [], []
    for i, (name, fn) in enumerate(ops(args.quick)):
        fn()
        t1 = time.perf_counter()
        fn()
        per_call = time.perf_counter() - t1
        # each round: the engine's own rule (>= 0.1 s, CI <= 2%, cap 1 s) but at least `calls` samples, and the
        # reference's window >= its default 0.2 s (0.5 s here) and >= `calls` calls, so that a slow op (one
        # call per sample or block) still gives every side >= 10 samples over the rounds for a CI
        calls = max(3, math.ceil(10 / rounds))
        min_run = min(max(0.2 if args.quick else 0.5, calls * per_call), 15.0)
        cap_s = max(cap, calls * per_call)
        er: list[Run] = []
        rr: list[Run] = []
        for k in range(rounds):  # alternating order, so slow drifts of the machine hit both timers alike
            if (i + k) % 2:
                rr.append(reference(fn, args.threads, min_run))
                er.append(engine(fn, cap_s, calls))
            else:
                er.append(engine(fn, cap_s, calls))
                rr.append(reference(fn, args.threads, min_run))
        e, r = pooled(er), pooled(rr)
        verdict, why = judge(e, r)
        verdicts.append(verdict)
        rows.append(
            [
                name,
                f"{e.median_s * 1e6:.2f}",
                f"{r.median_s * 1e6:.2f}",
                f"{e.median_s / r.median_s:.3f}",
                ",".join(f"{x / y:.3f}" for x, y in zip(e.round_medians, r.round_medians)),
                f"{100 * e.rel:.2f}",
                "-" if math.isinf(r.rel) else f"{100 * r.rel:.2f}",
                f"{e.block} / {e.samples}",
                f"{r.block} / {r.samples}",
                f"{100 * e.cpu_share:.0f} / {100 * r.cpu_share:.0f}",
                verdict,
                why,
            ]
        )
    load1 = os.getloadavg()[0]
    print(
        f"timing agreement on {args.threads} torch thread(s), {os.cpu_count()} cores; load average "
        f"{load0:.1f} -> {load1:.1f}; all figures measured ({time.time() - t0:.0f} s)"
    )
    print(
        tabulate(
            rows,
            headers=[
                "op",
                "engine median [us]",
                "torch.utils.benchmark median [us]",
                "ratio engine/ref",
                "ratio per round",
                "engine 95% CI half-width [%]",
                "ref 95% CI half-width [%] (from raw blocks)",
                "engine calls per sample (each round) / samples",
                "ref calls per block (each round) / blocks",
                "CPU share engine / ref [%]",
                "verdict",
                "why",
            ],
        )
    )
    judged = [v for v in verdicts if v != "too noisy to judge"]
    bad = verdicts.count("DISAGREE")
    print(
        f"{len(judged)} of {len(verdicts)} ops judged: {len(judged) - bad} agree, {bad} disagree; "
        f"{len(verdicts) - len(judged)} too noisy to judge (CPU share of the window below "
        f"{100 * MIN_CPU_SHARE:.0f}%, a 95% CI half-width above {100 * MAX_CI:.0f}%, or round medians more than "
        f"{100 * MAX_DRIFT:.0f}% apart)"
    )
    whys = [w for v, w in zip(verdicts, [r[-1] for r in rows]) if v == "too noisy to judge"]
    if any("CPU share" in w for w in whys):
        print(
            f"Not judged: other work held the cores during {sum('CPU share' in w for w in whys)} op(s) (this process "
            f"got under {100 * MIN_CPU_SHARE:.0f}% of its threads' time; load average above): those medians measure "
            "the contention as much as the op."
        )
    varied = [w for w in whys if "CI" in w or "too few" in w or "apart" in w]
    if varied:
        print(
            f"Not judged: {len(varied)} op(s) varied too much to judge (a 95% CI half-width above "
            f"{100 * MAX_CI:.0f}%, too few samples, or round medians more than {100 * MAX_DRIFT:.0f}% apart), with "
            "or without contention: the machine's own noise (VM neighbours, memory bandwidth, clock changes)."
        )
    if whys:
        print("Rerun on a quiet machine to judge those.")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
