"""What a precision case may spend per format, and what it is expected to cost (`bench run --plan`).

Per-format budgets (seconds of wall time, by profile): each format of a matmul, block or training case
first times one call at a small size (ctx.afford, after one untimed call) and then runs the largest
size that fits its budget, or becomes a `skipped` row naming the measured time. So a format whose
kernel is slow on this machine (fp8 `torch._scaled_mm` on a CPU: one 64^3 call 0.07 s, one 256^3 call
1.8 s on a 2-core Xeon with AMX; fp16 on a CPU without native half, ~10x slower than bf16) costs at
most its budget and never takes the other formats' rows with it.

Estimates (Plugin.estimate_s: one case's work, process start-up excluded), from stated assumptions:
  CPU (2 cores; CPU seconds measured single-threaded on the Xeon above, torch 2.13):
    storage 1.0 s (small GPT materialized, 1b on the meta device); cast 0.3 s;
    activations 0.5 s + 0.35 s per measured configuration (two forwards under MemTracker) + 0.6 s per
      simulated one (fake tensors, 1b-sized layers);
    matmul, block: each computing format spends its budget (the timing stops at its CI target or cap)
      + 0.3 s (inputs, FLOP count, float64 reference);
    train: per format 3 probe steps + --steps + the timed steps (TRAIN_TIMED_CALLS) at a step of
      CPU_STEP_S (tiny GPT, 8 x 64 tokens: fp32 17 ms, 16-bit autocast 28 ms) + 0.5 s, capped by the budget;
    trainmem: 3 s per measured format at the small preset (two tracked phases; fp32 AdamW also
      simulated), 11 s for the 1b GPT simulated at each batch of mem.train_24x's sweep (SCALE_SWEEP: 3
      batches, 1 on CUDA; MemTracker's per-op bookkeeping dominates: 7.7 CPU s for its forward + backward).
  CUDA (H100/H200 class; assumed, nothing measured on a GPU yet): matmul 2.5 s per format at n = 8192
    (timing to 1% CI, the fp64 reference, the core's bf16 peak measurement); block its budget; train
    5 ms a step; activations 0.3 s per configuration; trainmem + 5 s for the 1b GPT measured for real.
"""

from __future__ import annotations

from plugins.precision.params import PrecisionParams, formats_of, resolve, scale_sweep

# per format, seconds: probe + warm-up + timed samples (matmul, block) or probe + steps + timing (train)
FORMAT_BUDGET_S = {
    "matmul": {"quick": 1.2, "full": 10.0, "gpu": 4.0},
    "block": {"quick": 1.0, "full": 12.0, "gpu": 6.0},
    "train": {"quick": 30.0, "full": 120.0, "gpu": 60.0},
}
TIMING_CAP_S = {"quick": 1.0, "full": 2.0, "gpu": 1.0}  # cap of each timed measurement (with --max-time)
TRAIN_TIMING_CAP_S = {"quick": 0.5, "full": 2.0, "gpu": 1.0}  # training speed is secondary to the loss curve
TRAIN_TIMED_CALLS = 20  # warm-up + samples of the training-speed measurement, for the probe's arithmetic
FIXED_S = {"storage": 1.0, "cast": 0.3, "activations": 0.5}
ACT_MEASURED_S, ACT_SIMULATED_S, ACT_CUDA_S = 0.35, 0.6, 0.3
CPU_STEP_S = {"fp32": 0.017, "bf16": 0.028, "fp16": 0.028}
CUDA_STEP_S = 0.005
TRAINMEM_FORMAT_S, TRAINMEM_SCALE_S, TRAINMEM_SCALE_CUDA_S = 3.0, 11.0, 5.0
PER_FORMAT_FIXED_S = 0.3


def budget(what: str, profile: str) -> float:
    table = FORMAT_BUDGET_S[what]
    return table.get(profile, table["full"])


def timing_cap(profile: str, max_time_s: float, table: dict[str, float] | None = None) -> float:
    return min(max_time_s, (table or TIMING_CAP_S).get(profile, 2.0))


def computing_formats(p: PrecisionParams, device_type: str) -> list[str]:
    """Formats a matmul/block/train case computes here (tf32 needs CUDA; fp8 block and training are
    skipped without work; the quick profile trains fp32 and bf16 only)."""
    fmts = formats_of(p)
    if p.what == "train" and p.dtype == "all" and device_type != "cuda":
        fmts = ["fp32", "bf16"]
    out = []
    for f in fmts:
        if f == "tf32" and device_type != "cuda":
            continue
        if f.startswith("fp8") and p.what == "train":
            continue
        if f.startswith("fp8") and p.what == "block" and (device_type != "cuda" or f == "fp8_e5m2"):
            continue
        out.append(f)
    if p.what == "train" and "fp16" in out and p.scaler == "both":
        out.append("fp16")  # with and without a GradScaler
    return out


def estimate_s(p: PrecisionParams, device_type: str) -> float:
    """Expected seconds of one case's work (see the module doc): the gpu profile's budgets on CUDA,
    the quick profile's on a CPU."""
    from plugins.precision.activations import configs

    p = resolve(p)
    cuda = device_type == "cuda"
    profile = "gpu" if cuda else "quick"
    if p.what in ("storage", "cast"):
        return FIXED_S[p.what]
    if p.what == "activations":
        per = [
            ACT_CUDA_S if cuda else ACT_SIMULATED_S if c.simulate else ACT_MEASURED_S for c in configs(p, device_type)
        ]
        return FIXED_S["activations"] + sum(per)
    if p.what == "trainmem":
        all_fmts = ["fp32", "bf16"] if cuda else ["fp32"]  # --dtype all: the quick profile measures fp32 only
        fmts = [f for f in (all_fmts if p.dtype == "all" else [p.dtype]) if not f.startswith("fp8")]
        est = TRAINMEM_FORMAT_S * len(fmts) * (2 if p.optim == "all" else 1)
        if "fp32" in fmts and p.optim in ("all", "adamw"):
            est += (TRAINMEM_SCALE_S + (TRAINMEM_SCALE_CUDA_S if cuda else 0.0)) * len(scale_sweep(cuda))
        return est
    fmts = computing_formats(p, device_type)
    if p.what == "train":
        calls = 3 + p.steps + TRAIN_TIMED_CALLS
        each = [calls * (CUDA_STEP_S if cuda else CPU_STEP_S.get(f, 0.03)) + 0.5 for f in fmts]
        return sum(min(e, budget("train", profile)) for e in each)
    if cuda and p.what == "matmul":
        return 2.5 * len(fmts)
    return (budget(p.what, profile) + PER_FORMAT_FIXED_S) * len(fmts)
