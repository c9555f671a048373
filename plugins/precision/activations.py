"""--what activations: the bytes one transformer layer of the GPT keeps for backward, formula
(plugins/common/activations.py, after Korthikanti et al. 2022 sec. 4.1) vs measured, per
configuration of s, b, h, heads, attention kernel and dtype (claim mem.act_layer).

Measured: the GPT with 2 layers and with 1 layer, one training forward each (loss computed, autograd
on) under ctx.track_step (torch MemTracker); the non-parameter bytes at the forward's peak differ by
exactly one layer's kept tensors (both peaks fall at the same point of the last layer or the head, so
everything else cancels). Simulated: the same under FakeTensorMode (shapes and dtypes, no memory),
for layers the size of the 1b preset's. Kernels forced with torch.nn.attention.sdpa_kernel.
Beside them, the paper's figure as printed: sbh(34 + 5as/h) bytes at 16-bit, scaled to the dtype.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from bench.contract import Metric, Record, Skip
from plugins.common.activations import activation_bytes, korthikanti_bytes
from plugins.precision.params import PrecisionParams, guarded

if TYPE_CHECKING:  # pragma: no cover
    from bench.context import Context


@dataclass(frozen=True)
class Act:
    d_model: int
    heads: int
    seq: int
    batch: int
    attention: str  # flash | math | efficient (CUDA)
    dtype: str  # fp32 | bf16 | fp16
    simulate: bool = False

    @property
    def labels(self) -> dict[str, Any]:
        return {
            "format": self.dtype,
            "attention": self.attention,
            "d_model": self.d_model,
            "heads": self.heads,
            "seq": self.seq,
            "batch": self.batch,
            "mode": "simulated" if self.simulate else "measured",
        }

    def cfg(self, n_layer: int) -> Any:
        from plugins.common.gpt import GPTConfig

        return GPTConfig(n_layer=n_layer, n_head=self.heads, d_model=self.d_model, block_size=max(self.seq, 8))


# (d_model, heads, seq, batch): s, b and h each vary; every shape with both kernels
CPU_SHAPES = ((64, 4, 256, 2), (128, 8, 128, 4), (256, 4, 128, 1))
CPU_BF16 = (128, 4, 128, 2)
SCALE_SHAPE = (2048, 16, 2048, 1)  # one layer of the 1b preset at its full context (simulated on a CPU)
CUDA_SHAPES = ((1024, 16, 1024, 4), (2048, 16, 2048, 1))


def configs(p: PrecisionParams, device_type: str) -> list[Act]:
    """The configurations of a case: --model (not auto) gives that preset's layer at --seq x --batch;
    auto gives the grid above (CPU: 8 measured + 2 simulated; CUDA: bf16 with flash, efficient and
    math, fp32 with efficient and math, measured)."""
    from plugins.common.gpt import PRESETS

    dtypes = ["fp32", "bf16"] if p.dtype == "all" else [p.dtype]
    dtypes = [d for d in dtypes if d in ("fp32", "bf16", "fp16")] or ["fp32"]
    if device_type == "cuda":
        kernels = {"fp32": ("efficient", "math"), "bf16": ("flash", "efficient", "math"), "fp16": ("flash", "math")}
    else:
        kernels = {d: ("flash", "math") for d in ("fp32", "bf16", "fp16")}
    if p.model != "auto":
        c = PRESETS[p.model]
        return [Act(c.d_model, c.n_head, p.seq, p.batch or 1, k, d) for d in dtypes for k in kernels[d]]
    out: list[Act] = []
    if device_type == "cuda":
        for h, a, s, b in CUDA_SHAPES:
            out += [Act(h, a, s, b, k, d) for d in dtypes for k in kernels[d]]
        return out
    for h, a, s, b in CPU_SHAPES:
        out += [Act(h, a, s, b, k, "fp32") for k in kernels["fp32"]]
    if "bf16" in dtypes:
        out += [Act(*CPU_BF16, k, "bf16") for k in kernels["bf16"]]
    out += [Act(*SCALE_SHAPE, k, "fp32", simulate=True) for k in kernels["fp32"]]
    return out


def run_activations(p: PrecisionParams, ctx: Context) -> list[Record]:
    return [guarded(c.labels, partial(_row, c, ctx)) for c in configs(p, ctx.device.type)]


def _forward_peak(c: Act, n_layer: int, ctx: Context) -> int:
    """Non-parameter bytes at the peak of one training forward of a GPT with n_layer layers."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from plugins.common.numerics import torch_dtype

    backend = {
        "flash": SDPBackend.FLASH_ATTENTION,
        "math": SDPBackend.MATH,
        "efficient": SDPBackend.EFFICIENT_ATTENTION,
    }
    dev = torch.device("cpu") if c.simulate else ctx.device
    mode: Any = contextlib.nullcontext()
    if c.simulate:
        from torch._subclasses.fake_tensor import FakeTensorMode

        mode = FakeTensorMode()
    with mode:
        torch.manual_seed(ctx.seed)
        from plugins.common.gpt import GPT

        with torch.device(dev):  # built on the device it runs on
            model = GPT(c.cfg(n_layer))
        dt = torch_dtype(c.dtype)
        for q in model.parameters():  # works for fake tensors too (Module.to would swap them)
            q.data = q.data.to(dt)
        g = torch.Generator(device=dev).manual_seed(ctx.seed) if not c.simulate else None
        idx = torch.randint(0, model.cfg.vocab_size, (c.batch, c.seq), generator=g, device=dev)
        run_ctx = dataclasses.replace(ctx, device=dev)  # fake tensors are tracked on the CPU
        try:
            with sdpa_kernel(backend[c.attention]):
                rep = run_ctx.track_step(lambda: model(idx, idx), model)
        except RuntimeError as e:  # this kernel does not exist here for this dtype/shape: torch's own reason
            if "No available kernel" not in str(e) and "No viable backend" not in str(e):
                raise
            raise Skip(f"SDPA {c.attention} kernel not available here: {str(e).splitlines()[0][:300]}") from None
    return int(rep.peak_bytes - rep.at_peak.get("parameters", 0) - rep.at_peak.get("buffers", 0))


