"""The float64 reference every kernel is checked against before it is timed.

The reference covers up to REF_ROWS evenly spaced query rows against all keys (the full n x n
product in float64 would cost more than the case). In fwdbwd mode the output gradient is zero
outside those rows, so the kernel's dQ, dK, dV can be compared exactly with the reference's.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from plugins.attention.kernels import Kernel
from plugins.attention.params import REF_ROWS


def reference_rows(n: int, m: int = REF_ROWS) -> list[int]:
    """Up to m evenly spaced query rows, first and last included."""
    if n <= m:
        return list(range(n))
    return sorted({round(i * (n - 1) / (m - 1)) for i in range(m)})


def reference(q: Any, k: Any, v: Any, rows: list[int], causal: bool, grad_rows: Any = None) -> dict[str, Any]:
    """float64 attention for the query rows `rows` against all keys: out [B, H, m, d]; with grad_rows
    ([B, H, m, d], the output gradient on those rows, zero elsewhere) also dq [B, H, m, d], dk, dv [B, H, n, d]."""
    idx = torch.tensor(rows, device=q.device)
    qs = q.detach()[..., idx, :].double().requires_grad_(grad_rows is not None)
    kd = k.detach().double().requires_grad_(grad_rows is not None)
    vd = v.detach().double().requires_grad_(grad_rows is not None)
    with torch.enable_grad():
        s = (qs @ kd.transpose(-2, -1)) / math.sqrt(q.shape[-1])  # [B, H, m, n]
        if causal:
            keys = torch.arange(k.shape[-2], device=q.device)
            s = s.masked_fill(keys[None, :] > idx[:, None], float("-inf"))
        out = torch.softmax(s, dim=-1) @ vd
        res = {"out": out.detach()}
        if grad_rows is not None:
            out.backward(grad_rows.double())
            res.update(dq=qs.grad, dk=kd.grad, dv=vd.grad)
    return res


def _rel(a: Any, ref: Any) -> tuple[float, float]:
    """(max |a - ref|, that / max |ref|)."""
    err = float((a.double() - ref).abs().max())
    scale = float(ref.abs().max())
    return err, err / scale if scale > 0 else err


def check(kern: Kernel, q: Any, k: Any, v: Any, go: Any, causal: bool, mode: str) -> dict[str, float]:
    """Errors of the kernel against the float64 reference: max_abs_err, rel_error (output) and, in
    fwdbwd mode, grad_rel_error (worst of dQ, dK, dV)."""
    n = q.shape[-2]
    rows = reference_rows(n)
    idx = torch.tensor(rows, device=q.device)
    errs: dict[str, float] = {}
    if mode == "fwdbwd":
        g = torch.zeros_like(go)
        g[..., idx, :] = go[..., idx, :]
        ref = reference(q, k, v, rows, causal, grad_rows=go[..., idx, :])
        for t in (q, k, v):
            t.grad = None
        with kern.scope():
            out = kern.fn(q, k, v)
            out.backward(g)
        dq_ref = torch.zeros_like(q, dtype=torch.float64)
        dq_ref[..., idx, :] = ref["dq"]
        got = [t.grad if t.grad is not None else torch.zeros_like(t) for t in (q, k, v)]  # None: no gradient flowed
        errs["grad_rel_error"] = max(_rel(got[0], dq_ref)[1], _rel(got[1], ref["dk"])[1], _rel(got[2], ref["dv"])[1])
        for t in (q, k, v):
            t.grad = None
    else:
        ref = reference(q, k, v, rows, causal)
        with torch.no_grad(), kern.scope():
            out = kern.fn(q, k, v)
    abs_err, rel = _rel(out.detach()[..., idx, :], ref["out"])
    errs.update(max_abs_err=abs_err, rel_error=rel)
    return errs
