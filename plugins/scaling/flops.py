"""FLOPs of a real GPT training step vs the 6N(D) rule: the formulas, the counting case and the
judgement of claim compute.6nd across shapes.

Per token of training (forward + backward = 3 x forward; a multiply-add = 2 FLOPs):
  6 N            weights, N = non-embedding parameters (Kaplan et al. 2020, arXiv 2001.08361, sec. 2.1)
  12 L d T       attention scores Q K^T and the weighted sum A V over the full T x T (PaLM, arXiv
                 2204.02311, appendix B: 6N + 12 L H Q T with H Q = d)
  6 d V          the tied LM head (not in N_nonemb: the formula leaves it out)
  -6 N_nomatmul  biases and LayerNorm weights are in N but do no matmul (13 d per layer + 2 d here)
So counted / (6N + 12LdT) = 1 + (6 d V - 6 N_nomatmul) / (6N + 12LdT): the rule is within TOL_6ND
of the count exactly when that share is (per layer, 6N ~ 72 L d^2, so the LM head's share is about
V / (12 L d + 2 L T): large for tiny models, under 1% for GPT-3-sized ones).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from bench.contract import Evidence, Metric, Record, Row, claim_record
from plugins.scaling.claims import CLAIM_BY_ID
from plugins.scaling.shapes import shape_config

if TYPE_CHECKING:  # pragma: no cover
    from bench.context import Context

TOL_6ND = 0.10  # claims.md: "ratio 1.0-1.1"; judged as |counted / (6N + 12LdT) - 1| <= 10%
EXPLAINED_TOL = 0.01  # the count must match 6N + 12LdT + 6dV - 6 N_nomatmul within 1%


def flops_6n(n_params: float) -> float:
    """Training FLOPs per token, weights only: 2N forward + 4N backward (Kaplan sec. 2.1)."""
    return 6.0 * n_params


def flops_attention(n_layer: int, d_model: int, seq: int) -> float:
    """Training FLOPs per token of the attention scores and the weighted sum, full (not causally
    halved) T x T: 12 L d T (PaLM appendix B)."""
    return 12.0 * n_layer * d_model * seq


def nomatmul_params(n_layer: int, d_model: int) -> int:
    """Biases and LayerNorm weights of plugins/common/gpt.py (bias=True): per layer ln_1 2d, qkv 3d,
    proj d, ln_2 2d, fc 4d, proj d = 13 d; final LayerNorm 2d."""
    return 13 * n_layer * d_model + 2 * d_model


def gpt_matmul_flops_per_token(n_layer: int, d_model: int, seq: int, vocab: int) -> float:
    """Hand count of a GPT forward+backward, matmuls only, per token (a multiply-add = 2 FLOPs).

    Forward, per layer: qkv 2*d*3d, attention out-proj 2*d*d, MLP up 2*d*4d, MLP down 2*4d*d
    (= 24 d^2), scores Q K^T 2*T*d and weighted sum A V 2*T*d (full T x T); once: LM head 2*d*V.
    Backward = 2x forward (grads w.r.t. inputs and weights). Total = 3x forward.
    """
    fwd = n_layer * (24 * d_model**2 + 4 * seq * d_model) + 2 * d_model * vocab
    return 3.0 * fwd


def count_case(shape: str, seq: int, ctx: Context) -> Record:
    """Count the FLOPs of one real forward+backward of a shape (batch 2) and set them beside the formulas."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from plugins.common.gpt import GPT

    cfg = shape_config(shape, seq)
    T, L, d, V = cfg.block_size, cfg.n_layer, cfg.d_model, cfg.vocab_size
    torch.manual_seed(ctx.seed)
    with torch.device(ctx.device):  # built where it runs (a 1B model initialised on a CPU takes ~10 s)
        model = GPT(cfg)
    n_nonemb, n_total = model.num_params(non_embedding=True), model.num_params()
    n_nomatmul = sum(p.numel() for n, p in model.named_parameters() if p.dim() < 2)
    batch = 2
    x = torch.randint(0, V, (batch, T), device=ctx.device)

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
    six_n, attn = flops_6n(n_nonemb), flops_attention(L, d, T)
    hand = gpt_matmul_flops_per_token(L, d, T, V)
    f = "FLOP/token"

    def exact(v: Any, unit: str, source: str = "formula") -> Metric:
        return Metric(v, unit, source, deterministic=True)

    m = {
        "n_layer": exact(L, "layers"),
        "d_model": exact(d, ""),
        "seq_len": exact(T, "tokens"),
        "vocab": exact(V, "tokens"),
        "params": exact(n_nonemb, "params", "measured"),
        "params_total": exact(n_total, "params", "measured"),
        "params_nomatmul": exact(n_nomatmul, "params (biases, LayerNorms)", "measured"),
        "flops_per_token_counted": exact(counted, f, "measured"),
        "flops_per_token_counted_default": exact(counted_default, f, "measured"),
        "flops_per_token_6n": exact(six_n, f),
        "flops_per_token_attn": exact(attn, f),
        "flops_per_token_hand": exact(hand, f),
        "ratio_6n": exact(counted / (six_n + attn), "x", "measured"),
        "ratio_6n_only": exact(counted / six_n, "x", "measured"),
        "ratio_6n_total": exact(counted / (flops_6n(n_total) + attn), "x", "measured"),
        "outside_share": exact(outside_share(L, d, T, V, n_nonemb, n_nomatmul), "fraction of 6N + 12LdT"),
    }
    notes = [
        "FLOPs are counted on a real forward+backward under sdpa_kernel(MATH): torch's FlopCounterMode has no "
        "formula for the CPU flash kernel (aten._scaled_dot_product_flash_attention_for_cpu), so the default "
        "backend's count (flops_per_token_counted_default) misses attention on CPU. The math backend also gives "
        "model FLOPs (PaLM's convention, 12 L d T): torch's formula for the flash/efficient backward counts 5 "
        "matmuls (it recomputes the scores), i.e. 14 L d T, as it would on a GPU with the default backend",
        "outside_share = (6 d V - 6 N_nomatmul) / (6N + 12LdT): the tied LM head, which N_nonemb leaves out, minus "
        "the biases/LayerNorms, which N counts but which do no matmul (formula, from the shape)",
    ]
    return Record(metrics=m, labels={"shape": shape}, notes=notes)


