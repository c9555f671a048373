"""The parent side: run each case in its own process (tree) with a time limit, write rows as they finish.

Faults become rows and the run goes on:
  oom      the child caught an allocator failure, or was SIGKILLed (the kernel's OOM killer)
  error    the child raised or crashed, or a rank of a torchrun group failed (failing rank named)
  timeout  the case passed its time limit; its whole process tree is killed
  skipped  the plugin said it cannot run here, or the run's deadline left no time to start it
Ctrl-C (or SIGTERM) kills the case in flight and its whole process tree, keeps every finished row,
summarizes the finished cases of the plugin in flight, and ends with 130. Every case runs under
bench.supervise, which kills the case tree and removes its temporary folder if `bench run` itself
dies (SIGHUP, SIGKILL).

Cheap cases a plugin marks Launch(reuse=True) share one warm worker (no interpreter start-up each);
their time limit still holds: a hung one costs its row and a new worker.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from bench.contract import Launch, Plugin, Record
from bench.fingerprint import fingerprint
from bench.launch import torchrun_command, worker_command
from bench.results import append_rows
from bench.rows import Row
from bench.supervise import kill_tree

MIN_CASE_S = 5.0  # a case is not started with less time than this left before the deadline


@dataclass
class RunOptions:
    profile: str = "quick"
    out: Path | None = None
    timeout_s: float | None = None  # overrides the plugin's per-case limit
    seed: int = 0
    threads: int | None = None
    max_time_s: float = 2.0  # per timed measurement inside a case
    device: str = "auto"  # "auto" | "cpu"
    run_id: str = ""
    deadline: float | None = None  # time.time() by which every case must have ended (None: no deadline)
    progress: IO[str] | None = field(default_factory=lambda: sys.stderr)


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]


def default_out(run_id: str, what: str) -> Path:
    label = fingerprint()["label"]
    return Path("results") / "runs" / f"{label}-{what}-{run_id}.jsonl"


def case_label(params: Any) -> str:
    return " ".join(f"{k}={v}" for k, v in dataclasses.asdict(params).items())


def threads_for(launch: Launch, opts: RunOptions) -> int:
    return opts.threads or max(1, (os.cpu_count() or 1) // max(1, launch.nproc))


def _env(threads: int, opts: RunOptions, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    # OMP_WAIT_POLICY is left to the user. Measured here (2 cores, quiet host): PASSIVE made a small
    # GPT's training 1.95x slower (3.41 vs 1.75 s) and a 0.05 ms Linear 2x slower; it only pays off
    # when other work oversubscribes the cores.
    if opts.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    env.update(extra or {})
    return env


def _supervised(cmd: list[str], tdp: Path) -> list[str]:
    return [sys.executable, "-m", "bench.supervise", "--dir", str(tdp), "--parent", str(os.getpid()), "--", *cmd]


# --- the warm worker ------------------------------------------------------------------------------
class WarmWorker:
    """One interpreter that runs reuse=True cases one after another (bench.worker --serve)."""

    def __init__(self, env: dict[str, str]):
        self.dir = Path(tempfile.mkdtemp(prefix=f"bench-warm-{os.getpid()}-"))
        self.log = open(self.dir / "worker.txt", "w+")
        self.proc = subprocess.Popen(
            _supervised(worker_command(None), self.dir), stdin=subprocess.PIPE, stdout=self.log,
            stderr=subprocess.STDOUT, env=env, text=True, start_new_session=True,
        )  # fmt: skip

    def submit(self, spec_path: Path) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{spec_path}\n")
        self.proc.stdin.flush()

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self, kill: bool = False) -> None:
        try:
            if kill:
                kill_tree(self.proc.pid)
            elif self.proc.stdin:
                self.proc.stdin.close()
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    kill_tree(self.proc.pid)
        except (OSError, ValueError):
            kill_tree(self.proc.pid)
        self.proc.wait()
        self.log.close()
        import shutil

        shutil.rmtree(self.dir, ignore_errors=True)


# --- one case -------------------------------------------------------------------------------------
def _root_cause(stderr: str) -> tuple[int | None, str]:
    """torchrun's failure summary -> (rank, "exitcode -9 (SIGKILL)") of the first observed failure."""
    part = stderr.split("Root Cause", 1)[1] if "Root Cause" in stderr else stderr
    m = re.search(r"rank\s*:\s*(\d+)\s*\(local_rank", part)
    e = re.search(r"exitcode\s*:\s*(-?\d+)[^\n]*?(\(SIG\w+\))?\s*$", part, re.M)
    why = f"exitcode {e.group(1)}" + (f" {e.group(2)}" if e.group(2) else "") if e else ""
    return (int(m.group(1)) if m else None), why


