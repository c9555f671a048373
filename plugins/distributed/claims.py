"""The claims of shared/claims.md that the distributed plugin judges (ids, statements, sources and checks),
and the arithmetic of those judged from published figures."""

from __future__ import annotations

import math
from functools import partial
from typing import Any

from bench.contract import Check, Claim, Figure, Judged


def _peak(device: str, dtype: str) -> float:
    from bench.flops import PEAK_TFLOPS

    return float(PEAK_TFLOPS[device][dtype])


def zero_bytes_per_param(stage: int, k: float, nd: float) -> float:
    """Model-state bytes per parameter per rank, mixed-precision Adam (ZeRO sec. 3.1):
    params 2, grads 2, optimizer K; stage 1 shards K, stage 2 also grads, stage 3 everything."""
    if stage == 0:
        return 2 + 2 + k
    if stage == 1:
        return 2 + 2 + k / nd
    if stage == 2:
        return 2 + (2 + k) / nd
    if stage == 3:
        return (2 + 2 + k) / nd
    raise ValueError(f"ZeRO stage {stage}?")



def f_memory_variant(d: dict[str, Any]) -> Judged:
    dev, gb = d["device"], d["claimed_gb"]
    variants = d["variants_gb"]
    ok = gb in variants.get(dev, [])
    others = [k for k, v in variants.items() if gb in v and k != dev]
    reason = f"{dev} was made with {'/'.join(str(x) for x in variants.get(dev, []))} GB ({d['variants_source']})"
    reason += f"; {gb} GB is {'one of them' if ok else 'not'}" + (f"; {gb} GB fits {', '.join(others)}" if others and not ok else "")
    return Judged("holds" if ok else "fails", reason, tuple([Figure(max(variants.get(dev, [0])), f"GB (largest {dev})", "published")]))



def f_percent_changes(d: dict[str, Any]) -> Judged:
    ok = True
    bits, m = [], []
    for p in d["pairs"]:
        pct = (float(p["to"]) / float(p["from"]) - 1) * 100
        good = abs(pct - float(p["printed_pct"])) <= float(d["tol_pct"])
        ok &= good
        bits.append(f"{p['label']}: {p['from']:g} -> {p['to']:g} = {pct:+.2f}% vs printed {p['printed_pct']:+g}%")
        m.append(Figure(round(pct, 2), "%", "published", p["label"]))
    peak = _peak(d["peak_device"], d["peak_dtype"])
    share = 100 * float(d["peak_value"]) / peak
    good = abs(share - float(d["printed_peak_pct"])) <= float(d["peak_tol_pct"])
    ok &= good
    bits.append(f"{d['peak_value']:g} / {peak:g} TFLOP/s ({d['peak_device']} {d['peak_dtype']} dense) = {share:.1f}% vs ~{d['printed_peak_pct']:g}%")
    m.append(Figure(round(share, 1), "% of peak", "published"))
    return Judged("holds" if ok else "fails", "; ".join(bits), tuple(m))



def f_zero_bytes(d: dict[str, Any]) -> Judged:
    gb = zero_bytes_per_param(int(d["stage"]), float(d["k"]), float(d["nd"])) * float(d["psi"]) / 1e9
    ok = abs(gb - float(d["printed_gb"])) <= float(d["tol_gb"])
    name = "DDP" if int(d["stage"]) == 0 else f"stage {d['stage']}"
    return Judged("holds" if ok else "fails", (
        f"{name}, Psi={d['psi']:g}, Nd={d['nd']}, K={d['k']}: {gb:.3f} GB vs printed {d['printed_gb']:g} GB "
        f"({'within' if ok else 'outside'} ±{d['tol_gb']:g})"
    ), tuple([Figure(round(gb, 4), "GB", "published")]))