def outside_share(n_layer: int, d_model: int, seq: int, vocab: int, n_nonemb: float, n_nomatmul: float) -> float:
    """(6 d V - 6 N_nomatmul) / (6N + 12 L d T): how far the rule is from the count (formula)."""
    return (6.0 * d_model * vocab - 6.0 * n_nomatmul) / (flops_6n(n_nonemb) + flops_attention(n_layer, d_model, seq))


def _shape_facts(r: Row) -> dict[str, Any] | None:
    """The numbers of one flops row; rows written before params_nomatmul/vocab existed use the formulas."""
    vals = {k: r.number(k) for k in ("ratio_6n", "n_layer", "d_model", "seq_len", "params")}
    if any(v is None for v in vals.values()):
        return None
    L, d, T = int(vals["n_layer"] or 0), int(vals["d_model"] or 0), int(vals["seq_len"] or 0)
    V = int(r.number("vocab") or 256)
    nm = r.number("params_nomatmul")
    n_nm = nm if nm is not None else nomatmul_params(L, d)
    share = outside_share(L, d, T, V, vals["params"] or 0.0, n_nm)
    return {"shape": str(r.get("shape", "?")), "ratio": vals["ratio_6n"], "share": share, "T": T, "N": vals["params"]}


def judge_6nd(rows: Sequence[Row]) -> Record | None:
    """compute.6nd across every counted shape, as printed: each shape's count / (6N + 12LdT) must be
    within TOL_6ND of 1 (no shape left out). The verdict names the shapes (and so the range of N) where
    the rule holds and where not; the share of FLOPs outside the rule (the LM head 6dV that N_nonemb
    leaves out, minus the biases/LayerNorms that do no matmul) is given per shape as the explanation,
    and a count it does not explain within EXPLAINED_TOL is said too."""
    facts = [f for f in (_shape_facts(r) for r in rows) if f is not None]
    if not facts:
        return None
    facts.sort(key=lambda f: f["N"])
    bad, good, parts = [], [], []
    for f in facts:
        within = abs(f["ratio"] - 1.0) <= TOL_6ND
        explained = abs(f["ratio"] - (1.0 + f["share"])) <= EXPLAINED_TOL
        tag = ("within" if within else "OUTSIDE") + f" ±{TOL_6ND:.0%}; share outside the rule {100 * f['share']:+.1f}%"
        tag += "" if explained else f", NOT explained by it (off by {f['ratio'] - 1 - f['share']:+.3f})"
        parts.append(f"{f['shape']}@{f['T']} (N={f['N']:,.0f}): ratio {f['ratio']:.3f} ({tag})")
        (good if within else bad).append(f)
    n_meet = len(good)
    ok = not bad
    big = facts[-1]

    def ns(fs: list[dict[str, Any]]) -> str:
        return ", ".join(f"{f['shape']} (N={f['N']:,.0f})" for f in fs)

    why = f"holds at {ns(good) or 'no shape'}" + (f"; fails at {ns(bad)}" if bad else "")
    detail = (
        f"counted fwd+bwd FLOPs (FlopCounterMode, SDPA math backend) / (6N + 12LdT), N non-embedding, at all "
        f"{len(facts)} shapes run: {why}. Per shape: " + "; ".join(parts)
    )
    m = {
        "ratio_6n": Metric(big["ratio"], "x", "measured", deterministic=True),
        "shapes_meeting": Metric(n_meet, "shapes within the tolerance", "measured", deterministic=True),
        "shapes_failing": Metric(len(bad), "shapes", "measured", deterministic=True),
    }
    ev = Evidence(big["ratio"], "x (largest shape)", "measured", detail, verdict="holds" if ok else "fails")
    rec = claim_record(CLAIM_BY_ID["compute.6nd"], ev, {"analysis": f"FLOPs vs 6N+12LdT ({len(facts)} shapes)"})
    rec.metrics.update(m)
    return rec
