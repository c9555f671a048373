"""One training run of a strategy, real or simulated, and what it measures on this rank: model-state
bytes at rest and during the step vs the ZeRO formula, the step's peak by category, collective bytes,
FLOPs, step time and loss."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import torch

from bench.contract import Metric, memory_metrics, timing_metrics
from plugins.distributed.formulas import formula_bound, zero_formula, zero_formula_rest
from plugins.distributed.params import UNTIMED_STEPS, stage_of
from plugins.distributed.strategies import PRECISIONS, Strategy, held_param_bytes

STATE_NOTE = (
    "model-state bytes: at rest after a step (parameters, gradients, optimizer state of this rank: numel*element_size "
    "of local shards); model_state_step_bytes adds the all-gathered parameters held after forward; formula_bytes: "
    "ZeRO sec. 3.1 with the dtypes used; formula_rest_bytes: the same as torch keeps it at rest; formula_bound_bytes: "
    "allowed |measured - formula| (greedy partition / shard padding + optimizer step scalars)"
)


def train_and_measure(
    p: Any, ctx: Any, st: Strategy, batches: list[tuple[torch.Tensor, torch.Tensor]], simulate: bool
) -> tuple[dict[str, Metric], dict[str, list[float]], list[str]]:
    """Warm-up step, a memory-tracked step, a comm-counted step (probing held parameters after
    forward; FLOPs counted there on real runs), at-rest bytes, then `steps` timed steps (real runs
    only). Every rank runs exactly the same number of steps, so collectives always pair up."""
    from plugins.distributed.comm import CommCounter

    stage = stage_of(p)
    src = "simulated" if simulate else "measured"
    model, opt = st.model, st.opt
    losses: list[torch.Tensor] = []
    state = {"i": 0, "probe": False, "held": 0}

    def step() -> None:
        x, y = batches[state["i"] % len(batches)]
        state["i"] += 1
        opt.zero_grad(set_to_none=True)
        loss = model(x, y)[1]  # the logits die here, before backward, as a training loop frees them
        if state["probe"]:
            state["held"] = held_param_bytes(model, st.rest_bytes, st.sharded)
        if p.fault != "none" and ctx.rank == 1:
            if p.fault == "kill_rank1":
                os.kill(os.getpid(), signal.SIGKILL)  # debug: a rank dies mid-step
            time.sleep(10**6)  # hang_rank1: the case time limit ends the group
        loss.backward()
        opt.step()
        losses.append(loss.detach())

    step()  # warm-up (optimizer state created)
    rep = ctx.track_step(step, model, opt)
    state["probe"] = True
    flops = 0
    with CommCounter() as cc:
        if simulate:
            step()
        else:
            flops = ctx.count_flops(step)  # this rank's forward + backward + optimizer FLOPs
    state["probe"] = False
    m, notes = state_metrics(p, ctx, st, rep, cc, state["held"], src)
    samples: dict[str, list[float]] = {}
    if not simulate:
        t = ctx.time(
            step,
            warmup_s=0.0,
            min_warmup=1,
            min_samples=p.steps,
            max_samples=p.steps,
            target_rel_ci=-1.0,
            max_time_s=float("inf"),
            min_sample_s=0.0,
        )
        tm, samples = timing_metrics(t, prefix="step")
        m.update(tm)
        m["tokens_per_s"] = Metric(p.batch * p.seq / t.median_s, "tokens/s", better="higher")
        if flops:
            m["flops_per_step"] = Metric(flops, "FLOP (FlopCounterMode, this rank)", "measured", deterministic=True)
            dtype = torch.bfloat16 if p.precision == "bf16" else torch.float32
            m.update(ctx.throughput(flops, t.median_s, dtype, with_matmul=False))
        samples["loss"] = [float(x) for x in losses]
        m["loss"] = Metric(float(losses[-1]), "nats/token", deterministic=True, portable=False)
        notes.append(
            f"step_ms: median of {p.steps} timed steps after {UNTIMED_STEPS} untimed (fixed count on every "
            f"rank so collectives pair up); tokens_per_s = batch*seq / step (this rank); tflops = this "
            f"rank's counted FLOPs per step / step; loss: step {len(losses)}, this rank's batch"
        )
    add_zero1_max_rank(stage, opt, m, notes, src)
    return m, samples, notes


def state_metrics(
    p: Any, ctx: Any, st: Strategy, rep: Any, cc: Any, held_params: int, src: str
) -> tuple[dict[str, Metric], list[str]]:
    """The figures every fsdp/ddp case shares, real or simulated (train_and_measure and the simulator's
    fast path, sim.measure_simulated): model-state bytes at rest and held after forward, the ZeRO
    formula with its padding bound, the tracked step's peak by category (rep: ctx.track_step's
    report), collective bytes (cc: the CommCounter of one step), and their notes. src: "measured" |
    "simulated"; a simulation of stages 0/1 has no DDP (fake tensors), so DDP's all-reduce comes
    from the formula."""
    from plugins.distributed.comm import CONVENTION

    stage = stage_of(p)
    sb = ctx.state_bytes(st.model, st.opt)
    model_state = sb["parameters"] + sb["gradients"] + sb["optimizer_state"]
    held = held_params + sb["gradients"] + sb["optimizer_state"]
    formula, ftext = zero_formula(stage, st.psi, st.nd, p.precision)
    rest_f, rest_text = zero_formula_rest(stage, st.psi, st.nd, p.precision)
    step_scalars = sb["optimizer_state"] - _optim_bytes_without_scalars(st.opt)
    bound = formula_bound(stage, st.shapes, st.nd, p.precision, step_scalars)
    det: dict[str, Any] = {"source": src, "deterministic": True}
    m: dict[str, Metric] = {
        "params_bytes": Metric(sb["parameters"], "bytes", **det),
        "grads_bytes": Metric(sb["gradients"], "bytes", **det),
        "optim_bytes": Metric(sb["optimizer_state"], "bytes", **det),
        "model_state_bytes": Metric(model_state, "bytes", **det),
        "model_state_step_bytes": Metric(held, "bytes (after forward)", **det),
        "formula_bytes": Metric(formula, "bytes", "formula", deterministic=True),
        "formula_rest_bytes": Metric(rest_f, "bytes", "formula", deterministic=True),
        "formula_bound_bytes": Metric(bound, "bytes", "formula", deterministic=True),
        "n_params": Metric(st.psi, "params", "formula", deterministic=True),
        "shard_ranks": Metric(st.nd, "ranks", "formula", deterministic=True),
    }
    for k, v in memory_metrics(rep).items():
        m[k] = Metric(v.value, v.unit, src)
    ddp_by_formula = src == "simulated" and stage <= 1
    comm, comm_src = float(cc.bytes), src
    if ddp_by_formula:  # DDP's all-reduce of the gradients: 2 x their bytes
        comm += 2.0 * sb["gradients"]
        comm_src = "formula"
    m["comm_bytes_per_step"] = Metric(comm, "bytes", comm_src, deterministic=True)
    m["comm_calls_per_step"] = Metric(sum(cc.calls.values()), "calls", comm_src, deterministic=True)
    for op, b in sorted(cc.by_op.items()):
        m[f"comm_{op}_bytes"] = Metric(b, "bytes", comm_src, deterministic=True)
    notes = [
        st.how,
        PRECISIONS[p.precision],
        STATE_NOTE,
        f"formula, stage {stage}, {p.precision}, Nd={st.nd}: ZeRO {ftext}"
        + (f"; at rest: {rest_text}" if rest_f != formula else ""),
        f"comm_bytes_per_step: {CONVENTION}"
        + ("; stages 0/1 simulated: DDP's all-reduce (2 x gradient bytes) from the formula" if ddp_by_formula else ""),
    ]
    return m, notes


def add_zero1_max_rank(stage: int, opt: Any, m: dict[str, Metric], notes: list[str], src: str) -> None:
    """Stage 1: the largest ZeroRedundancyOptimizer partition's optimizer bytes and model state (m holds
    this rank's optim_bytes and model_state_bytes)."""
    if stage != 1 or not hasattr(opt, "_partition_parameters"):  # torch 2.13 names it with a leading _
        return
    own = int(m["optim_bytes"].value)
    per_rank = _zero1_optim_bytes_per_rank(opt, own)
    m["optim_bytes_max_rank"] = Metric(max(per_rank), "bytes", src, deterministic=True)
    m["model_state_bytes_max_rank"] = Metric(
        int(m["model_state_bytes"].value) - own + max(per_rank), "bytes", src, deterministic=True
    )
    notes.append(
        "*_max_rank: the largest ZeroRedundancyOptimizer partition (the partition is the same on every "
        "rank; per-parameter state bytes read off this rank's own state)"
    )


