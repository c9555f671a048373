"""mem.train_24x at the notes' scale: the 1b preset (1.2B parameters), fp32 weights + AdamW, one
training step at each batch of a sweep (--scale-batch x 1, 2, 4 sequences of --scale-seq tokens; by
default 1, 2, 4 x 2048: the notes give no batch, so the verdict says at which of these it holds). Simulated with FakeTensorMode on the CPU (shapes and dtypes, no memory; MemTracker's
categories), and on CUDA also measured for real (torch.cuda.max_memory_allocated via ctx.peak_above;
the categories at rest are exact, the peaks' split by difference).

The row carries what the verdict needs (plugins/precision/summary.py): the peak of each phase, its
breakdown by category beside the notes' 4 + 4 + 8 + 8, the at-rest states, and the tokens per batch
where 24 bytes/param holds, from the activation formula (plugins/common/activations.py: activations
linear in the batch at a fixed sequence length) anchored on the simulated forward+backward peak.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import TYPE_CHECKING, Any

from bench.contract import Metric, Record
from plugins.common.activations import default_attention, model_activation_bytes
from plugins.precision.params import SCALE_PRESET, PrecisionParams, guarded, scale_sweep
from plugins.precision.trainmem import counters, phase_metrics, setup, step_phases, warm_state
from plugins.precision.verdicts import tokens_window

if TYPE_CHECKING:  # pragma: no cover
    from bench.context import Context


def run_scale(p: PrecisionParams, ctx: Context) -> list[Record]:
    out = []
    for k in scale_sweep(ctx.device.type == "cuda"):
        q = dataclasses.replace(p, scale_batch=p.scale_batch * k)
        labels = {
            "format": "fp32",
            "optim": "adamw",
            "preset": SCALE_PRESET,
            "batch": q.scale_batch,
            "seq": q.scale_seq,
        }
        if ctx.device.type == "cuda":  # the real thing first: it is the GPU's evidence
            out.append(guarded({**labels, "mode": "measured"}, partial(_measured_cuda, q, ctx)))
        out.append(guarded({**labels, "mode": "simulated"}, partial(_simulated, q, ctx)))
    return out


def _batch(p: PrecisionParams, device: Any) -> tuple[Any, Any]:
    import torch

    from plugins.common.text import get_batch

    return get_batch("train", p.scale_batch, p.scale_seq, torch.Generator().manual_seed(1), device)


def _simulated(p: PrecisionParams, ctx: Context) -> Record:
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    cpu = dataclasses.replace(ctx, device=torch.device("cpu"))  # fake tensors are tracked on the CPU
    x, y = _batch(p, "cpu")
    with FakeTensorMode() as fm:
        s = setup("fp32", "adamw", SCALE_PRESET, cpu.device, ctx.seed)
        warm_state(s)
        ph = step_phases(s, fm.from_tensor(x), fm.from_tensor(y), cpu)
        n = sum(q.numel() for q in s.model.parameters())
        cnt = counters(s.opt)
    return _record(p, ph, n, cnt, "simulated", "cpu", "FakeTensorMode + MemTracker on the CPU")


def _measured_cuda(p: PrecisionParams, ctx: Context) -> Record:
    """The same step on the GPU: peaks from the allocator (cheap at 1.2B); the categories at rest
    are exact, the bytes above them at each peak are filed as "other" (gradients as they land,
    activations and temporaries: the allocator does not tell them apart)."""
    from bench.memory import MemoryReport

    s = setup("fp32", "adamw", SCALE_PRESET, ctx.device, ctx.seed)
    warm_state(s)
    x, y = _batch(p, ctx.device)
    n = sum(q.numel() for q in s.model.parameters())
    s.model.zero_grad(set_to_none=True)
    base = ctx.state_bytes(s.model, s.opt)
    fb, method = ctx.peak_above(lambda: s.fwd_bwd(x, y))
    rest = ctx.state_bytes(s.model, s.opt)
    up, _ = ctx.peak_above(s.update)
    s.model.zero_grad(set_to_none=True)

    def report(at: dict[str, int], above: int) -> MemoryReport:
        return MemoryReport(sum(at.values()) + above, {**at, "other": above}, method)

    ph = {
        "fwd_bwd": report({k: base[k] for k in ("parameters", "optimizer_state")}, fb),
        "update": report({k: rest[k] for k in ("parameters", "gradients", "optimizer_state")}, up),
        "rest": rest,
        "master": 0,
    }
    return _record(p, ph, n, counters(s.opt), "measured", "cuda", f"torch.cuda.max_memory_allocated ({method})")


def _record(p: PrecisionParams, ph: dict[str, Any], n: int, cnt: int, src: str, dev: str, how: str) -> Record:
    from plugins.common.gpt import config_from

    rest = ph["rest"]
    m = phase_metrics(ph, n, src)
    fb, up = ph["fwd_bwd"], ph["update"]
    top = fb if fb.peak_bytes >= up.peak_bytes else up
    at = {c: v / n for c, v in top.at_peak.items()}
    tokens = p.scale_batch * p.scale_seq
    cfg = config_from(SCALE_PRESET)
    kernel = default_attention(dev, "fp32")  # what SDPA picks here: flash on a CPU, memory-efficient on CUDA
    acts = model_activation_bytes(cfg, p.scale_batch, p.scale_seq, "fp32", kernel, dev)["kept_for_backward"]
    per_token = acts / n / tokens
    fixed = fb.peak_bytes / n - per_token * tokens  # anchored on this forward+backward peak
    window = tokens_window(per_token, fixed, floor=up.peak_bytes / n)
    states_x = (rest["parameters"] + rest["gradients"] + rest["optimizer_state"] - cnt) / n
    m.update(
        {
            "params": Metric(n, "parameters", deterministic=True),
            "batch": Metric(p.scale_batch, "sequences", deterministic=True),
            "seq": Metric(p.scale_seq, "tokens per sequence", deterministic=True),
            "state_bytes_per_param_excl_counters": Metric(
                states_x, "bytes/param at rest (weights + grads + Adam m, v)", src, deterministic=True
            ),
            "step_counter_bytes": Metric(cnt, "bytes (AdamW's 0-d step counters)", src, deterministic=True),
            "peak_weights_bytes_per_param": Metric(at.get("parameters", 0.0), "bytes/param at the step's peak", src),
            "peak_grads_bytes_per_param": Metric(at.get("gradients", 0.0), "bytes/param at the step's peak", src),
            "peak_optim_bytes_per_param": Metric(at.get("optimizer_state", 0.0), "bytes/param at the step's peak", src),
            "peak_act_bytes_per_param": Metric(
                sum(at.get(c, 0.0) for c in ("activations", "temporaries", "other")),
                "bytes/param at the step's peak (activations + temporaries)",
                src,
            ),
            "peak_phase": Metric("forward+backward" if top is fb else "optimizer update", "", src),
            "formula_act_bytes_per_param": Metric(
                acts / n, "bytes/param kept for backward (activation formula)", "formula", deterministic=True
            ),
            "tokens_24_lo": Metric(
                window[0] if window else None, "tokens per batch (24 bytes/param -10%; formula)", "formula"
            ),
            "tokens_24_hi": Metric(
                window[1] if window else None, "tokens per batch (24 bytes/param +10%; formula)", "formula"
            ),
        }
    )
    notes = [
        f"scale: GPT {SCALE_PRESET} ({n:,} params), fp32 + AdamW(foreach=True), batch {p.scale_batch} x seq "
        f"{p.scale_seq} = {tokens:,} tokens, {src} ({how}); the peak is the larger of the forward+backward and the "
        "optimizer update phases; tokens_24_lo/hi: the batch range (x seq) where the peak is within 24 +- 10% "
        "bytes/param, from the activation formula's slope per token anchored on this forward+backward peak"
    ]
    return Record(metrics=m, notes=notes)