@dataclass
class CaseResult:
    status: str
    message: str = ""
    records: list[dict[str, Any]] = field(default_factory=list)
    labels: dict[str, Any] = field(default_factory=dict)  # e.g. the failing rank


def _wait_file(path: Path, proc: subprocess.Popen[Any], timeout: float) -> bool:
    """Until path exists (True), the process ends (False) or timeout (TimeoutExpired)."""
    end = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            return path.exists()
        if time.monotonic() >= end:
            raise subprocess.TimeoutExpired("case", timeout)
        time.sleep(0.02)
    return True


def run_case(plugin: Plugin, params: Any, opts: RunOptions, case_id: str, warm: dict[str, WarmWorker] | None = None,
             timeout: float | None = None) -> CaseResult:  # fmt: skip
    """Run one case in its own process tree (or a warm worker). warm: the run's warm worker slot."""
    launch = plugin.launch(params)
    timeout = timeout or opts.timeout_s or launch.timeout_s
    threads = threads_for(launch, opts)
    torchrun = launch.kind == "torchrun"
    reuse = launch.reuse and not torchrun and warm is not None
    with tempfile.TemporaryDirectory(prefix=f"bench-case-{os.getpid()}-") as td:
        tdp = Path(td)
        spec = {
            "plugin": plugin.name, "params": dataclasses.asdict(params), "profile": opts.profile, "seed": opts.seed,
            "threads": threads, "max_time_s": opts.max_time_s, "device": opts.device, "out_dir": td,
            "timeout_s": timeout, "case_id": case_id,
        }  # fmt: skip
        spec_path = tdp / "spec.json"
        spec_path.write_text(json.dumps(spec))
        nranks = launch.nproc if torchrun else 1
        if reuse:
            assert warm is not None
            return _run_warm(warm, spec_path, tdp, threads, opts, timeout)
        if torchrun:
            cmd, extra = torchrun_command(launch, spec_path)
        else:
            cmd, extra = worker_command(spec_path), {}
        errf = open(tdp / "stderr.txt", "w+")
        proc = subprocess.Popen(
            _supervised(cmd, tdp), stdout=errf, stderr=subprocess.STDOUT, env=_env(threads, opts, extra),
            start_new_session=True,  # Ctrl-C reaches only the parent, which then kills the tree
        )  # fmt: skip
        timed_out = False
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            kill_tree(proc.pid)
        except BaseException:
            kill_tree(proc.pid)
            raise
        finally:
            if proc.poll() is None:
                kill_tree(proc.pid)
            proc.wait()
        errf.seek(0)
        stderr = errf.read()
        errf.close()
        return _outcome(tdp, stderr, nranks, torchrun, timed_out, timeout)


def _run_warm(warm: dict[str, WarmWorker], spec_path: Path, tdp: Path, threads: int, opts: RunOptions,
              timeout: float) -> CaseResult:  # fmt: skip
    w = warm.get("w")
    if w is None or not w.alive:
        w = warm["w"] = WarmWorker(_env(threads, opts))
    w.submit(spec_path)
    try:
        got = _wait_file(tdp / "rank0.json", w.proc, timeout)
    except subprocess.TimeoutExpired:
        w.close(kill=True)
        del warm["w"]
        return _outcome(tdp, _read(tdp / "stderr.txt"), 1, False, True, timeout)
    except BaseException:
        w.close(kill=True)
        del warm["w"]
        raise
    if not got:  # the worker died with the case (a crash): the next case gets a new one
        w.proc.wait()
        (tdp / "exit.json").write_text(_read(w.dir / "exit.json") or "{}")
        w.close(kill=True)
        del warm["w"]
    return _outcome(tdp, _read(tdp / "stderr.txt"), 1, False, False, timeout)


