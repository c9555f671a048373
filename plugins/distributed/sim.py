"""--simulate: per-rank memory of a strategy at sizes and world sizes no machine here has.

One process plays rank 0 of `world_size` ranks: a fake process group
(torch.testing._internal.distributed.fake_pg.FakeStore + init_process_group("fake"), whose
collectives move nothing) and FakeTensorMode (tensors with shapes and dtypes, no storage).
The same strategy code as real runs (strategies.build_strategy) then builds, shards and trains the
model for real-shaped bookkeeping: exact at-rest bytes (numel * element_size of the local shards), the
tracked peak of a step (MemTracker / FSDPMemTracker), and collective bytes (the counted calls still happen).

Cost independent of the world size (issue 21; rank0.py says where the time went): FSDP2 builds only the
chunks rank 0 reads, MemTracker updates only the active modules, and the simulated step is two steps, not
three: a warm-up (optimizer state created), then one step tracked by the memory tracker that also counts
collective bytes and probes the parameters held after forward (training.train_and_measure's third,
comm-counted step repeats the tracked one in the steady state; the tests compare both paths, byte for byte).
`fast=False` runs the reference path (torch's own code, train_and_measure's three steps).
Measured (2-core host, load ~1.5, `bench run --plugin fsdp --simulate --precision bf16`, stage 3, the whole
command): ZeRO Figure 1 (7.5B, 64 ranks) 16 s; 70B at 1,024 ranks 20 s, at 16,384 ranks 24 s; 405B (198
layers) at 16,384 ranks 57 s, 0.41 GB of host memory; the cost is ~0.3 s per layer, whatever the ranks.

Design notes: optimizer foreach=False (foreach=True gives a bogus optimizer figure under fake tensors);
RuntimeEstimator needs CUDA and can abort the interpreter on CPU, so it is never called: simulated rows
carry no step time. Activations: the tracker's figure (the tensors torch's CPU kernels keep under fake
tensors) and, beside it, the activation model (plugins/common/activations.py, Korthikanti et al. 2022
adapted to this GPT) where it models the configuration; each row says which model it used.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from bench.contract import Metric, Record

VOCAB = 256  # plugins/common/gpt.py is byte-level


def gpt_param_count(n_layer: int, d: int, block_size: int, vocab: int = VOCAB) -> int:
    """Exact parameter count of plugins/common/gpt.py's GPT (biases on, lm_head tied):
    per block 12d^2 + 13d (qkv 3d^2+3d, proj d^2+d, fc 4d^2+4d, proj 4d^2+d, 2 LayerNorms 4d);
    embeddings (vocab + block_size) * d; final LayerNorm 2d."""
    return n_layer * (12 * d * d + 13 * d) + (vocab + block_size) * d + 2 * d


def gpt_shape_for(target: float, block_size: int) -> tuple[int, int]:
    """(n_layer, d_model) whose parameter count is closest to `target`: d a multiple of 128 with
    a GPT-like aspect ratio d/L in [64, 160] (GPT-3 6.7B: d=4096, L=32 -> 128); where that
    misses by more than 2% (small targets), any multiple of 64."""

    def search(step: int, lo: float, hi: float) -> tuple[float, int, int] | None:
        best: tuple[float, int, int] | None = None
        for d in range(step, 32768 + 1, step):
            per_layer = 12 * d * d + 13 * d
            base = (VOCAB + block_size) * d + 2 * d
            n0 = max(1, int((target - base) // per_layer))
            for n_layer in (n0, n0 + 1):
                if not lo <= d / n_layer <= hi:
                    continue
                err = abs(gpt_param_count(n_layer, d, block_size) - target) / target
                if best is None or err < best[0] - 1e-12:
                    best = (err, n_layer, d)
        return best

    best = search(128, 64, 160)
    if best is None or best[0] > 0.02:
        best = search(64, 0, float("inf")) or best
    assert best is not None
    return best[1], best[2]


def params_config(target: float, seq: int) -> Any:
    """The GPT --params picks: gpt_shape_for's (layers, width), heads of 128, block size = seq."""
    from plugins.common.gpt import GPTConfig

    n_layer, d_model = gpt_shape_for(target, seq)
    return GPTConfig(n_layer=n_layer, n_head=max(1, d_model // 128), d_model=d_model, block_size=seq)


def case_config(p: Any) -> Any:
    """The GPT a simulated case builds: a published shape (a `shape` parameter, plugins/common/shapes.py),
    else --params' shape, else the case's preset (params.model_config)."""
    from plugins.distributed.params import model_config, with_ac

    shape = getattr(p, "shape", "")
    if shape:
        from plugins.common.shapes import shape_config

        return with_ac(shape_config(shape, p.seq), p)
    return with_ac(params_config(p.params, p.seq), p) if p.params else model_config(p)


def run_simulated(p: Any, ctx: Any, cfg: Any = None, fast: bool = True) -> list[Record]:
    """One simulated case: rank 0 of p.world_size. cfg: the GPTConfig to build (default: case_config(p));
    fast=False: the reference path (see the module docstring)."""
    import torch.distributed as dist
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.testing._internal.distributed.fake_pg import FakeStore

    from plugins.common.gpt import GPT
    from plugins.common.text import get_batch
    from plugins.distributed.params import UNTIMED_STEPS, ac_label, hybrid_of, stage_of
    from plugins.distributed.rank0 import rank0_only
    from plugins.distributed.strategies import build_strategy, make_mesh
    from plugins.distributed.training import train_and_measure

    stage, world = stage_of(p), p.world_size
    given = cfg is not None
    if cfg is None:
        cfg = case_config(p)
    ctx = dataclasses.replace(ctx, device=torch.device("cpu"))  # fake tensors live on CPU, even on a GPU machine
    with rank0_only(fast):
        dist.init_process_group("fake", rank=0, world_size=world, store=FakeStore())
        try:
            # the mesh must exist before fake mode (it reads real tensors)
            mesh = make_mesh("cpu", world, hybrid_of(p)) if stage >= 2 else None
            gen = torch.Generator().manual_seed(1000 * ctx.seed + 1)
            # byte-level ids (< 256): valid for any vocabulary; the simulated bytes depend on shapes only
            real = [get_batch("train", p.batch, p.seq, gen, "cpu") for _ in range(UNTIMED_STEPS)]
            with FakeTensorMode() as fm:
                batches = [(fm.from_tensor(x), fm.from_tensor(y)) for x, y in real]
                torch.manual_seed(ctx.seed)
                model = GPT(cfg)
                st = build_strategy(
                    model, stage, p.precision, world, torch.device("cpu"), mesh, hybrid_of(p), True, p.reduce_dtype
                )
                trace = start_trace(st, batches)
                with trace.on():
                    if fast:
                        m, samples, notes = measure_simulated(p, ctx, st, batches)
                    else:
                        m, samples, notes = train_and_measure(p, ctx, st, batches, simulate=True)
                events = list(trace.events)
                n_streams = trace.streams
        finally:
            dist.destroy_process_group()
    notes.append(
        f"simulated: rank 0 of {world} (fake process group + FakeTensorMode, no data moved"
        + ("" if fast else "; reference path: every rank's chunks built, three steps")
        + f"); model: {_label(p, cfg, st.psi, given)}; activation checkpointing: {ac_label(p)}; no timing "
        "(RuntimeEstimator needs CUDA)"
    )
    if stage >= 2:
        notes.append("FSDP2 shards with torch.chunk: rank 0 holds the largest shard, so rank 0 is the largest rank")
    am, anote = allocator_metrics(events, n_streams, getattr(p, "expandable_segments", False))
    m.update(am)
    notes.append(anote)
    m["model_layers"] = Metric(cfg.n_layer, "layers", "formula", deterministic=True)
    m["model_width"] = Metric(cfg.d_model, "d_model", "formula", deterministic=True)
    act, act_note = activation_term(cfg, p.batch, p.seq, p.precision)
    m.update(act)
    notes.append(act_note)
    model_b, tracked = act["act_model_bytes"].value, m.get("peak_activations_mib")
    if model_b:
        t = tracked.value * 2**20 if tracked is not None and tracked.value else 0.0
        if t >= 0.5 * model_b:  # the peak falls where the forward's activations are all held
            m["act_tracked_vs_model"] = Metric(t / model_b, "x (tracked activations at the peak / model)", "simulated")
        else:
            m["act_tracked_vs_model"] = Metric(None, "x (n/a: the step's peak falls after activations are freed)")
    return [Record(metrics=m, samples=samples, notes=notes, labels={"rank": 0})]


def _label(p: Any, cfg: Any, psi: int, given: bool) -> str:
    if given:
        name = "the caller's GPT"
    elif getattr(p, "shape", ""):
        name = p.shape
    else:
        name = f"{p.params:.3g} params" if p.params else p.model
    return f"{name} (L={cfg.n_layer}, d={cfg.d_model}, Psi={psi:,})"


def measure_simulated(
    p: Any, ctx: Any, st: Any, batches: list[tuple[torch.Tensor, torch.Tensor]]
) -> tuple[dict[str, Metric], dict[str, list[float]], list[str]]:
    """training.train_and_measure(simulate=True)'s figures from two steps: a warm-up, then one step under
    the memory tracker that also counts collectives and probes the parameters held after forward."""
    from plugins.distributed.comm import CommCounter
    from plugins.distributed.params import stage_of
    from plugins.distributed.strategies import held_param_bytes
    from plugins.distributed.training import add_zero1_max_rank, state_metrics

    stage = stage_of(p)
    model, opt = st.model, st.opt
    state = {"i": 0, "probe": False, "held": 0}

    def step() -> None:
        x, y = batches[state["i"] % len(batches)]
        state["i"] += 1
        opt.zero_grad(set_to_none=True)
        loss = model(x, y)[1]  # the logits die here, before backward, as a training loop frees them
        if state["probe"]:
            state["held"] = held_param_bytes(model, st.rest_bytes, st.sharded)
        loss.backward()
        opt.step()

    step()  # warm-up (optimizer state created)
    state["probe"] = True
    with CommCounter() as cc:
        rep = ctx.track_step(step, model, opt)
    m, notes = state_metrics(p, ctx, st, rep, cc, state["held"], "simulated")
    add_zero1_max_rank(stage, opt, m, notes, "simulated")
    return m, {}, notes


# --- reserved memory: the caching-allocator model -----------------------------------------------------------
def start_trace(st: Any, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> Any:
    """An allocation trace (alloctrace.py) holding what exists before the first step: the parameters (FSDP2:
    the padded local shards), buffers and the input batches, in that order (torchtitan allocates the sharded
    parameters first, then the data arrives)."""
    from plugins.distributed.alloctrace import AllocTrace
    from plugins.distributed.strategies import is_dtensor

    trace = AllocTrace()
    for t in [*st.model.parameters(), *st.model.buffers()]:
        trace.add(t._local_tensor if is_dtensor(t) else t)
    for x, y in batches:
        trace.add(x)
        trace.add(y)
    return trace


def allocator_metrics(events: list[Any], n_streams: int, expandable: bool) -> tuple[dict[str, Metric], str]:
    """The reserved and allocated peaks of the warm-up and tracked steps replayed through the caching-allocator
    model (allocator.py), with the setting, the source and what is not modelled in the unit."""
    from plugins.distributed.allocator import NOT_MODELLED, SOURCE, replay

    gib = 2**30
    st = replay(events, expandable)
    setting = "expandable_segments:True" if expandable else "default settings"
    how = f"caching-allocator model ({setting}) replaying the simulated steps' {st.mallocs:,} allocations"
    m = {
        "reserved_peak_gib": Metric(
            st.peak_reserved / gib,
            f"GiB per rank (max_memory_reserved predicted: {how})",
            "simulated",
            deterministic=True,
        ),
        "allocated_peak_gib": Metric(
            st.peak_allocated / gib,
            "GiB per rank (max_memory_allocated predicted: 512-byte rounded blocks)",
            "simulated",
            deterministic=True,
        ),
        "reserved_vs_allocated": Metric(
            st.peak_reserved / st.peak_allocated if st.peak_allocated else None,
            "x (predicted reserved peak / allocated peak)",
            "simulated",
            deterministic=True,
        ),
    }
    note = (
        f"reserved_peak_gib / allocated_peak_gib: {how} over {n_streams} stream(s) (default, FSDP2's all-gather "
        f"copy-in and reduce-scatter streams); rules and constants from {SOURCE}; {NOT_MODELLED}"
    )
    return m, note


# --- the activation term -------------------------------------------------------------------------------
ACT_MODEL = "Korthikanti et al. 2022 (arXiv 2205.05198, sec. 4.1) adapted to this GPT: plugins/common/activations.py"


def activation_term(cfg: Any, batch: int, seq: int, precision: str) -> tuple[dict[str, Metric], str]:
    """The activation model's bytes for rank 0's batch beside the tracked ones: what the GPT keeps for
    backward at the end of forward, with the kernel the simulation ran (torch's CPU flash kernel under
    fake tensors) and with the kernel a CUDA device would run (flash for 16-bit, memory-efficient for fp32).
    Returns the metrics and a note naming the model used (or why none applies)."""
    why = activation_model_gap(cfg)
    if why:
        unit = f"bytes (not modelled: {why})"
        return (
            {"act_model_bytes": Metric(None, unit, "formula"), "act_model_cuda_bytes": Metric(None, unit, "formula")},
            f"activations: tracked only (FSDPMemTracker/MemTracker under fake tensors); the activation model "
            f"does not cover this configuration: {why}",
        )
    from plugins.common.activations import default_attention, model_activation_bytes

    dtype = "bf16" if precision == "bf16" else "fp32"
    cpu = model_activation_bytes(cfg, batch, seq, dtype, default_attention("cpu", dtype), "cpu")
    kern = default_attention("cuda", dtype)
    cuda = model_activation_bytes(cfg, batch, seq, dtype, kern, "cuda")
    m = {
        "act_model_bytes": Metric(
            cpu["kept_for_backward"], "bytes (activation model, CPU flash kernel)", "formula", deterministic=True
        ),
        "act_model_cuda_bytes": Metric(
            cuda["kept_for_backward"], f"bytes (activation model, CUDA {kern} kernel)", "formula", deterministic=True
        ),
    }
    note = (
        f"activations: tracked under fake tensors (peak_activations_mib: the activations live at the step's peak, "
        f"CPU kernels); act_model_bytes / act_model_cuda_bytes: the bytes kept for backward at the end of forward "
        f"by the activation model, {ACT_MODEL}, {dtype}, kernel flash on CPU / {kern} on CUDA"
    )
    return m, note


def activation_model_gap(cfg: Any) -> str:
    """Why plugins/common/activations.py does not model `cfg` ('' when it does): it models the default GPT
    (GELU MLP of width 4d, multi-head attention, LayerNorm, learned positions, no dropout, no checkpointing)."""
    gaps = []
    if getattr(cfg, "mlp", "gelu") != "gelu" or (getattr(cfg, "ffn_hidden", 0) or 4 * cfg.d_model) != 4 * cfg.d_model:
        gaps.append("a SwiGLU / non-4d MLP")
    if getattr(cfg, "n_kv_head", 0) and cfg.n_kv_head != cfg.n_head:
        gaps.append("grouped-query attention")
    if getattr(cfg, "norm", "layernorm") != "layernorm":
        gaps.append("RMSNorm")
    if getattr(cfg, "pos", "learned") != "learned":
        gaps.append("rotary positions")
    if getattr(cfg, "checkpoint", False) or getattr(cfg, "ac", "none") != "none":
        gaps.append("activation checkpointing")
    if getattr(cfg, "dropout", 0.0):
        gaps.append("dropout")
    try:
        import plugins.common.activations  # noqa: F401
    except ImportError:
        gaps.append("plugins/common/activations.py is not installed")
    return ", ".join(gaps)
