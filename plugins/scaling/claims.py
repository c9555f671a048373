"""The claims of shared/claims.md that the scaling plugin judges (ids, statements, sources and checks),
and the arithmetic of those judged from published figures."""

from __future__ import annotations

import math
from functools import partial
from typing import Any

from bench.contract import Check, Claim, Figure, Judged


def _peak(device: str, dtype: str) -> float:
    from bench.flops import PEAK_TFLOPS

    return float(PEAK_TFLOPS[device][dtype])


def f_pf_day_flops(d: dict[str, Any]) -> Judged:
    flops = float(d["flops_per_s"]) * float(d["seconds"])
    ok = math.isclose(flops, float(d["printed"]), rel_tol=1e-12)
    m = [Figure(flops, "FLOP", "published")]
    return Judged("holds" if ok else "fails", (
        f"{d['flops_per_s']:g} FLOP/s x {d['seconds']:g} s = {flops:.4g} {'==' if ok else '!='} {d['printed']:g}"
    ), tuple(m))



def f_pf_day_gpus(d: dict[str, Any]) -> Judged:
    from bench.flops import PEAK_SOURCE

    peak = _peak(d["device"], d["dtype"])  # TFLOP/s, dense
    gpus = float(d["pf_day_flops"]) / (peak * 1e12 * 86400)
    m = [Figure(round(gpus, 3), "GPUs", "published", f"{d['device']} {d['dtype']} {peak:g} TFLOP/s dense")]
    base = f"{d['pf_day_flops']:g} FLOP / ({peak:g} TFLOP/s {d['dtype']} dense x 86400 s) = {gpus:.2f} {d['device']}s ({PEAK_SOURCE})"
    claimed = d.get("claimed_gpus")
    if claimed is None:
        return Judged("reported", base, tuple(m))
    dev = gpus / float(claimed) - 1.0
    ok = abs(dev) <= float(d["tol"])
    reason = f"{base}; claimed {claimed:g}: {dev * 100:+.0f}%"
    sp = d.get("sparsity_speedup")
    if sp and not ok:
        gs = gpus / float(sp)
        reason += f"; with 2:4 sparsity ({peak * sp:g} TFLOP/s) {gs:.2f} GPUs, so {claimed:g} only holds with sparsity"
    return Judged("holds" if ok else "fails", reason, tuple(m))



def f_same_constant(d: dict[str, Any]) -> Judged:
    a, b = float(d["printed"]), float(d["reference"])
    dev = a / b - 1
    ok = abs(dev) <= float(d["tol"])
    c, e = float(d["at_pf_days"]), float(d["exponent"])
    la, lb = (a / c) ** e, (b / c) ** e  # L(C) = (C_c / C)^alpha, eq. 1.3
    return Judged("holds" if ok else "fails", (
        f"printed {a:.2g} vs eq. {b:.2g}: {dev * 100:+.0f}%; at C={c:g} PF-day the laws give L={la:.3f} vs {lb:.3f}"
    ), tuple([Figure(a, "PF-days (printed)", "published")]))



def f_tokens_per_param(d: dict[str, Any]) -> Judged:
    target, tol = float(d["target"]), float(d["tol"])
    ok = True
    bits, m = [], []
    for r in d["rows"]:
        ratio = float(r["tokens"]) / float(r["params"])
        good = abs(ratio / target - 1) <= tol
        ok &= good
        bits.append(f"{r['label']}: {ratio:.1f}{'' if good else ' (outside)'}")
        m.append(Figure(round(ratio, 2), f"tokens/param ({r['label']})", "published"))
    return Judged("holds" if ok else "fails", (
        f"tokens/param {', '.join(bits)}; all within ±{tol * 100:g}% of {target:g}" if ok else
        f"tokens/param {', '.join(bits)}; not all within ±{tol * 100:g}% of {target:g}"
    ), tuple(m))  # fmt: skip



