"""Compute and scaling laws on small GPTs trained on real text.

  --what flops   count the FLOPs of a real forward+backward (torch.utils.flop_counter via ctx.count_flops)
                 per token and compare with 6N (Kaplan et al. 2020, arXiv 2001.08361, sec. 2.1) plus the
                 attention term 12 L d T (PaLM, arXiv 2204.02311, appendix B). One row per model shape.
  --what train   train each model shape with AdamW on byte-level text (plugins/common/text.py) at a fixed
                 seed for a budget: --budget D=<tokens> (fixed data), or --budget C=<FLOPs> (D = C / 6N: an
                 isoFLOP profile, Chinchilla Approach 2, Hoffmann et al. 2022, arXiv 2203.15556). One row per
                 (N, D): final validation loss, N, D, C = 6ND, step time (ctx.time) and the loss curve.

summarize() fits L(N) and L(D) (plain log-log power law, Kaplan's eq. 1.1-1.2 form, and with an
irreducible term, Chinchilla's eq. 2 form), finds the isoFLOP optimum per budget (parabola in ln N)
with its uncertainty, and writes two plots (loss vs compute, isoFLOP curves).

Parameter conventions, stated in every row: N_nonemb (Kaplan) excludes the token and position
embeddings (the tied LM head is the token embedding, so it is excluded too); N_total (Chinchilla)
counts every parameter once. Fits of L(N) use N_nonemb; compute C = 6 N_total D and tokens/param
use N_total.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bench.contract import Evidence, Launch, Metric, Plugin, Record, Row, Section, param
from plugins.scaling.claims import CLAIMS
from plugins.scaling import fit as sf

# --- model shapes -----------------------------------------------------------------------------
HEAD_DIM = 32  # heads = d_model / 32 for the "LxD" shapes (at least 1)
# "n_layer x d_model" shapes and their N_total (vocab 256, T=64), ~2x apart:
#   1x8 3.3k, 1x16 8.4k, 1x32 23k, 2x40 52k, 2x64 121k, 3x80 259k, 4x96 478k, 4x128 834k, 6x128 1.23M,
#   6x192 2.7M, 8x256 6.4M, 8x384 14.4M
LADDER = "1x8+1x16+1x32+2x40+2x64+3x80+4x96"  # default --shapes
FLOPS_PRESETS = "small+medium"  # plugins/common/gpt.py PRESETS
SHAPE_RE = re.compile(r"^(\d+)x(\d+)$")

# Training recipe (the same for every size; Kaplan sec. 3 found the schedule matters little
# once it is reasonable). AdamW, linear warm-up then cosine decay to 10% (Chinchilla sec. 3:
# the cosine cycle matches the run's own token budget), gradient clipping at 1.0.
BETAS = (0.9, 0.95)
WEIGHT_DECAY = 0.1  # on matrices only (not biases, LayerNorms)
MIN_LR_FRAC = 0.1
WARMUP_FRAC = 0.05
MIN_STEPS = 200  # fewer steps at --batch: the batch shrinks (batch_for)
TIMED_STEP_S = 0.4  # time cap for ctx.time of one training step


@dataclass(frozen=True)
class ScalingParams:
    what: str = param("flops", "flops: counted FLOPs vs 6N + 12LdT per shape; train: train each shape for a "
                      "token budget and record the final validation loss", choices=("flops", "train"))  # fmt: skip
    shapes: str = param(LADDER, "model shapes trained (or counted) in this case, '+'-separated: "
                        "'LxD' = n_layer x d_model (heads = d/32), or a GPT preset name (small, medium, ...), "
                        "optionally '@T' for that shape's sequence length (e.g. medium@256)")
    budget: str = param("", "train: per model, D=<tokens> (fixed data, e.g. D=8e5) or C=<FLOPs> (isoFLOP: "
                        "D = C / (6 N_total), e.g. C=1e11)")
    seq: int = param(64, "tokens per sequence T (context length); 'LxD@T' in --shapes overrides it per shape")
    batch: int = param(16, "sequences per optimizer step")
    lr: float = param(3e-3, "peak AdamW learning rate at d_model=64, scaled by 64/d_model (warm-up 5%, cosine to 10%)")


# --- helpers shared by run() and summarize() --------------------------------------------------
def parse_shapes(text: str) -> list[str]:
    return [s.strip() for s in text.split("+") if s.strip()]


def split_seq(shape: str, seq: int) -> tuple[str, int]:
    """'medium@256' -> ('medium', 256); 'medium' -> ('medium', seq)."""
    name, at, t = shape.partition("@")
    return name, (int(t) if at and t.isdigit() else seq)


def shape_config(shape: str, seq: int):
    """GPTConfig of one shape ('LxD' or a preset, optionally '@T') at block size T."""
    from plugins.common.gpt import PRESETS, GPTConfig, config_from

    shape, seq = split_seq(shape, seq)
    m = SHAPE_RE.match(shape)
    if m:
        n_layer, d = int(m.group(1)), int(m.group(2))
        heads = max(1, d // HEAD_DIM)
        cfg = config_from("tiny", n_layer=n_layer, d_model=d, n_head=heads, block_size=seq)
    elif shape in PRESETS:
        cfg = config_from(shape, block_size=seq)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return GPTConfig(**{**cfg.__dict__, "dropout": 0.0})


def shape_error(shape: str) -> str | None:
    from plugins.common.gpt import PRESETS

    full = shape
    shape, at, t = shape.partition("@")
    if at and not (t.isdigit() and int(t) >= 1):
        return f"shape {full!r}: '@T' needs a whole sequence length >= 1"
    m = SHAPE_RE.match(shape)
    if m:
        n_layer, d = int(m.group(1)), int(m.group(2))
        if n_layer < 1 or d < 1:
            return f"shape {shape!r}: layers and width must be >= 1"
        if d % max(1, d // HEAD_DIM):
            return f"shape {shape!r}: d_model {d} is not divisible by its {d // HEAD_DIM} heads (d/32)"
        return None
    if shape in PRESETS:
        return None
    return f"shape {shape!r} is neither 'LxD' (n_layer x d_model, e.g. 2x64) nor a preset ({', '.join(PRESETS)})"


def param_counts(cfg) -> tuple[int, int]:
    """(N_nonemb, N_total) of a GPTConfig, by building the model on the meta device (no memory)."""
    import torch

    from plugins.common.gpt import GPT

    with torch.device("meta"):
        m = GPT(cfg)
    return m.num_params(non_embedding=True), m.num_params()


def lr_for(p: ScalingParams, d_model: int) -> float:
    """Peak learning rate of one width: lr x 64/d (wider models need smaller steps; cf. muP, Yang et al.
    2022, arXiv 2203.03466; tuned here on 1x32, 2x64 and 4x96 at 0.2-0.4M tokens: 6e-3, 3e-3, 2e-3 won)."""
    return p.lr * 64.0 / d_model


BUDGET_RE = re.compile(r"^\s*([CDcd])\s*=\s*([0-9.]+(?:[eE][+]?[0-9]+)?)\s*$")


def parse_budget(text: str) -> tuple[str, float] | None:
    """'C=1e11' -> ("C", 1e11); 'D=8e5' -> ("D", 8e5); '' or malformed -> None."""
    m = BUDGET_RE.match(text or "")
    if not m:
        return None
    try:
        v = float(m.group(2))
    except ValueError:
        return None
    return (m.group(1).upper(), v) if v > 0 else None


def target_tokens(p: ScalingParams, n_total: int) -> float:
    """D asked for: D=<tokens>, or C / (6 N_total) with C=<FLOPs>."""
    kind, v = parse_budget(p.budget) or ("D", 0.0)
    return v if kind == "D" else v / (6.0 * n_total)


def batch_for(p: ScalingParams, n_total: int, seq: int) -> int:
    """Sequences per step: --batch, reduced (down to 1) so that the run gets at least MIN_STEPS steps.
    Small token budgets need small batches (the critical batch grows as the loss falls: Kaplan sec. 5.1,
    McCandlish et al. 2018); a fixed batch would starve the large models of an isoFLOP profile of steps."""
    d = target_tokens(p, n_total)
    return max(1, min(p.batch, int(d // (MIN_STEPS * seq))))


def steps_for(p: ScalingParams, n_total: int, seq: int) -> int:
    """Optimizer steps: D / (batch x seq) tokens, rounded, at least 1."""
    return max(1, round(target_tokens(p, n_total) / (batch_for(p, n_total, seq) * seq)))


# --- the plugin ------------------------------------------------------------------------------
class ScalingPlugin(Plugin):
    name = "scaling"
    description = "FLOPs vs 6ND; loss power laws in N and D; isoFLOP tokens/param on small GPTs (real text)"
    version = "1"
    Params = ScalingParams
    claims = CLAIMS
    metrics = {
        "ratio_6n": "counted forward+backward FLOPs / (6N + 12LdT) per token",
        "alpha_n": "fitted exponent alpha_N of L(N) = (N_c/N)^alpha_N",
        "tokens_per_param": "tokens per parameter (at the isoFLOP optimum in the summary)",
    }
    table_metrics = ("params", "params_total", "tokens", "tokens_per_param", "epochs", "final_loss", "train_s",
                     "flops_per_token_counted", "flops_per_token_6n", "ratio_6n", "ratio_6n_total")  # fmt: skip

    # Profiles. iso: compute budget C = 6 N_total D -> the shapes of its isoFLOP profile (a window of
    # sizes around that budget's optimum, as Chinchilla's Figure 3 uses per budget); fixed: (D, shapes)
    # for L(N) at fixed data; mid + extra_tokens: more data budgets for L(D) at the middle size (which
    # also lies on every isoFLOP profile and the fixed-D set). quick: 3-4 min on 2 cores; full: ~20 min.
    PLANS: dict[str, dict[str, Any]] = {
        "quick": {"iso": {3e10: "1x8+1x16+1x32+2x40+2x64", 1e11: "1x8+1x16+1x32+2x40+2x64",
                          3e11: "1x16+1x32+2x40+2x64+3x80"},
                  "fixed": (1_600_000, "1x16+1x32+2x40+2x64+3x80"), "mid": "2x64", "extra_tokens": (800_000,),
                  "flops": LADDER, "flops_big": FLOPS_PRESETS, "seq_big": 256, "seq": 64, "batch": 16, "lr": 3e-3},
        "full": {"iso": {3e10: "1x8+1x16+1x32+2x40+2x64", 1e11: "1x8+1x16+1x32+2x40+2x64+3x80",
                         3e11: "1x16+1x32+2x40+2x64+3x80+4x96", 1e12: "1x16+1x32+2x40+2x64+3x80+4x96",
                         3e12: "1x32+2x40+2x64+3x80+4x96+4x128"},
                 "fixed": (4_000_000, "1x8+1x16+1x32+2x40+2x64+3x80+4x96+4x128"), "mid": "2x64",
                 "extra_tokens": (50_000, 200_000, 1_000_000, 8_000_000), "flops": LADDER + "+4x128+6x128",
                 "flops_big": FLOPS_PRESETS + "+large", "seq_big": 512, "seq": 64, "batch": 16, "lr": 3e-3},
        # gpu: sized by step count, not FLOPs (models this small are launch-bound on an H100: a few ms a
        # step at 64 x 128 tokens): <= ~2,500 steps per model, about a minute per case (not yet measured)
        "gpu": {"iso": {1e13: "2x64+3x80+4x128+6x128+6x192", 3e13: "3x80+4x128+6x128+6x192+8x256",
                        1e14: "4x128+6x128+6x192+8x256+8x384"},
                "fixed": (10_000_000, "2x64+4x128+6x192+8x256+8x384"), "mid": "6x192",
                "extra_tokens": (2_000_000, 20_000_000), "flops": "4x128+6x192+8x256+8x384+12x512",
                "flops_big": FLOPS_PRESETS + "+large+1b", "seq_big": 2048, "seq": 128, "batch": 64, "lr": 3e-3},
    }  # fmt: skip

    def grid(self, profile: str) -> list[dict[str, Any]]:
        plan = self.PLANS.get(profile, self.PLANS["quick"])
        # every case sets the same fields, so a flag that overrides them all (--shapes 2x64 --budget C=1e9)
        # collapses the grid into one case instead of mixing it with the profile's plan
        common = {"seq": plan["seq"], "batch": plan["batch"], "lr": plan["lr"]}
        big = "+".join(f"{s}@{plan['seq_big']}" for s in parse_shapes(plan["flops_big"]))
        cases: list[dict[str, Any]] = [{"what": "flops", "shapes": plan["flops"] + "+" + big, "budget": "", **common}]
        cases += [{"what": "train", "shapes": sh, "budget": f"C={c:g}", **common} for c, sh in plan["iso"].items()]
        d_fixed, shapes = plan["fixed"]
        cases.append({"what": "train", "shapes": shapes, "budget": f"D={d_fixed:g}", **common})
        cases += [{"what": "train", "shapes": plan["mid"], "budget": f"D={t:g}", **common} for t in plan["extra_tokens"]]
        return cases

    def validate(self, p: ScalingParams) -> str | None:
        shapes = parse_shapes(p.shapes)
        if not shapes:
            return "--shapes names no model shape"
        for s in shapes:
            why = shape_error(s)
            if why:
                return why
        if p.seq < 1 or p.batch < 1:
            return "--seq and --batch must be >= 1"
        if p.budget.strip() and parse_budget(p.budget) is None:
            return f"--budget {p.budget!r}: write D=<tokens> (e.g. D=8e5) or C=<FLOPs> (e.g. C=1e11), a number > 0"
        if p.what == "train":
            if p.lr <= 0:
                return "--lr must be > 0"
            from plugins.common.text import split

            longest = max(split_seq(s, p.seq)[1] for s in shapes)
            if longest + 1 >= len(split("val")):
                return f"sequence length {longest} is longer than the validation text"
        return None

    def available(self, p: ScalingParams) -> str | None:
        # `--what X` replaces `what` in every case of the profile's grid: a train case turned into a
        # FLOP count (or a flops case turned into training) has nothing to do; say so without starting it
        if p.what == "flops" and p.budget:
            return "--what flops takes no --budget: this training case of the grid has nothing to count"
        if p.what == "train" and not p.budget:
            return "--what train needs --budget D=<tokens> or C=<FLOPs>; this is the grid's flops case"
        return None

    def launch(self, p: ScalingParams) -> Launch:
        if p.what == "flops":
            return Launch(timeout_s=900.0)
        # time limit: each step at a pessimistic 1 GFLOP/s plus 50 ms of overhead. Tiny models are
        # overhead-bound (2-30 ms/step on 2 idle cores); on a 2-core CPU shared with 3-4 other jobs the
        # same cases ran 7-10x slower (OpenMP threads waiting on descheduled siblings)
        total_s = 120.0
        for s in parse_shapes(p.shapes):
            cfg = shape_config(s, p.seq)
            nn, nt = param_counts(cfg)
            T = cfg.block_size
            steps, batch = steps_for(p, nt, T), batch_for(p, nt, T)
            total_s += steps * (0.05 + 6.0 * nt * batch * T / 1e9) + 10.0  # + evaluation and the timed step
        return Launch(timeout_s=float(min(3600.0, total_s)))

    def describe(self) -> str:
        return ("N conventions: N_nonemb (Kaplan) excludes token/position embeddings (the LM head is tied to the "
                "token embedding); N_total (Chinchilla) counts all. L(N) fits use N_nonemb; C = 6 N_total D.")  # fmt: skip

    # --- run ---------------------------------------------------------------------------------
    def run(self, p: ScalingParams, ctx) -> list[Record]:
        if p.what == "flops":
            return [self._flops(s, p, ctx) for s in parse_shapes(p.shapes)]
        return [self._train(s, p, ctx) for s in parse_shapes(p.shapes)]

    def _flops(self, shape: str, p: ScalingParams, ctx) -> Record:
        import torch
        from torch.nn.attention import SDPBackend, sdpa_kernel

        from plugins.common.gpt import GPT

        cfg = shape_config(shape, p.seq)
        T = cfg.block_size
        torch.manual_seed(ctx.seed)
        model = GPT(cfg).to(ctx.device)
        n_nonemb, n_total = model.num_params(non_embedding=True), model.num_params()
        batch = 2
        x = torch.randint(0, cfg.vocab_size, (batch, T), device=ctx.device)

        def fwd_bwd() -> None:
            _, loss = model(x, x)
            loss.backward()
            model.zero_grad(set_to_none=True)

        def fwd_bwd_math() -> None:
            # the MATH backend writes attention as matmuls, which FlopCounterMode counts on every device
            with sdpa_kernel(SDPBackend.MATH):
                fwd_bwd()

        tokens = batch * T
        counted = ctx.count_flops(fwd_bwd_math) / tokens
        counted_default = ctx.count_flops(fwd_bwd) / tokens
        six_n = sf.flops_6n(n_nonemb)
        attn = sf.flops_attention(cfg.n_layer, cfg.d_model, T)
        hand = sf.gpt_matmul_flops_per_token(cfg.n_layer, cfg.d_model, T, cfg.vocab_size)
        f = "FLOP/token"
        m = {
            "n_layer": Metric(cfg.n_layer, "layers", "formula", deterministic=True),
            "d_model": Metric(cfg.d_model, "", "formula", deterministic=True),
            "seq_len": Metric(T, "tokens", "formula", deterministic=True),
            "params": Metric(n_nonemb, "params", "measured", deterministic=True),
            "params_total": Metric(n_total, "params", "measured", deterministic=True),
            "flops_per_token_counted": Metric(counted, f, "measured", deterministic=True),
            "flops_per_token_counted_default": Metric(counted_default, f, "measured", deterministic=True),
            "flops_per_token_6n": Metric(six_n, f, "formula", deterministic=True),
            "flops_per_token_attn": Metric(attn, f, "formula", deterministic=True),
            "flops_per_token_hand": Metric(hand, f, "formula", deterministic=True),
            "ratio_6n": Metric(counted / (six_n + attn), "x", "measured", deterministic=True),
            "ratio_6n_only": Metric(counted / six_n, "x", "measured", deterministic=True),
            "ratio_6n_total": Metric(counted / (sf.flops_6n(n_total) + attn), "x", "measured", deterministic=True),
        }  # fmt: skip
        notes = [
            "FLOPs are counted on a real forward+backward under sdpa_kernel(MATH): torch's FlopCounterMode has no "
            "formula for the CPU flash kernel (aten._scaled_dot_product_flash_attention_for_cpu), so the default "
            "backend's count (flops_per_token_counted_default) misses attention on CPU. The math backend also gives "
            "model FLOPs (PaLM's convention, 12 L d T): torch's formula for the flash/efficient backward counts 5 "
            "matmuls (it recomputes the scores), i.e. 14 L d T, as it would on a GPU with the default backend",
            "the counted - 6N gap is the tied LM head (2 d V forward, 6 d V fwd+bwd per token): N_nonemb excludes it; "
            "N_total includes it but also the position table, which costs no matmul",
        ]
        return Record(metrics=m, labels={"shape": shape}, notes=notes)

    def _train(self, shape: str, p: ScalingParams, ctx) -> Record:
        import torch

        from bench.context import timing_metrics
        from plugins.common.gpt import GPT
        from plugins.common.text import get_batch, split

        cfg = shape_config(shape, p.seq)
        T = cfg.block_size
        dev = ctx.device
        torch.manual_seed(ctx.seed)  # the same init stream for every case with this seed
        model = GPT(cfg).to(dev)
        n_nonemb, n_total = model.num_params(non_embedding=True), model.num_params()
        steps = steps_for(p, n_total, T)
        batch = batch_for(p, n_total, T)
        per_step = batch * T
        tokens = steps * per_step  # D actually trained
        peak = lr_for(p, cfg.d_model)
        decay = [q for q in model.parameters() if q.dim() >= 2]
        no_decay = [q for q in model.parameters() if q.dim() < 2]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}],
                                lr=peak, betas=BETAS)  # fmt: skip
        warm = max(1, int(WARMUP_FRAC * steps))

        def lr_at(i: int) -> float:  # i = 0 .. steps-1
            if i < warm:
                return peak * (i + 1) / warm
            t = (i - warm) / max(1, steps - warm)
            return peak * (MIN_LR_FRAC + (1 - MIN_LR_FRAC) * 0.5 * (1 + math.cos(math.pi * t)))

        gen = torch.Generator().manual_seed(ctx.seed + 1)  # data order: the same for every size
        use_bf16 = dev.type == "cuda"  # GPU: bf16 autocast; CPU: fp32
        step_losses: list[torch.Tensor] = []  # kept on the device: no host sync per step

        def train_step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            with torch.autocast(dev.type, torch.bfloat16, enabled=use_bf16):
                _, loss = model(x, y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            return loss.detach()

        model.train()
        for i in range(steps):
            for g in opt.param_groups:
                g["lr"] = lr_at(i)
            x, y = get_batch("train", batch, T, gen, dev)
            step_losses.append(train_step(x, y))
        losses = torch.stack(step_losses).float().cpu().tolist()
        val_loss = self._val_loss(model, T, dev, use_bf16)

        # time one optimizer step (the core's clock) on the trained model; wall = median step x steps
        x, y = get_batch("train", batch, T, torch.Generator().manual_seed(12345), dev)
        for g in opt.param_groups:
            g["lr"] = 0.0
        t = ctx.time(lambda: train_step(x, y), max_time_s=min(ctx.max_time_s, TIMED_STEP_S))
        tm, samples = timing_metrics(t, "step")
        n_train = len(split("train"))
        c = 6.0 * n_total * tokens
        m: dict[str, Metric] = {
            "n_layer": Metric(cfg.n_layer, "layers", "formula", deterministic=True),
            "d_model": Metric(cfg.d_model, "", "formula", deterministic=True),
            "params": Metric(n_nonemb, "params", "measured", deterministic=True),
            "params_total": Metric(n_total, "params", "measured", deterministic=True),
            "tokens": Metric(tokens, "tokens", "measured", deterministic=True),
            "compute": Metric(c, "FLOP", "formula", deterministic=True),
            "compute_nonemb": Metric(6.0 * n_nonemb * tokens, "FLOP", "formula", deterministic=True),
            "tokens_per_param": Metric(tokens / n_total, "tokens/param", "formula", deterministic=True),
            "epochs": Metric(tokens / n_train, "epochs", "formula", deterministic=True),
            "final_loss": Metric(val_loss, "nats/byte", "measured", deterministic=True),
            "train_loss_last": Metric(sum(losses[-10:]) / len(losses[-10:]), "nats/byte", "measured", deterministic=True),
            "step_ms": tm["step_ms"],
            "step_ci95_pct": tm["step_ci95_pct"],
            "train_s": Metric(t.median_s * steps, "s", "measured"),
            "tokens_per_s": Metric(per_step / t.median_s, "tokens/s", "measured"),
        }  # fmt: skip
        note = (f"train rows: params = N_nonemb (Kaplan: no token/position embeddings; the LM head is tied to the "
                f"token embedding), params_total = all parameters; tokens = D trained (steps x batch x seq; the batch "
                f"shrinks below --batch to keep >= {MIN_STEPS} steps); compute = 6 N_total D; final_loss = mean "
                f"cross-entropy over the whole validation split (last 10% of the text, nats/byte), fixed seed; "
                f"epochs = D / {n_train:,} train bytes; train_s = ctx.time median of one step x steps; AdamW, "
                f"peak lr = --lr x 64/d_model, warm-up {WARMUP_FRAC:.0%}, cosine to {MIN_LR_FRAC:.0%}")  # fmt: skip
        return Record(metrics=m, labels={"shape": shape, "N": n_nonemb, "D": tokens},
                      samples={"loss": losses, **samples}, notes=[note])  # fmt: skip

    @staticmethod
    def _val_loss(model, seq: int, dev, use_bf16: bool) -> float:
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

    # --- summarize (parent process, over the run's rows) -------------------------------------
    def summarize(self, rows: list[Row]) -> list[Record]:
        ok = [r for r in rows if r.plugin == self.name and r.kind == "case" and r.status == "ok"]
        flops = [r for r in ok if r.value("ratio_6n") is not None]
        runs = _train_points(ok)
        out: list[Record] = []
        if flops:
            out.append(_flops_summary(flops))
        if runs:
            out.extend(_fit_summaries(runs))
        return out

    def report(self, rows: list[Row], out_dir: Any) -> list[Section]:
        from plugins.scaling.report import plot_scaling

        return plot_scaling(rows, out_dir)


# --- summary helpers (module level: summarize() runs in the parent, no torch needed) ----------
@dataclass(frozen=True)
class Run:
    shape: str
    n: float  # N_nonemb
    n_total: float
    d: float  # tokens trained
    c: float  # 6 N_total D
    loss: float  # final validation loss
    budget: float  # params.compute (0: fixed tokens)


def _train_points(rows: Sequence[Row]) -> list[Run]:
    seen: dict[tuple[float, float], Run] = {}
    for r in rows:
        if r.value("final_loss") is None:
            continue
        run = Run(str(r.labels.get("shape", "?")), float(r.value("params")), float(r.value("params_total")),
                  float(r.value("tokens")), float(r.value("compute")), float(r.value("final_loss")),
                  _budget_c(r.params.get("budget", "")))  # fmt: skip
        key = (run.n, run.d)
        if key not in seen or (run.budget and not seen[key].budget):  # one point per (N, D); keep its budget
            seen[key] = run
    return list(seen.values())


def _budget_c(text: str) -> float:
    b = parse_budget(text)
    return b[1] if b and b[0] == "C" else 0.0


def _fmt_n(x: float) -> str:
    for unit, f in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= f:
            return f"{x / f:.3g}{unit}"
    return f"{x:.3g}"


def _flops_summary(rows: Sequence[Row]) -> Record:
    big = max(rows, key=lambda r: (r.value("params_total"), r.value("seq_len") or 0))
    lab = big.labels
    L, d, T = int(big.value("n_layer")), int(big.value("d_model")), int(big.value("seq_len"))
    n, nt = int(big.value("params")), int(big.value("params_total"))
    counted, ratio = float(big.value("flops_per_token_counted")), float(big.value("ratio_6n"))
    attn = sf.flops_attention(L, d, T)
    ratios = sorted((float(r.value("ratio_6n")), r.labels.get("shape", "?")) for r in rows)
    detail = (
        f"largest shape measured: {lab.get('shape')} (L={L}, d={d}, T={T}); counted fwd+bwd "
        f"{counted:.5g} FLOP/token (FlopCounterMode on a real step, SDPA math backend) / (6 N + 12 L d T = "
        f"6 x {n:,} + {attn:.4g} = {6 * n + attn:.5g}) = {ratio:.4f}. N = non-embedding parameters (Kaplan sec. 2.1: "
        f"token and position embeddings excluded, so the tied LM head's 6 d V = {6 * d * 256:.3g} FLOP/token is "
        f"not in 6N; biases and LayerNorms included). With N_total ({nt:,}, all parameters): "
        f"{float(big.value('ratio_6n_total')):.4f}; 6N alone (no attention term): {float(big.value('ratio_6n_only')):.4f}. "
        f"Across the {len(rows)} shapes counted the ratio spans {ratios[0][0]:.3f} ({ratios[0][1]}) to "
        f"{ratios[-1][0]:.3f} ({ratios[-1][1]}): the LM head term 6dV/(6N) = V/(12 L d) is large for tiny models"
    )
    m = {"ratio_6n": Metric(ratio, "x", "measured", deterministic=True)}
    ev = {"compute.6nd": Evidence(ratio, "x", "measured", detail)}
    return Record(metrics=m, labels={"analysis": f"FLOPs vs 6N+12LdT ({lab.get('shape')}, T={T})"}, evidence=ev,
                  notes=["FLOPs: " + detail])  # fmt: skip


@dataclass
class LawFit:
    what: str  # "N" | "D" | "C"
    at: str  # what was held fixed
    x: list[float]
    y: list[float]
    alpha: float = math.nan
    alpha_se: float = math.nan
    prefactor: float = math.nan
    r2: float = math.nan
    sat: sf.SatFit | None = None
    preferred: str = ""


def _law(what: str, at: str, x: Sequence[float], y: Sequence[float]) -> LawFit:
    from bench.fit import fit_power_law

    f = LawFit(what, at, list(x), list(y))
    if len(set(x)) >= 2:
        pf = fit_power_law(x, y)
        f.alpha, f.alpha_se, f.prefactor, f.r2 = -pf.exponent, pf.stderr, pf.prefactor, pf.r2
        f.sat = sf.fit_saturating(x, y) if len(set(x)) >= 3 else None
        if f.sat and f.sat.ok:
            a_plain = sf.aicc(sf.power_rss(x, y, pf.exponent, pf.prefactor), len(x), 2)
            a_sat = sf.aicc(f.sat.rss, len(x), 3)
            if a_plain == a_plain and a_sat == a_sat:
                f.preferred = "with irreducible term" if a_sat < a_plain else "plain power law"
            else:
                f.preferred = "undecided (too few points for AICc)"
    return f


def _law_text(f: LawFit, paper: float) -> str:
    se = "n/a" if f.alpha_se != f.alpha_se else f"{f.alpha_se:.3f}"
    s = f"alpha_{f.what} = {f.alpha:.4f} +- {se} (plain log-log, {len(f.x)} points, R^2 {f.r2:.3f}; Kaplan {paper})"
    if f.sat and f.sat.ok:
        sse = "n/a" if f.sat.alpha_se != f.sat.alpha_se else f"{f.sat.alpha_se:.3f}"
        s += (f"; with irreducible term L = E + A {f.what}^-alpha: alpha = {f.sat.alpha:.3f} +- {sse}, "
              f"E = {f.sat.E:.3f} nats/byte" + (f" [{f.sat.message}]" if f.sat.message else ""))  # fmt: skip
    if f.preferred:
        s += f"; AICc prefers: {f.preferred}"
    return s


def _law_record(f: LawFit, paper: float, evidence: dict[str, Evidence] | None = None) -> Record:
    m = {
        "alpha": Metric(f.alpha, "", "measured"),
        "alpha_stderr": Metric(f.alpha_se, "", "measured"),
        "alpha_irr": Metric(f.sat.alpha if f.sat and f.sat.ok else None, "", "measured"),
        "alpha_irr_stderr": Metric(f.sat.alpha_se if f.sat and f.sat.ok else None, "", "measured"),
        "paper_alpha": Metric(paper, "", "formula"),
        "points": Metric(len(f.x), "runs", "measured"),
    }
    return Record(metrics=m, labels={"analysis": f"L({f.what}) {f.at}"}, evidence=evidence or {},
                  notes=[f"L({f.what}) {f.at}: " + _law_text(f, paper)])  # fmt: skip


def _fit_summaries(runs: list[Run]) -> list[Record]:
    out: list[Record] = []
    notes = [
        "absolute loss constants (Kaplan's N_c, D_c, C_c; Chinchilla's E, A, B) depend on the data and the "
        "tokenizer (here bytes of the Python docs, nats/byte; Kaplan: WebText2 BPE, nats/token): compare slopes only",
        "models are tiny (3k-0.5M parameters on CPU) and data repeats for small models (epochs column): the fits "
        "describe this regime, not the papers' 1e6-1e10 parameter range",
    ]
    # L(N) at the largest D with >= 3 sizes
    by_d: dict[float, list[Run]] = {}
    for r in runs:
        by_d.setdefault(r.d, []).append(r)
    d_sets = [d for d, rs in by_d.items() if len({r.n for r in rs}) >= 3]
    fit_n = fit_d = None
    if d_sets:
        d = max(d_sets)
        rs = sorted(by_d[d], key=lambda r: r.n)
        fit_n = _law("N", f"at D={_fmt_n(d)} tokens (N = non-embedding params)", [r.n for r in rs], [r.loss for r in rs])
    # L(D) at the size with the most data budgets
    by_n: dict[float, list[Run]] = {}
    for r in runs:
        by_n.setdefault(r.n, []).append(r)
    n_sets = [(len({r.d for r in rs}), n) for n, rs in by_n.items() if len({r.d for r in rs}) >= 3]
    if n_sets:
        n = max(n_sets)[1]
        rs = sorted(by_n[n], key=lambda r: r.d)
        fit_d = _law("D", f"at N={_fmt_n(n)} ({rs[0].shape})", [r.d for r in rs], [r.loss for r in rs])
    # L(C) on the compute-efficient frontier
    front = sorted((runs[i] for i in sf.pareto_frontier([r.c for r in runs], [r.loss for r in runs])), key=lambda r: r.c)
    fit_c = _law("C", "frontier (C = 6 N_total D)", [r.c for r in front], [r.loss for r in front]) if len(front) >= 2 else None

    if fit_n:
        detail = "fitted exponent of final validation loss vs N (non-embedding), " + _law_text(fit_n, sf.KAPLAN_ALPHA_N)
        detail += f"; {fit_n.at}"
        if fit_d:
            detail += "; L(D): " + _law_text(fit_d, sf.KAPLAN_ALPHA_D) + f" {fit_d.at}"
        if fit_c:
            detail += "; L(C): " + _law_text(fit_c, sf.KAPLAN_ALPHA_C)
        detail += "; constants depend on data and tokenizer, only the slope is compared"
        out.append(_law_record(fit_n, sf.KAPLAN_ALPHA_N, {"scale.kaplan": Evidence(fit_n.alpha, "", "measured", detail)}))
    if fit_d:
        out.append(_law_record(fit_d, sf.KAPLAN_ALPHA_D))
    if fit_c:
        out.append(_law_record(fit_c, sf.KAPLAN_ALPHA_C))

    # isoFLOP profiles (Chinchilla Approach 2)
    by_c: dict[float, list[Run]] = {}
    for r in runs:
        if r.budget > 0:
            by_c.setdefault(r.budget, []).append(r)
    isos: list[tuple[float, list[Run], sf.IsoOpt]] = []
    for c in sorted(by_c):
        rs = sorted(by_c[c], key=lambda r: r.n_total)
        opt = sf.isoflop_optimum([r.n_total for r in rs], [r.loss for r in rs])
        isos.append((c, rs, opt))
        out.append(_iso_record(c, rs, opt))
    valid = [(c, rs, o) for c, rs, o in isos if o.ok]
    if valid:
        out.append(_iso_overall(valid))
    plots = _plots(runs, fit_n, fit_d, fit_c, isos)
    if out:
        out[-1].notes.extend(notes + plots)
    return out


def _tpp(c: float, log_n: float) -> float:
    """Tokens per parameter at N = e^log_n on budget c: D/N = C / (6 N^2)."""
    return c / (6.0 * math.exp(2 * log_n)) if log_n == log_n else math.nan


def _iso_record(c: float, rs: list[Run], o: sf.IsoOpt) -> Record:
    lab = {"analysis": f"isoFLOP C={c:.3g}"}
    if not o.ok:
        return Record(labels=lab, metrics={"points": Metric(len(rs), "runs", "measured")},
                      notes=[f"isoFLOP C={c:.3g}: {o.message}; losses " +
                             ", ".join(f"{r.shape}:{r.loss:.3f}" for r in rs)])  # fmt: skip
    tpp = _tpp(c, o.log_n_opt)
    se2 = 2 * o.log_n_se  # ln(D/N) = ln(C/6) - 2 ln N
    lo, hi = (tpp * math.exp(-se2), tpp * math.exp(se2)) if se2 == se2 else (math.nan, math.nan)
    blo, bhi = _tpp(c, o.boot_hi), _tpp(c, o.boot_lo)
    # N_nonemb at the optimum: ln N_nonemb interpolated in ln N_total along the profile
    xs = [math.log(r.n_total) for r in rs]
    ys = [math.log(r.n) for r in rs]
    k = (ys[-1] - ys[0]) / (xs[-1] - xs[0])
    ln_nonemb = float(np.interp(o.log_n_opt, xs, ys)) if xs[0] <= o.log_n_opt <= xs[-1] else ys[0] + k * (o.log_n_opt - xs[0])
    d_opt = c / (6 * o.n_opt)
    m = {
        "n_opt": Metric(o.n_opt, "params", "measured"),
        "tokens_per_param": Metric(tpp, "tokens/param", "measured"),
        "tpp_low": Metric(lo, "tokens/param", "measured"),
        "tpp_high": Metric(hi, "tokens/param", "measured"),
        "paper_tpp": Metric(sf.CHINCHILLA_TOKENS_PER_PARAM, "tokens/param", "formula"),
        "points": Metric(len(rs), "runs", "measured"),
    }
    note = (f"isoFLOP C={c:.3g} FLOP (6 N_total D): parabola in ln N over {len(rs)} sizes "
            f"{_fmt_n(rs[0].n_total)}-{_fmt_n(rs[-1].n_total)}: N_opt = {_fmt_n(o.n_opt)} (all params; "
            f"~{_fmt_n(math.exp(ln_nonemb))} non-embedding), D_opt = {_fmt_n(d_opt)} tokens, {tpp:.1f} tokens/param "
            f"(1-sigma from the curvature {lo:.1f}-{hi:.1f}; bootstrap 16-84% {blo:.1f}-{bhi:.1f}, "
            f"{100 * o.boot_valid:.0f}% of resamples had a minimum; {d_opt / math.exp(ln_nonemb):.0f} per non-embedding "
            f"param), min loss {o.loss_min:.3f}, parabola rms residual {o.rms:.3f}" + ("" if o.interior else f"; {o.message}"))  # fmt: skip
    return Record(labels=lab, metrics=m, notes=[note])


def _iso_overall(valid: list[tuple[float, list[Run], sf.IsoOpt]]) -> Record:
    from bench.fit import fit_power_law

    inner = [v for v in valid if v[2].interior]
    c, rs, o = max(inner or valid, key=lambda v: v[0])
    tpp = _tpp(c, o.log_n_opt)
    parts = []
    for cc, _, oo in valid:
        t = _tpp(cc, oo.log_n_opt)
        se2 = 2 * oo.log_n_se
        rng = f"{t * math.exp(-se2):.1f}-{t * math.exp(se2):.1f}" if se2 == se2 else "n/a"
        boot = f"{_tpp(cc, oo.boot_hi):.1f}-{_tpp(cc, oo.boot_lo):.1f}" if oo.boot_lo == oo.boot_lo else "n/a"
        parts.append(f"C={cc:.3g}: {t:.1f} (1-sigma {rng}; bootstrap {boot}"
                     + ("" if oo.interior else "; vertex outside the sizes: a bound") + ")")  # fmt: skip
    detail = ("tokens per parameter at the isoFLOP optimum (Chinchilla Approach 2: parabola of final validation loss "
              "in ln N at fixed C = 6 N_total D; N = all parameters, Chinchilla's convention), value from the "
              "largest budget with an interior optimum: " + "; ".join(parts))  # fmt: skip
    m = {"tokens_per_param": Metric(tpp, "tokens/param", "measured")}
    if len(valid) >= 2:
        pf = fit_power_law([v[0] for v in valid], [math.exp(v[2].log_n_opt) for v in valid])
        se = "n/a" if pf.stderr != pf.stderr else f"{pf.stderr:.2f}"
        detail += f"; N_opt ~ C^{pf.exponent:.2f} +- {se} over {len(valid)} budgets (Chinchilla: a = 0.50, Table 2)"
        m["n_opt_exponent"] = Metric(pf.exponent, "", "measured")
    detail += (f"; Chinchilla Table 3: ~{sf.CHINCHILLA_TOKENS_PER_PARAM:g} tokens/param at 4e8-1e10 params. At this "
               "tiny scale the uncertainty is a factor of several: few sizes per budget, one seed, fixed "
               "hyperparameters, and the optimum ratio need not be scale-free down here")  # fmt: skip
    m["paper_tpp"] = Metric(sf.CHINCHILLA_TOKENS_PER_PARAM, "tokens/param", "formula")
    return Record(labels={"analysis": "isoFLOP optimum"}, metrics=m,
                  evidence={"scale.chinchilla": Evidence(tpp, "tokens/param", "measured", detail)},
                  notes=["isoFLOP optimum: " + detail])  # fmt: skip


def artifacts_dir() -> Path:
    """Where plots go: $BENCH_ARTIFACTS_DIR (the core sets it beside the result file), else results/runs/artifacts."""
    return Path(os.environ.get("BENCH_ARTIFACTS_DIR") or "results/runs/artifacts")


def _plots(runs: list[Run], fit_n: LawFit | None, fit_d: LawFit | None, fit_c: LawFit | None,
           isos: list[tuple[float, list[Run], sf.IsoOpt]]) -> list[str]:  # fmt: skip
    """Two PNGs: loss vs compute (+ L(N), L(D) panels) with the fitted lines; isoFLOP curves. Returns notes."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import NullFormatter
    except Exception as e:  # pragma: no cover - matplotlib is a dependency
        return [f"plots skipped: matplotlib unavailable ({e})"]
    out_dir = artifacts_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    # 1) loss vs compute, L(N), L(D)
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.8))
    ax = axes[0]
    shapes = sorted({r.shape for r in runs}, key=lambda s: min(r.n_total for r in runs if r.shape == s))
    cmap = plt.get_cmap("viridis")
    for i, s in enumerate(shapes):
        rs = sorted((r for r in runs if r.shape == s), key=lambda r: r.c)
        ax.plot([r.c for r in rs], [r.loss for r in rs], "o-", color=cmap(i / max(1, len(shapes) - 1)), ms=4, lw=0.8,
                label=f"{s} (N={_fmt_n(rs[0].n_total)})")  # fmt: skip
    if fit_c and fit_c.alpha == fit_c.alpha:
        xs = np.geomspace(min(fit_c.x), max(fit_c.x), 50)
        ax.plot(xs, fit_c.prefactor * xs ** (-fit_c.alpha), "k--", lw=1.5,
                label=f"frontier fit: L ~ C^-{fit_c.alpha:.3f} (Kaplan 0.050)")  # fmt: skip
    ax.set(xscale="log", yscale="log", xlabel="compute C = 6 N_total D [FLOP]", ylabel="final validation loss [nats/byte]",
           title="Loss vs compute")  # fmt: skip
    ax.legend(fontsize=7)
    for ax, f, paper, xl in ((axes[1], fit_n, sf.KAPLAN_ALPHA_N, "N (non-embedding parameters)"),
                             (axes[2], fit_d, sf.KAPLAN_ALPHA_D, "D (tokens)")):  # fmt: skip
        if f is None:
            ax.set_visible(False)
            continue
        ax.plot(f.x, f.y, "o", label="runs")
        xs = np.geomspace(min(f.x), max(f.x), 50)
        ax.plot(xs, f.prefactor * xs ** (-f.alpha), "k--", label=f"log-log fit: alpha={f.alpha:.3f} (Kaplan {paper})")
        if f.sat and f.sat.ok:
            ax.plot(xs, f.sat.predict(xs), "r:", label=f"E + A x^-alpha: alpha={f.sat.alpha:.3f}, E={f.sat.E:.2f}")
        ax.set(xscale="log", yscale="log", xlabel=xl, ylabel="final validation loss [nats/byte]", title=f"L({f.what}) {f.at}")
        ax.title.set_fontsize(9)
        ax.legend(fontsize=7)
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    p1 = out_dir / "scaling_loss_vs_compute.png"
    fig.savefig(p1, dpi=110)
    plt.close(fig)
    notes.append(f"plot: {p1}")
    # 2) isoFLOP curves and N_opt vs C
    if isos:
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
        ax = axes[0]
        for i, (c, rs, o) in enumerate(isos):
            col = plt.get_cmap("plasma")(i / max(1, len(isos)))
            ax.plot([r.n_total for r in rs], [r.loss for r in rs], "o", color=col, label=f"C={c:.2g}")
            if o.ok:
                x = np.log([r.n_total for r in rs])
                a, b, cc = np.polyfit(x, [r.loss for r in rs], 2)
                xs = np.linspace(x.min() - 0.3, x.max() + 0.3, 80)
                ax.plot(np.exp(xs), a * xs**2 + b * xs + cc, "-", color=col, lw=1)
                xerr = None
                if o.boot_lo == o.boot_lo:
                    xerr = [[max(0.0, o.n_opt - math.exp(o.boot_lo))], [max(0.0, math.exp(o.boot_hi) - o.n_opt)]]
                ax.errorbar([o.n_opt], [o.loss_min], xerr=xerr, fmt="*", color=col, ms=12, capsize=3)
        ax.set(xscale="log", xlabel="N_total (parameters)", ylabel="final validation loss [nats/byte]",
               title="isoFLOP profiles (parabola in ln N; star: optimum, bootstrap 16-84%)")  # fmt: skip
        ax.title.set_fontsize(9)
        ax.legend(fontsize=7)
        ax = axes[1]
        ok = [(c, o) for c, _, o in isos if o.ok]
        if ok:
            cs = np.array([c for c, _ in ok])
            ax.plot(cs, [o.n_opt for _, o in ok], "o-", label="measured N_opt")
            cl = np.geomspace(cs.min() / 2, cs.max() * 2, 20)
            ax.plot(cl, np.sqrt(cl / (6 * sf.CHINCHILLA_TOKENS_PER_PARAM)), "k--", label="20 tokens/param (Chinchilla)")
            ax.set(xscale="log", yscale="log", xlabel="compute C [FLOP]", ylabel="N_opt (all parameters)",
                   title="compute-optimal size vs budget")  # fmt: skip
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.legend(fontsize=7)
        for ax in axes:
            ax.grid(True, which="both", alpha=0.3)
        fig.tight_layout()
        p2 = out_dir / "scaling_isoflop.png"
        fig.savefig(p2, dpi=110)
        plt.close(fig)
        notes.append(f"plot: {p2}")
    return notes
