"""Timing agreement: the engine's median vs torch.utils.benchmark's, for the same ops, side by side.

Run: python benchmarks/timing_agreement.py [--quick]
For each op the two timers alternate (engine, t.u.b., engine, ...) so both see the same machine
state; the table prints both medians (measured), their ratio, the engine's reported noise (95% CI
half-width of the median and IQR/median), and whether the difference is within that noise.
This is a benchmark that prints figures, not a timed assertion: shared machines are noisy.
"""
from __future__ import annotations

import argparse
import sys

import torch
import torch.utils.benchmark as tub
from tabulate import tabulate

from bench.stats import median
from bench.timing import measure


def ops(quick: bool):
    sizes = (128, 512) if quick else (128, 512, 1024)
    for n in sizes:
        a, b = torch.randn(n, n), torch.randn(n, n)
        yield f"matmul fp32 {n}x{n}", (lambda a=a, b=b: a @ b)
    mlp = torch.nn.Sequential(torch.nn.Linear(512, 2048), torch.nn.GELU(), torch.nn.Linear(2048, 512))
    x = torch.randn(64, 512)
    yield "MLP 512-2048-512 fwd, batch 64", (lambda: mlp(x))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer ops and rounds")
    args = ap.parse_args(argv)
    rounds = 2 if args.quick else 3
    rows = []
    for name, fn in ops(args.quick):
        eng, ref, ci, noise = [], [], [], []
        for _ in range(rounds):
            t = measure(fn, "cpu", max_time_s=0.5 if args.quick else 1.0)
            eng.append(t.median_s)
            ci.append(t.rel_ci)
            noise.append(t.noise_iqr)
            m = tub.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads()).blocked_autorange(
                min_run_time=0.5 if args.quick else 1.0
            )
            ref.append(m.median)
        e, r = median(eng), median(ref)
        diff = abs(e - r) / r
        tol = max(median(noise), median(ci))  # the engine's own noise figure for this op
        rows.append([name, f"{e * 1e6:.2f}", f"{r * 1e6:.2f}", f"{e / r:.3f}", f"{100 * median(ci):.2f}",
                     f"{100 * median(noise):.2f}", "yes" if diff <= tol else "no"])  # fmt: skip
    print(f"timing agreement on {torch.get_num_threads()} threads, {rounds} alternating rounds per op (all measured)")
    print(tabulate(rows, headers=["op", "engine median [us]", "torch.utils.benchmark median [us]", "ratio",
                                  "engine 95% CI half-width [%]", "engine IQR/median [%]", "within engine noise"]))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
