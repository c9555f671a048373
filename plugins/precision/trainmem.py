"""--what trainmem: memory of a training step per parameter (claim mem.train_24x).

Setups: fp32/tf32 = fp32 weights + AdamW; bf16/fp16 = 16-bit weights and gradients, the optimizer
updating fp32 master weights (ZeRO paper sec. 3.1 accounting: 2 + 2 + 12 bytes/param); --optim
adamw8bit = bitsandbytes AdamW8bit. torch AdamW runs with foreach=True (torch's default on CUDA): its
update holds one parameter-sized temporary (4 bytes/param).

Per format, at the --model preset and --batch x --seq (measured on this device): weights, gradients,
master weights and optimizer state at rest after a real step (ctx.state_bytes, exact), and the peak of
each phase of a step with its breakdown (ctx.track_step, MemTracker): forward + backward, then the
optimizer step. fp32 AdamW also runs the same configuration simulated (FakeTensorMode), as a check
of the simulation, and the formula's prediction (plugins/common/activations.py) beside the peak.

At the notes' scale (fp32 AdamW): the 1b preset (1.2B parameters) at --scale-batch x --scale-seq,
simulated with fake tensors (no memory: any machine), and on CUDA also measured for real (peaks from
torch.cuda.max_memory_allocated via ctx.peak_above). The verdict of mem.train_24x is taken there.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from bench.contract import Metric, Record
from plugins.common.activations import default_attention, model_activation_bytes
from plugins.precision.params import (
    FP8_TRAIN_SKIP,
    TF32_SKIP,
    PrecisionParams,
    guarded,
    skipped,
    tf32_mode,
)

if TYPE_CHECKING:  # pragma: no cover
    from bench.context import Context

CATS = ("parameters", "gradients", "optimizer_state", "activations", "temporaries", "buffers", "other")


@dataclass
class Setup:
    model: Any
    opt: Any
    master: Any  # nn.ParameterList of fp32 master weights (16-bit formats) or None
    fwd_bwd: Callable[[Any, Any], None]
    update: Callable[[], None]

    @property
    def tracked(self) -> Any:
        """What MemTracker should file under parameters: the model and the fp32 master weights."""
        if self.master is None:
            return self.model
        import torch

        both = torch.nn.Module()
        both.model, both.master = self.model, self.master
        return both


def make_optimizer(kind: str, params: Any) -> Any:
    import torch

    if kind == "adamw8bit":
        import bitsandbytes as bnb

        return bnb.optim.AdamW8bit(params, lr=1e-3)
    return torch.optim.AdamW(params, lr=1e-3, foreach=True)


def setup(fmt: str, optim: str, preset: str, device: Any, seed: int) -> Setup:
    """The model built on `device` (a fake-tensor mode around this call simulates it)."""
    import torch

    from plugins.common.gpt import GPT, config_from
    from plugins.common.numerics import torch_dtype

    torch.manual_seed(seed)
    with torch.device(device):
        model = GPT(config_from(preset))
    if fmt in ("fp32", "tf32"):
        opt = make_optimizer(optim, model.parameters())

        def fwd_bwd(x: Any, y: Any) -> None:
            _, loss = model(x, y)
            loss.backward()

        return Setup(model, opt, None, fwd_bwd, opt.step)
    for q in model.parameters():  # works for fake tensors too (Module.to would swap them)
        q.data = q.data.to(torch_dtype(fmt))
    master = torch.nn.ParameterList([torch.nn.Parameter(q.detach().float().clone()) for q in model.parameters()])
    opt = make_optimizer(optim, master.parameters())

    def mp_fwd_bwd(x: Any, y: Any) -> None:
        _, loss = model(x, y)
        loss.backward()

    def mp_update() -> None:
        for mq, q in zip(master, model.parameters()):
            assert q.grad is not None
            mq.grad = q.grad.float()  # fp32 gradient for the update only: freed right after
        opt.step()
        with torch.no_grad():
            for mq, q in zip(master, model.parameters()):
                q.copy_(mq)
                mq.grad = None

    return Setup(model, opt, master, mp_fwd_bwd, mp_update)


def warm_state(s: Setup) -> None:
    """Create the optimizer state with one update on zero gradients (no forward: cheap at any size)."""
    import torch

    for q in s.model.parameters():
        q.grad = torch.zeros_like(q)
    s.update()
    s.model.zero_grad(set_to_none=True)


def _per_param(at: dict[str, int], n: int) -> dict[str, float]:
    return {c: at.get(c, 0) / n for c in CATS}


def step_phases(s: Setup, x: Any, y: Any, ctx: Context) -> dict[str, Any]:
    """Peaks of a step's two phases (MemTracker): forward + backward, then the optimizer update;
    the at-rest bytes between them (gradients allocated)."""
    s.model.zero_grad(set_to_none=True)
    fb = ctx.track_step(lambda: s.fwd_bwd(x, y), s.tracked, s.opt)
    rest = ctx.state_bytes(s.model, s.opt)
    master = ctx.state_bytes(s.master)["parameters"] if s.master is not None else 0
    up = ctx.track_step(s.update, s.tracked, s.opt)
    s.model.zero_grad(set_to_none=True)
    return {"fwd_bwd": fb, "update": up, "rest": rest, "master": master}


def counters(opt: Any) -> int:
    """Bytes of the optimizer's 0-d step counters (reported apart from Adam's m and v)."""
    import torch

    return sum(
        int(v.numel() * v.element_size())
        for st in opt.state.values()
        for k, v in st.items()
        if k == "step" and torch.is_tensor(v)
    )


def phase_metrics(ph: dict[str, Any], n: int, src: str) -> dict[str, Metric]:
    """bytes/param at rest and at each phase's peak, by category; total = the larger peak."""
    rest, master = ph["rest"], ph["master"]
    m: dict[str, Metric] = {
        "params_bytes_per_param": Metric(rest["parameters"] / n, "bytes/param (weights)", src, deterministic=True),
        "grads_bytes_per_param": Metric(rest["gradients"] / n, "bytes/param (gradients)", src, deterministic=True),
        "master_bytes_per_param": Metric(master / n, "bytes/param (fp32 master weights)", src, deterministic=True),
        "optim_bytes_per_param": Metric(
            rest["optimizer_state"] / n, "bytes/param (optimizer state incl. step counters)", src, deterministic=True
        ),
    }
    for phase in ("fwd_bwd", "update"):
        rep = ph[phase]
        at = _per_param(rep.at_peak, n)
        m[f"peak_{phase}_bytes_per_param"] = Metric(
            rep.peak_bytes / n,
            f"bytes/param at the {phase} peak ({rep.method})",
            src,
            deterministic=True,
            portable=False,
        )
        for c in ("parameters", "gradients", "optimizer_state"):
            m[f"{phase}_{c}_bytes_per_param"] = Metric(
                at[c], f"bytes/param ({c} at the {phase} peak)", src, deterministic=True, portable=False
            )
        act = at["activations"] + at["temporaries"] + at["other"]
        m[f"{phase}_act_bytes_per_param"] = Metric(
            act, f"bytes/param (activations + temporaries at the {phase} peak)", src, deterministic=True, portable=False
        )
    total = max(ph["fwd_bwd"].peak_bytes, ph["update"].peak_bytes) / n
    m["total_bytes_per_param"] = Metric(
        total, "bytes/param at the step's peak (the larger phase)", src, deterministic=True, portable=False
    )
    return m


