"""gpuplan's summary: the answer table, one row per case and stage, with the other estimators beside it.

Per stage: the smallest world size whose simulated per-rank peak fits (or none, and why), the peak and the
headroom there, the activations at the peak; beside them, computed here from their published formulas
(estimators.py): DeepSpeed's ZeRO-2 estimator (stage 2 row) and ZeRO-3 estimator (stage 3 row), their
smallest world size and their per-GPU figure at the simulator's answer; accelerate's "Training using Adam"
(the whole model on one device: the DDP row).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from bench.contract import Metric, Record, Row
from plugins.planner.estimators import (
    ACCELERATE,
    DEEPSPEED_ZERO2,
    DEEPSPEED_ZERO3,
    accelerate_training_bytes,
    deepspeed_zero2_bytes,
    deepspeed_zero3_bytes,
    smallest_gpus,
)
from plugins.planner.plugin import GB, PlanParams, ac_text, model_of
from plugins.planner.search import ladder

NOTE = (
    "gpuplan: smallest_world = the smallest power-of-two world size whose need (the simulated per-rank reserved "
    "peak of the caching-allocator model + CUDA context + NCCL buffers; fake process group + fake tensors; the "
    "largest rank) fits --gpu-gb; peak_gb (allocated), reserved_gb, need_gb and headroom_gb at it (GB = 1e9 bytes), "
    "for the batch x seq per GPU and the checkpointing in the labels. Beside it, formulas of other tools for the same inputs, model states "
    f"only (no activations, no temporaries): {DEEPSPEED_ZERO2}: 2P + 18P/N; {DEEPSPEED_ZERO3}: 4 x largest layer "
    f"+ 18P/N; {ACCELERATE}: 8P (mixed precision) or 16P (fp32) for the whole model on one device"
)


def answer_records(rows: list[Row]) -> list[Record]:
    cases: dict[str, list[Row]] = {}
    for r in rows:
        if r.kind == "case" and r.ok and r.value("fits") is not None:
            cases.setdefault(r.case_id, []).append(r)
    out = []
    for rs in cases.values():
        p = _params(rs[0].params)
        stages: dict[str, list[Row]] = {}
        for r in rs:
            stages.setdefault(str(r.get("stage")), []).append(r)
        for label, srs in stages.items():
            out.append(_answer(p, label, srs))
    return out


def _params(d: dict[str, Any]) -> Any:
    import dataclasses

    fields = {f.name: f.default for f in dataclasses.fields(PlanParams)}
    fields.update({k: v for k, v in d.items() if k in fields})
    return SimpleNamespace(**fields)


def _answer(p: Any, label: str, rs: list[Row]) -> Record:
    from plugins.common.shapes import largest_module_params

    best = next((r for r in rs if r.value("answer") == "yes"), None)
    psi = int(rs[0].value("n_params") or 0)
    budget = float(p.gpu_gb) * GB
    labels = {"model": p.model, "batch": p.batch, "seq": p.seq, "ac": ac_text(p), "stage": label}
    src = {"source": "simulated", "deterministic": True}
    m: dict[str, Metric] = {
        "smallest_world": Metric(int(best.get("world_size")) if best else None, "ranks", **src),
        "peak_gb": Metric(best.value("peak_gb") if best else None, "GB per rank", **src),
        "reserved_gb": Metric(best.value("reserved_gb") if best else None, "GB per rank (allocator model)", **src),
        "need_gb": Metric(best.value("need_gb") if best else None, "GB (reserved + context + NCCL)", **src),
        "headroom_gb": Metric(best.value("headroom_gb") if best else None, "GB (GPU - need)", **src),
        "activations_gb": Metric(best.value("activations_gb") if best else None, "GB at the peak", **src),
    }
    reasons = sorted({n for r in rs for n in r.notes if n.startswith(label + ":")})
    world = int(best.get("world_size")) if best else int(p.max_world)  # no answer: DeepSpeed at --max-world
    hybrid = "HSDP" in label
    stage = int(label[0])
    if not hybrid and stage in (2, 3):
        cfg, _ = model_of(p)
        worlds = ladder(int(p.max_world), False)
        if stage == 2:

            def at(n: int) -> int:
                return deepspeed_zero2_bytes(psi, n)

            fn = "estimate_zero2_model_states_mem_needs"
        else:
            big = largest_module_params(cfg)

            def at(n: int) -> int:
                return deepspeed_zero3_bytes(psi, big, n)

            fn = "estimate_zero3_model_states_mem_needs"
        m["deepspeed_world"] = Metric(smallest_gpus(at, budget, worlds), "ranks", "formula", deterministic=True)
        m["deepspeed_gb"] = Metric(
            at(world) / GB, "GB per GPU at smallest_world (none: at --max-world)", "formula", deterministic=True
        )
        m["deepspeed_fn"] = Metric(fn, "DeepSpeed", "formula")
    if stage == 0 and not hybrid:
        acc = accelerate_training_bytes(psi, str(p.precision))
        m["accelerate_gb"] = Metric(acc / GB, "GB, whole model, one device", "formula", deterministic=True)
    return Record(metrics=m, labels=labels, notes=[NOTE, *reasons])
