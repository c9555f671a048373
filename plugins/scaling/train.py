"""One training run of the scaling plugin: a small GPT trained with AdamW on byte-level text
(plugins/common/text.py) at a fixed seed for a token budget, then its validation loss.

Recipe (the same for every size; Kaplan et al. 2020 sec. 3 found the schedule matters little once
it is reasonable): AdamW (0.9, 0.95), weight decay 0.1 on matrices only, linear warm-up over 5% of
the steps then cosine decay to 10% (Chinchilla, arXiv 2203.15556, sec. 3: the cosine cycle matches
the run's own token budget), gradient clipping at 1.0, peak lr = --lr x 64/d_model.

On a CPU every run asks for one thread (Launch(threads=1); `bench run --threads N` overrides it): models of
3k-0.5M parameters are bound by per-op overhead, a second OpenMP thread buys little on a quiet
machine and costs 10-50x on a busy one (measured on a 2-core Xeon under a load of ~10: a 1x16 step
at 512 tokens took 3.8 ms of CPU, 13 ms wall, with one thread; 66 ms of CPU, 217 ms wall, with two),
and the losses then do not depend on the core count.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from bench.contract import Metric, Record, timing_metrics
from plugins.scaling.shapes import MIN_STEPS, batch_for, shape_config, steps_for

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from bench.context import Context
    from bench.timing import Timing
    from plugins.scaling.plugin import ScalingParams

BETAS = (0.9, 0.95)
WEIGHT_DECAY = 0.1  # on matrices only (not biases, LayerNorms)
MIN_LR_FRAC = 0.1
WARMUP_FRAC = 0.05
TIMED_STEP_S = 0.15  # time cap for ctx.time of one training step (one per shape x batch in a process)
REPEAT_SEED = 1000  # a repeat k trains with seed + 1000 k (init and data order): seed-to-seed noise

_STEP_TIMES: dict[tuple[str, int, int, str], Timing] = {}  # (shape, batch, T, device) -> Timing, per process


def lr_for(p: ScalingParams, d_model: int) -> float:
    """Peak learning rate of one width: lr x 64/d (wider models need smaller steps; cf. muP, Yang et al.
    2022, arXiv 2203.03466; tuned on 1x32, 2x64 and 4x96 at 0.2-0.4M tokens: 6e-3, 3e-3, 2e-3 won)."""
    return p.lr * 64.0 / d_model


def train_case(shape: str, p: ScalingParams, ctx: Context) -> Record:
    """Train one shape for the case's budget; one row with the final validation loss."""
    import torch

    from plugins.common.gpt import GPT
    from plugins.common.text import get_batch, split

    cfg = shape_config(shape, p.seq)
    T, dev = cfg.block_size, ctx.device
    seed = ctx.seed + REPEAT_SEED * p.repeat
    torch.manual_seed(seed)  # the same init stream for every case with this seed
    with torch.device(dev):  # built where it runs (a 1B model initialised on a CPU takes ~10 s)
        model = GPT(cfg)
    n_nonemb, n_total = model.num_params(non_embedding=True), model.num_params()
    steps, batch = steps_for(p, n_total, T), batch_for(p, n_total, T)
    per_step = batch * T
    tokens = steps * per_step  # D actually trained
    peak = lr_for(p, cfg.d_model)
    decay = [q for q in model.parameters() if q.dim() >= 2]
    no_decay = [q for q in model.parameters() if q.dim() < 2]
    groups = [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=peak, betas=BETAS, fused=True)  # fused: one kernel per step, CPU and CUDA
    warm = max(1, int(WARMUP_FRAC * steps))

    def lr_at(i: int) -> float:  # i = 0 .. steps-1
        if i < warm:
            return peak * (i + 1) / warm
        t = (i - warm) / max(1, steps - warm)
        return peak * (MIN_LR_FRAC + (1 - MIN_LR_FRAC) * 0.5 * (1 + math.cos(math.pi * t)))

    gen = torch.Generator().manual_seed(seed + 1)  # data order: the same for every size
    use_bf16 = dev.type == "cuda"  # GPU: bf16 autocast; CPU: fp32

    def train_step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.autocast(dev.type, torch.bfloat16, enabled=use_bf16):
            _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    step_losses: list[torch.Tensor] = []  # kept on the device: no host sync per step
    model.train()
    for i in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(i)
        x, y = get_batch("train", batch, T, gen, dev)
        step_losses.append(train_step(x, y))
    losses = torch.stack(step_losses).float().cpu().tolist()
    val_loss = val_loss_of(model, T, dev, use_bf16)
    # one optimizer step timed by the core's clock (lr 0: the trained weights stay), once per
    # shape x batch in this process: the same step costs the same in every case that repeats it
    key = (shape, batch, T, str(dev))
    if key not in _STEP_TIMES:
        xt, yt = get_batch("train", batch, T, torch.Generator().manual_seed(12345), dev)
        for g in opt.param_groups:
            g["lr"] = 0.0
        _STEP_TIMES[key] = ctx.time(lambda: train_step(xt, yt), max_time_s=min(ctx.max_time_s, TIMED_STEP_S))
    t = _STEP_TIMES[key]
    used = torch.get_num_threads()

    tm, samples = timing_metrics(t, "step")
    n_train = len(split("train"))
    m = _metrics(cfg.n_layer, cfg.d_model, n_nonemb, n_total, tokens, n_train, val_loss, losses, steps, per_step, t)
    m.update({"step_ms": tm["step_ms"], "step_ci95_pct": tm["step_ci95_pct"], "threads": Metric(used, "threads")})
    note = (
        f"train rows: params = N_nonemb (Kaplan: no token/position embeddings; the LM head is tied to the "
        f"token embedding), params_total = all parameters; tokens = D trained (steps x batch x seq; the batch "
        f"shrinks below --batch to keep >= {MIN_STEPS} steps); compute = 6 N_total D; final_loss = mean "
        f"cross-entropy over the whole validation split (last 10% of the text, nats/byte), fixed seed "
        f"{seed}: exact on one machine, not across CPU models (BLAS rounding over hundreds of steps); "
        f"epochs = D / {n_train:,} train bytes; train_s = ctx.time median of one step (timed once per "
        f"shape x batch in a worker process) x steps; "
        f"{used} thread(s); AdamW, peak lr = --lr x 64/d_model, warm-up {WARMUP_FRAC:.0%}, cosine to {MIN_LR_FRAC:.0%}"
    )
    labels: dict[str, Any] = {"shape": shape, "N": n_nonemb, "D": tokens}
    return Record(metrics=m, labels=labels, samples={"loss": losses, **samples}, notes=[note])