def _read(p: Path) -> str:
    try:
        return p.read_text(errors="replace")
    except OSError:
        return ""


def _outcome(tdp: Path, stderr: str, nranks: int, torchrun: bool, timed_out: bool, timeout: float) -> CaseResult:
    tail = "\n".join(stderr.strip().splitlines()[-15:])
    rank_files = {int(p.stem[4:]): json.loads(p.read_text()) for p in tdp.glob("rank*.json")}
    try:
        rc = json.loads(_read(tdp / "exit.json") or "{}").get("returncode")
    except json.JSONDecodeError:
        rc = None
    missing = [r for r in range(nranks) if r not in rank_files]
    if timed_out:
        kept = [rec for r in sorted(rank_files) for rec in rank_files[r].get("records", [])]
        extra = {"failed_rank": missing[0]} if torchrun and missing else {}
        msg = f"exceeded the case time limit of {timeout:g} s; process tree killed"
        if torchrun:
            msg += f" (ranks without a result: {missing})"
        return CaseResult("timeout", msg, kept if not torchrun else [], extra)
    failed = {r: p for r, p in rank_files.items() if p["status"] not in ("ok", "skipped")}
    if torchrun and missing and (rc not in (0, None) or failed):
        # a rank died without writing a result (killed, segfault): it is the root cause;
        # the others' errors (broken connections) are consequences
        fr, why = _root_cause(stderr)
        fr = fr if fr in missing else missing[0]
        others = "; ".join(f"rank {r}: {p['message'][:200]}" for r, p in sorted(failed.items()))
        msg = f"rank {fr} died without a result ({why or 'no exit status'})" + (f"; then {others}" if others else "")
        return CaseResult("error", msg, [], {"failed_rank": fr})
    if failed:
        r = min(failed)
        return CaseResult(failed[r]["status"], failed[r]["message"], [], {"failed_rank": r} if torchrun else {})
    skipped = {r: p for r, p in rank_files.items() if p["status"] == "skipped"}
    if skipped and len(rank_files) >= nranks:
        return CaseResult("skipped", skipped[min(skipped)]["message"])
    if len(rank_files) < nranks:
        if rc is not None and rc < 0 and -rc == signal.SIGKILL and not torchrun:
            return CaseResult("oom", "killed by SIGKILL (most likely the kernel's OOM killer)")
        extra: dict[str, Any] = {}
        if torchrun:
            fr, _ = _root_cause(stderr)
            extra = {"failed_rank": fr if fr is not None else (missing[0] if missing else None)}
        why = f"exit code {rc}" if rc is None or rc >= 0 else f"killed by signal {signal.Signals(-rc).name}"
        return CaseResult("error", f"case process failed ({why}): {tail[-800:]}", [], extra)
    records: list[dict[str, Any]] = []
    for r in sorted(rank_files):
        for rec in rank_files[r]["records"]:
            if torchrun:
                rec["labels"] = {**rank_files[r].get("labels", {"rank": r}), **rec.get("labels", {})}
            records.append(rec)
    return CaseResult("ok", "", records)


# --- rows -----------------------------------------------------------------------------------------
def make_row(plugin: Plugin, params: Any, opts: RunOptions, case_id: str, rec: dict[str, Any], *, kind: str = "case",
             started: float, seconds: float) -> Row:  # fmt: skip
    from bench.rows import Evidence, Metric

    return Row(
        run_id=opts.run_id,
        case_id=case_id,
        plugin=plugin.name,
        plugin_version=getattr(plugin, "version", "1"),
        profile=opts.profile,
        kind=kind,
        params=dataclasses.asdict(params) if params is not None else {},
        labels=rec.get("labels") or {},
        status=rec.get("status", "ok"),
        message=rec.get("message", ""),
        metrics={k: Metric.from_json(m) for k, m in (rec.get("metrics") or {}).items()},
        samples={k: [float(x) if x is not None else float("nan") for x in v] for k, v in (rec.get("samples") or {}).items()},
        notes=list(rec.get("notes") or []),
        evidence={k: Evidence.from_json(e) for k, e in (rec.get("evidence") or {}).items()},
        started_at=time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
        duration_s=round(seconds, 3),
        fingerprint=fingerprint(),
    )