def f_tokens_per_param_below(d: dict[str, Any]) -> Judged:
    ratio = float(d["tokens"]) / float(d["params"])
    printed_ok = abs(ratio - float(d["printed"])) <= float(d["tol"])
    below = ratio < float(d["below"])
    ok = printed_ok and below
    return Judged("holds" if ok else "fails", (
        f"{d['tokens']:.3g} / {d['params']:.3g} = {ratio:.2f} tokens/param "
        f"({'matches' if printed_ok else 'does not match'} printed {d['printed']:g}; "
        f"{'below' if below else 'not below'} {d['below']:g})"
    ), tuple([Figure(round(ratio, 2), "tokens/param", "published")]))




CLAIMS: tuple[Claim, ...] = (
    Claim(
        id='compute.6nd',
        claim='training costs ~6·N·D FLOPs (plus attention 12·L·d·T per token)',
        source='Kaplan et al. 2020 (arXiv 2001.08361) sec. 2.1; PaLM (arXiv 2204.02311) appendix B',
        expected='counted forward+backward FLOPs / (6N + 12·L·d·T) per token in 1.0-1.1',
        tolerance='1.0 <= ratio <= 1.1',
        check=Check('range', lo=1.0, hi=1.1),
        needs='run `bench run --plugin scaling` (CPU is enough)',
        metric='ratio_6n',
        unit='x',
    ),
    Claim(
        id='compute.pf_day',
        claim='1 petaflop/s-day = 8.64e19 FLOPs = 8 V100s or 2 A100s for a day',
        source='course notes week 1; Kaplan et al. 2020; NVIDIA datasheets (bench/flops.py PEAK_TFLOPS)',
        expected='8.64e19 FLOPs; 8 V100s; 2 A100s',
        tolerance='every part holds',
        check=Check('parts', parts=('compute.pf_day.definition', 'compute.pf_day.v100', 'compute.pf_day.a100', 'compute.pf_day.h100')),
        needs='nothing: arithmetic',
    ),
    Claim(
        id='compute.pf_day.definition',
        claim='1 petaflop/s-day = 1e15 FLOP/s x 86400 s = 8.64e19 FLOPs',
        source='definition (Kaplan et al. 2020, arXiv 2001.08361, sec. 1.3 notation)',
        expected='8.64e19 FLOPs',
        tolerance='exact',
        check=Check('formula', formula=partial(f_pf_day_flops, {'flops_per_s': 1000000000000000.0, 'seconds': 86400, 'printed': 8.64e+19})),
        needs='nothing: arithmetic',
        unit='FLOP',
        parent='compute.pf_day',
    ),
    Claim(
        id='compute.pf_day.v100',
        claim='8 V100s (fp16 tensor cores) deliver 1 petaflop/s-day in a day',
        source='NVIDIA V100 datasheet via bench/flops.py PEAK_TFLOPS',
        expected='8 GPUs',
        tolerance='±5% of the claimed count, at dense peak',
        check=Check('formula', formula=partial(f_pf_day_gpus, {'device': 'V100', 'dtype': 'fp16', 'claimed_gpus': 8, 'pf_day_flops': 8.64e+19, 'tol': 0.05})),
        needs='nothing: arithmetic',
        unit='GPUs',
        parent='compute.pf_day',
    ),
    Claim(
        id='compute.pf_day.a100',
        claim='2 A100s deliver 1 petaflop/s-day in a day',
        source='NVIDIA A100 datasheet via bench/flops.py PEAK_TFLOPS (312 bf16 dense; 624 with 2:4 sparsity)',
        expected='2 GPUs',
        tolerance='±5% of the claimed count, at dense peak',
        check=Check('formula', formula=partial(f_pf_day_gpus, {'device': 'A100', 'dtype': 'bf16', 'claimed_gpus': 2, 'pf_day_flops': 8.64e+19, 'tol': 0.05, 'sparsity_speedup': 2})),
        needs='nothing: arithmetic',
        unit='GPUs',
        parent='compute.pf_day',
        known_error='the notes say "2 A100s = 1 petaflop/s-day": only with 2:4 sparsity; dense bf16 needs 3.2',
    ),
    Claim(
        id='compute.pf_day.h100',
        claim='H100 SXM (989.4 TFLOPS bf16 dense): GPUs for 1 petaflop/s-day in a day',
        source='NVIDIA H100 datasheet via bench/flops.py PEAK_TFLOPS',
        expected='~1 GPU (no claim in the notes)',
        tolerance='report only',
        check=Check('formula', formula=partial(f_pf_day_gpus, {'device': 'H100 SXM', 'dtype': 'bf16', 'claimed_gpus': None, 'pf_day_flops': 8.64e+19, 'tol': 0.05})),
        needs='nothing: arithmetic',
        unit='GPUs',
        parent='compute.pf_day',
    ),
    Claim(
        id='scale.kaplan',
        claim='loss falls as a power law in N, D and compute: L(N)=(8.8e13/N)^0.076',
        source='Kaplan et al. 2020 (arXiv 2001.08361) eq. 1.1-1.3',
        expected='fitted alpha_N plausible in 0.05-0.10 (paper 0.076; constants depend on data)',
        tolerance='0.05 <= alpha_N <= 0.10',
        check=Check('range', lo=0.05, hi=0.1),
        needs='run `bench run --plugin scaling` (CPU is enough)',
        metric='alpha_n',
    ),
    Claim(
        id='scale.kaplan.fig1_constant',
        claim="Figure 1's compute law L=(C_min/2.3e8)^-0.050 uses the constant of eq. 1.3",
        source='Kaplan et al. 2020 (arXiv 2001.08361) Figure 1 vs eq. 1.3',
        expected='3.1e8 PF-days (eq. 1.3)',
        tolerance='the same constant',
        check=Check('formula', formula=partial(f_same_constant, {'printed': 230000000.0, 'reference': 310000000.0, 'exponent': 0.05, 'at_pf_days': 1.0, 'tol': 0.0})),
        needs='nothing: arithmetic',
        unit='PF-days',
        parent='scale.kaplan',
        known_error='Kaplan Figure 1 prints 2.3e8 for the compute constant; eq. 1.3 says 3.1e8',
    ),
    Claim(
        id='scale.chinchilla',
        claim='compute-optimal training uses ~20 tokens per parameter',
        source='Hoffmann et al. 2022 (Chinchilla, arXiv 2203.15556)',
        expected='~20 tokens/param; the small-scale isoFLOP optimum is reported',
        tolerance='report the measured optimum',
        check=Check('report'),
        needs='run `bench run --plugin scaling` (CPU is enough)',
        metric='tokens_per_param',
        unit='tokens/param',
    ),
    Claim(
        id='scale.chinchilla.table3',
        claim='Table 3 and the 70B example: 400M->8.0B, 1B->20.2B, 10B->205.1B, 67B->1.5T, 70B->1.4T tokens are ~20 tokens/param',
        source='Chinchilla (arXiv 2203.15556) Table 3 and sec. 1',
        expected='~20 tokens/param in every row',
        tolerance='each row within ±15% of 20 (Table 3 rounds tokens to 2 significant figures)',
        check=Check('formula', formula=partial(f_tokens_per_param, {'target': 20, 'tol': 0.15, 'rows': [{'label': '400M', 'params': 400000000.0, 'tokens': 8000000000.0}, {'label': '1B', 'params': 1000000000.0, 'tokens': 20200000000.0}, {'label': '10B', 'params': 10000000000.0, 'tokens': 205100000000.0}, {'label': '67B', 'params': 67000000000.0, 'tokens': 1500000000000.0}, {'label': '70B (Chinchilla)', 'params': 70000000000.0, 'tokens': 1400000000000.0}]})),
        needs='nothing: arithmetic',
        unit='tokens/param',
        parent='scale.chinchilla',
    ),
    Claim(
        id='scale.bloomberg',
        claim='BloombergGPT: 50.6B params, 569B tokens = 11.2 tokens/param, below the Chinchilla ratio',
        source='Wu et al. 2023 (BloombergGPT, arXiv 2303.17564)',
        expected='11.2 tokens/param, < 20',
        tolerance='as printed (±0.05) and below 20',
        check=Check('formula', formula=partial(f_tokens_per_param_below, {'params': 50600000000.0, 'tokens': 569000000000.0, 'printed': 11.2, 'tol': 0.05, 'below': 20})),
        needs='nothing: arithmetic',
        unit='tokens/param',
    ),
)