def f_zero_limits(d: dict[str, Any]) -> Judged:
    k = float(d["k"])
    nds = [float(n) for n in d["nd"]]
    base = zero_bytes_per_param(0, k, 1)
    ratios = {s: [base / zero_bytes_per_param(s, k, n) for n in nds] for s in (1, 2, 3)}
    ok = True
    bits = []
    for s in (1, 2):
        lim = float(d["limits"][str(s)])
        r = ratios[s]
        rising = all(b >= a for a, b in zip(r, r[1:]))
        near = abs(r[-1] / lim - 1) <= float(d["tol"])
        ok &= rising and near and all(x <= lim for x in r)
        bits.append(f"stage {s}: " + ", ".join(f"{x:.3g}x" for x in r[:-1]) + f" ... {r[-1]:.5g}x -> {lim:g}x")
    exact3 = all(math.isclose(x, n, rel_tol=1e-12) for x, n in zip(ratios[3], nds))
    ok &= exact3
    bits.append(f"stage 3: = Nd {'exactly' if exact3 else 'NOT'}")
    reason = f"DDP/stage bytes, K={k:g}, Nd={', '.join(f'{n:g}' for n in nds)}: " + "; ".join(bits)
    m = [Figure(round(ratios[1][-1], 4), "x (stage 1, largest Nd)", "published"),
         Figure(round(ratios[2][-1], 4), "x (stage 2, largest Nd)", "published")]  # fmt: skip
    return Judged("holds" if ok else "fails", reason, tuple(m))




