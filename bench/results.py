"""The results store: schema-versioned JSON lines, one row per case (per rank), typed as bench.rows.Row.

Writing: rows are appended as whole lines under an exclusive flock, in one write(), then fsync'd --
so a row is on disk as soon as its case ends, a crash loses at most the case in flight, and two
runs appending to one file never interleave. A write that fails part-way (a full disk, a quota) is
rolled back: the file is truncated to where it was (a file the write created is removed), and the
error names the file. Before appending, a last line without its newline is mended: a whole row
keeps its place (the newline is added), a killed writer's half row is cut however long it is --
never glued to. Rows are only appended to result files (check_writable refuses another file).
Reading: under a shared flock (a reader never sees a writer's half line), one line at a time
(iter_rows: memory holds one row, lines over MAX_LINE_BYTES refused); every line is checked
(parse_line, Row.from_json); a torn LAST line (no newline, not JSON) is skipped with a warning
naming it and every whole row is kept; a bad line in the middle is an error naming file:line. Only
regular files are read (a FIFO or /dev/zero named .jsonl is refused; in a folder, skipped and
said). load_frame() gives a pandas DataFrame.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import math
import os
import stat
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from bench.errors import ResultsError, UsageError
from bench.rows import SCHEMA, Row

__all__ = ["SCHEMA", "ResultsError", "append_rows", "load_frame", "load_rows", "read_rows", "to_frame"]

MAX_FILE_BYTES = 2 * 2**30  # a result file larger than this is refused (2 GiB): not a bench file
MAX_LINE_BYTES = 256 * 2**20  # one row longer than this is refused (a row is a few KB; samples included)


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


def _tail_start(fd: int, size: int) -> int:
    """Offset just past the file's last newline (0 when it has none), scanning back a MiB at a time:
    a torn line of any length is found (reads at most that line)."""
    end = size
    while end > 0:
        back = min(end, 1 << 20)
        chunk = os.pread(fd, back, end - back)
        nl = chunk.rfind(b"\n")
        if nl >= 0:
            return end - back + nl + 1
        end -= back
    return 0


def _is_row_text(b: bytes) -> bool:
    """A whole bench row (a JSON object with our schema): a last line that only lacks its newline."""
    try:
        obj = json.loads(b)
    except (ValueError, RecursionError):
        return False
    return isinstance(obj, dict) and obj.get("schema") == SCHEMA


def _mend_tail(fd: int, path: Path) -> None:
    """Under the writer's lock, before appending: a last line without its newline is either a whole
    row (kept: the newline is added) or a killed writer's half row (cut, however long it is); the
    next row never glues onto it. A file with no newline at all that is not ours is refused."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return
    keep = _tail_start(fd, size)
    tail = os.pread(fd, size - keep, keep) if size - keep <= MAX_LINE_BYTES else b""
    if tail and _is_row_text(tail):
        os.write(fd, b"\n")  # O_APPEND: a whole row that only lacked its newline stays
        print(f"warning: {path}: the last row lacked its newline; added it before appending", file=sys.stderr)
        return
    if keep == 0 and not os.pread(fd, 32, 0).lstrip().startswith(b'{"schema": "bench.row/'):
        raise ResultsError(f"{path}: not a bench result file (one line, no row); refusing to append to it")
    os.ftruncate(fd, keep)
    print(
        f"warning: {path}: cut a torn last line ({size - keep} bytes, an interrupted write) before appending",
        file=sys.stderr,
    )


