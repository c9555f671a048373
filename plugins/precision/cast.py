"""--what cast: 3.141592 (the notes' pi to six places, not math.pi) stored in each format: the exact
decimal value of what is stored, its bits, the sign/exponent/fraction layout (from torch.finfo) and
the range (finfo max, smallest normal, eps; int8: iinfo). Claims prec.pi_*, prec.ranges.

Two probe rows judge the notes' words on how the formats are made from fp32 (claims prec.fp16_scaling,
prec.bf16_truncation):
  fp16 scale     fp32 values across and beyond fp16's range cast with tensor.to(torch.float16), beside
                 an unscaled round-to-nearest-even done by CPython's struct (no torch)
  bf16 rounding  fp32 values whose low 16 bits decide between truncation and round-to-nearest-even
                 (0.1: 0x3DCCCCCD; truncation keeps 0x3DCC, rounding gives 0x3DCD)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bench.contract import Metric, Record
from plugins.common.numerics import PI6, bit_fields, bits_hex, cast, cast_value, exact_decimal, layout, torch_dtype
from plugins.precision.params import PrecisionParams, formats_of
from plugins.precision.verdicts import bf16_truncate, fp16_unscaled

if TYPE_CHECKING:  # pragma: no cover
    from bench.context import Context

# fp32 inputs of the probes: in range, past fp16's max (65504; 65520 and up round to inf), below its
# smallest subnormal (2^-24 ~ 5.96e-8; half of it and less round to 0)
FP16_PROBE = (PI6, 0.1, 1e5, 7e4, 65519.0, 3e-8, 1e-8, 1e-9)
BF16_PROBE = (0.1, PI6, 1 / 3, 2.718282, 1e-3)


def _num(v: float) -> float | int:
    """Integral range limits as ints, so tables print 65504, not 6.55e+04."""
    return int(v) if float(v).is_integer() and abs(v) < 1e15 else v


def joined(xs: list[float]) -> str:
    """Exact decimals separated by '; ' (inf as 'inf'): the probes' values as one string metric."""
    return "; ".join("inf" if x == float("inf") else "-inf" if x == float("-inf") else exact_decimal(x) for x in xs)


def parse_joined(text: str) -> list[float]:
    return [float(x) for x in str(text).split(";") if x.strip()]


def run_cast(p: PrecisionParams, ctx: Context) -> list[Record]:
    import torch

    out = []
    for fmt in formats_of(p) + (["int8"] if p.dtype == "all" else []):
        t = cast(PI6, fmt)
        lay = layout(fmt)
        v = cast_value(t)
        m: dict[str, Metric] = {
            "value": Metric(exact_decimal(v), "exact decimal", deterministic=True),
            "bits": Metric(bits_hex(t), "hex", deterministic=True),
            "layout": Metric(lay.text(), "", deterministic=True),
            "fields": Metric(
                bit_fields(t, lay), "sign exponent fraction" if lay.exponent else "bits", deterministic=True
            ),
            "abs_error": Metric(abs(v - PI6), "|stored - 3.141592|", deterministic=True),
        }
        if fmt == "int8":
            ii = torch.iinfo(torch.int8)
            m["max"] = Metric(ii.max, "finfo/iinfo", deterministic=True)
            m["min"] = Metric(ii.min, "finfo/iinfo", deterministic=True)
            notes = ["int8 row: the naive cast (tensor.to(torch.int8)) truncates toward zero and has no scale"]
        else:
            fi = torch.finfo(torch_dtype(fmt))
            m["max"] = Metric(_num(fi.max), "finfo/iinfo", deterministic=True, portable=True)
            m["min"] = Metric(_num(fi.min), "finfo/iinfo", deterministic=True, portable=True)
            # the format's definition (IEEE 754 / bfloat16): the same on every machine
            m["smallest_normal"] = Metric(
                fi.smallest_normal, "torch.finfo smallest_normal", deterministic=True, portable=True
            )
            m["eps"] = Metric(
                fi.eps if fmt != "tf32" else 2.0**-lay.fraction, "2^-fraction bits", deterministic=True, portable=True
            )
            notes = [
                "cast: 3.141592 (float64) -> format, one rounding to nearest even; value = the exact decimal of "
                "what is stored, bits = its bit pattern, layout = sign/exponent/fraction bits, max = torch.finfo max"
            ]
            if fmt == "tf32":
                notes.append("tf32 cast emulated: fp32 rounded to nearest even at 10 fraction bits (range = fp32's)")
        out.append(Record(metrics=m, labels={"format": fmt}, notes=notes))
    if p.dtype in ("all", "fp16"):
        out.append(_fp16_scale_probe())
    if p.dtype in ("all", "bf16"):
        out.append(_bf16_rounding_probe())
    return out


def _fp16_scale_probe() -> Record:
    import torch

    x = torch.tensor(FP16_PROBE, dtype=torch.float32)
    values = [float(v) for v in x]  # the fp32 inputs, exactly
    y = x.to(torch.float16)
    stored = [float(v) for v in y.double()]
    unscaled = [fp16_unscaled(v) for v in values]
    m = {
        "values": Metric(joined(values), "fp32 inputs (exact decimals)", deterministic=True),
        "stored": Metric(joined(stored), "x.to(torch.float16) (exact decimals)", deterministic=True),
        "unscaled": Metric(joined(unscaled), "round to nearest even, scale 1 (CPython struct)", deterministic=True),
        "mismatches": Metric(
            sum(a != b for a, b in zip(stored, unscaled)), "values where the two differ", deterministic=True
        ),
        "bytes_per_value": Metric(y.element_size(), "bytes (element_size; nothing else stored)", deterministic=True),
    }
    notes = [
        "fp16 scale probe: fp32 values cast with tensor.to(torch.float16) beside an unscaled round-to-nearest-even "
        "(CPython struct 'e'); a cast that scaled into range would keep 1e5 finite and 1e-8 non-zero"
    ]
    return Record(metrics=m, labels={"format": "fp16", "probe": "scale"}, notes=notes)


def _bf16_rounding_probe() -> Record:
    import torch

    x = torch.tensor(BF16_PROBE, dtype=torch.float32)
    values = [float(v) for v in x]
    stored = [float(v) for v in x.to(torch.bfloat16).double()]
    trunc = [bf16_truncate(v) for v in values]
    m = {
        "values": Metric(joined(values), "fp32 inputs (exact decimals)", deterministic=True),
        "stored": Metric(joined(stored), "x.to(torch.bfloat16) (exact decimals)", deterministic=True),
        "truncated": Metric(joined(trunc), "fp32 bits with the low 16 dropped (exact decimals)", deterministic=True),
        "differ_from_truncation": Metric(sum(a != b for a, b in zip(stored, trunc)), "values", deterministic=True),
        "layout": Metric(layout("bf16").text(), "sign/exponent/fraction bits", deterministic=True),
        "layout_fp32": Metric(layout("fp32").text(), "sign/exponent/fraction bits", deterministic=True),
    }
    notes = [
        "bf16 rounding probe: fp32 values cast with tensor.to(torch.bfloat16) beside their truncation (the low 16 "
        "bits of the fp32 pattern dropped); 0.1 = 0x3DCCCCCD: truncation 0x3DCC = 0.099609375, "
        "round-to-nearest-even 0x3DCD = 0.10009765625"
    ]
    return Record(metrics=m, labels={"format": "bf16", "probe": "rounding"}, notes=notes)
