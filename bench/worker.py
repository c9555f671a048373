"""The child side of a case.

  python -m bench.worker SPEC.json      one case in this fresh process (directly or under torchrun)
  python -m bench.worker --serve        a warm worker: runs the cases whose spec paths arrive one per
                                        line on stdin, in this one interpreter, until stdin closes

Each case writes OUT_DIR/rank{R}.json (R: the global rank; atomically, so the parent never reads
half a file):
  {"status": ok|skipped|oom|error, "message": str, "records": [Record.to_json(), ...], "labels": {...}}
A failure is caught and written as a status (an OOM recognised), never lost. Under torchrun the
labels name the node (host and node rank), the rank and the local rank.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import traceback
from datetime import timedelta
from pathlib import Path
from typing import Any


def is_oom(e: BaseException) -> bool:
    import torch

    if isinstance(e, (MemoryError, torch.OutOfMemoryError)):
        return True
    text = str(e)
    return "out of memory" in text.lower() or "can't allocate memory" in text or "DefaultCPUAllocator" in text


def _write(out_dir: Path, rank: int, payload: dict[str, Any]) -> None:
    from bench.results import clean

    tmp = out_dir / f".rank{rank}.json.tmp"
    tmp.write_text(json.dumps(clean(payload)))
    os.replace(tmp, out_dir / f"rank{rank}.json")


def rank_labels() -> dict[str, Any]:
    """Who this process is in a torchrun group (empty for a plain process)."""
    if "WORLD_SIZE" not in os.environ:
        return {}
    labels: dict[str, Any] = {"rank": int(os.environ.get("RANK", "0"))}
    if int(os.environ.get("GROUP_WORLD_SIZE", "1")) > 1:  # several nodes: name this one
        labels["node"] = int(os.environ.get("GROUP_RANK", "0"))
        labels["host"] = socket.gethostname()
        labels["local_rank"] = int(os.environ.get("LOCAL_RANK", "0"))
    return labels


def run_case(spec: dict[str, Any]) -> int:
    """Run one case; write its rank file. Returns 0 when the case ended ok/skipped, 1 otherwise."""
    out_dir = Path(spec["out_dir"])
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    labels = rank_labels()
    try:
        import torch

        from bench.context import Context
        from bench.contract import Skip
        from bench.discovery import get_plugin
        from bench.params import make_params

        if spec.get("threads"):
            torch.set_num_threads(int(spec["threads"]))
        torch.manual_seed(int(spec.get("seed", 0)))
        plugin = get_plugin(spec["plugin"])
        params = make_params(plugin, spec["params"])
        use_cuda = torch.cuda.is_available() and spec.get("device", "auto") != "cpu"
        device = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
        if device.type == "cuda":
            torch.cuda.set_device(device)
        distributed = "WORLD_SIZE" in os.environ
        nodes = spec.get("nodes")  # several nodes: the run's store and this node's role (bench.rendezvous)
        roster: list[dict[str, Any]] = []
        if distributed:  # launched by torchrun: the core owns the process group
            import torch.distributed as dist

            from bench import stacks
            from bench.nodecase import share_roster, worker_init_kwargs

            stacks.register(out_dir, rank)  # a timed-out case asks each rank where it is (SIGUSR1)

            dist.init_process_group(
                backend="nccl" if device.type == "cuda" else "gloo",
                timeout=timedelta(seconds=float(spec.get("timeout_s", 300))),
                **(worker_init_kwargs(nodes, rank, world) if nodes else {}),
            )
            if nodes:
                roster = share_roster(nodes, labels, out_dir, local_rank)
        ctx = Context(
            device=device,
            profile=spec.get("profile", "quick"),
            rank=rank,
            world_size=world,
            seed=int(spec.get("seed", 0)),
            workdir=out_dir,
            max_time_s=float(spec.get("max_time_s", 2.0)),
            fixed_sizes=bool(spec.get("fixed_sizes", False)),
        )
        try:
            records = plugin.run(params, ctx)
            payload: dict[str, Any] = {"status": "ok", "message": "", "records": [r.to_json() for r in records]}
        except Skip as s:
            payload = {"status": "skipped", "message": str(s), "records": []}
        payload["labels"] = labels
        if nodes and roster:  # every rank's records to the writing node (gather_object)
            from bench.nodecase import gather_payloads

            payload = gather_payloads(nodes, payload, roster, out_dir)
        _write(out_dir, rank, payload)
        if distributed:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
        return 0
    except BaseException as e:  # every failure becomes a row, never a lost case
        if isinstance(e, KeyboardInterrupt):
            raise
        status = "oom" if is_oom(e) else "error"
        msg = f"{type(e).__name__}: {e}".strip()
        _write(
            out_dir,
            rank,
            {
                "status": status,
                "message": msg[:2000],
                "traceback": traceback.format_exc()[-4000:],
                "records": [],
                "labels": labels,
            },
        )
        return 1


def _serve() -> int:
    """Warm worker: one case per line of stdin (a spec path). Each case's own output goes to its
    folder's stderr.txt (fd-level, so C libraries' output too)."""
    import torch  # noqa: F401  -- paid once for every case this worker runs

    saved_out, saved_err = os.dup(1), os.dup(2)
    for line in sys.stdin:
        path = line.strip()
        if not path:
            continue
        spec = json.loads(Path(path).read_text())
        log = os.open(Path(spec["out_dir"]) / "stderr.txt", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(log, 1)
        os.dup2(log, 2)
        try:
            run_case(spec)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved_out, 1)
            os.dup2(saved_err, 2)
            os.close(log)
    return 0


def main(argv: list[str]) -> int:
    import signal

    from bench.supervise import set_parent_death_signal

    # a rank must not outlive its launcher (the torchrun agent or the supervisor), however it ends
    set_parent_death_signal(signal.SIGKILL)
    if argv[:1] == ["--serve"]:
        return _serve()
    return run_case(json.loads(Path(argv[0]).read_text()))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