def _row(c: Act, ctx: Context) -> Record:
    dev_type = "cpu" if c.simulate else ctx.device.type
    measured = _forward_peak(c, 2, ctx) - _forward_peak(c, 1, ctx)
    terms = activation_bytes(c.cfg(1), c.batch, c.seq, c.dtype, c.attention, dev_type)
    formula = terms["total"]
    paper = korthikanti_bytes(c.cfg(1), c.batch, c.seq, c.dtype, fused=c.attention != "math")
    src = "simulated" if c.simulate else "measured"
    sbh = c.seq * c.batch * c.d_model
    m = {
        "formula_bytes": Metric(
            formula, "bytes per layer (plugins/common/activations.py)", "formula", deterministic=True
        ),
        "measured_bytes": Metric(
            measured,
            f"bytes per layer (MemTracker, 2 layers - 1 layer; {src})",
            src,
            deterministic=True,
            portable=False,
        ),
        "ratio": Metric(measured / formula, "measured / formula", src, deterministic=True, portable=False),
        "formula_per_sbh": Metric(formula / sbh, "bytes / (s*b*h)", "formula", deterministic=True),
        "paper_bytes": Metric(
            paper,
            "bytes per layer: sbh(34 + 5as/h) x e/2 (flash: 34sbh x e/2), as printed",
            "formula",
            deterministic=True,
        ),
        "paper_ratio": Metric(
            measured / paper, "measured / the paper's figure", src, deterministic=True, portable=False
        ),
    }
    notes = [
        f"activations {c.dtype} {c.attention} h={c.d_model} a={c.heads} s={c.seq} b={c.batch} ({src} on {dev_type}): "
        "terms (bytes) " + ", ".join(f"{k} {v:,}" for k, v in terms.items() if k != "total"),
    ]
    return Record(metrics=m, labels=c.labels, notes=notes)