def _optim_bytes_without_scalars(opt: Any) -> int:
    """Optimizer-state bytes without the 0-dim `step` tensors (local shards of DTensors)."""
    inner = getattr(opt, "optim", opt)
    total = 0
    for s in inner.state.values():
        for v in s.values():
            if torch.is_tensor(v) and v.dim() > 0:
                t = v.to_local() if hasattr(v, "to_local") else v
                total += int(t.numel() * t.element_size())
    return total


def _zero1_optim_bytes_per_rank(opt: Any, own_bytes: int) -> list[int]:
    """Optimizer-state bytes of every rank's ZeroRedundancyOptimizer partition. The partition is
    the same on every rank; per-parameter state bytes are a*numel + b (Adam: a = 8 or 12, b = the
    step scalar), read off this rank's own state."""
    inner = opt.optim
    own = [p for g in inner.param_groups for p in g["params"] if inner.state.get(p)]
    if not own:
        return [own_bytes]
    n_own = sum(p.numel() for p in own)
    scal = sum(
        int(v.numel() * v.element_size())
        for p in own
        for v in inner.state[p].values()
        if torch.is_tensor(v) and v.dim() == 0
    ) // len(own)
    per_elem = (own_bytes - scal * len(own)) / n_own
    out = []
    for part in opt._partition_parameters():
        ps = [p for g in part for p in g["params"]]
        out.append(round(per_elem * sum(p.numel() for p in ps)) + scal * len(ps))
    return out
