"""Number formats, exact casts and byte accounting shared by the `precision` and `quantization`
plugins. Pure torch: bitsandbytes/torchao objects are recognised by their attributes, never imported.

Bit layouts are read from torch.finfo, not typed in: fraction bits = -log2(eps), exponent bits =
bits - 1 (sign) - fraction bits. TF32 is not a storage type: it is fp32 with 10 fraction bits
kept inside NVIDIA tensor cores (NVIDIA A100 Tensor Core GPU Architecture whitepaper, 2020, "TF32").
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch

# Float formats a case can name (`--dtype`); int8 is added as a cast row (naive cast, no scale).
FORMATS = ("fp32", "tf32", "fp16", "bf16", "fp8_e4m3", "fp8_e5m2")
TF32_FRACTION_BITS = 10  # NVIDIA A100 whitepaper: TF32 = 1 sign, 8 exponent, 10 fraction bits
PI6 = 3.141592  # the course notes' "pi to six places" (not math.pi)
# plugins/common/gpt.py PRESETS' names, here so that the plugin modules import without torch (tested equal)
PRESET_NAMES = ("tiny", "small", "medium", "large", "1b")


def torch_dtype(name: str) -> torch.dtype:
    """Storage dtype of a format name (tf32 is stored as fp32)."""
    import torch

    return {
        "fp32": torch.float32,
        "tf32": torch.float32,
        "fp16": torch.float16,
        "bf16": torch.bfloat16,
        "fp8_e4m3": torch.float8_e4m3fn,
        "fp8_e5m2": torch.float8_e5m2,
        "int8": torch.int8,
    }[name]


@dataclass(frozen=True)
class Layout:
    bits: int  # storage bits per value
    sign: int
    exponent: int
    fraction: int

    def text(self) -> str:
        return f"{self.sign}/{self.exponent}/{self.fraction}" if self.exponent else f"{self.bits}-bit two's complement"


def layout(name: str) -> Layout:
    """Sign/exponent/fraction bits, derived from torch.finfo (int8: two's complement)."""
    import torch

    if name == "int8":
        return Layout(torch.iinfo(torch.int8).bits, 1, 0, 7)
    fi = torch.finfo(torch_dtype(name))
    frac = TF32_FRACTION_BITS if name == "tf32" else round(-math.log2(fi.eps))
    exp = fi.bits - 1 - round(-math.log2(fi.eps))  # the exponent field is the container's
    bits = 1 + exp + frac if name == "tf32" else fi.bits
    return Layout(bits, 1, exp, frac)


def exact_decimal(x: float) -> str:
    """The exact decimal value of a binary float (every binary fraction has a finite decimal one):
    3.1415920257568359375 for fp32(3.141592); integers without a point ("3")."""
    s = format(Decimal(x), "f")  # Decimal(float) is exact; "f" keeps every digit (normalize() would round to 28)
    return s.rstrip("0").rstrip(".") if "." in s else s


def round_to_tf32(x: torch.Tensor) -> torch.Tensor:
    """fp32 -> fp32 with the low 13 fraction bits cleared, rounding to nearest even (emulation of
    what an fp32 input keeps in a TF32 tensor-core matmul; the hardware's own conversion is not
    observable on a CPU). Non-finite values pass through."""
    import torch

    assert x.dtype == torch.float32
    drop = 23 - TF32_FRACTION_BITS  # 13 bits
    b = x.view(torch.int32).to(torch.int64) & 0xFFFFFFFF  # the bit pattern, unsigned
    lsb = (b >> drop) & 1
    r = ((b + (1 << (drop - 1)) - 1 + lsb) >> drop) << drop  # round half to even
    r = torch.where(r >= 2**31, r - 2**32, r).to(torch.int32).view(torch.float32)
    return torch.where(torch.isfinite(x), r, x)


def cast(value: float, name: str) -> torch.Tensor:
    """value (a Python float, i.e. binary64) stored in the format `name`: one rounding, round to
    nearest even, straight from float64 (tf32: via fp32, as the hardware receives it; int8: the
    naive cast, which truncates toward zero and has no scale)."""
    import torch

    src = torch.tensor(value, dtype=torch.float64)
    if name == "tf32":
        return round_to_tf32(src.to(torch.float32))
    return src.to(torch_dtype(name))


def bits_hex(t: torch.Tensor) -> str:
    """The stored bit pattern, e.g. 0x40490FD8."""
    import torch

    width = t.element_size()
    as_int = {4: torch.int32, 2: torch.int16, 1: torch.uint8}[width]
    v = int(t.reshape(1).view(as_int)[0]) & ((1 << (8 * width)) - 1)
    return f"0x{v:0{2 * width}X}"


def bit_fields(t: torch.Tensor, lay: Layout) -> str:
    """Sign | exponent | fraction as binary strings separated by spaces (tf32: its 19 bits)."""
    v = int(bits_hex(t), 16)
    total = 8 * t.element_size()
    s = format(v, f"0{total}b")
    if lay.exponent == 0:
        return s
    return f"{s[0]} {s[1 : 1 + lay.exponent]} {s[1 + lay.exponent : 1 + lay.exponent + lay.fraction]}"


def cast_value(t: torch.Tensor) -> float:
    """A 0-d tensor of any format as a Python float (exactly: every format here fits binary64)."""
    import torch

    return float(t.to(torch.float64)) if t.is_floating_point() else float(int(t))


def rel_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref||_F / ||ref||_F, in float64."""
    d = (out.double() - ref.double()).norm()
    n = ref.double().norm()
    return float(d / n) if float(n) > 0 else float(d)


# --- bytes of (quantized) linear layers ---------------------------------------------------------
ROLES = ("weights", "scales", "tables", "bias")


@dataclass
class LayerBytes:
    """Bytes of a set of Linear-like layers, by role. params = weight elements (out x in)."""

    params: int = 0
    layers: int = 0
    bytes: dict[str, int] = field(default_factory=lambda: {r: 0 for r in ROLES})
    kinds: dict[str, str] = field(default_factory=dict)  # role -> dtypes seen, for the detail

    @property
    def quantized(self) -> int:
        """Bytes that stand for the weight matrices: codes + scales + code tables (no bias)."""
        return self.bytes["weights"] + self.bytes["scales"] + self.bytes["tables"]

    def per_param(self, role: str | None = None) -> float:
        b = self.quantized if role is None else self.bytes[role]
        return b / self.params if self.params else float("nan")


# names of inner tensors (torchao tensor subclasses) that hold the weight codes themselves
_CODE_NAMES = ("qdata", "int_data", "packed_weight", "data")


def _plain(t: torch.Tensor) -> bool:
    import torch

    return type(t) in (torch.Tensor, torch.nn.Parameter)


def _leaves(role: str, t: Any) -> Iterator[tuple[str, torch.Tensor]]:
    """(role, plain tensor) pairs behind t: bitsandbytes Int8Params (.SCB), Params4bit
    (.quant_state: absmax, code, offset, nested state2), torchao subclasses (__tensor_flatten__)."""
    import torch

    if t is None or not torch.is_tensor(t):
        return
    qs = getattr(t, "quant_state", None)
    scb = getattr(t, "SCB", None)
    if not _plain(t) and hasattr(t, "__tensor_flatten__") and qs is None and scb is None:
        names, _ = t.__tensor_flatten__()
        for n in names:
            inner = getattr(t, n, None)
            yield from _leaves(role if n in _CODE_NAMES else ("scales" if role == "weights" else role), inner)
        return
    yield role, t
    if torch.is_tensor(scb):
        yield "scales", scb
    while qs is not None:  # bitsandbytes QuantState, possibly nested (double quantization)
        for attr, r in (("absmax", "scales"), ("offset", "scales"), ("code", "tables")):
            v = getattr(qs, attr, None)
            if torch.is_tensor(v):
                yield r, v
        qs = getattr(qs, "state2", None)


def linear_bytes(modules: Iterable[Any]) -> LayerBytes:
    """Exact bytes (numel x element_size) of Linear-like modules by role; a storage shared by two
    tensors (bitsandbytes' CB and weight) is counted once."""
    import torch

    out = LayerBytes()
    seen: set[tuple[int, int, str]] = set()
    kinds: dict[str, set[str]] = {r: set() for r in ROLES}
    for mod in modules:
        out.layers += 1
        out.params += int(mod.in_features) * int(mod.out_features)
        named: list[tuple[str, Any]] = list(mod.named_parameters(recurse=False)) + list(
            mod.named_buffers(recurse=False)
        )
        # bitsandbytes Linear8bitLt moves CB/SCB from the weight into module.state at its first forward
        st = getattr(mod, "state", None)
        named += [
            (("weight" if a == "CB" else "SCB"), getattr(st, a))
            for a in ("CB", "SCB")
            if st is not None and torch.is_tensor(getattr(st, a, None))
        ]
        for name, t in named:
            role = "bias" if name == "bias" else ("weights" if name in ("weight", "qweight") else "scales")
            for r, leaf in _leaves(role, t):
                nbytes = int(leaf.numel() * leaf.element_size())
                key = (leaf.data_ptr() if leaf.device.type != "meta" else id(leaf), nbytes, str(leaf.device))
                if nbytes == 0 or key in seen:
                    continue
                seen.add(key)
                out.bytes[r] += nbytes
                kinds[r].add(str(leaf.dtype).replace("torch.", ""))
    out.kinds = {r: ",".join(sorted(v)) for r, v in kinds.items() if v}
    return out
