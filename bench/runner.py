"""The parent side: run each case in its own process with a time limit, write rows as they finish.

Faults become rows and the run goes on:
  oom      the child caught an allocator failure, or was SIGKILLed (the kernel's OOM killer)
  error    the child raised, crashed, or a rank of a torchrun group failed (failing rank named)
  timeout  the case passed its time limit; its whole process tree is killed
Ctrl-C (or SIGTERM) kills the case in flight and its whole process tree, keeps every finished
row on disk, and returns 130.
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
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TextIO

from bench.contract import Launch, Plugin, Record
from bench.fingerprint import fingerprint
from bench.results import SCHEMA, append_rows


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
    progress: TextIO | None = field(default_factory=lambda: sys.stderr)


@dataclass
class CaseOutcome:
    params: Any
    rows: list[dict[str, Any]]
    status: str
    seconds: float


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]


def default_out(run_id: str, what: str) -> Path:
    label = fingerprint()["label"]
    return Path("results") / "runs" / f"{label}-{what}-{run_id}.jsonl"


def artifacts_dir(out: Path) -> Path:
    """Where plots and other files of a run go: beside the result file."""
    return out.parent / f"{out.stem}_artifacts"


def case_label(params: Any) -> str:
    return " ".join(f"{k}={v}" for k, v in dataclasses.asdict(params).items())


# --- process tree handling ----------------------------------------------------------------
def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # field 4 (ppid) comes after the ")" that closes the command name
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(d))
    return kids


def descendants(pid: int) -> list[int]:
    kids = _children_map()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for c in kids.get(p, []):
            out.append(c)
            todo.append(c)
    return out


def kill_tree(proc: subprocess.Popen, grace_s: float = 3.0) -> None:
    """SIGTERM the child, its process group and every descendant; SIGKILL what remains."""
    pids = [proc.pid] + descendants(proc.pid)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in pids:
            try:
                os.kill(p, sig)
            except ProcessLookupError:
                pass
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        deadline = time.time() + (grace_s if sig == signal.SIGTERM else 5.0)
        while time.time() < deadline:
            if proc.poll() is not None and not any(_alive(p) for p in pids[1:]):
                break
            time.sleep(0.05)
        pids = [p for p in pids if _alive(p)] + descendants(proc.pid)
        if not pids and proc.poll() is not None:
            break
    proc.wait()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


# --- one case -----------------------------------------------------------------------------
def _command(launch: Launch, spec_path: Path) -> list[str]:
    if launch.kind == "torchrun":
        return [
            sys.executable, "-m", "torch.distributed.run",
            "--standalone", f"--nproc-per-node={launch.nproc}", "--max-restarts=0",
            "-m", "bench.worker", str(spec_path),
        ]  # fmt: skip
    return [sys.executable, "-m", "bench.worker", str(spec_path)]


def _root_cause(stderr: str) -> tuple[int | None, str]:
    """torchrun's failure summary -> (rank, "exitcode -9 (SIGKILL)") of the first observed failure."""
    part = stderr.split("Root Cause", 1)[1] if "Root Cause" in stderr else stderr
    m = re.search(r"rank\s*:\s*(\d+)\s*\(local_rank", part)
    e = re.search(r"exitcode\s*:\s*(-?\d+)[^\n]*?(\(SIG\w+\))?\s*$", part, re.M)
    why = f"exitcode {e.group(1)}" + (f" {e.group(2)}" if e and e.group(2) else "") if e else ""
    return (int(m.group(1)) if m else None), why