def run_trainmem(p: PrecisionParams, ctx: Context) -> list[Record]:
    # --dtype all: fp32 and bf16 (16-bit weights with fp32 master weights); the quick profile: fp32, the claim's
    fmts = (["fp32"] if ctx.profile == "quick" else ["fp32", "bf16"]) if p.dtype == "all" else [p.dtype]
    optims = ["adamw", "adamw8bit"] if p.optim == "all" else [p.optim]
    out = []
    for fmt in fmts:
        for opt in optims:
            labels = {"format": fmt, "optim": opt, "preset": p.model, "mode": "measured"}
            if fmt == "tf32" and ctx.device.type != "cuda":
                out.append(skipped(labels, TF32_SKIP))
            elif fmt.startswith("fp8"):
                out.append(skipped(labels, FP8_TRAIN_SKIP))
            elif opt == "adamw8bit" and importlib.util.find_spec("bitsandbytes") is None:
                out.append(skipped(labels, "bitsandbytes is not installed"))
            else:
                out.append(guarded(labels, partial(_measured_row, fmt, opt, p, ctx)))
    if "fp32" in fmts and "adamw" in optims:
        from plugins.precision.scale import run_scale

        out += run_scale(p, ctx)
    return out


def predicted(preset: str, n: int, batch: int, seq: int, fmt: str, device_type: str) -> float:
    """Formula: bytes/param of the forward+backward phase's peak without its transient temporaries and
    the gradients landing in backward: weights + optimizer state (fp32 AdamW: 4 + 8; 16-bit with fp32
    master weights: 2 + 4 + 8) + the activations kept for backward (plugins/common/activations.py)."""
    from plugins.common.gpt import config_from

    dt = "fp32" if fmt == "tf32" else fmt
    acts = model_activation_bytes(config_from(preset), batch, seq, dt, default_attention(device_type, dt), device_type)
    states = 12 if dt == "fp32" else 2 + 4 + 8
    return states + acts["kept_for_backward"] / n