CLAIMS: tuple[Claim, ...] = (
    Claim(
        id='zero.ddp',
        claim='DDP keeps a full copy of model states on every rank: (2+2+K)·Psi bytes',
        source='Rajbhandari et al. 2019 (ZeRO, arXiv 1910.02054), sec. 3.1 and Figure 1',
        expected='(2+2+K)·Psi per rank, K=12 (fp32 training: 4+4+8)',
        tolerance='±1% of the formula for the config run',
        check=Check('rel', tol=0.01),
        needs='run `bench run --plugin fsdp` (stage 0 = DDP; gloo on CPU at world size 2, and the 7.5B / 64-rank simulation) or `bench run --plugin ddp`',
        metric='model_state_bytes',
        unit='bytes per rank',
        plugins=('fsdp', 'ddp'),
    ),
    Claim(
        id='zero.ddp.figure1',
        claim='Figure 1: DDP at 7.5B params, Nd=64 needs 120 GB per rank',
        source='ZeRO (arXiv 1910.02054) Figure 1',
        expected='120 GB',
        tolerance='as printed (±0.05 GB)',
        check=Check('formula', formula=partial(f_zero_bytes, {'stage': 0, 'psi': 7500000000.0, 'nd': 64, 'k': 12, 'printed_gb': 120, 'tol_gb': 0.05})),
        needs='nothing: arithmetic',
        unit='GB',
        parent='zero.ddp',
    ),
    Claim(
        id='zero.stage1',
        claim='stage 1 (shard optimizer states; ZeroRedundancyOptimizer): 2Psi + 2Psi + K·Psi/Nd bytes per rank',
        source='ZeRO (arXiv 1910.02054) sec. 3.1 and Figure 1',
        expected='2Psi + 2Psi + K·Psi/Nd per rank (fp32 training: 4+4+8/Nd)',
        tolerance='±5% (ZeroRedundancyOptimizer partitions whole tensors greedily)',
        check=Check('rel', tol=0.05),
        needs='run `bench run --plugin fsdp --stage 1` (gloo on CPU at world size 2; --simulate --params 7.5e9 --world-size 64 for Figure 1)',
        metric='model_state_bytes',
        unit='bytes per rank',
    ),
    Claim(
        id='zero.stage1.figure1',
        claim='Figure 1: stage 1 at 7.5B params, Nd=64 needs 31.4 GB per rank',
        source='ZeRO (arXiv 1910.02054) Figure 1',
        expected='31.4 GB',
        tolerance='as printed (±0.05 GB)',
        check=Check('formula', formula=partial(f_zero_bytes, {'stage': 1, 'psi': 7500000000.0, 'nd': 64, 'k': 12, 'printed_gb': 31.4, 'tol_gb': 0.05})),
        needs='nothing: arithmetic',
        unit='GB',
        parent='zero.stage1',
    ),
    Claim(
        id='zero.stage2',
        claim='stage 2 (also shard gradients; FSDP SHARD_GRAD_OP / FSDP2 reshard_after_forward=False): 2Psi + (2+K)·Psi/Nd',
        source='ZeRO (arXiv 1910.02054) sec. 3.1 and Figure 1',
        expected='2Psi + (2+K)·Psi/Nd per rank (torch keeps parameters sharded at rest: the plugin carries the formula for what it ran)',
        tolerance='±3% (FSDP pads shards)',
        check=Check('rel', tol=0.03),
        needs='run `bench run --plugin fsdp` (gloo on CPU at world size 2; --simulate --params 7.5e9 --world-size 64 for Figure 1)',
        metric='model_state_bytes',
        unit='bytes per rank',
    ),
    Claim(
        id='zero.stage2.figure1',
        claim='Figure 1: stage 2 at 7.5B params, Nd=64 needs 16.6 GB per rank',
        source='ZeRO (arXiv 1910.02054) Figure 1',
        expected='16.6 GB',
        tolerance='as printed (±0.05 GB)',
        check=Check('formula', formula=partial(f_zero_bytes, {'stage': 2, 'psi': 7500000000.0, 'nd': 64, 'k': 12, 'printed_gb': 16.6, 'tol_gb': 0.05})),
        needs='nothing: arithmetic',
        unit='GB',
        parent='zero.stage2',
    ),
    Claim(
        id='zero.stage3',
        claim='stage 3 (also shard parameters; FSDP FULL_SHARD / FSDP2 reshard_after_forward=True): (2+2+K)·Psi/Nd',
        source='ZeRO (arXiv 1910.02054) sec. 3.1 and Figure 1',
        expected='(2+2+K)·Psi/Nd per rank (fp32 training: 16·Psi/Nd)',
        tolerance='±3% (FSDP pads shards)',
        check=Check('rel', tol=0.03),
        needs='run `bench run --plugin fsdp` (gloo on CPU at world size 2; --simulate --params 7.5e9 --world-size 64 for Figure 1)',
        metric='model_state_bytes',
        unit='bytes per rank',
    ),
    Claim(
        id='zero.stage3.figure1',
        claim='Figure 1: stage 3 at 7.5B params, Nd=64 needs 1.9 GB per rank',
        source='ZeRO (arXiv 1910.02054) Figure 1',
        expected='1.9 GB',
        tolerance='as printed (±0.05 GB)',
        check=Check('formula', formula=partial(f_zero_bytes, {'stage': 3, 'psi': 7500000000.0, 'nd': 64, 'k': 12, 'printed_gb': 1.9, 'tol_gb': 0.05})),
        needs='nothing: arithmetic',
        unit='GB',
        parent='zero.stage3',
    ),
    Claim(
        id='zero.limits',
        claim='the memory reductions approach 4x, 8x and Nd x as Nd grows',
        source='ZeRO (arXiv 1910.02054) sec. 5.1-5.3 and Figure 1',
        expected='(4+K)/(4+K/Nd) -> 4; (4+K)/(2+(2+K)/Nd) -> 8; stage 3 = Nd exactly (K=12)',
        tolerance='within 0.1% of the limit at the largest Nd; stage 3 exact',
        check=Check('formula', formula=partial(f_zero_limits, {'k': 12, 'nd': [2, 8, 64, 1024, 1048576], 'limits': {'1': 4, '2': 8}, 'tol': 0.001})),
        needs='nothing: arithmetic',
        unit='x',
    ),
    Claim(
        id='zero.comm',
        claim='stages 1 and 2 move the same bytes as DDP (2Psi per step); stage 3 moves 3Psi (1.5x)',
        source='ZeRO (arXiv 1910.02054) sec. 7 (communication analysis)',
        expected='stage-3 / DDP collective bytes per step = 1.5',
        tolerance='±5%',
        check=Check('rel', value=1.5, tol=0.05),
        needs='run `bench run --plugin fsdp` (stages 0 and 3 of the same config, gloo on CPU)',
        metric='comm_ratio_stage3_vs_ddp',
        unit='x',
    ),
    Claim(
        id='fsdp.near_linear',
        claim='FSDP scales near-linearly in TFLOPS per GPU',
        source='Zhao et al. 2023 (PyTorch FSDP, arXiv 2304.11277), T5-11B figure',
        expected='TFLOPS/GPU drops only a few % from 8 to 512 GPUs',
        tolerance="the plugin's verdict over the world sizes it ran",
        check=Check('plugin'),
        needs="needs 8 to 512 GPUs (the paper's range): bench launches one node; on a multi-GPU node `bench run --plugin fsdp --world-size N` gives per-rank step time and tokens/s, not the cross-node trend",
        metric='tflops',
        unit='TFLOP/s per GPU',
    ),
    Claim(
        id='fsdp.near_linear.paper',
        claim="the paper's figures: batch 16: 155.1 -> 149.9 TFLOPS/GPU (-3.4%), batch 8: 149.8 -> 141.0 (-5.9%), ~48% of A100 bf16 peak",
        source='arXiv 2304.11277, T5-11B on A100 80GB (read off the figure, about ±0.3); peak: bench/flops.py PEAK_TFLOPS',
        expected='-3.4%, -5.9%, 48% of peak',
        tolerance='±0.3 percentage points (figure read-off); peak share ±1 point',
        check=Check('formula', formula=partial(f_percent_changes, {'pairs': [{'label': 'batch 16, 8 -> 512 GPUs', 'from': 155.1, 'to': 149.9, 'printed_pct': -3.4}, {'label': 'batch 8, 8 -> 512 GPUs', 'from': 149.8, 'to': 141.0, 'printed_pct': -5.9}], 'tol_pct': 0.3, 'peak_device': 'A100', 'peak_dtype': 'bf16', 'peak_value': 149.9, 'printed_peak_pct': 48, 'peak_tol_pct': 1.0})),
        needs='nothing: arithmetic',
        unit='%',
        parent='fsdp.near_linear',
    ),
    Claim(
        id='fsdp.near_linear.v100_80gb',
        claim='the FSDP scaling figure ran on 512 V100 GPUs with 80 GB each',
        source='course notes week 1 vs arXiv 2304.11277 (A100 80GB) and NVIDIA V100/A100 datasheets',
        expected='a V100 variant with 80 GB',
        tolerance='exact',
        check=Check('formula', formula=partial(f_memory_variant, {'device': 'V100', 'claimed_gb': 80, 'variants_gb': {'V100': [16, 32], 'A100': [40, 80], 'H100': [80, 94]}, 'variants_source': 'NVIDIA V100 (16/32 GB HBM2), A100 (40/80 GB), H100 (80 GB SXM/PCIe, 94 GB NVL) datasheets'})),
        needs='nothing: a datasheet fact',
        unit='GB',
        parent='fsdp.near_linear',
        known_error='the notes say "512 V100 GPUs with 80 GB each" for the FSDP figure',
    ),
    Claim(
        id='fsdp.ddp_oom',
        claim='small models run alike under DDP and FSDP; DDP runs out of memory first as models grow',
        source='course notes week 1; FSDP (arXiv 2304.11277)',
        expected='largest model that fits: FSDP > DDP',
        tolerance="the plugin's verdict",
        check=Check('plugin'),
        needs='run `bench run --plugin fsdp` (its grid simulates DDP and stage 3 at 1.3B and 6.7B params on 8 ranks; CPU is enough)',
        metric='largest_fit_stage3_params',
        unit='params',
    ),
)
