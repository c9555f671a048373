"""The cases of each profile.

quick (CPU, CI; about 30 s on 2 cores): the sequence sweeps the claims fit (naive: attn.quadratic,
    SDPA flash: attn.flash_linear), a head-count sweep (attn.heads), one point of the math backend,
    bf16 / fwd+bwd / causal variants at n=1024, the CUDA-only backends (skipped rows with torch's
    reason) and one FlexAttention forward (its compile within budget, else skipped).
full: every kernel over n = 256..4096 in fp32 and bf16, forward and fwd+bwd, more head counts.
gpu (a share of about 90 s of one H200 run), most valuable evidence first: fused-kernel TFLOP/s per
    backend at n=16384 (flash, efficient, cuDNN; attn.fa_speed), then the sweeps for the memory
    exponents on CUDA, then the variants, FlexAttention last (it compiles).
"""

from __future__ import annotations

from typing import Any

from plugins.attention.params import MODES


def case(
    impl: str,
    seq: int = 1024,
    heads: int = 12,
    head_dim: int = 64,
    batch: int = 1,
    causal: bool = False,
    dtype: str = "fp32",
    mode: str = "fwd",
) -> dict[str, Any]:
    return dict(impl=impl, seq=seq, heads=heads, head_dim=head_dim, batch=batch, causal=causal, dtype=dtype, mode=mode)


def quick() -> list[dict[str, Any]]:
    seqs = (256, 512, 1024, 2048)
    cases = [case(impl, seq=n) for impl in ("naive", "sdpa_flash") for n in seqs]
    cases += [case("sdpa_flash", heads=h) for h in (16, 32)]  # attn.heads: 12 (in the sweep), 16, 32
    cases += [case("sdpa_math")]
    for impl in ("naive", "sdpa_flash"):
        cases += [case(impl, dtype="bf16"), case(impl, mode="fwdbwd")]
    cases += [case("sdpa_flash", causal=True)]
    cases += [case("sdpa_efficient"), case("sdpa_cudnn")]  # CUDA only: skipped rows on CPU
    cases += [case("flex")]  # compiles: within its budget or skipped
    return cases


def full() -> list[dict[str, Any]]:
    seqs = (256, 512, 1024, 2048, 4096)
    cases: list[dict[str, Any]] = []
    for impl in ("naive", "sdpa_math", "sdpa_flash"):
        for dtype in ("fp32", "bf16"):
            for mode in MODES:
                cases += [case(impl, seq=n, dtype=dtype, mode=mode) for n in seqs]
    for impl in ("naive", "sdpa_flash"):
        cases += [case(impl, heads=h) for h in (16, 32, 64, 96)]
        cases += [case(impl, head_dim=128), case(impl, dtype="fp16", seq=512)]
    cases += [case("sdpa_flash", seq=n, causal=True) for n in seqs]
    cases += [case("flex", seq=n) for n in (256, 512, 1024, 2048)]
    cases += [case("flex", causal=True), case("flex", mode="fwdbwd")]
    cases += [case(i, mode=m) for i in ("sdpa_efficient", "sdpa_cudnn") for m in MODES]
    return cases


def gpu() -> list[dict[str, Any]]:
    big = dict(heads=16, head_dim=128, dtype="bf16")
    cases = []
    for impl in ("sdpa_flash", "sdpa_efficient", "sdpa_cudnn"):  # attn.fa_speed: TFLOP/s per fused backend
        cases += [case(impl, seq=16384, mode=m, **big) for m in MODES]
    cases += [case(i, seq=16384, causal=True, **big) for i in ("sdpa_flash", "sdpa_cudnn")]
    cases += [case("sdpa_flash", seq=n, **big) for n in (1024, 2048, 4096, 8192)]  # + 16384 above: attn.flash_linear
    cases += [case("naive", seq=n, **big) for n in (1024, 2048, 4096, 8192)]  # attn.quadratic on CUDA
    cases += [case("sdpa_math", seq=4096, **big)]
    cases += [case("sdpa_flash", seq=16384, heads=16, head_dim=128, dtype="fp16")]
    cases += [case("sdpa_flash", seq=4096, heads=h, head_dim=128, dtype="bf16") for h in (32, 64)]  # + 16: attn.heads
    cases += [case("sdpa_flash", seq=4096, heads=16, head_dim=128, dtype="fp32")]  # flash needs 16-bit: skipped
    cases += [case("flex", seq=4096, **big)]  # compiles (within its budget): last
    return cases


GRIDS = {"quick": quick, "full": full, "gpu": gpu}
