"""pytest-benchmark interop: bench rows <-> pytest-benchmark's saved-run JSON.

pytest-benchmark saves one JSON object per run (what `pytest --benchmark-save` writes and
`pytest-benchmark compare FILE` reads):
  {"machine_info": {...}, "commit_info": {...}, "datetime": ISO, "version": str,
   "benchmarks": [{"group", "name", "fullname", "params", "param", "extra_info", "options",
                   "stats": {min, max, mean, stddev, rounds, median, iqr, q1, q3, iqr_outliers,
                             stddev_outliers, outliers, ld15iqr, hd15iqr, ops, total,
                             data: [seconds per round], iterations}}]}
(pytest_benchmark/stats.py and plugin.py, v5.2.)

Export: one benchmark per timed row and timing-sample series (samples "time_s" -> name
"toy[n=64]", "step_s" -> "toy[n=64]:step"); stats are computed from the raw samples, which are
kept in stats.data. The bench row itself (without samples) rides in extra_info["bench"], and our
fingerprint in machine_info["bench_fingerprint"], so a round trip gives back the same rows.
Rows without timing samples have no pytest-benchmark form and are left out (the caller says so).
Import: files we exported come back as the original rows; foreign files become rows of plugin
"pytest-benchmark" (params: the benchmark's params; labels: {"name": fullname, "group"}) with
time_ms = the median and samples time_s = stats.data (present when pytest-benchmark saved it:
--benchmark-json always, --benchmark-save with --benchmark-save-data).
"""

from __future__ import annotations

import hashlib
import json
import statistics
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from bench.results import SCHEMA, ResultsError, read_rows, read_text, resolve
from bench.rows import Row

FOREIGN_PLUGIN = "pytest-benchmark"


