"""Machine-class baselines for the gate's machine-bound metrics.

A committed baseline (results/baseline/quick-cpu.jsonl) holds on every machine for its portable
metrics. Its machine-bound ones (losses after many steps, overflow counts: see
bench.regress_rules.portability) hold only on the machine class that recorded it (fingerprint
machine_id). For any other class the gate keeps one file per class in a folder
(results/machine-baselines/ by default):

    <label>-<machine_id>-<digest>.jsonl

where digest is the first 12 hex digits of sha256 over the committed baseline's bytes: re-recording
the committed baseline (an intended change, `make baseline`) makes every class's file stale at once,
and the next gate on each class records a fresh one. Where none exists the gate records the current
run's machine-bound rows there (samples dropped: only deterministic figures are gated against it),
says so, and gates those metrics from the next run on; commit the file to gate them on that class
from a clean clone.

Why not run the baseline commit side by side instead (as asv and TorchBench do): that costs a
second run of the whole quick suite in every gate (the training cases that produce the
machine-bound figures are most of the suite's time) and an installable checkout of the old commit;
a class file costs nothing after its first run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from bench.regress_rules import is_meta, portability
from bench.rows import Row

DEFAULT_DIR = Path("results") / "machine-baselines"


def digest(paths: Sequence[Path]) -> str:
    """sha256 of the committed baseline files' bytes (in resolve order), first 12 hex digits."""
    from bench.results import resolve

    h = hashlib.sha256()
    for f in resolve(paths):
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


def _slug(s: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", s.lower()).strip("-")[:40] or "unknown"


def file_for(folder: Path, label: str, machine_id: str, dig: str) -> Path:
    return folder / f"{_slug(label)}-{_slug(machine_id)}-{dig}.jsonl"


def find(folder: Path, machine_id: str, dig: str) -> tuple[Path | None, list[Path]]:
    """(the class file recorded against this baseline, stale files of this class recorded against another)."""
    if not folder.is_dir():
        return None, []
    mine = sorted(folder.glob(f"*-{_slug(machine_id)}-*.jsonl"))
    current = [p for p in mine if p.stem.endswith("-" + dig)]
    return (current[-1] if current else None), [p for p in mine if p not in current]


def machine_bound_rows(rows: Iterable[Row]) -> list[Row]:
    """The ok rows that carry a machine-bound deterministic metric, without their raw samples."""
    out = []
    for r in rows:
        if not r.ok:
            continue
        if any(m.deterministic and not is_meta(k) and not portability(m, None)[0] for k, m in r.metrics.items()):
            out.append(dataclasses.replace(r, samples={}, file=""))
    return out


def record(path: Path, rows: list[Row]) -> int:
    """Write the machine-bound rows as a new class file (whole, or not at all). Returns rows written."""
    from bench.results import append_rows

    keep = machine_bound_rows(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        if keep:
            append_rows(tmp, keep)
        else:
            tmp.write_text("")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return len(keep)
