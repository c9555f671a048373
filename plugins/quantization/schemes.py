"""Building the quantized model of a scheme: plain-torch int8 layers, bitsandbytes layers, torchao
configs. Everything is built on the device the case runs on (the GPT itself by the caller, under
`torch.device(dev)`); bitsandbytes' int8 layer quantizes on its move from the CPU, as its API asks.
"""

from __future__ import annotations

import copy
import importlib.util
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from plugins.common.numerics import torch_dtype
from plugins.quantization.params import BNB, LIBRARY, LINEARS, OWN, REFERENCE, QuantParams


class SchemeUnavailable(Exception):
    """The scheme cannot run here (library missing, no kernel for this device/dtype)."""


# --- plain-torch int8 ------------------------------------------------------------------------------
INT8_MAX = 127  # symmetric: codes in [-127, 127]


def int8_quantize(t: torch.Tensor, how: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(int8 codes, fp32 scale or None); t ~ codes * scale.
    naive   t.to(torch.int8): no scale, truncation toward zero (|t| < 1 -> 0)
    tensor  absmax over the whole tensor: scale = max|t| / 127 (one fp32), round to nearest
    row     absmax per row (last dim): scale [rows, 1] fp32, round to nearest (LLM.int8() vector-wise)"""
    if how == "naive":
        return t.detach().to(torch.int8), None
    x = t.detach().float()
    amax = x.abs().amax().reshape(1, 1) if how == "tensor" else x.abs().amax(dim=-1, keepdim=True)  # [1, 1] | [rows, 1]
    scale = (amax / INT8_MAX).clamp_min(torch.finfo(torch.float32).tiny)
    return (x / scale).round().clamp(-INT8_MAX, INT8_MAX).to(torch.int8), scale


def int8_dequantize(codes: torch.Tensor, scale: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    return (codes.float() if scale is None else codes.float() * scale).to(dtype)


class Int8Linear(torch.nn.Module):
    """A Linear with int8 weights (int8_quantize's `how`); the forward dequantizes, then matmuls in
    the input's dtype (storage and error of the scheme; its time is not an int8 kernel's)."""

    def __init__(self, lin: torch.nn.Linear, how: str, dtype: torch.dtype):
        super().__init__()
        self.in_features, self.out_features, self.how = lin.in_features, lin.out_features, how
        codes, scale = int8_quantize(lin.weight, how)
        self.register_buffer("qweight", codes)  # [out, in] int8
        if scale is not None:
            self.register_buffer("scale", scale)  # [1, 1] or [out, 1] fp32
        self.scale: torch.Tensor | None = scale
        self.bias = None if lin.bias is None else torch.nn.Parameter(lin.bias.detach().to(dtype), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, int8_dequantize(self.qweight, self.scale, x.dtype), self.bias)


OWN_HOW = {"int8_naive": "naive", "int8_tensor": "tensor", "int8_rowwise": "row"}
OWN_TEXT = {
    "naive": "weight.to(torch.int8): no scale, truncation toward zero",
    "tensor": "absmax per tensor: round(127 w / max|W|), one fp32 scale",
    "row": "absmax per output row: round(127 w / max|w_row|), fp32 scale per row",
}


# --- models ------------------------------------------------------------------------------------------
def block_linears(model: Any) -> list[Any]:
    return [getattr(getattr(b, part), name) for b in model.blocks for part, name in LINEARS]


def _copy_without_block_linears(ref: Any, dtype: torch.dtype) -> Any:
    """A copy of ref in dtype whose block Linears are placeholders (nn.Identity), for schemes that
    replace every one of them: their fp32 weights are not copied and cast only to be thrown away."""
    memo: dict[int, Any] = {id(lin): torch.nn.Identity() for lin in block_linears(ref)}
    return copy.deepcopy(ref, memo).to(dtype)


def _swap(model: Any, make: Callable[[Any], Any]) -> None:
    for b in model.blocks:
        for part, name in LINEARS:
            parent = getattr(b, part)
            setattr(parent, name, make(getattr(parent, name)))


def bnb_layer(scheme: str, lin: Any, dtype: torch.dtype, device: Any, threshold: float) -> Any:
    """The bitsandbytes layer for scheme, quantized from lin's fp32 weights on `device`. Built on the
    meta device (no random init of weights that are replaced at once), then given lin's weights as
    bitsandbytes' own __init__ wraps them: Linear8bitLt's staged on the CPU (bitsandbytes quantizes
    int8 on the move from the CPU), Linear4bit's on the device (quantized on the move to it)."""
    import bitsandbytes.nn as bnn

    bias = lin.bias is not None
    if scheme == "llm_int8":
        new = bnn.Linear8bitLt(
            lin.in_features, lin.out_features, bias=bias, has_fp16_weights=False, threshold=threshold, device="meta"
        )
        new.weight = bnn.Int8Params(
            lin.weight.detach().to("cpu", copy=True), has_fp16_weights=False, requires_grad=False
        )
    else:
        new = bnn.Linear4bit(
            lin.in_features,
            lin.out_features,
            bias=bias,
            compute_dtype=dtype,
            compress_statistics=scheme.endswith("_dq"),
            quant_type=scheme[:3],
            device="meta",
        )
        new.weight = bnn.Params4bit(
            lin.weight.detach().clone(),
            requires_grad=False,
            compress_statistics=scheme.endswith("_dq"),
            quant_type=scheme[:3],
            quant_storage=new.quant_storage,
            module=new,
        )
    if bias:
        new.bias = torch.nn.Parameter(lin.bias.detach().to(dtype=dtype, copy=True), requires_grad=False)
    return new.to(device)  # quantizes


def _torchao(scheme: str, model: Any, p: QuantParams, device: Any) -> str:
    """Apply the torchao config in place; return which config ran. Candidates are tried in turn; all
    failing -> SchemeUnavailable with each one's message."""
    from torchao.quantization import quantize_

    def only_blocks(m: Any, fqn: str) -> bool:
        return isinstance(m, torch.nn.Linear) and fqn.startswith("blocks.")

    cands: list[tuple[str, Callable[[], Any]]] = []
    if scheme == "ao_int8_dyn":
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig

        cands.append(("Int8DynamicActivationInt8WeightConfig()", Int8DynamicActivationInt8WeightConfig))
    else:
        from torchao.quantization import Int4WeightOnlyConfig

        g = p.group_size
        if device.type == "cpu":

            def proto() -> Any:
                from torchao.prototype.quantization.int4.inference_workflow import PrototypeInt4WeightOnlyConfig

                return PrototypeInt4WeightOnlyConfig(group_size=g)

            cands.append((f"PrototypeInt4WeightOnlyConfig(group_size={g}) (CPU opaque packing)", proto))
        else:
            cands.append(
                (
                    f"Int4WeightOnlyConfig(group_size={g}, tile_packed_to_4d)",
                    lambda: Int4WeightOnlyConfig(group_size=g, int4_packing_format="tile_packed_to_4d"),
                )
            )
        cands.append((f"Int4WeightOnlyConfig(group_size={g})", lambda: Int4WeightOnlyConfig(group_size=g)))
    errors = []
    for what, make in cands:
        trial = copy.deepcopy(model)
        try:
            quantize_(trial, make(), filter_fn=only_blocks)
            with torch.no_grad():
                trial(torch.zeros(1, 8, dtype=torch.long, device=device))
        except Exception as e:  # the library's own reason goes into the row
            errors.append(f"{what}: {type(e).__name__}: {str(e)[:300]}")
            continue
        model.blocks = trial.blocks
        return what
    raise SchemeUnavailable("; ".join(errors))


def build(scheme: str, ref: Any, p: QuantParams, device: Any) -> tuple[Any, str]:
    """A copy of the fp32 reference model with the scheme applied to its block Linears, in --dtype
    elsewhere; returns (model, how)."""
    dt = torch_dtype(p.dtype)
    if scheme in REFERENCE:
        return copy.deepcopy(ref).to(torch_dtype(scheme)), f"nn.Linear in {scheme}"
    if scheme in OWN:
        model = _copy_without_block_linears(ref, dt)
        how = OWN_HOW[scheme]
        ref_lins = iter(block_linears(ref))
        _swap(model, lambda _old: Int8Linear(next(ref_lins), how, dt))
        return model, OWN_TEXT[how]
    lib = LIBRARY[scheme]
    if importlib.util.find_spec(lib) is None:
        raise SchemeUnavailable(f"{lib} is not installed (pip install {lib}, or `pip install -e .[quant]`)")
    if scheme in BNB:
        model = _copy_without_block_linears(ref, dt)
        ref_lins = iter(block_linears(ref))
        try:
            _swap(model, lambda _old: bnb_layer(scheme, next(ref_lins), dt, device, p.threshold))
            with torch.no_grad():
                model(torch.zeros(1, 8, dtype=torch.long, device=device))
        except Exception as e:  # no kernel for this device/dtype: the library says why
            raise SchemeUnavailable(
                f"bitsandbytes {scheme} cannot run on {device.type}: {type(e).__name__}: {e}"[:1200]
            ) from e
        import bitsandbytes

        if scheme == "llm_int8":
            how = f"bnb.nn.Linear8bitLt(threshold={p.threshold:g}, has_fp16_weights=False)"
        else:
            how = f"bnb.nn.Linear4bit(quant_type={scheme[:3]!r}, compress_statistics={scheme.endswith('_dq')}, blocksize 64)"
        return model, f"{how}, bitsandbytes {bitsandbytes.__version__}"
    model = copy.deepcopy(ref).to(dt)  # torchao converts the Linears in place
    try:
        how = _torchao(scheme, model, p, device)
    except ImportError as e:
        raise SchemeUnavailable(f"torchao: {type(e).__name__}: {e}") from e
    import torchao

    return model, f"torchao {torchao.__version__} {how}"