# --- stats, the way pytest-benchmark computes them (pytest_benchmark/stats.py, class Stats) ---
def _quartiles(s: Sequence[float]) -> tuple[float, float]:
    """q1, q3 of sorted data: Wikipedia's 'method 3' for odd n, 'method 2' for even n."""
    n = len(s)
    if n == 1:
        return s[0], s[0]
    if n % 2:
        k, q = n // 4, n % 4
        if q == 1:
            return 0.25 * s[k - 1] + 0.75 * s[k], 0.75 * s[3 * k] + 0.25 * s[3 * k + 1]
        return 0.75 * s[k] + 0.25 * s[k + 1], 0.25 * s[3 * k + 1] + 0.75 * s[3 * k + 2]
    return statistics.median(s[: n // 2]), statistics.median(s[n // 2 :])


def pb_stats(data: Sequence[float]) -> dict[str, Any]:
    """pytest-benchmark's stats dict (seconds) for raw per-round times, data included."""
    if not data:
        raise ValueError("no samples")
    d = [float(x) for x in data]
    s = sorted(d)
    n = len(d)
    mean = statistics.mean(d)
    sd = statistics.stdev(d) if n > 1 else 0.0
    q1, q3 = _quartiles(s)
    iqr = q3 - q1
    if n == 1:
        lo = hi = d[0]
    else:
        lo = s[bisect_left(s, q1 - 1.5 * iqr)]
        pos = bisect_right(s, q3 + 1.5 * iqr)
        hi = s[-1] if pos == n else s[pos]
    sd_out = sum(1 for x in d if x < mean - sd or x > mean + sd)
    iqr_out = sum(1 for x in d if x < q1 - 1.5 * iqr or x > q3 + 1.5 * iqr)
    total = sum(d)
    return {
        "min": s[0],
        "max": s[-1],
        "mean": mean,
        "stddev": sd,
        "rounds": n,
        "median": statistics.median(d),
        "iqr": iqr,
        "q1": q1,
        "q3": q3,
        "iqr_outliers": iqr_out,
        "stddev_outliers": sd_out,
        "outliers": f"{sd_out};{iqr_out}",
        "ld15iqr": lo,
        "hd15iqr": hi,
        "ops": n / total if total else 0,
        "total": total,
        "data": d,
        "iterations": 1,
    }


# --- export -------------------------------------------------------------------------------
def timing_series(row: dict[str, Any]) -> list[str]:
    """The row's sample series that are timings in seconds ("time_s", "step_s", ...)."""
    return [k for k, v in row.get("samples", {}).items() if k.endswith("_s") and not k.endswith("_per_s") and v]


def _param_str(row: dict[str, Any]) -> str:
    parts = [f"{k}={v}" for k, v in row.get("params", {}).items()]
    parts += [f"{k}={v}" for k, v in row.get("labels", {}).items()]
    return "-".join(parts)


def _machine_info(fp: dict[str, Any]) -> dict[str, Any]:
    """pytest-benchmark's machine_info keys, filled from the row's fingerprint (not from this host)."""
    osname = str(fp.get("os") or "")
    system, _, release = osname.partition(" ")
    return {
        "node": fp.get("label", ""),
        "processor": fp.get("cpu_model", ""),
        "machine": "",
        "python_compiler": "",
        "python_implementation": "CPython",
        "python_implementation_version": fp.get("python", ""),
        "python_version": fp.get("python", ""),
        "python_build": [],
        "release": release,
        "system": system,
        "cpu": {"brand_raw": fp.get("cpu_model", ""), "count": fp.get("cpu_count")},
        "bench_fingerprint": fp,
    }


def _pb_version() -> str:
    try:
        from importlib.metadata import version

        return version("pytest-benchmark")
    except Exception:
        return "5.2.3"


def to_pytest_benchmark(rows: Iterable[Row]) -> tuple[dict[str, Any], int]:
    """One pytest-benchmark run document for rows of one run/machine; returns (doc, rows left out)."""
    docs = [r.to_json() for r in rows]
    benches = []
    skipped = 0
    fp: dict[str, Any] = {}
    started = None
    for r in docs:
        series = timing_series(r) if r.get("status") == "ok" else []
        if not series:
            skipped += 1
            continue
        fp = fp or r.get("fingerprint", {})
        started = started or r.get("started_at")
        core = {k: v for k, v in r.items() if k not in ("samples", "fingerprint", "_file")}
        for key in series:
            suffix = "" if key == "time_s" else ":" + key[:-2]
            param = _param_str(r)
            name = f"{r['plugin']}{suffix}" + (f"[{param}]" if param else "")
            benches.append(
                {
                    "group": r["plugin"] + (" (summary)" if r.get("kind") == "summary" else ""),
                    "name": name,
                    "fullname": f"bench::{r['plugin']}::{name}",
                    "params": {**r.get("params", {}), **r.get("labels", {})} or None,
                    "param": param or None,
                    "extra_info": {"bench": {"series": key, "row": core}},
                    "options": {"timer": "bench.timing", "source": "bench export"},
                    "stats": pb_stats(r["samples"][key]),
                }
            )
    git = fp.get("git", {}) or {}
    doc = {
        "machine_info": _machine_info(fp),
        "commit_info": {
            "id": git.get("sha") or "unknown",
            "time": None,
            "author_time": None,
            "dirty": bool(git.get("dirty")),
            "project": "bench",
            "branch": "(unknown)",
        },
        "benchmarks": benches,
        "datetime": started or "",
        "version": _pb_version(),
    }
    return doc, skipped


def write_pytest_benchmark(rows: Iterable[Row], path: str | Path) -> tuple[int, int]:
    """Write rows as a pytest-benchmark file; returns (benchmarks written, rows left out)."""
    from bench.results import write_atomic

    doc, skipped = to_pytest_benchmark(rows)
    write_atomic(Path(path), json.dumps(doc, indent=4, allow_nan=False, default=str), "--export-pytest-benchmark")
    return len(doc["benchmarks"]), skipped


# --- import -------------------------------------------------------------------------------
def _foreign_machine(mi: dict[str, Any]) -> dict[str, Any]:
    """A bench-style fingerprint for a foreign pytest-benchmark file's machine_info."""
    cpu = mi.get("cpu") or {}
    key = {k: mi.get(k) for k in ("node", "processor", "machine", "system", "release", "python_implementation")}
    key["cpu"] = cpu.get("brand_raw") or cpu.get("brand")
    key["count"] = cpu.get("count")
    mid = "pb-" + hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:9]
    label = (mi.get("node") or key["cpu"] or "pytest-benchmark").lower().replace(" ", "-")[:40]
    return {
        "label": label,
        "machine_id": mid,
        "cpu_model": key["cpu"],
        "cpu_count": key["count"],
        "python": mi.get("python_version"),
        "source": "pytest-benchmark machine_info",
    }


def _bad_shape(doc: dict[str, Any]) -> str | None:
    """What in a pytest-benchmark document is not the shape pytest-benchmark writes, or None."""
    if not isinstance(doc.get("machine_info"), (dict, type(None))):
        return "machine_info must be an object"
    for i, b in enumerate(doc["benchmarks"], 1):
        if not isinstance(b, dict):
            return f"benchmark {i} must be an object, got {type(b).__name__}"
        st = b.get("stats")
        if not isinstance(st, (dict, type(None))):
            return f"benchmark {i}: stats must be an object, got {type(st).__name__}"
        st = st or {}
        if not isinstance(st.get("data"), (list, type(None))) or not all(_number(x) for x in st.get("data") or []):
            return f"benchmark {i}: stats.data must be a list of numbers (seconds)"
        for k in ("median", "rounds", "total"):
            if k in st and not _number(st[k]):
                return f"benchmark {i}: stats.{k} must be a number, got {json.dumps(st[k], default=str)[:40]}"
        if not isinstance(b.get("params"), (dict, type(None))):
            return f"benchmark {i}: params must be an object, got {type(b['params']).__name__}"
        if not isinstance(b.get("extra_info"), (dict, type(None))):
            return f"benchmark {i}: extra_info must be an object"
    return None


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def from_pytest_benchmark(doc: dict[str, Any], path: str = "") -> list[Row]:
    """Rows of a pytest-benchmark run document (ours round-trip exactly; foreign ones convert)."""
    bad = _bad_shape(doc)
    if bad:
        raise ResultsError(f"{path}: not a pytest-benchmark file pytest-benchmark wrote: {bad}")
    mi = doc.get("machine_info") or {}
    fp = mi.get("bench_fingerprint") or _foreign_machine(mi)
    if not isinstance(fp, dict):
        raise ResultsError(f"{path}: machine_info.bench_fingerprint must be an object")
    run_id = (
        "pb-"
        + hashlib.sha256(
            json.dumps([doc.get("datetime"), doc.get("commit_info")], sort_keys=True, default=str).encode()
        ).hexdigest()[:8]
    )
    ours: dict[str, dict[str, Any]] = {}  # row json -> row (several series of one row merge back)
    out: list[dict[str, Any]] = []
    for b in doc.get("benchmarks", []):
        st = b.get("stats") or {}
        data = [float(x) for x in st.get("data") or []]
        info = (b.get("extra_info") or {}).get("bench")
        if isinstance(info, dict) and isinstance(info.get("row"), dict):
            k = json.dumps(info["row"], sort_keys=True)
            if k not in ours:
                r = dict(info["row"], samples={}, fingerprint=fp)
                ours[k] = r
                out.append(r)
            ours[k]["samples"][str(info.get("series", "time_s"))] = data
            continue
        if "median" not in st:
            raise ResultsError(f"{path}: benchmark {b.get('fullname') or b.get('name')!r} has no stats.median")
        # the median is the figure bench gates on; the raw rounds (when saved) ride along as samples
        metrics = {
            "time_ms": {"value": st["median"] * 1e3, "unit": "ms", "source": "measured"},
            "time_samples": {"value": st.get("rounds", len(data)), "unit": "count", "source": "measured"},
        }
        out.append(
            {
                "schema": SCHEMA,
                "run_id": run_id,
                "case_id": b.get("fullname") or b.get("name"),
                "plugin": FOREIGN_PLUGIN,
                "profile": "",
                "kind": "case",
                "params": {str(k): v for k, v in (b.get("params") or {}).items()},
                "labels": {
                    "name": str(b.get("fullname") or b.get("name")),
                    **({"group": b["group"]} if b.get("group") else {}),
                },
                "status": "ok",
                "message": "",
                "metrics": metrics,
                "samples": {"time_s": data} if data else {},
                "notes": [],
                "evidence": {},
                "started_at": doc.get("datetime", ""),
                "duration_s": st.get("total") if _number(st.get("total")) else 0.0,
                "fingerprint": fp,
            }
        )
    return [Row.from_json(r, f"{path}: benchmark {i}: ", path) for i, r in enumerate(out, 1)]


def looks_like_pytest_benchmark(doc: Any) -> bool:
    return isinstance(doc, dict) and isinstance(doc.get("benchmarks"), list) and "machine_info" in doc


MAX_PB_BYTES = 512 * 2**20  # a pytest-benchmark document larger than this is refused (read whole)


def _first_line_is_row(path: Path) -> bool:
    """The file's first line is a whole JSON object with a "schema": bench JSON lines, streamed."""
    from bench.results import _open_locked

    with _open_locked(path, "bench JSON lines or a pytest-benchmark JSON file") as f:
        first = f.readline(1 << 20)
    try:
        obj = json.loads(first)
    except (ValueError, RecursionError):
        return False
    return isinstance(obj, dict) and "schema" in obj


def read_pb(path: Path) -> list[Row] | None:
    """A pytest-benchmark document's rows, or None when the file is not one (bench lines, other JSON)."""
    text = read_text(path, "bench JSON lines or a pytest-benchmark JSON file", limit=MAX_PB_BYTES)
    if text.lstrip()[:1] != "{":
        return None
    try:
        doc = json.loads(text)  # JSON lines with more than one row fail here: "extra data"
    except (ValueError, RecursionError):
        return None
    return from_pytest_benchmark(doc, str(path)) if looks_like_pytest_benchmark(doc) else None


def read_any(path: str | Path) -> list[Row]:
    """One file: bench JSON lines (read a row at a time), or a pytest-benchmark JSON document."""
    path = Path(path)
    if not _first_line_is_row(path):
        pb = read_pb(path)
        if pb is not None:
            return pb
    return read_rows(path)


def load_any(paths: Iterable[str | Path]) -> list[Row]:
    """Files and folders (a folder: its *.jsonl, and *.json pytest-benchmark files) -> rows. In a
    folder, FIFOs and links to devices are skipped with a message (bench.results.regular_files)."""
    from bench.results import regular_files

    rows: list[Row] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            for f in resolve([p]):
                rows.extend(read_any(f))
            for f in regular_files(p, "*.json"):
                try:
                    if _first_line_is_row(f):
                        continue
                except ResultsError:
                    continue
                rows.extend(read_pb(f) or [])
        else:
            for f in resolve([p]):
                rows.extend(read_any(f))
    return rows