class Interrupted(Exception):
    def __init__(self, done: int, total: int):
        super().__init__(f"interrupted after {done} of {total} cases")
        self.done, self.total = done, total


def _fmt_elapsed(s: float) -> str:
    return f"{int(s // 60)}:{int(s % 60):02d}"


def summary_rows(plugin: Plugin, rows: list[Row], opts: RunOptions) -> list[Row]:
    """The plugin's summary over its case rows (never raises: a broken analysis is an error row)."""
    cases = [r for r in rows if r.is_case and r.plugin == plugin.name]
    if not cases:
        return []
    try:
        summary = plugin.summarize(cases)
    except Exception as e:  # a broken analysis must not lose the measured rows
        summary = [Record(status="error", message=f"summarize failed: {type(e).__name__}: {e}")]
    now = time.time()
    return [make_row(plugin, None, opts, f"{plugin.name}-summary", r.to_json(), kind="summary", started=now, seconds=0.0)
            for r in summary]  # fmt: skip


def _time_left(opts: RunOptions) -> float | None:
    return None if opts.deadline is None else opts.deadline - time.time()


def run_plugin(plugin: Plugin, cases: list[Any], opts: RunOptions, on_row: Callable[[Row], None] | None = None) -> list[Row]:
    """Run every case of one plugin, then its summary. Rows are on disk as each case ends; an
    interrupt still summarizes the cases that finished, then raises Interrupted."""
    assert opts.out is not None and opts.run_id
    all_rows: list[Row] = []
    t_run = time.time()
    main_thread = threading.current_thread() is threading.main_thread()
    old_term = signal.signal(signal.SIGTERM, _raise_interrupt) if main_thread else None
    warm: dict[str, WarmWorker] = {}

    def emit(rows: list[Row]) -> None:
        append_rows(opts.out, rows)  # type: ignore[arg-type]
        all_rows.extend(rows)
        for r in rows:
            if on_row:
                on_row(r)

    interrupted: Interrupted | None = None
    try:
        for i, params in enumerate(cases, 1):
            case_id = f"{plugin.name}-{i:03d}"
            started = time.time()
            if opts.progress:
                print(f"[{i}/{len(cases)}] {plugin.name}: {case_label(params)} ...", file=opts.progress, flush=True)
            why = plugin.available(params)
            left = _time_left(opts)
            if why:
                res = CaseResult("skipped", why)
            elif left is not None and left < MIN_CASE_S:
                res = CaseResult("skipped", f"not started: the run's deadline left {max(left, 0):.0f} s (< {MIN_CASE_S:g} s)")
            else:
                limit = opts.timeout_s or plugin.launch(params).timeout_s
                if left is not None and left < limit:
                    limit = left
                try:
                    res = run_case(plugin, params, opts, case_id, warm, timeout=limit)
                except KeyboardInterrupt:
                    raise Interrupted(i - 1, len(cases)) from None
                if res.status == "timeout" and left is not None and limit == left:
                    res.message = f"cut by the run's deadline after {limit:.0f} s: " + res.message
            secs = time.time() - started
            if res.status == "ok":
                recs = res.records
            else:
                recs = [{"status": res.status, "message": res.message, "labels": res.labels}] + res.records
            emit([make_row(plugin, params, opts, case_id, r, started=started, seconds=secs) for r in recs])
            if opts.progress:
                st = "ok" if res.status == "ok" else res.status
                note = f": {res.message[:160]}" if res.status != "ok" else ""
                print(f"      -> {st}{note} ({secs:.1f} s; elapsed {_fmt_elapsed(time.time() - t_run)}, "
                      f"{len(cases) - i} left)", file=opts.progress, flush=True)  # fmt: skip
    except Interrupted as e:
        interrupted = e
    except KeyboardInterrupt:
        interrupted = Interrupted(len({r.case_id for r in all_rows}), len(cases))
    finally:
        for w in warm.values():
            w.close(kill=interrupted is not None)
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
    # the summary of what finished, interrupted or not (claim evidence lives in summary rows)
    summary = summary_rows(plugin, all_rows, opts)
    if summary:
        emit(summary)
    if interrupted:
        raise interrupted
    return all_rows


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt
