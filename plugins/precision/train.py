"""--what train: the same small GPT, same init and same batches of real text (plugins/common/text.py),
trained in fp32, tf32 (CUDA), bf16 autocast, fp16 autocast with (and, with --scaler off/both, without)
a GradScaler (--dtype all in the quick profile: fp32 and bf16 only, the pair the claim compares): loss curve (samples["loss"]), final loss on fixed validation batches, overflow and
skipped steps, zero gradients, divergence (claim prec.bf16_training).

Each format first times one training step of a throwaway copy (ctx.afford); a format whose --steps
would not fit its budget (fp16 on a CPU without native half) becomes a `skipped` row naming that time.
Losses after many steps, overflow/skipped-step counts, zero-gradient shares and the final GradScaler
scale are exact on one machine but differ between CPU models (their kernels round differently):
deterministic, not portable (the CI gate compares them only within one machine class).
"""

from __future__ import annotations

import math
from functools import partial
from typing import TYPE_CHECKING, Any

from bench.contract import Metric, Record, timing_metrics
from plugins.precision.budget import TRAIN_TIMED_CALLS, TRAIN_TIMING_CAP_S, budget, timing_cap
from plugins.precision.params import FP8_TRAIN_SKIP, TF32_SKIP, PrecisionParams, formats_of, guarded, skipped, tf32_mode

if TYPE_CHECKING:  # pragma: no cover
    from bench.context import Context

EVAL_BATCHES = 8  # validation batches behind final_loss


def _machine_bound(value: Any, unit: str) -> Metric:
    """Exact here, different on another CPU model: the gate compares it within one machine class."""
    return Metric(value, unit, deterministic=True, portable=False)


QUICK_FORMATS = ("fp32", "bf16")  # the pair prec.bf16_training compares: --dtype all in the quick profile


def run_train(p: PrecisionParams, ctx: Context) -> list[Record]:
    fmts = formats_of(p)
    if p.dtype == "all" and ctx.profile == "quick":
        fmts = [f for f in fmts if f in QUICK_FORMATS]
    modes: list[tuple[str, bool]] = []
    for fmt in fmts:
        if fmt == "fp16":
            modes += [("fp16", s) for s in ((True, False) if p.scaler == "both" else (p.scaler == "on",))]
        elif not (fmt.startswith("fp8") and p.dtype == "all"):  # in `all`, fp8 training is left out quietly
            modes.append((fmt, False))
    out = []
    for fmt, scaler in modes:
        labels: dict[str, Any] = {"format": fmt} | ({"scaler": "on" if scaler else "off"} if fmt == "fp16" else {})
        if fmt == "tf32" and ctx.device.type != "cuda":
            out.append(skipped(labels, TF32_SKIP))
        elif fmt.startswith("fp8"):
            out.append(skipped(labels, FP8_TRAIN_SKIP))
        else:
            out.append(guarded(labels, partial(_train_row, fmt, scaler, p, ctx)))
    return out


class _Trainer:
    """One model, optimizer and (fp16) GradScaler; step() runs one training step and books it."""

    def __init__(self, fmt: str, scaler_on: bool, p: PrecisionParams, ctx: Context):
        import torch

        from plugins.common.gpt import GPT, config_from

        self.dev = ctx.device
        torch.manual_seed(ctx.seed)
        with torch.device(self.dev):  # built on the device it trains on
            self.model = GPT(config_from(p.model))
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=p.lr, betas=(0.9, 0.95), weight_decay=0.1)
        self.amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(fmt)
        self.scaler = torch.amp.GradScaler(self.dev.type) if fmt == "fp16" and scaler_on else None
        self.params = list(self.model.parameters())
        self.n = sum(q.numel() for q in self.params)
        self.zero_pct: list[float] = []
        self.scales: list[float] = []

    def step(self, x: Any, y: Any, record: bool = True) -> tuple[float, bool, bool]:
        """(loss, non-finite gradient norm, step skipped by the scaler)."""
        import torch

        with torch.autocast(self.dev.type, dtype=self.amp or torch.bfloat16, enabled=self.amp is not None):
            _, loss = self.model(x, y)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.opt)
        else:
            loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        if record:  # one device sync per step
            zeros = torch.stack([(q.grad == 0).sum() for q in self.params if q.grad is not None]).sum()
            self.zero_pct.append(100.0 * float(zeros) / self.n)
        bad = not math.isfinite(float(gn))
        was_skipped = False
        if self.scaler is not None:
            before = self.scaler.get_scale()
            self.scaler.step(self.opt)
            self.scaler.update()
            was_skipped = self.scaler.get_scale() < before  # the scaler skips the step and halves the scale
            if record:
                self.scales.append(before)
        else:
            self.opt.step()  # without a scaler a non-finite gradient goes into the weights
        self.opt.zero_grad(set_to_none=True)
        return float(loss.detach()), bad, was_skipped


