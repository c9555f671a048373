"""The scaling plugin: compute and scaling laws on small GPTs trained on real text.

  --what flops   count the FLOPs of a real forward+backward (FlopCounterMode via ctx.count_flops) per token
                 and compare with 6N + 12LdT (plugins/scaling/flops.py). One row per model shape.
  --what train   train each shape with AdamW on byte-level text at a fixed seed for a budget: --budget
                 D=<tokens> (fixed data) or C=<FLOPs> (D = C / 6N: an isoFLOP profile, Chinchilla Approach 2,
                 Hoffmann et al. 2022, arXiv 2203.15556). One row per (N, D) (plugins/scaling/train.py).

summarize() fits L(N), L(D) and the compute frontier L(C) (Kaplan's eq. 1.1-1.3 form, and with an
irreducible term), finds the isoFLOP optimum with its uncertainty, and judges compute.6nd;
report() draws the plots into the folder `bench report` gives it.

Every case is cheap and cannot crash, hang or exhaust memory (tiny models, single-threaded on CPU),
so they share one warm worker (Launch(reuse=True)): a profile is many one-shape cases, each with its
own row kept as it finishes, and no interpreter start-up between them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.contract import Launch, Plugin, Record, Row, Section, param
from plugins.scaling.claims import CLAIMS
from plugins.scaling.plans import PLANS, cases_of
from plugins.scaling.shapes import (
    batch_for,
    param_counts,
    parse_budget,
    parse_shapes,
    shape_config,
    shape_error,
    split_seq,
    steps_for,
)

if TYPE_CHECKING:  # pragma: no cover
    from bench.context import Context

LADDER = "1x8+1x16+1x32+2x40+2x64+3x80+4x96"  # default --shapes
# Cost model of one case, for `bench run --plan` (estimate_s). CPU, one thread: fitted to the quick
# profile's cases on a 2-core Xeon under a load of ~10, CPU time taken as wall x 0.22 (the run's
# measured CPU share): per 100k tokens at 1024 tokens/step 1x8 0.68 s, 1x32 0.9 s, 2x40 1.28 s, 2x64
# 2.1 s = 98 steps x 6.5 ms + 6 N_total x 1e5 / 4.9e10. An upper bound for a quiet machine: the whole
# quick profile used 40 s of CPU there; the AMD EPYC CI host ran such steps ~3x faster. CUDA: assumed
# (no GPU measured yet): a tiny model's step is launch-bound (~150 kernels of fwd, bwd, clip and fused
# AdamW at ~25 us) and its matmuls run far below the H200's 989 bf16 TFLOP/s.
STEP_OVERHEAD_S = {"cpu": 6.5e-3, "cuda": 4e-3}
FLOP_RATE = {"cpu": 4.9e10, "cuda": 1e14}  # training FLOP/s of these models (6 N_total per token)
CASE_EXTRA_S = {"cpu": 0.5, "cuda": 0.5}  # validation pass, timed step, model build


@dataclass(frozen=True)
class ScalingParams:
    what: str = param(
        "flops",
        "flops: counted FLOPs vs 6N + 12LdT per shape; train: train each shape for a budget and record the "
        "final validation loss",
        choices=("flops", "train"),
    )
    shapes: str = param(
        LADDER,
        "model shapes trained (or counted) in this case, '+'-separated: 'LxD' = n_layer x d_model (heads = d/32), "
        "or a GPT preset name (small, medium, ...), optionally '@T' for that shape's sequence length (medium@256)",
    )
    budget: str = param(
        "", "train: per model, D=<tokens> (fixed data, e.g. D=8e5) or C=<FLOPs> (isoFLOP: D = C / (6 N_total))"
    )
    seq: int = param(64, "tokens per sequence T (context length); 'LxD@T' in --shapes overrides it per shape")
    batch: int = param(16, "sequences per optimizer step (fewer when the budget would give under 200 steps)")
    lr: float = param(3e-3, "peak AdamW learning rate at d_model=64, scaled by 64/d_model (warm-up 5%, cosine to 10%)")
    repeat: int = param(0, "0: the run's seed; k > 0: seed + 1000 k for init and data order (measures seed noise)")


class ScalingPlugin(Plugin):
    name = "scaling"
    description = "FLOPs vs 6ND; loss power laws in N, D and C; isoFLOP tokens/param on small GPTs (real text)"
    version = "2"
    Params = ScalingParams
    claims = CLAIMS
    metrics = {
        "ratio_6n": "counted forward+backward FLOPs / (6N + 12LdT) per token",
        "alpha_n": "fitted exponent alpha_N of L(N) = (N_c/N)^alpha_N at fixed D (N non-embedding)",
        "alpha_d": "fitted exponent alpha_D of L(D) = (D_c/D)^alpha_D at fixed N",
        "alpha_c": "fitted exponent alpha_C of L(C) on the compute-efficient frontier (C = 6 N_total D)",
        "tokens_per_param": "tokens per parameter (at the isoFLOP optimum in the summary)",
        "final_loss": "mean validation cross-entropy after training, nats/byte",
    }
    table_metrics = (
        "params",
        "params_total",
        "tokens",
        "tokens_per_param",
        "epochs",
        "final_loss",
        "train_s",
        "flops_per_token_counted",
        "flops_per_token_6n",
        "ratio_6n",
        "outside_share",
    )

    def grid(self, profile: str) -> list[dict[str, Any]]:
        return cases_of(PLANS.get(profile, PLANS["quick"]))

    def validate(self, p: ScalingParams) -> str | None:
        # `--what X` / `--budget B` replace the field in every case of the profile's grid: a train case
        # turned into a FLOP count (or the flops case given a budget) has nothing to do; `bench run` drops
        # it and says so (and refuses the command when no case is left)
        if p.what == "flops" and p.budget:
            return "--what flops takes no --budget (the grid's flops case counts FLOPs; it trains nothing)"
        if p.what == "train" and not p.budget:
            return "--what train needs --budget D=<tokens> or C=<FLOPs>; this is the grid's flops case"
        shapes = parse_shapes(p.shapes)
        if not shapes:
            return "--shapes names no model shape"
        for s in shapes:
            why = shape_error(s)
            if why:
                return why
        if p.seq < 1 or p.batch < 1 or p.repeat < 0:
            return "--seq and --batch must be >= 1, --repeat >= 0"
        if p.budget.strip() and parse_budget(p.budget) is None:
            return f"--budget {p.budget!r}: write D=<tokens> (e.g. D=8e5) or C=<FLOPs> (e.g. C=1e11), a number > 0"
        if p.what == "train":
            if p.lr <= 0:
                return "--lr must be > 0"
            from plugins.common.text import split

            longest = max(split_seq(s, p.seq)[1] for s in shapes)
            if longest + 1 >= len(split("val")):
                return f"sequence length {longest} is longer than the validation text"
            if p.budget.strip():  # refused up front, as fsdp's --params is: not run into the case limit
                est, limit = self.estimate_s(p, "cuda") or 0.0, self.launch(p).timeout_s
                if est > limit:
                    return (
                        f"--budget {p.budget}: training {p.shapes} on it would take ~{est:.3g} s even on a GPU "
                        f"(the plan's cost model), over the case limit of {limit:g} s; give a smaller budget"
                    )
        return None

    def available(self, p: ScalingParams) -> str | None:
        return None

    def launch(self, p: ScalingParams) -> Launch:
        if p.what == "flops":
            return Launch(reuse=True, timeout_s=600.0, threads=1)
        # time limit: each step at a pessimistic 1 GFLOP/s plus 50 ms of overhead (10-20x the cost model)
        total_s = 60.0
        for _shape, steps, batch, T, nt in self._runs(p):
            total_s += steps * (0.05 + 6.0 * nt * batch * T / 1e9) + 10.0
        # one thread: models this small spend more time waiting on a sibling thread than computing
        # (measured here: a 1x16 step 3.8 ms of CPU on one thread, 66 ms on two)
        return Launch(reuse=True, timeout_s=float(min(3600.0, total_s)), threads=1)

    def estimate_s(self, p: ScalingParams, device_type: str) -> float | None:
        dev = "cuda" if device_type == "cuda" else "cpu"
        if p.what == "flops":  # two counted fwd+bwd per shape (batch 2), at ~1/4 of the training rate
            out = 0.0
            for s in parse_shapes(p.shapes):
                cfg = shape_config(s, p.seq)
                out += 0.3 + 2 * 6.0 * param_counts(cfg)[1] * 2 * cfg.block_size / (FLOP_RATE[dev] / 4)
            return out
        out = 0.0
        for _shape, steps, batch, T, nt in self._runs(p):
            out += steps * (STEP_OVERHEAD_S[dev] + 6.0 * nt * batch * T / FLOP_RATE[dev]) + CASE_EXTRA_S[dev]
        return out

    @staticmethod
    def _runs(p: ScalingParams) -> list[tuple[str, int, int, int, int]]:
        """(shape, steps, batch, T, N_total) of each training run in a case."""
        out = []
        for s in parse_shapes(p.shapes):
            cfg = shape_config(s, p.seq)
            nt = param_counts(cfg)[1]
            T = cfg.block_size
            out.append((s, steps_for(p, nt, T), batch_for(p, nt, T), T, nt))
        return out

    def describe(self) -> str:
        return (
            "N conventions: N_nonemb (Kaplan) excludes token/position embeddings (the LM head is tied to the token "
            "embedding); N_total (Chinchilla) counts all. L(N) fits use N_nonemb; C = 6 N_total D. Training runs "
            "single-threaded on a CPU whatever --threads says (tiny models: overhead-bound; losses independent of "
            "the core count). Each profile case trains one shape; runs that share D or C serve several fits."
        )

    def run(self, p: ScalingParams, ctx: Context) -> list[Record]:
        if p.what == "flops":
            from plugins.scaling.flops import count_case

            return [count_case(s, p.seq, ctx) for s in parse_shapes(p.shapes)]
        from plugins.scaling.train import train_case

        return [train_case(s, p, ctx) for s in parse_shapes(p.shapes)]

    def summarize(self, rows: list[Row]) -> list[Record]:
        from plugins.scaling.summary import summarize

        return summarize([r for r in rows if r.plugin == self.name])

    def report(self, rows: list[Row], out_dir: Path) -> list[Section]:
        from plugins.scaling.report import sections

        return sections(rows, out_dir)
