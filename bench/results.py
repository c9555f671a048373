"""The results store: schema-versioned JSON lines, one row per case (per rank), typed as bench.rows.Row.

Writing: rows are appended as whole lines under an exclusive flock, in one write(), then fsync'd --
so a row is on disk as soon as its case ends, a crash loses at most the case in flight, and two
runs appending to one file never interleave. A write that fails part-way (a full disk, a quota) is
rolled back: the file is truncated to where it was, and the error names the file. A torn last
line left by a killed writer is cut off by the next writer before it appends (never glued to).
Reading: under a shared flock (a reader never sees a writer's half line); every line is checked
(Row.from_json); a torn LAST line (no newline, not JSON) is skipped with a warning naming it and
every whole row is kept; a bad line in the middle is an error naming file:line. Only regular files
are read (a FIFO or /dev/zero named .jsonl is refused). load_frame() gives a pandas DataFrame.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import stat
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bench.errors import ResultsError, UsageError
from bench.rows import SCHEMA, Row

__all__ = ["SCHEMA", "ResultsError", "append_rows", "load_frame", "load_rows", "read_rows", "to_frame"]

MAX_FILE_BYTES = 2 * 2**30  # a result file larger than this is refused (2 GiB): not a bench file


def clean(o: Any) -> Any:
    """JSON-safe: NaN/inf become None (strict JSON), tuples lists, numpy scalars Python."""
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {str(k): clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [clean(v) for v in o]
    if hasattr(o, "item") and callable(o.item):
        try:
            return clean(o.item())
        except (TypeError, ValueError):
            pass
    if o is None or isinstance(o, (str, int, bool)):
        return o
    return str(o)


def _cut_torn_tail(fd: int) -> int:
    """Under the writer's lock: if the file does not end with a newline, truncate it to its last
    newline (a killed writer's half row). Returns the bytes cut."""
    size = os.fstat(fd).st_size
    if size == 0:
        return 0
    back = min(size, 1 << 20)
    tail = os.pread(fd, back, size - back)
    if tail.endswith(b"\n"):
        return 0
    nl = tail.rfind(b"\n")
    keep = (size - back + nl + 1) if nl >= 0 else (0 if back == size else size)
    if keep == size:  # no newline in the last MiB: not ours to cut
        return 0
    os.ftruncate(fd, keep)
    return size - keep


def append_rows(path: str | Path, rows: Iterable[Row | dict[str, Any]]) -> None:
    """Append rows as whole lines; on a failed write the file is left exactly as it was."""
    path = Path(path)
    data = "".join(
        json.dumps(clean(r.to_json() if isinstance(r, Row) else r), allow_nan=False) + "\n" for r in rows
    ).encode()
    if not data:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError as e:
        raise ResultsError(f"{path}: cannot write results: {e.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        cut = _cut_torn_tail(fd)
        if cut:
            print(
                f"warning: {path}: cut a torn last line ({cut} bytes, an interrupted write) before appending",
                file=sys.stderr,
            )
        start = os.fstat(fd).st_size
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
        except OSError as e:
            try:  # roll back the short write: no half row is ever left behind
                os.ftruncate(fd, start)
                os.fsync(fd)
            except OSError:
                pass
            raise ResultsError(
                f"{path}: writing {len(data)} bytes failed ({e.strerror}); the file was left as it was"
            ) from None
    finally:
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def check_writable(path: str | Path) -> None:
    """Refuse, before anything runs, a result file that cannot take rows: a device, a FIFO, a folder,
    a path in /proc or /sys, a read-only place. Creates nothing that was not there."""
    p = Path(path)
    if str(path).strip() == "":
        raise UsageError("--out: an empty path")
    if p.exists():
        st = p.stat()
        if not stat.S_ISREG(st.st_mode):
            raise UsageError(f"--out {p}: not a regular file (a device, FIFO or folder cannot hold results)")
        if not os.access(p, os.W_OK):
            raise UsageError(f"--out {p}: not writable")
        return
    parent = p.parent if str(p.parent) else Path(".")
    probe = parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    resolved = probe.resolve()
    if resolved.parts[:2] in (("/", "proc"), ("/", "sys"), ("/", "dev")):
        raise UsageError(f"--out {p}: {resolved.parts[1]} is not a place for result files")
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise UsageError(f"--out {p}: cannot create it ({probe} is not a writable folder)")


def resolve(paths: Iterable[str | Path]) -> list[Path]:
    """Files and folders (every *.jsonl below) -> files, in a stable order."""
    out: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*.jsonl") if f.is_file()))
        elif p.exists():
            out.append(p)
        else:
            raise ResultsError(f"{p}: no such file or folder")
    return out


def read_text(path: str | Path, expected: str = f"bench JSON lines ({SCHEMA})") -> str:
    """A result file's text under a shared lock, or a ResultsError naming the file (missing,
    unreadable, binary, not a regular file, absurdly large)."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as e:
        raise ResultsError(f"{path}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ResultsError(f"{path}: not a regular file; expected {expected}")
        if st.st_size > MAX_FILE_BYTES:
            raise ResultsError(f"{path}: {st.st_size / 2**30:.1f} GiB is too large for a result file")
        fcntl.flock(fd, fcntl.LOCK_SH)  # a writer appends whole lines under LOCK_EX
        chunks = []
        while True:
            b = os.read(fd, 1 << 20)
            if not b:
                break
            chunks.append(b)
    except OSError as e:
        raise ResultsError(f"{path}: {e.strerror}") from None
    finally:
        os.close(fd)
    try:
        return b"".join(chunks).decode("utf-8")
    except UnicodeDecodeError:
        raise ResultsError(f"{path}: not a text file; expected {expected}") from None


def read_rows(path: str | Path, text: str | None = None) -> list[Row]:
    """Validated rows of one bench JSON-lines file (text: its content, when already read)."""
    path = Path(path)
    if text is None:
        text = read_text(path)
    lines = text.split("\n")
    torn_tail = not text.endswith("\n") and text != ""
    rows: list[Row] = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        last = i == len(lines)
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            if last and torn_tail:
                print(
                    f"warning: {path}:{i}: torn last line skipped ({len(line)} bytes, an interrupted write); "
                    f"{len(rows)} whole rows kept",
                    file=sys.stderr,
                )
                break
            raise ResultsError(
                f"{path}:{i}: not valid JSON ({e.msg}); the file is corrupt or not a bench result"
            ) from None
        rows.append(Row.from_json(obj, f"{path}:{i}: ", str(path)))
    return rows


def load_rows(paths: Iterable[str | Path], *, nonempty: bool = False) -> list[Row]:
    """Every row of the files and folders; nonempty: no rows at all is a ResultsError (exit 2),
    the same for every command."""
    paths = list(paths)
    rows: list[Row] = []
    for f in resolve(paths):
        rows.extend(read_rows(f))
    if nonempty and not rows:
        raise ResultsError(f"{', '.join(map(str, paths))}: no result rows")
    return rows


RUNS = Path("results") / "runs"


def latest_or_given(paths: Iterable[str | Path], required: bool = True) -> list[Path]:
    """The given paths, else the newest result file under results/runs/ (required: none is an error)."""
    given = [Path(p) for p in paths]
    if given:
        return given
    runs = sorted((p for p in RUNS.glob("*.jsonl") if p.is_file()), key=lambda p: p.stat().st_mtime)
    if runs:
        print(f"(the latest run: {runs[-1]})", file=sys.stderr)
        return [runs[-1]]
    if required:
        raise UsageError("no results yet: run `bench run --plugin NAME` first, or pass a result file")
    return []


def to_frame(rows: list[Row]) -> Any:
    """One DataFrame row per result row: the file it was read from, plugin, status, device,
    param.*, label.*, metric values under their names, and units in df.attrs['units'][metric].
    Parameters and labels whose values are all integers stay integers where some rows lack them
    (pandas' nullable Int64, not float with NaN)."""
    import pandas as pd

    recs = []
    units: dict[str, str] = {}
    sources: dict[str, set[str]] = {}
    for r in rows:
        d: dict[str, Any] = {
            "file": r.file,
            "run_id": r.run_id,
            "plugin": r.plugin,
            "kind": r.kind,
            "status": r.status,
            "message": r.message,
            "device": r.device,
        }
        for k, v in r.params.items():
            d[f"param.{k}"] = v
        for k, v in r.labels.items():
            d[f"label.{k}"] = v
        for k, m in r.metrics.items():
            d[k] = m.value
            units.setdefault(k, m.unit)
            sources.setdefault(k, set()).add(m.source)
        recs.append(d)
    df = pd.DataFrame(recs)
    for c in df.columns:
        if c.startswith(("param.", "label.")):
            vals = [d[c] for d in recs if d.get(c) is not None]  # as read, before pandas made them float
            if vals and all(isinstance(v, int) and not isinstance(v, bool) for v in vals):
                df[c] = df[c].astype("Int64")
    df.attrs["units"] = units
    df.attrs["sources"] = {k: sorted(v) for k, v in sources.items()}
    return df


BASELINE_DIRS = ("baseline", "machine-baselines")  # the CI gate's references (Makefile BASELINE, MACHINE_BASELINES)


def load_frame(*paths: str | Path, baselines: bool = False) -> Any:
    """Any result set (files or folders) -> pandas DataFrame, in one call. A folder's CI baselines
    (results/baseline/, results/machine-baselines/: copies of runs kept for `make gate`) are left
    out unless baselines=True or named directly; the column `file` says where each row came from."""
    files: list[Path] = []
    for p in paths:
        p = Path(p)
        found = resolve([p])
        if p.is_dir() and not baselines:
            found = [f for f in found if not set(f.relative_to(p).parts[:-1]) & set(BASELINE_DIRS)]
        files += found
    return to_frame([r for f in files for r in read_rows(f)])