def _train_row(fmt: str, scaler_on: bool, p: PrecisionParams, ctx: Context) -> Record:
    import torch

    from plugins.common.text import get_batch

    dev = ctx.device
    # probe: one step of a throwaway copy, so the run itself keeps its seed and batches
    probe = _Trainer(fmt, scaler_on, p, ctx)
    xp, yp = get_batch("train", p.batch, p.seq, torch.Generator().manual_seed(ctx.seed + 7), dev)
    with tf32_mode(fmt == "tf32"):
        probe.step(xp, yp, record=False)  # the first step creates the optimizer state: not what a step costs
    spend = budget("train", ctx.profile)
    with tf32_mode(fmt == "tf32"):
        _, afford_note = ctx.afford(
            lambda _: lambda: probe.step(xp, yp, record=False),
            [p.batch],
            spend,
            exponent=1.0,
            calls=p.steps + TRAIN_TIMED_CALLS,
            what=f"{fmt} training step",
        )
    tr = _Trainer(fmt, scaler_on, p, ctx)
    gen = torch.Generator().manual_seed(ctx.seed)  # the same batches for every format
    losses: list[float] = []
    overflow = skipped_steps = 0
    with tf32_mode(fmt == "tf32"):
        for _ in range(p.steps):
            loss, bad, sk = tr.step(*get_batch("train", p.batch, p.seq, gen, dev))
            losses.append(loss)
            overflow += bad
            skipped_steps += sk
    # final loss: the trained weights on fixed validation batches, evaluated in fp32 for every format
    gv = torch.Generator().manual_seed(ctx.seed + 1)
    with torch.no_grad(), tf32_mode(False):
        vals = [float(tr.model(*get_batch("val", p.batch, p.seq, gv, dev))[1]) for _ in range(EVAL_BATCHES)]
    final = sum(vals) / len(vals)
    final_scale = tr.scaler.get_scale() if tr.scaler is not None else None  # before the timing steps
    last = losses[-10:]
    train_last = sum(last) / len(last)
    nonfinite_loss = sum(not math.isfinite(v) for v in losses)
    diverged = not math.isfinite(final) or nonfinite_loss > 0 or not train_last < losses[0]
    # speed: more steps of the same loop on one batch (after the loss curve is recorded)
    xb, yb = get_batch("train", p.batch, p.seq, torch.Generator().manual_seed(ctx.seed), dev)
    with tf32_mode(fmt == "tf32"):
        t = ctx.time(
            lambda: tr.step(xb, yb, record=False),
            max_time_s=timing_cap(ctx.profile, ctx.max_time_s, TRAIN_TIMING_CAP_S),
        )
    tm, ts = timing_metrics(t, "step")
    m: dict[str, Metric] = {
        "final_loss": _machine_bound(final, "nats/token"),
        "train_loss": _machine_bound(train_last, "nats/token (mean of the last 10 training steps)"),
        "first_loss": _machine_bound(losses[0], "nats/token (step 1)"),
        "steps": Metric(p.steps, "optimizer steps", deterministic=True),
        "overflow_steps": _machine_bound(overflow, "steps"),
        "skipped_steps": _machine_bound(skipped_steps, "steps the GradScaler skipped"),
        "nonfinite_loss_steps": _machine_bound(nonfinite_loss, "steps with a non-finite loss"),
        "diverged": _machine_bound(diverged, "non-finite loss, or last-10 train loss not below step 1"),
        "zero_grad_pct": _machine_bound(
            sum(tr.zero_pct) / len(tr.zero_pct), "% of gradient elements exactly 0 (mean over steps)"
        ),
        "params": Metric(tr.n, "parameters", deterministic=True),
        **tm,
        "tokens_per_s": Metric(p.batch * p.seq / t.median_s, "tokens/s (training step)"),
    }
    samples = {"loss": losses, **ts}
    if tr.scaler is not None:
        samples["scale"] = tr.scales
        m["final_scale"] = _machine_bound(final_scale, "GradScaler scale after the last training step")
    how = {
        "fp32": "fp32 weights and compute",
        "tf32": "fp32 weights, TF32 matmuls",
        "bf16": "torch.autocast bf16 (fp32 weights)",
        "fp16": f"torch.autocast fp16 (fp32 weights), GradScaler {'on' if scaler_on else 'off'}",
    }[fmt]
    notes = [
        f"train: GPT {p.model} ({tr.n} params), seed {ctx.seed}, {p.steps} steps x {p.batch} x {p.seq} tokens of real "
        f"text (plugins/common/text.py), AdamW lr {p.lr:g} betas 0.9/0.95 wd 0.1, clip 1.0; same init and batches for "
        f"every format; final_loss = fp32 eval on {EVAL_BATCHES} fixed validation batches; overflow_steps = steps with a "
        "non-finite gradient norm (the GradScaler skips them; without one they reach the weights)",
        f"train {fmt}{' scaler ' + ('on' if scaler_on else 'off') if fmt == 'fp16' else ''}: {how}",
        afford_note + f" (per-format budget {spend:g} s, {ctx.profile} profile)",
    ]
    return Record(metrics=m, samples=samples, notes=notes)
