"""The parent side: run each case in its own process (tree) with a time limit, write rows as they finish.

Faults become rows and the run goes on:
  oom      the child caught an allocator failure, or was SIGKILLed (the kernel's OOM killer)
  error    the child raised or crashed, or a rank of a torchrun group failed (failing rank named)
  timeout  the case passed its time limit; its whole process tree is killed
  skipped  the plugin said it cannot run here, or the run's deadline left no time to start it
Ctrl-C (or SIGTERM, SIGHUP) kills the case in flight and its whole process tree, keeps every finished row,
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

from bench import stacks
from bench.contract import Launch, Plugin, Record
from bench.fingerprint import fingerprint, usable_cpus
from bench.launch import passthrough_env, torchrun_command, worker_command
from bench.outcome import CaseResult, outcome
from bench.results import append_rows
from bench.rows import Row
from bench.supervise import kill_tree, supervised
from bench.warm import WarmWorker, run_warm

MIN_CASE_S = 5.0  # a case is not started with less time than this left before the deadline
WATCH_S = 0.5  # several nodes: how often a running case polls the run's store for a failed or gone node


@dataclass
class RunOptions:
    profile: str = "quick"
    out: Path | None = None
    timeout_s: float | None = None  # overrides the plugin's per-case limit
    seed: int = 0
    threads: int | None = None
    max_time_s: float = 2.0  # per timed measurement inside a case
    device: str = "auto"  # "auto" | "cpu"
    fixed_sizes: bool = False  # no size probes: ctx.afford returns the smallest size (the gate's rows match everywhere)
    run_id: str = ""
    deadline: float | None = None  # time.time() by which every case must have ended (None: no deadline)
    nodes: Any = None  # bench.rendezvous.Nodes when the run spans several nodes (--nnodes > 1)
    progress: IO[str] | None = field(default_factory=lambda: sys.stderr)
    reporter: Any = None  # bench.progress.Progress of the whole run (None: one per plugin, on `progress`)


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]


def default_out(run_id: str, what: str) -> Path:
    label = fingerprint()["label"]
    return Path("results") / "runs" / f"{label}-{what}-{run_id}.jsonl"


def case_label(params: Any) -> str:
    return " ".join(f"{k}={v}" for k, v in dataclasses.asdict(params).items())


def threads_for(launch: Launch, opts: RunOptions) -> int:
    """torch threads per process: the user's --threads, else the plugin's wish, else usable cores / ranks."""
    return opts.threads or launch.threads or max(1, usable_cpus() // max(1, launch.nproc))


def _env(threads: int, opts: RunOptions, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    # OMP_WAIT_POLICY is left to the user. Measured here (2 cores, quiet host): PASSIVE made a small
    # GPT's training 1.95x slower (3.41 vs 1.75 s) and a 0.05 ms Linear 2x slower; it only pays off
    # when other work oversubscribes the cores.
    if opts.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    env.update(extra or {})
    return env


# --- one case -------------------------------------------------------------------------------------
def run_case(
    plugin: Plugin,
    params: Any,
    opts: RunOptions,
    case_id: str,
    warm: dict[str, WarmWorker] | None = None,
    timeout: float | None = None,
) -> CaseResult:
    """Run one case in its own process tree (or a warm worker). warm: the run's warm worker slot."""
    launch = plugin.launch(params)
    timeout = timeout or opts.timeout_s or launch.timeout_s
    threads = threads_for(launch, opts)
    torchrun = launch.kind == "torchrun"
    reuse = launch.reuse and not torchrun and warm is not None
    with tempfile.TemporaryDirectory(prefix=f"bench-case-{os.getpid()}-") as td:
        tdp = Path(td)
        spec = {
            "plugin": plugin.name,
            "params": dataclasses.asdict(params),
            "profile": opts.profile,
            "seed": opts.seed,
            "threads": threads,
            "max_time_s": opts.max_time_s,
            "device": opts.device,
            "fixed_sizes": opts.fixed_sizes,
            "out_dir": td,
            "timeout_s": timeout,
            "case_id": case_id,
        }
        spec_path = tdp / "spec.json"
        nranks = launch.nproc if torchrun else 1
        nodes = opts.nodes if torchrun else None  # several nodes (bench.rendezvous)
        if torchrun and nodes is not None:
            cmd, extra = nodes.command(spec_path, case_id, timeout)
            threads = opts.threads or launch.threads or max(1, usable_cpus() // nodes.ranks_here)
            spec["threads"] = threads
            env = _env(threads, opts, extra)
            spec["nodes"] = nodes.case_spec(case_id, {"fingerprint": fingerprint(), "env": passthrough_env(env)})
            nranks = nodes.cfg.nproc_per_node
        elif torchrun:
            cmd, extra = torchrun_command(launch, spec_path)
        else:
            cmd, extra = worker_command(spec_path), {}
        spec_path.write_text(json.dumps(spec))
        if reuse:
            assert warm is not None
            return run_warm(warm, spec_path, tdp, _env(threads, opts), timeout)
        env = _env(threads, opts, extra)
        errf = open(tdp / "stderr.txt", "w+")
        started = time.time()
        proc = subprocess.Popen(
            supervised(cmd, tdp),
            stdout=errf,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # Ctrl-C reaches only the parent, which then kills the tree
        )
        timed_out = False
        stopped = ""  # several nodes: why this node ended its part early (another node failed or is gone)
        try:
            stopped = _wait(proc, timeout, nodes, case_id)
        except subprocess.TimeoutExpired:
            timed_out = True
            if torchrun:  # where each rank is, before the kill: names the one that hung (bench.stacks)
                stacks.dump(proc.pid)
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
        ranks = nodes.local_ranks(tdp) if nodes is not None else None
        res = outcome(tdp, stderr, nranks, torchrun, timed_out, timeout, ranks)
        if nodes is not None:  # every node's view -> the case's rows (on the writer)
            if res.status not in ("ok", "skipped") and not stopped:  # the others end their part at once (Nodes.watch)
                nodes.mark_failed(case_id, res.message)
            res = nodes.settle(case_id, res, tdp, started, timeout, stopped)
        res.env = passthrough_env(env)
        for rec in res.records:
            rec.setdefault("env", res.env)
        return res


def _wait(proc: subprocess.Popen[Any], timeout: float, nodes: Any, case_id: str) -> str:
    """Wait for the case's process tree (TimeoutExpired past `timeout`). Several nodes: poll the
    run's store every WATCH_S and kill this node's part as soon as another node's part failed or a
    node is gone (bench.rendezvous.Nodes.watch); returns why, else ""."""
    if nodes is None:
        proc.wait(timeout=timeout)
        return ""
    end = time.monotonic() + timeout
    while True:
        try:
            proc.wait(timeout=max(0.0, min(WATCH_S, end - time.monotonic())))
            return ""
        except subprocess.TimeoutExpired:
            if time.monotonic() >= end:
                raise
        why = nodes.watch(case_id)
        if why:
            kill_tree(proc.pid)
            return str(why)


# --- rows -----------------------------------------------------------------------------------------
def make_row(
    plugin: Plugin,
    params: Any,
    opts: RunOptions,
    case_id: str,
    rec: dict[str, Any],
    *,
    kind: str = "case",
    started: float,
    seconds: float,
) -> Row:
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
        samples={
            k: [float(x) if x is not None else float("nan") for x in v] for k, v in (rec.get("samples") or {}).items()
        },
        notes=list(rec.get("notes") or []),
        evidence={k: Evidence.from_json(e) for k, e in (rec.get("evidence") or {}).items()},
        started_at=time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
        duration_s=round(seconds, 3),
        fingerprint=_fingerprint_of(rec),
    )