def append_rows(path: str | Path, rows: Iterable[Row | dict[str, Any]]) -> None:
    """Append rows as whole lines; on a failed write the file is left exactly as it was."""
    path = Path(path)
    data = "".join(
        json.dumps(clean(r.to_json() if isinstance(r, Row) else r), allow_nan=False) + "\n" for r in rows
    ).encode()
    if not data:
        return
    created = False
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o644)
            created = True  # a failed first write removes it again: no 0-byte file is left
        except FileExistsError:
            fd = os.open(path, os.O_RDWR | os.O_APPEND)
    except OSError as e:
        raise ResultsError(f"{path}: cannot write results: {e.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        _mend_tail(fd, path)
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
                if created and start == 0:
                    os.unlink(path)
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


def check_writable(path: str | Path, flag: str = "--out") -> None:
    """Refuse, before anything runs, a result file that cannot take rows: a device, a FIFO, a folder,
    a path in /proc or /sys, a read-only place, an existing file that is not a result file.
    Creates nothing that was not there."""
    p = Path(path)
    if str(path).strip() in ("", "."):
        raise UsageError(f"{flag}: an empty path; name a result file (e.g. {flag} results/runs/mine.jsonl)")
    if p.exists():
        st = p.stat()
        if not stat.S_ISREG(st.st_mode):
            raise UsageError(f"{flag} {p}: not a regular file (a device, FIFO or folder cannot hold results)")
        if not os.access(p, os.W_OK):
            raise UsageError(f"{flag} {p}: not writable")
        check_result_file(p, flag)
        return
    check_creatable(p, flag)


def check_creatable(p: Path, flag: str) -> None:
    """A path that does not exist yet can be created as a file or folder: not under /proc, /sys or
    /dev, and its nearest existing folder is writable."""
    if str(p).strip() in ("", "."):
        raise UsageError(f"{flag}: an empty path")
    probe = p.parent if str(p.parent) else Path(".")
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    resolved = probe.resolve()
    if resolved.parts[:2] in (("/", "proc"), ("/", "sys"), ("/", "dev")):
        raise UsageError(f"{flag} {p}: {resolved.parts[1]} is not a place for output files")
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {p}: cannot create it ({probe} is not a writable folder)")


def write_atomic(path: Path, text: str, flag: str) -> None:
    """path's new content in one step (a temporary file beside it, then rename): a failed write leaves
    what was there, and no half file; errors are one line naming the path."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise UsageError(f"{flag} {path}: cannot write it ({e.strerror})") from None


def resolve(paths: Iterable[str | Path]) -> list[Path]:
    """Files and folders (every *.jsonl below) -> files, in a stable order. In a folder, what is not a
    regular file (a FIFO, a link to a device) is skipped with a message: reading it could block or never end."""
    out: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            out.extend(regular_files(p, "*.jsonl"))
        elif p.exists():
            out.append(p)
        else:
            raise ResultsError(f"{p}: no such file or folder")
    return out


def regular_files(folder: Path, pattern: str) -> list[Path]:
    """folder's files matching pattern (recursively), sorted; others of that name are skipped, said on stderr."""
    found = []
    for f in sorted(folder.rglob(pattern)):
        try:
            st = f.stat()
        except OSError:
            continue  # a dangling link
        if stat.S_ISREG(st.st_mode):
            found.append(f)
        elif not stat.S_ISDIR(st.st_mode):
            print(f"skipped {f}: not a regular file (a FIFO or a device is never read)", file=sys.stderr)
    return found


@contextlib.contextmanager
def _open_locked(path: Path, expected: str) -> Iterator[io.BufferedReader[io.FileIO]]:
    """A regular file opened for reading under a shared lock (a writer appends whole lines under
    LOCK_EX); never blocks on a FIFO and refuses devices and absurd sizes."""
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
        fcntl.flock(fd, fcntl.LOCK_SH)
        f = io.BufferedReader(io.FileIO(fd, "rb"), buffer_size=1 << 20)
    except BaseException:
        os.close(fd)
        raise
    with f:
        try:
            yield f
        except OSError as e:
            raise ResultsError(f"{path}: {e.strerror}") from None


def read_text(path: str | Path, expected: str = f"bench JSON lines ({SCHEMA})", limit: int = MAX_FILE_BYTES) -> str:
    """A whole file's text (a pytest-benchmark document) under a shared lock, or a ResultsError naming
    the file (missing, unreadable, binary, not a regular file, larger than limit bytes)."""
    path = Path(path)
    with _open_locked(path, expected) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ResultsError(f"{path}: larger than {limit / 2**20:.0f} MiB; expected {expected}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ResultsError(f"{path}: not a text file; expected {expected}") from None


def parse_line(line: str, where: str) -> Any:
    """One line's JSON, or a ResultsError naming where: invalid JSON, nesting too deep for any row,
    integers beyond Python's digit limit, and lone surrogates (text no terminal can print) refused."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise ResultsError(f"{where}not valid JSON ({e.msg}); the file is corrupt or not a bench result") from None
    except RecursionError:
        raise ResultsError(f"{where}JSON nested too deeply; not a bench result") from None
    except ValueError as e:  # an integer of thousands of digits (sys.int_info.str_digits_check_threshold)
        raise ResultsError(f"{where}not usable JSON ({e}); not a bench result") from None
    if "\\ud" in line.lower():  # a \uXXXX escape of a surrogate: it must pair up
        try:
            json.dumps(obj, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise ResultsError(
                f"{where}a string holds a lone UTF-16 surrogate (not text); not a bench result"
            ) from None
        except RecursionError:
            raise ResultsError(f"{where}JSON nested too deeply; not a bench result") from None
    return obj


def iter_rows(path: str | Path, samples: bool = True) -> Iterator[Row]:
    """Validated rows of one bench JSON-lines file, read one line at a time (memory: one row).
    samples=False: each row's raw samples are checked, then dropped (half a typical file's size; the
    commands that never use them -- show, claims -- hold a large file in a third of the memory)."""
    path = Path(path)
    kept = 0
    last_fp: Any = None
    with _open_locked(path, f"bench JSON lines ({SCHEMA})") as f:
        i = 0
        while True:
            raw = f.readline(MAX_LINE_BYTES + 1)
            if not raw:
                break
            i += 1
            whole = raw.endswith(b"\n")
            if not whole and len(raw) > MAX_LINE_BYTES:
                raise ResultsError(f"{path}:{i}: a line over {MAX_LINE_BYTES >> 20} MiB; not a bench result file")
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise ResultsError(f"{path}:{i}: not UTF-8 text; expected bench JSON lines ({SCHEMA})") from None
            if not line.strip():
                continue
            try:
                obj = parse_line(line, f"{path}:{i}: ")
            except ResultsError:
                if not whole and f.peek(1) == b"":  # the last line, without its newline: a killed writer's
                    print(
                        f"warning: {path}:{i}: torn last line skipped ({len(raw)} bytes, an interrupted write); "
                        f"{kept} whole rows kept",
                        file=sys.stderr,
                    )
                    break
                raise
            kept += 1
            if isinstance(obj, dict) and obj.get("fingerprint") == last_fp:  # one machine's rows share one dict
                obj["fingerprint"] = last_fp
            row = Row.from_json(obj, f"{path}:{i}: ", str(path))
            last_fp = row.fingerprint
            if not samples:
                row.samples = {}
            yield row


def read_rows(path: str | Path, text: str | None = None) -> list[Row]:
    """Validated rows of one bench JSON-lines file (text: its content, when already read)."""
    if text is None:
        return list(iter_rows(path))
    path = Path(path)
    lines = text.split("\n")
    rows: list[Row] = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = parse_line(line, f"{path}:{i}: ")
        except ResultsError:
            if i == len(lines):  # the last line, without a newline
                print(f"warning: {path}:{i}: torn last line skipped ({len(line)} bytes)", file=sys.stderr)
                break
            raise
        rows.append(Row.from_json(obj, f"{path}:{i}: ", str(path)))
    return rows


def load_rows(paths: Iterable[str | Path], *, nonempty: bool = False, samples: bool = True) -> list[Row]:
    """Every row of the files and folders, read a line at a time; nonempty: no rows at all is a
    ResultsError (exit 2), the same for every command; samples=False: raw samples dropped (iter_rows)."""
    paths = list(paths)
    rows: list[Row] = []
    for f in resolve(paths):
        rows.extend(iter_rows(f, samples))
    if nonempty and not rows:
        raise ResultsError(f"{', '.join(map(str, paths))}: no result rows")
    return rows


def check_result_file(path: Path, flag: str = "--out") -> None:
    """An existing, non-empty file that rows are to be appended to must be a bench result file (its
    first line a row of ours): a notes file or a pytest-benchmark document is never appended to."""
    try:
        with _open_locked(path, f"bench JSON lines ({SCHEMA})") as f:
            first = f.readline(1 << 20)
    except ResultsError as e:
        raise UsageError(f"{flag} {e}") from None
    if not first.strip():
        return
    if _is_row_text(first) or (not first.endswith(b"\n") and first.lstrip().startswith(b'{"schema": "bench.row/')):
        return
    raise UsageError(
        f"{flag} {path}: exists and is not a bench result file (its first line is not a {SCHEMA} row); "
        "rows are only appended to result files: choose a new file"
    )


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
