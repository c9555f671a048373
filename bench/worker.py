"""The child side of a case: `python -m bench.worker SPEC.json` (directly or under torchrun).

Runs one plugin case in this fresh process and writes OUT_DIR/rank{R}.json:
  {"status": ok|skipped|oom|error, "message": str, "records": [Record.to_json(), ...]}
A failure is caught and written as a status (OOM recognised), never lost.
"""
from __future__ import annotations

import json
import os
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
    from bench.results import _clean

    tmp = out_dir / f".rank{rank}.json.tmp"
    tmp.write_text(json.dumps(_clean(payload)))
    os.replace(tmp, out_dir / f"rank{rank}.json")  # atomic: the parent never reads half a file


def main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    out_dir = Path(spec["out_dir"])
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    try:
        import torch

        from bench.context import Context
        from bench.discovery import get_plugin
        from bench.params import make_params

        if spec.get("threads"):
            torch.set_num_threads(int(spec["threads"]))
        torch.manual_seed(int(spec.get("seed", 0)))
        plugin = get_plugin(spec["plugin"])
        params = make_params(plugin, spec["params"])
        device = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() and spec.get("device", "auto") != "cpu" else "cpu")
        if device.type == "cuda":
            torch.cuda.set_device(device)
        if "WORLD_SIZE" in os.environ:  # launched by torchrun: the core owns the process group
            import torch.distributed as dist

            dist.init_process_group(
                backend="nccl" if device.type == "cuda" else "gloo",
                timeout=timedelta(seconds=float(spec.get("timeout_s", 300))),
            )
        ctx = Context(
            device=device,
            profile=spec.get("profile", "quick"),
            rank=rank,
            world_size=world,
            seed=int(spec.get("seed", 0)),
            workdir=out_dir,
            max_time_s=float(spec.get("max_time_s", 2.0)),
        )
        records = plugin.run(params, ctx)
        payload = {"status": "ok", "message": "", "records": [r.to_json() for r in records]}
        _write(out_dir, rank, payload)
        if "WORLD_SIZE" in os.environ:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
        return 0
    except BaseException as e:  # every failure becomes a row, never a lost case
        if isinstance(e, KeyboardInterrupt):
            raise
        status = "oom" if is_oom(e) else "error"
        msg = f"{type(e).__name__}: {e}".strip()
        _write(out_dir, rank, {"status": status, "message": msg[:2000], "traceback": traceback.format_exc()[-4000:], "records": []})
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
