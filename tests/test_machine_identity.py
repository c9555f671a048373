"""Machine identity (issue 24): the CPU part behind a masked model string, the kernel set, numerics_id,
and result files recorded before them (in process, cheap)."""

from __future__ import annotations

import copy

from bench import fingerprint as F
from bench import kernels
from bench.regress import GateConfig, evaluate
from bench.rows import Row

# The two 2-core VMs of issue 24: one model string ("Intel(R) Xeon(R) Processor"), two parts behind it.
CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: {model}
model name\t: Intel(R) Xeon(R) Processor
stepping\t: {stepping}
flags\t\t: fpu sse4_1 sse4_2 avx avx2 fma f16c avx512f avx512bw avx512vl avx512dq {extra}

processor\t: 1
vendor_id\t: GenuineIntel
"""
OLD = CPUINFO.format(model=85, stepping=7, extra="avx512_vnni")  # no bf16/fp16
NEW = CPUINFO.format(model=207, stepping=2, extra="avx512_vnni avx512_bf16 avx512_fp16 avx_vnni amx_tile amx_bf16")


def fp(cpuinfo: str, kernel_set: str) -> dict:
    env = dict(kernels.PORTABLE) if kernel_set == "portable" else {}
    out = {
        "schema": F.SCHEMA,
        "device_type": "cpu",
        "devices": [],
        "cuda": None,
        "cpu_model": "Intel(R) Xeon(R) Processor",
        "cpu": F.cpu_info(cpuinfo),
        "libs": {"torch": "2.13.0+cpu", "blas": "mkl", "mkl": "2024.2", "onednn": "3.12.0"},
        "kernels": {"set": kernel_set, "env": env, "aten_capability": "DEFAULT" if env else "AVX512"},
        "cpu_count": 2,
        "cpus_usable": 2,
    }
    out["machine_id"], out["numerics_id"] = F.machine_id(out), F.numerics_id(out)
    return out


def test_cpu_info_reads_the_part_and_the_dispatch_flags():
    c = F.cpu_info(NEW)
    assert (c["vendor"], c["family"], c["model"], c["stepping"]) == ("GenuineIntel", "6", "207", "2")
    assert {"avx512_bf16", "avx512_fp16", "amx_bf16", "avx_vnni"} <= set(c["flags"]) and "fpu" not in c["flags"]


def test_one_model_string_two_parts_two_machines():
    old, new = fp(OLD, "native"), fp(NEW, "native")
    assert old["cpu_model"] == new["cpu_model"]
    assert old["machine_id"] != new["machine_id"]  # the hypervisor's masked string no longer hides the part
    assert old["numerics_id"] != new["numerics_id"]  # native kernels: the dispatch decides the numerics
    # the portable kernel set: other machines (speed), one numerics class
    po, pn = fp(OLD, "portable"), fp(NEW, "portable")
    assert po["machine_id"] != pn["machine_id"] and po["numerics_id"] == pn["numerics_id"]
    assert po["machine_id"] != old["machine_id"]  # the pinned path is slower: another speed class
    # the library versions decide the numerics too
    other = copy.deepcopy(pn)
    other["libs"]["onednn"] = "3.13.0"
    assert F.numerics_id(other) != pn["numerics_id"]


def test_a_schema_1_fingerprint_keeps_its_machine_id_and_has_no_numerics_id():
    old = {"devices": [], "cpu_model": "Intel(R) Xeon(R) Processor", "cpu_count": 2, "cuda": None, "driver": None}
    old["packages"] = {"torch": "2.13.0+cpu"}
    assert F.machine_id(old) == "17d60b8c62a0"  # the committed baseline's id before issue 24, recomputed
    assert F.numerics_id(old) is None


def _row(fingerprint: dict, loss: float, nbytes: int) -> Row:
    return Row.from_json(
        {
            "schema": "bench.row/1",
            "run_id": "r",
            "plugin": "toy",
            "params": {"n": 1},
            "status": "ok",
            "metrics": {
                "final_loss": {"value": loss, "unit": "nats/token", "deterministic": True, "portable": False},
                "peak_bytes": {"value": nbytes, "unit": "bytes", "deterministic": True},
            },
            "fingerprint": fingerprint,
        }
    )


def test_an_old_baseline_gates_only_portable_metrics_and_says_why():
    old = _row({"machine_id": "17d60b8c62a0", "label": "cpu-intel-xeon"}, 2.244, 4096)
    cur = fp(NEW, "portable")
    rep = evaluate([old], [_row(cur, 2.226, 4096)], GateConfig(only="deterministic"))
    assert rep.exit_code == 0
    loss = next(i for i in rep.items if i.metric == "final_loss")
    assert loss.verdict == "not gated" and "identity was not recorded" in loss.against
    assert "predates numerics identity" in loss.note
    rep = evaluate([old], [_row(cur, 2.226, 4097)], GateConfig(only="deterministic"))
    assert rep.exit_code == 1  # the byte count still gates


def test_pinned_rows_of_two_parts_gate_their_losses_against_each_other():
    base, cur = fp(OLD, "portable"), fp(NEW, "portable")
    rep = evaluate([_row(base, 2.2318, 4096)], [_row(cur, 2.2318, 4096)], GateConfig(only="deterministic"))
    assert rep.exit_code == 0
    loss = next(i for i in rep.items if i.metric == "final_loss")
    assert loss.verdict == "same" and "same numerics" in loss.against
    rep = evaluate([_row(base, 2.2318, 4096)], [_row(cur, 2.2319, 4096)], GateConfig(only="deterministic"))
    assert rep.exit_code == 1
    # native kernels on the two parts: not compared, and said so
    rep = evaluate(
        [_row(fp(OLD, "native"), 2.2255, 4096)],
        [_row(fp(NEW, "native"), 2.3027, 4096)],
        GateConfig(only="deterministic"),
    )
    loss = next(i for i in rep.items if i.metric == "final_loss")
    assert rep.exit_code == 0 and loss.against == "NOT COMPARED: no baseline for this machine"


def test_kernel_set_names_a_changed_pin_custom(monkeypatch):
    for k in kernels.KERNEL_VARS:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv(kernels.ENV, "portable")
    for k, v in kernels.PORTABLE.items():
        monkeypatch.setenv(k, v)
    assert kernels.kernel_set()["set"] == "portable"
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert kernels.kernel_set()["set"] == "custom"
    assert "ONEDNN_MAX_CPU_ISA=AVX2" in kernels.describe(kernels.kernel_set())


def test_fixed_sizes_probe_nothing_and_pick_the_smallest_size_everywhere():
    """`bench run --fixed-sizes` (the gate): a budget nothing fits neither skips nor times anything."""
    import torch

    from bench.context import Context

    built: list[int] = []

    def build(n: int):
        built.append(n)
        return lambda: None

    ctx = Context(device=torch.device("cpu"), fixed_sizes=True)
    n, note = ctx.afford(build, [256, 64, 1024], budget_s=1e-12, what="fp8 matmul")
    assert n == 64 and built == [64] and "fixed size 64" in note
