"""Optimizer-state bytes per parameter after one real step: torch AdamW (fp32 m and v: 8 bytes/param)
vs bitsandbytes AdamW8bit (block-wise 8-bit m and v + fp32 absmax per block; tensors under 4096
elements keep fp32 state). Bytes are exact (ctx.state_bytes); the step's time is measured when one
step fits the budget (bitsandbytes' CPU kernels can be slow on a machine)."""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Any

from bench.contract import Metric, Record, Skip, timing_metrics
from plugins.quantization.params import TEXT_BATCH, TEXT_SEQ, QuantParams
from plugins.quantization.speed import call_cost_s

if TYPE_CHECKING:  # pragma: no cover
    from bench.context import Context

STEP_BUDGET_S = {"quick": 1.5, "full": 30.0, "gpu": 5.0}  # the timed steps (~STEP_CALLS of them)
STEP_CALLS = 10
TIMING_CAP_S = {"quick": 0.3, "full": 2.0, "gpu": 0.5}


def optimizer_case(p: QuantParams, ctx: Context, model: Any) -> Record:
    import torch

    from plugins.common.text import get_batch

    model.train()
    if p.scheme == "adamw8bit":
        if importlib.util.find_spec("bitsandbytes") is None:
            raise Skip("bitsandbytes is not installed")
        import bitsandbytes as bnb

        opt = bnb.optim.AdamW8bit(model.parameters(), lr=1e-3)
        how = f"bitsandbytes {bnb.__version__} optim.AdamW8bit (block-wise 8-bit m and v; tensors under 4096 elements keep fp32 state)"
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        how = "torch.optim.AdamW (fp32 m and v)"
    gen = torch.Generator().manual_seed(ctx.seed)
    x, y = get_batch("train", TEXT_BATCH, min(TEXT_SEQ, model.cfg.block_size), gen, ctx.device)
    _, loss = model(x, y)
    loss.backward()
    try:
        opt.step()  # creates the state
    except Exception as e:  # an optimizer kernel missing on this device
        raise Skip(f"{p.scheme} cannot step on {ctx.device.type}: {type(e).__name__}: {e}"[:1500]) from e
    sb = ctx.state_bytes(model, opt)
    n = sum(q.numel() for q in model.parameters())
    by_kind: dict[str, int] = {}
    for st in opt.state.values():
        for v in st.values():
            if torch.is_tensor(v):
                k = "8bit" if v.element_size() == 1 else "other"
                by_kind[k] = by_kind.get(k, 0) + int(v.numel() * v.element_size())

    def exact(v: float, unit: str) -> Metric:
        return Metric(v, unit, deterministic=True)

    m: dict[str, Metric] = {
        "params": exact(n, "parameters"),
        "optim_bytes": exact(sb["optimizer_state"], "bytes (optimizer state after a real step)"),
        "optim_bytes_per_param": exact(sb["optimizer_state"] / n, "bytes/param"),
        "optim_8bit_bytes_per_param": exact(by_kind.get("8bit", 0) / n, "bytes/param (1-byte state tensors)"),
        "optim_other_bytes_per_param": exact(
            by_kind.get("other", 0) / n, "bytes/param (fp32 state: small tensors, absmax, quantile maps, step)"
        ),
    }
    notes = [f"{p.scheme}: {how}; GPT {p.model}, one real step on text"]
    samples: dict[str, list[float]] = {}
    one, wall = call_cost_s(opt.step, ctx.device)
    budget = STEP_BUDGET_S.get(ctx.profile, STEP_BUDGET_S["full"])
    if one * STEP_CALLS > budget:
        notes.append(
            f"step time not measured: one step cost {one:.3g} s (measured; wall {wall:.3g} s); ~{STEP_CALLS} steps "
            "would need "
            f"{one * STEP_CALLS:.3g} s, over the {ctx.profile} profile's budget of {budget:g} s"
        )
    else:
        cap = min(ctx.max_time_s, TIMING_CAP_S.get(ctx.profile, TIMING_CAP_S["full"]))
        tm, samples = timing_metrics(ctx.time(opt.step, max_time_s=cap, warmup_s=0.02), "step")
        m.update(tm)
    return Record(metrics=m, samples=samples, notes=notes)
