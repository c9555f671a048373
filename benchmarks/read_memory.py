"""Peak memory of reading a large result file (issue 30 item 15): the streaming reader against the
former whole-file reader, side by side, on one file of real rows.

    .venv/bin/python benchmarks/read_memory.py [--mb 64]

Builds a file of about --mb MB by repeating the rows of a committed result file (results/*.jsonl,
real measurements: samples included), then, each in a fresh interpreter, reads it four ways and
prints the peak resident memory (ru_maxrss) above an interpreter that only imported the reader:
  count      iter_rows: one row at a time, none kept (what a command that needs no rows list pays)
  no samples load_rows(samples=False): every row kept, raw samples dropped (what show and claims hold)
  load       load_rows: every row kept as a Row, samples included (what compare / regress / report hold)
  old        the former reader: the whole text, then its lines, then every Row (text + lines + rows)
  text only  the whole text and its lines, no rows (the part `old` paid on top of `load`)
Figures are measured here, in MiB and as a multiple of the file's size."""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PROBES = {
    "import": "",
    "count": "n = sum(1 for _ in results.iter_rows(F))",
    "load": "rows = results.load_rows([F])",
    "no samples": "rows = results.load_rows([F], samples=False)",
    "old": (
        "text = open(F, encoding='utf-8').read(); lines = text.split('\\n'); "
        "rows = [Row.from_json(json.loads(x), '', F) for x in lines if x.strip()]"
    ),
    "text only": "text = open(F, encoding='utf-8').read(); lines = text.split('\\n')",
}


def peak_mib(code: str, path: Path) -> float:
    prog = (
        "import json, resource, sys\n"
        "from bench import results\n"
        "from bench.rows import Row\n"
        f"F = {str(path)!r}\n"
        f"{code}\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)\n"  # KiB on Linux -> MiB
    )
    out = subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True, check=True, cwd=ROOT)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=64.0, help="size of the file to read, MB")
    a = ap.parse_args()
    src = sorted((ROOT / "results").glob("*.jsonl"))[0]
    rows = src.read_bytes()
    with tempfile.TemporaryDirectory(prefix="bench-readmem-") as td:
        big = Path(td) / "big.jsonl"
        with open(big, "wb") as f:
            while f.tell() < a.mb * 1e6:
                f.write(rows)
        size = big.stat().st_size / 2**20
        nrows = rows.count(b"\n") * round(big.stat().st_size / len(rows))
        print(f"file: {size:.1f} MiB, {nrows} rows (repeats of {src.relative_to(ROOT)}, real rows with samples)")
        base = peak_mib(PROBES["import"], big)
        print(f"interpreter + bench.results imported: peak {base:.0f} MiB (measured; subtracted below)")
        print(f"{'reader':<10} {'peak above import [MiB]':>24} {'x file size':>12}")
        for name in ("count", "no samples", "load", "old", "text only"):
            extra = peak_mib(PROBES[name], big) - base
            print(f"{name:<10} {extra:>24.0f} {extra / size:>12.2f}")


if __name__ == "__main__":
    main()