def _measured_row(fmt: str, optim: str, p: PrecisionParams, ctx: Context) -> Record:
    import torch

    from bench.memory import param_count
    from plugins.common.text import get_batch

    s = setup(fmt, optim, p.model, ctx.device, ctx.seed)
    n = param_count(s.model)
    warm_state(s)
    x, y = get_batch("train", p.batch, p.seq, torch.Generator().manual_seed(ctx.seed), ctx.device)
    with tf32_mode(fmt == "tf32"):
        ph = step_phases(s, x, y, ctx)
    cnt = counters(s.opt)
    states = ph["rest"]["parameters"] + ph["rest"]["gradients"] + ph["master"] + ph["rest"]["optimizer_state"]
    m = phase_metrics(ph, n, "measured")
    m["params"] = Metric(n, "parameters", deterministic=True)
    m["batch"] = Metric(p.batch, "sequences", deterministic=True)
    m["seq"] = Metric(p.seq, "tokens per sequence", deterministic=True)
    m["step_counter_bytes"] = Metric(cnt, "bytes (optimizer step counters, in optim above)", deterministic=True)
    m["state_bytes_per_param"] = Metric(states / n, "bytes/param at rest", deterministic=True)
    m["state_bytes_per_param_excl_counters"] = Metric(
        (states - cnt) / n, "bytes/param at rest without step counters", deterministic=True
    )
    notes = [
        f"trainmem: GPT {p.model}, {n:,} params, {fmt} + {optim}, batch {p.batch} x seq {p.seq} on {ctx.device.type}; at "
        "rest = weights + grads + master + optimizer after a real step (ctx.state_bytes); peaks per phase "
        "(ctx.track_step: forward+backward, then the optimizer update)",
    ]
    if s.master is not None:
        notes.append(
            f"trainmem {fmt}: {fmt} weights and gradients, fp32 master weights updated by the optimizer; the "
            "fp32 copy of the gradients exists only during the update (a transient 4 bytes/param)"
        )
    if optim == "adamw" and fmt in ("fp32", "bf16", "fp16"):
        pred = predicted(p.model, n, p.batch, p.seq, fmt, ctx.device.type)
        fb = ph["fwd_bwd"].peak_bytes / n
        m["formula_fwd_bwd_bytes_per_param"] = Metric(
            pred,
            "bytes/param: weights + optimizer + activations kept for backward (formula)",
            "formula",
            deterministic=True,
        )
        m["fwd_bwd_vs_formula"] = Metric(
            fb / pred, "measured forward+backward peak / formula", deterministic=True, portable=False
        )
    if fmt == "fp32" and optim == "adamw":
        sim = _simulated_phases(p, ctx)
        simulated = max(sim["fwd_bwd"].peak_bytes, sim["update"].peak_bytes) / n
        measured = max(ph["fwd_bwd"].peak_bytes, ph["update"].peak_bytes) / n
        m["simulated_total_bytes_per_param"] = Metric(
            simulated, "bytes/param at the peak, same config under FakeTensorMode", "simulated", deterministic=True
        )
        m["simulated_vs_measured"] = Metric(
            simulated / measured, "simulated / measured peak", "simulated", deterministic=True, portable=False
        )
    return Record(metrics=m, notes=notes)


def _simulated_phases(p: PrecisionParams, ctx: Context) -> dict[str, Any]:
    """The measured fp32 AdamW configuration again under FakeTensorMode on the CPU (the simulator's
    check against the real step)."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    from plugins.common.text import get_batch

    cpu = dataclasses.replace(ctx, device=torch.device("cpu"))  # fake tensors live on the CPU, even on a GPU machine
    x, y = get_batch("train", p.batch, p.seq, torch.Generator().manual_seed(ctx.seed), "cpu")
    with FakeTensorMode() as fm:
        s = setup("fp32", "adamw", p.model, cpu.device, ctx.seed)
        warm_state(s)
        return step_phases(s, fm.from_tensor(x), fm.from_tensor(y), cpu)
