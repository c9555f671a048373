"""The activation memory model (plugins/common/activations.py): its terms against the paper's
(Korthikanti et al. 2022 sec. 4.1) and against MemTracker on tiny GPTs, including the corners where
torch keeps more (the math kernel's view of V at b = 1 or a = 1, the CPU's fp32 upcast of 16-bit
attention); the documented refusals; the paper's printed figure."""

from __future__ import annotations

import pytest
import torch

from bench.context import Context
from plugins.common.activations import (
    activation_bytes,
    default_attention,
    element_bytes,
    korthikanti_bytes,
    model_activation_bytes,
)
from plugins.common.gpt import GPTConfig
from plugins.precision.activations import Act, _row

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models (conftest.py)


def cfg(h: int = 64, a: int = 4, L: int = 1) -> GPTConfig:
    return GPTConfig(n_layer=L, n_head=a, d_model=h, block_size=256)


def test_flash_16bit_is_the_papers_34sbh_without_dropout_masks():
    s, b, h, a = 2048, 1, 2048, 16
    t = activation_bytes(cfg(h, a), b, s, "bf16", "flash", device="cuda")
    small = t["ln1_stats"] + t["ln2_stats"] + t["logsumexp"]  # not in the paper
    assert t["total"] - small == 32 * s * b * h  # 34sbh less the two dropout masks (sbh each at 1 byte)
    assert korthikanti_bytes(cfg(h, a), b, s, "bf16", fused=True) == 34 * s * b * h
    assert korthikanti_bytes(cfg(h, a), b, s, "bf16") == s * b * h * (34 + 5 * a * s // h)
    assert korthikanti_bytes(cfg(h, a), b, s, "fp32") == 2 * korthikanti_bytes(cfg(h, a), b, s, "bf16")


def test_math_keeps_the_scores_and_dropout_terms_are_gone():
    s, b, h, a = 128, 2, 64, 4
    t = activation_bytes(cfg(h, a), b, s, "fp32", "math", device="cuda")
    assert t["softmax"] == a * s * s * b * 4  # the paper's as^2b at e; its dropout mask and output absent
    assert t["v"] == s * b * h * 4  # a copy (b, a > 1)
    assert activation_bytes(cfg(h, a), 1, s, "fp32", "math")["v"] == 3 * s * h * 4  # b = 1: a view of qkv
    cpu16 = activation_bytes(cfg(h, a), b, s, "bf16", "math", device="cpu")
    assert cpu16["softmax"] == a * s * s * b * 4 and cpu16["v"] == s * b * h * 4  # 16-bit attention runs in fp32


def test_refusals_and_helpers():
    with pytest.raises(ValueError, match="dropout"):
        activation_bytes(GPTConfig(dropout=0.1), 1, 8)
    with pytest.raises(ValueError, match="attention"):
        activation_bytes(cfg(), 1, 8, attention="ring")
    with pytest.raises(ValueError, match="mlp='swiglu'"):
        activation_bytes(GPTConfig(mlp="swiglu"), 1, 8)
    assert activation_bytes(GPTConfig(n_kv_head=4, n_head=4), 1, 8) == activation_bytes(GPTConfig(n_head=4), 1, 8)
    wide = activation_bytes(GPTConfig(ffn_hidden=2048, d_model=256), 1, 8)  # MLP width 8h: its two terms double
    assert wide["gelu_input"] == 2 * activation_bytes(GPTConfig(d_model=256), 1, 8)["gelu_input"]
    with pytest.raises(ValueError, match="dtype"):
        element_bytes("int4")
    assert element_bytes(torch.bfloat16) == 2 and element_bytes("fp32") == 4
    assert default_attention("cpu", "fp32") == "flash" and default_attention("cuda", "fp32") == "efficient"
    m = model_activation_bytes(cfg(64, 4, L=3), 2, 32)
    assert m["layers"] == 3 * activation_bytes(cfg(64, 4), 2, 32)["total"]
    assert m["total"] == m["kept_for_backward"] + m["logits"]


@pytest.mark.parametrize(
    "h, a, s, b, kernel, dtype",
    [
        (64, 4, 48, 2, "flash", "fp32"),
        (64, 4, 48, 2, "math", "fp32"),
        (64, 4, 48, 1, "math", "fp32"),  # b = 1: V is a view that keeps the qkv output
        (64, 1, 32, 3, "math", "fp32"),  # a = 1: the same
        (96, 3, 40, 2, "math", "bf16"),  # CPU: attention upcast to fp32
        (96, 3, 40, 2, "flash", "bf16"),
    ],
)
def test_formula_equals_memtracker(h, a, s, b, kernel, dtype):
    r = _row(Act(h, a, s, b, kernel, dtype), Context(device=torch.device("cpu")))
    assert r.metrics["measured_bytes"].value == r.metrics["formula_bytes"].value
    assert r.metrics["ratio"].value == 1.0


def test_a_missing_term_breaks_the_agreement(monkeypatch):
    """The comparison can fail: a formula without the softmax term is off by as^2b."""
    import plugins.precision.activations as A

    real = A.activation_bytes

    def short(*args, **kw):
        t = real(*args, **kw)
        t["total"] -= t.get("softmax", 0)
        return t

    monkeypatch.setattr(A, "activation_bytes", short)
    r = _row(Act(64, 4, 64, 2, "math", "fp32"), Context(device=torch.device("cpu")))
    assert r.metrics["ratio"].value > 1.05


def test_a_kernel_missing_here_is_a_skipped_row():
    from plugins.precision.params import guarded

    r = guarded({}, lambda: _row(Act(64, 4, 16, 1, "efficient", "fp32"), Context(device=torch.device("cpu"))))
    assert r.status == "skipped" and "efficient" in r.message  # CUDA-only kernel: torch's reason, not an error


@pytest.mark.parametrize("b,a,whole_qkv", [(1, 4, True), (2, 1, True), (2, 4, False), (2, 2, False)])
def test_math_v_is_a_view_of_qkv_exactly_when_b_or_a_is_1(b, a, whole_qkv):
    """activations.py's v term (3sbh when b or a is 1, else a copy): torch's matmul folds v's batch dims
    with reshape, which is a view only when a merged dim has size 1; bmm saves it. Checked on torch
    itself: the tensors the math kernel saves that share the qkv output's storage."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    s, h = 16, 32
    x = torch.randn(b, s, 3 * h, requires_grad=True)
    q, k, v = (t.view(b, s, a, h // a).transpose(1, 2) for t in x.split(h, dim=2))
    shared: list[int] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.untyped_storage().data_ptr() == x.untyped_storage().data_ptr():
            shared.append(t.untyped_storage().nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), sdpa_kernel(SDPBackend.MATH):
        torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert (shared == [3 * s * b * h * 4]) == whole_qkv, shared
    assert bool(shared) == whole_qkv
