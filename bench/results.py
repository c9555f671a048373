"""The results store: schema-versioned JSON lines, one row per case (per rank).

Writing: each row is appended as one line under an exclusive flock, in one write(),
then fsync'd -- so a row is on disk as soon as its case ends, a crash loses at most the
case in flight, and two runs appending to one file never interleave or clobber.
Reading: every line is checked; a corrupt or foreign file is a ResultsError naming the
file and line. load_frame() gives a pandas DataFrame in one call.
"""
from __future__ import annotations

import fcntl
import json
import math
import os
from pathlib import Path
from typing import Any, Iterable

SCHEMA = "bench.row/1"
REQUIRED = ("schema", "run_id", "plugin", "params", "status", "metrics")


class ResultsError(Exception):
    """A results file that cannot be read; the message names file and line."""


def _clean(o: Any) -> Any:
    """JSON-safe: NaN/inf become None (strict JSON), tuples lists, numpy scalars Python."""
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    if hasattr(o, "item") and callable(o.item):
        try:
            return _clean(o.item())
        except (TypeError, ValueError):
            pass
    if o is None or isinstance(o, (str, int, bool)):
        return o
    return str(o)


def append_rows(path: str | Path, rows: Iterable[dict[str, Any]]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # keys in the order rows are built: parameters stay in the plugin's declared order in every table
    data = "".join(json.dumps(_clean(r), allow_nan=False) + "\n" for r in rows)
    if not data:
        return
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        view = memoryview(data.encode())
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def resolve(paths: Iterable[str | Path]) -> list[Path]:
    """Files and folders (every *.jsonl below) -> files, in a stable order."""
    out: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            out.extend(sorted(p.rglob("*.jsonl")))
        elif p.exists():
            out.append(p)
        else:
            raise ResultsError(f"{p}: no such file or folder")
    return out


def read_text(path: str | Path, expected: str = f"bench JSON lines ({SCHEMA})") -> str:
    """A result file's text, or a ResultsError naming the file (missing, unreadable, binary)."""
    try:
        return Path(path).read_text()
    except UnicodeDecodeError:
        raise ResultsError(f"{path}: not a text file; expected {expected}") from None
    except OSError as e:
        raise ResultsError(f"{path}: {e.strerror}") from None


def read_rows(path: str | Path, text: str | None = None) -> list[dict[str, Any]]:
    """Validated rows of one bench JSON-lines file (text: its content, when already read)."""
    path = Path(path)
    rows = []
    if text is None:
        text = read_text(path)
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ResultsError(f"{path}:{i}: not valid JSON ({e.msg}); the file is corrupt or not a bench result") from None
        if not isinstance(row, dict) or row.get("schema") is None:
            raise ResultsError(f"{path}:{i}: not a bench result row (no 'schema' field)")
        if row["schema"] != SCHEMA:
            raise ResultsError(f"{path}:{i}: schema {row['schema']!r} is not supported (this bench reads {SCHEMA})")
        missing = [k for k in REQUIRED if k not in row]
        if missing:
            raise ResultsError(f"{path}:{i}: row lacks {', '.join(missing)}")
        row["_file"] = str(path)
        rows.append(row)
    return rows


def load_rows(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for f in resolve(paths):
        rows.extend(read_rows(f))
    return rows


def metric_value(row: dict[str, Any], name: str) -> Any:
    m = row.get("metrics", {}).get(name)
    return m.get("value") if isinstance(m, dict) else None


def row_key(row: dict[str, Any]) -> str:
    """Identity of a row for matching across runs: plugin + params + labels + kind."""
    return json.dumps(
        {"plugin": row["plugin"], "kind": row.get("kind", "case"), "params": row["params"], "labels": row.get("labels", {})},
        sort_keys=True,
    )


def to_frame(rows: list[dict[str, Any]]):
    """One DataFrame row per result row: plugin, status, device, param.*, label.*, metric
    values under their names, and units in df.attrs['units'][metric]."""
    import pandas as pd

    recs = []
    units: dict[str, str] = {}
    sources: dict[str, set[str]] = {}
    for r in rows:
        d: dict[str, Any] = {
            "run_id": r["run_id"],
            "plugin": r["plugin"],
            "kind": r.get("kind", "case"),
            "status": r["status"],
            "message": r.get("message", ""),
            "device": r.get("fingerprint", {}).get("label"),
        }
        for k, v in r.get("params", {}).items():
            d[f"param.{k}"] = v
        for k, v in r.get("labels", {}).items():
            d[f"label.{k}"] = v
        for k, m in r.get("metrics", {}).items():
            d[k] = m.get("value")
            units.setdefault(k, m.get("unit", ""))
            sources.setdefault(k, set()).add(m.get("source", "measured"))
        recs.append(d)
    df = pd.DataFrame(recs)
    df.attrs["units"] = units
    df.attrs["sources"] = {k: sorted(v) for k, v in sources.items()}
    return df


def load_frame(*paths: str | Path):
    """Any result set (files or folders) -> pandas DataFrame, in one call."""
    return to_frame(load_rows(paths))
