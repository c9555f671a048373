"""The model in each weight format the inference plugin decodes with, and its bytes.

  fp32, bf16, fp16   the GPT cast whole (weights and activations in that dtype)
  llm_int8           bitsandbytes Linear8bitLt (LLM.int8(), arXiv 2208.07339: int8 weights with an
                     fp32 absmax per row; outlier features above threshold 6 in 16-bit)
  nf4                bitsandbytes Linear4bit NF4, blocks of 64, double quantization (QLoRA,
                     arXiv 2305.14314), compute in bf16
  ao_int8_wo         torchao Int8WeightOnlyConfig (int8 weights per row, bf16 activations)
  ao_int4_wo         torchao int4 weight-only, groups of 128 (CUDA: tinygemm tile packing; CPU: the
                     prototype opaque packing)
Quantized formats replace every Linear of the transformer blocks (attn.qkv, attn.proj, mlp.*) and
keep the tied embedding / LM head and the norms in bf16, as LLM.int8() and QLoRA do; their
16-bit reference is the bf16 model.

The model is built on the device it runs on (no CPU init of a large model); bitsandbytes
quantizes a layer when its CPU weights move to the device, so each layer's weights make one
round trip through host memory.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import torch

from plugins.inference.names import BNB, FORMATS, LIBRARY, PLAIN, REFERENCE, TORCHAO

__all__ = ["BNB", "FORMATS", "LIBRARY", "PLAIN", "REFERENCE", "TORCHAO", "build", "weight_bytes"]
INT4_GROUP = 128
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class FormatUnavailable(Exception):
    """The format cannot run here (library missing, no kernel for this device/dtype): the reason."""


def compute_dtype(fmt: str) -> torch.dtype:
    return DTYPES.get(fmt, torch.bfloat16)


def block_linears(model: Any) -> list[tuple[Any, str, Any]]:
    """(parent module, attribute, Linear) for every Linear inside the transformer blocks."""
    out = []
    for blk in model.blocks:
        for parent in blk.modules():
            for name, child in list(parent.named_children()):
                if isinstance(child, torch.nn.Linear):
                    out.append((parent, name, child))
    return out


def _bnb_layer(fmt: str, lin: torch.nn.Linear, device: torch.device) -> torch.nn.Module:
    import bitsandbytes.nn as bnn

    if fmt == "llm_int8":
        new = bnn.Linear8bitLt(
            lin.in_features, lin.out_features, bias=lin.bias is not None, has_fp16_weights=False, threshold=6.0
        )
    else:
        new = bnn.Linear4bit(
            lin.in_features,
            lin.out_features,
            bias=lin.bias is not None,
            compute_dtype=torch.bfloat16,
            compress_statistics=True,
            quant_type="nf4",
        )
    new.load_state_dict({k: v.detach().cpu() for k, v in lin.state_dict().items()})
    new = new.to(device)  # CPU weights -> device: bitsandbytes quantizes here
    if new.bias is not None:
        new.bias.data = new.bias.data.to(torch.bfloat16)
    return new


def _torchao(fmt: str, model: Any, device: torch.device) -> str:
    from torchao.quantization import quantize_

    def in_blocks(m: Any, fqn: str) -> bool:
        return isinstance(m, torch.nn.Linear) and fqn.startswith("blocks.")

    if fmt == "ao_int8_wo":
        from torchao.quantization import Int8WeightOnlyConfig

        cfg, how = Int8WeightOnlyConfig(), "Int8WeightOnlyConfig()"
    elif device.type == "cpu":
        from torchao.prototype.quantization.int4.inference_workflow import PrototypeInt4WeightOnlyConfig

        cfg = PrototypeInt4WeightOnlyConfig(group_size=INT4_GROUP)
        how = f"PrototypeInt4WeightOnlyConfig(group_size={INT4_GROUP}) (CPU opaque packing)"
    else:
        from torchao.quantization import Int4WeightOnlyConfig

        cfg = Int4WeightOnlyConfig(group_size=INT4_GROUP, int4_packing_format="tile_packed_to_4d")
        how = f"Int4WeightOnlyConfig(group_size={INT4_GROUP}, tile_packed_to_4d)"
    quantize_(model, cfg, filter_fn=in_blocks)
    return how


def build(fmt: str, cfg: Any, device: torch.device, seed: int) -> tuple[Any, str]:
    """(eval-mode GPT in the format on device, how it was made). FormatUnavailable with the
    library's own message where it cannot run here."""
    from plugins.common.gpt import GPT

    lib = LIBRARY.get(fmt)
    if lib and importlib.util.find_spec(lib) is None:
        raise FormatUnavailable(f"{lib} is not installed (pip install {lib}, or `pip install -e .[quant]`)")
    torch.manual_seed(seed)
    with torch.device(device):
        model = GPT(cfg).eval()
    if fmt in PLAIN:
        return model.to(DTYPES[fmt]), f"GPT cast to {fmt}"
    model = model.to(torch.bfloat16)
    try:
        if fmt in BNB:
            import bitsandbytes

            for parent, name, lin in block_linears(model):
                setattr(parent, name, _bnb_layer(fmt, lin, device))
            how = (
                "bnb.nn.Linear8bitLt(threshold=6, has_fp16_weights=False)"
                if fmt == "llm_int8"
                else "bnb.nn.Linear4bit(nf4, blocksize 64, compress_statistics=True, compute bf16)"
            )
            how += f", bitsandbytes {bitsandbytes.__version__}"
        else:
            import torchao

            how = f"torchao {torchao.__version__} " + _torchao(fmt, model, device)
        with torch.no_grad():
            model(torch.zeros(1, 8, dtype=torch.long, device=device))
    except FormatUnavailable:
        raise
    except Exception as e:
        raise FormatUnavailable(f"{fmt} cannot run on {device.type}: {type(e).__name__}: {e}"[:1200]) from e
    return model.eval(), how


def weight_bytes(model: Any) -> int:
    """Bytes of every weight the model holds (codes + scales + tables of quantized layers, each
    storage counted once; plugins/common/numerics.linear_bytes reads bitsandbytes / torchao)."""
    from plugins.common.numerics import linear_bytes

    quantized = [m for m in model.modules() if hasattr(m, "in_features") and not isinstance(m, torch.nn.Linear)]
    quantized += [lin for _, _, lin in block_linears(model) if _is_subclassed(lin.weight)]
    lb = linear_bytes(quantized)
    skip = {id(t) for m in quantized for t in list(m.parameters(recurse=False)) + list(m.buffers(recurse=False))}
    seen: set[int] = set()
    rest = 0
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) in skip or t.data_ptr() in seen:
            continue
        seen.add(t.data_ptr())
        rest += int(t.numel() * t.element_size())
    return lb.quantized + lb.bytes["bias"] + rest


def _is_subclassed(t: torch.Tensor) -> bool:
    return type(t) not in (torch.Tensor, torch.nn.Parameter)


def step_read_bytes(model: Any, weights: int, kv_bytes_read: int) -> int:
    """Bytes one decode step must read: every weight but the position table (one row of it is
    read; none with rotary positions) plus the filled KV cache (the token embedding: the LM head
    reads it whole when tied; an untied embedding is read one row per sequence, counted whole here)."""
    wpe = getattr(model, "wpe", None)
    if wpe is None:
        return weights + kv_bytes_read
    w = wpe.weight
    return weights - int(w.numel() * w.element_size()) + int(w.shape[1] * w.element_size()) + kv_bytes_read