def _metrics(
    L: int,
    d: int,
    n: int,
    nt: int,
    tokens: int,
    n_train: int,
    val: float,
    losses: list[float],
    steps: int,
    per_step: int,
    t: Timing,
) -> dict[str, Metric]:
    def exact(v: Any, unit: str, source: str = "formula") -> Metric:
        return Metric(v, unit, source, deterministic=True)

    def loss(v: float) -> Metric:  # exact on one machine; another CPU's kernels round differently
        return Metric(v, "nats/byte", "measured", deterministic=True, portable=False)

    tail = losses[-10:]
    return {
        "n_layer": exact(L, "layers"),
        "d_model": exact(d, ""),
        "params": exact(n, "params", "measured"),
        "params_total": exact(nt, "params", "measured"),
        "tokens": exact(tokens, "tokens", "measured"),
        "steps": exact(steps, "steps"),
        "batch_tokens": exact(per_step, "tokens/step"),
        "compute": exact(6.0 * nt * tokens, "FLOP"),
        "compute_nonemb": exact(6.0 * n * tokens, "FLOP"),
        "tokens_per_param": exact(tokens / nt, "tokens/param"),
        "epochs": exact(tokens / n_train, "epochs"),
        "final_loss": loss(val),
        "train_loss_last": loss(sum(tail) / len(tail)),
        "train_s": Metric(t.median_s * steps, "s (median step x steps)", "measured"),
        "tokens_per_s": Metric(per_step / t.median_s, "tokens/s", "measured"),
    }


def val_loss_of(model: Any, seq: int, dev: torch.device, use_bf16: bool) -> float:
    """Mean cross-entropy over the whole validation split in non-overlapping windows of seq."""
    import torch

    from plugins.common.text import split

    data = split("val").long()
    n = (len(data) - 1) // seq
    x = data[: n * seq].view(n, seq)
    y = data[1 : n * seq + 1].view(n, seq)
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, n, 256):
            xb, yb = x[i : i + 256].to(dev), y[i : i + 256].to(dev)
            with torch.autocast(dev.type, torch.bfloat16, enabled=use_bf16):
                _, loss = model(xb, yb)
            total += float(loss) * yb.numel()
            count += yb.numel()
    model.train()
    return total / count