def run_case(plugin: Plugin, params: Any, opts: RunOptions, case_id: str) -> tuple[str, str, list[dict[str, Any]], dict[str, Any]]:
    """Run one case in a fresh process (tree). Returns (status, message, records, extra labels)."""
    launch = plugin.launch(params)
    timeout = opts.timeout_s or launch.timeout_s
    with tempfile.TemporaryDirectory(prefix="bench-case-") as td:
        tdp = Path(td)
        threads = opts.threads or max(1, (os.cpu_count() or 1) // max(1, launch.nproc))
        spec = {
            "plugin": plugin.name,
            "params": dataclasses.asdict(params),
            "profile": opts.profile,
            "seed": opts.seed,
            "threads": threads,
            "max_time_s": opts.max_time_s,
            "device": opts.device,
            "out_dir": td,
            "timeout_s": timeout,
            "case_id": case_id,
        }
        spec_path = tdp / "spec.json"
        spec_path.write_text(json.dumps(spec))
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
        # OMP_WAIT_POLICY is left to the user. Measured here (2 cores, quiet host): PASSIVE made a small
        # GPT's training 1.95x slower (3.41 vs 1.75 s) and a 0.05 ms Linear 2x slower (threads sleep and
        # wake per op); it only pays off when other work oversubscribes the cores.
        if opts.device == "cpu":
            env["CUDA_VISIBLE_DEVICES"] = ""
        errf = open(tdp / "stderr.txt", "w+")
        proc = subprocess.Popen(
            _command(launch, spec_path), stdout=errf, stderr=subprocess.STDOUT, env=env,
            start_new_session=True,  # Ctrl-C reaches only the parent, which then kills the tree
        )  # fmt: skip
        timed_out = False
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            kill_tree(proc)
        except BaseException:
            kill_tree(proc)
            raise
        finally:
            leftover = descendants(proc.pid) if proc.poll() is None else []
            if leftover:
                kill_tree(proc)
        errf.seek(0)
        stderr = errf.read()
        errf.close()
        tail = "\n".join(stderr.strip().splitlines()[-15:])
        rank_files = {int(p.stem[4:]): json.loads(p.read_text()) for p in tdp.glob("rank*.json")}
        nranks = launch.nproc if launch.kind == "torchrun" else 1
        if timed_out:
            missing = [r for r in range(nranks) if r not in rank_files]
            extra = {"failed_rank": missing[0]} if launch.kind == "torchrun" and missing else {}
            return "timeout", f"exceeded the case time limit of {timeout:g} s; process tree killed" + (
                f" (ranks without a result: {missing})" if launch.kind == "torchrun" else ""), [], extra
        failed = {r: p for r, p in rank_files.items() if p["status"] != "ok"}
        missing = [r for r in range(nranks) if r not in rank_files]
        if launch.kind == "torchrun" and proc.returncode != 0 and missing:
            # a rank died without writing a result (killed, segfault): it is the root cause;
            # the others' errors (broken connections) are consequences
            fr, why = _root_cause(stderr)
            fr = fr if fr in missing else missing[0]
            others = "; ".join(f"rank {r}: {p['message'][:200]}" for r, p in sorted(failed.items()))
            return "error", f"rank {fr} died without a result ({why or 'no exit status'})" + (
                f"; then {others}" if others else ""), [], {"failed_rank": fr}
        if failed:
            r = min(failed)
            extra = {"failed_rank": r} if launch.kind == "torchrun" else {}
            return failed[r]["status"], failed[r]["message"], [], extra
        if proc.returncode != 0 or len(rank_files) < nranks:
            rc = proc.returncode
            if rc is not None and rc < 0 and -rc == signal.SIGKILL and launch.kind == "process":
                return "oom", "killed by SIGKILL (most likely the kernel's OOM killer)", [], {}
            extra = {}
            if launch.kind == "torchrun":
                fr, _ = _root_cause(stderr)
                extra = {"failed_rank": fr if fr is not None else (missing[0] if missing else None)}
            why = f"exit code {rc}" if rc is None or rc >= 0 else f"killed by signal {signal.Signals(-rc).name}"
            return "error", f"case process failed ({why}): {tail[-800:]}", [], extra
        records: list[dict[str, Any]] = []
        for r in sorted(rank_files):
            for rec in rank_files[r]["records"]:
                if launch.kind == "torchrun":
                    rec["labels"] = {"rank": r, **rec.get("labels", {})}
                records.append(rec)
        return "ok", "", records, {}


def make_row(plugin: Plugin, params: Any, opts: RunOptions, case_id: str, rec: dict[str, Any], *,
             kind: str = "case", started: float, seconds: float) -> dict[str, Any]:  # fmt: skip
    return {
        "schema": SCHEMA,
        "run_id": opts.run_id,
        "case_id": case_id,
        "plugin": plugin.name,
        "plugin_version": getattr(plugin, "version", "1"),
        "profile": opts.profile,
        "kind": kind,
        "params": dataclasses.asdict(params) if params is not None else {},
        "labels": rec.get("labels", {}),
        "status": rec.get("status", "ok"),
        "message": rec.get("message", ""),
        "metrics": rec.get("metrics", {}),
        "samples": rec.get("samples", {}),
        "notes": rec.get("notes", []),
        "evidence": rec.get("evidence", {}),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
        "duration_s": round(seconds, 3),
        "fingerprint": fingerprint(),
    }


class Interrupted(Exception):
    def __init__(self, done: int, total: int):
        super().__init__(f"interrupted after {done} of {total} cases")
        self.done, self.total = done, total


def _fmt_elapsed(s: float) -> str:
    return f"{int(s // 60)}:{int(s % 60):02d}"


def run_plugin(plugin: Plugin, cases: list[Any], opts: RunOptions,
               on_row: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """Run every case of one plugin, then its summary. Rows are on disk as each case ends."""
    assert opts.out is not None and opts.run_id
    all_rows: list[dict[str, Any]] = []
    t_run = time.time()
    old_term = signal.signal(signal.SIGTERM, _raise_interrupt) if _is_main_thread() else None
    try:
        for i, params in enumerate(cases, 1):
            case_id = f"{plugin.name}-{i:03d}"
            started = time.time()
            if opts.progress:
                print(f"[{i}/{len(cases)}] {plugin.name}: {case_label(params)} ...", file=opts.progress, flush=True)
            why = plugin.available(params)
            if why:
                recs = [{"status": "skipped", "message": why}]
            else:
                try:
                    status, msg, recs, extra = run_case(plugin, params, opts, case_id)
                except KeyboardInterrupt:
                    raise Interrupted(i - 1, len(cases)) from None
                if status != "ok":
                    recs = [{"status": status, "message": msg, "labels": extra}]
            secs = time.time() - started
            rows = [make_row(plugin, params, opts, case_id, r, started=started, seconds=secs) for r in recs]
            append_rows(opts.out, rows)
            all_rows.extend(rows)
            if on_row:
                for r in rows:
                    on_row(r)
            if opts.progress:
                st = rows[0]["status"] if rows else "ok"
                note = f": {rows[0]['message'][:160]}" if rows and rows[0]["status"] != "ok" else ""
                print(f"      -> {st}{note} ({secs:.1f} s; elapsed {_fmt_elapsed(time.time() - t_run)}, "
                      f"{len(cases) - i} left)", file=opts.progress, flush=True)  # fmt: skip
        # summaries may write plots beside the result file
        os.environ["BENCH_ARTIFACTS_DIR"] = str(artifacts_dir(opts.out))
        try:
            summary = plugin.summarize(list(all_rows))
        except Exception as e:  # a broken analysis must not lose the measured rows
            summary = [Record(status="error", message=f"summarize failed: {type(e).__name__}: {e}")]
        if summary:
            rows = [make_row(plugin, None, opts, f"{plugin.name}-summary", r.to_json() if isinstance(r, Record) else r,
                             kind="summary", started=time.time(), seconds=0.0) for r in summary]  # fmt: skip
            append_rows(opts.out, rows)
            all_rows.extend(rows)
            if on_row:
                for r in rows:
                    on_row(r)
    finally:
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
    return all_rows


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _is_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