def _fingerprint_of(rec: dict[str, Any]) -> dict[str, Any]:
    """The measuring node's fingerprint (another node's, for rows gathered from it) with the collective
    knobs the case ran with (env: bench.launch.passthrough_env)."""
    fp = dict(rec.get("fingerprint") or fingerprint())
    if rec.get("env") is not None:
        fp["env"] = rec["env"]
    return fp


class Interrupted(Exception):
    def __init__(self, done: int, total: int):
        super().__init__(f"interrupted after {done} of {total} cases")
        self.done, self.total = done, total


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
    return [
        make_row(plugin, None, opts, f"{plugin.name}-summary", r.to_json(), kind="summary", started=now, seconds=0.0)
        for r in summary
    ]


def _time_left(opts: RunOptions) -> float | None:
    return None if opts.deadline is None else opts.deadline - time.time()


def run_plugin(
    plugin: Plugin, cases: list[Any], opts: RunOptions, on_row: Callable[[Row], None] | None = None
) -> list[Row]:
    """Run every case of one plugin, then its summary. Rows are on disk as each case ends; an
    interrupt still summarizes the cases that finished, then raises Interrupted."""
    assert opts.out is not None and opts.run_id
    all_rows: list[Row] = []
    main_thread = threading.current_thread() is threading.main_thread()
    old_term = signal.signal(signal.SIGTERM, _raise_interrupt) if main_thread else None
    # a closed terminal (SIGHUP) too: the case in flight is killed and its temporary folder removed
    old_hup = signal.signal(signal.SIGHUP, _raise_interrupt) if main_thread else None
    warm: dict[str, WarmWorker] = {}

    def emit(rows: list[Row]) -> None:
        append_rows(opts.out, rows)  # type: ignore[arg-type]
        all_rows.extend(rows)
        for r in rows:
            if on_row:
                on_row(r)

    from bench.progress import Progress, case_text, varying_params

    prog = opts.reporter or Progress(opts.progress, len(cases), quiet=opts.progress is None)
    varying = varying_params(cases)
    interrupted: Interrupted | None = None
    try:
        for i, params in enumerate(cases, 1):
            case_id = f"{plugin.name}-{i:03d}"
            started = time.time()
            prog.start(i, len(cases), plugin.name, case_text(params, varying))
            why = plugin.available(params)
            left = _time_left(opts)
            if not why and left is not None and left < MIN_CASE_S:
                why = f"not started: the run's deadline left {max(left, 0):.0f} s (< {MIN_CASE_S:g} s)"
            agreed = opts.nodes.agree(case_id, why) if opts.nodes is not None else None  # several nodes: one decision
            if agreed is not None:
                res = CaseResult(*agreed)
            elif why:
                res = CaseResult("skipped", why)
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
                head = {"status": res.status, "message": res.message, "labels": res.labels, "env": res.env}
                recs = [head, *res.records]
            if opts.nodes is None or opts.nodes.writes:  # several nodes: only the writing node appends
                emit([make_row(plugin, params, opts, case_id, r, started=started, seconds=secs) for r in recs])
            prog.end(res.status, res.message, secs)
    except Interrupted as e:
        interrupted = e
    except KeyboardInterrupt:
        interrupted = Interrupted(len({r.case_id for r in all_rows}), len(cases))
    finally:
        prog.close()
        for w in warm.values():
            w.close(kill=interrupted is not None)
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
        if old_hup is not None:
            signal.signal(signal.SIGHUP, old_hup)
    # the summary of what finished, interrupted or not (claim evidence lives in summary rows)
    summary = summary_rows(plugin, all_rows, opts)
    if summary:
        emit(summary)
    if interrupted:
        raise interrupted
    return all_rows


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt
