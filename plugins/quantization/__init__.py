"""Quantized Linear layers and 8-bit optimizer state: bytes, error and speed per scheme (claims
mem.store_int8, quant.int8_half, quant.nf4, quant.int8_speed, quant.error).

One case = one scheme applied to every Linear of a real model's transformer blocks (GPT preset of
plugins/common/gpt.py: attn.qkv, attn.proj, mlp.fc, mlp.proj; the tied embedding/LM head and the
LayerNorms stay in --dtype, as LLM.int8() and QLoRA leave them):
  fp32, bf16, fp16     the unquantized layers (references)
  int8_naive           weight.to(torch.int8): the naive cast, no scale (truncates toward zero)
  int8_rowwise         absmax per output row, round to nearest, fp32 scale per row (LLM.int8()'s
                       vector-wise quantization, arXiv 2208.07339 sec. 3.1), pure torch: dequantize then
                       matmul, so its time is not a kernel's
  llm_int8             bitsandbytes Linear8bitLt (int8 weights + fp32 row scales SCB; outlier features
                       above --threshold in 16-bit: the mixed-precision decomposition)
  nf4, fp4             bitsandbytes Linear4bit, blocks of 64 with an fp32 absmax each
  nf4_dq, fp4_dq       ... with double quantization: absmax in 8 bits, fp32 second-level absmax per 256
                       blocks (QLoRA, arXiv 2305.14314 sec. 3)
  ao_int8_dyn          torchao Int8DynamicActivationInt8WeightConfig (int8 weights per row, activations
                       quantized per token at run time)
  ao_int4_wo           torchao int4 weight-only, groups of --group-size (CPU: the prototype opaque
                       packing; CUDA: tinygemm tile packing)
  adamw, adamw8bit     optimizer-state bytes per parameter after a real step: torch AdamW vs
                       bitsandbytes AdamW8bit
Per scheme: bytes of the quantized layers from their tensors (weights = the codes; scales = row/block
scales, zero points, nested absmax, offsets; tables = code books), counted once each and shown apart;
output error vs the fp32 reference (one layer, mlp.fc of block 0, on real activations; and the model's
logits) on real text; time of that layer per batch size vs the same layer unquantized in --dtype, timed
in the same process (ctx.time). A scheme whose library is missing or has no kernel on this device is a
`skipped` row with the library's own message.
"""
from __future__ import annotations

import copy
import importlib.util
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from bench.contract import Evidence, Launch, Metric, Plugin, Record, Row, Section, claim_record, param
from plugins.common.numerics import PRESET_NAMES, LayerBytes, linear_bytes, rel_error, torch_dtype
from plugins.quantization.claims import CLAIMS

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from bench.context import Context

REFERENCE = ("fp32", "bf16", "fp16")
OWN = ("int8_naive", "int8_rowwise")
BNB = ("llm_int8", "nf4", "nf4_dq", "fp4", "fp4_dq")
TORCHAO = ("ao_int8_dyn", "ao_int4_wo")
OPTIMIZERS = ("adamw", "adamw8bit")
SCHEMES = REFERENCE + OWN + BNB + TORCHAO + OPTIMIZERS
LINEARS = (("attn", "qkv"), ("attn", "proj"), ("mlp", "fc"), ("mlp", "proj"))  # per block
TEXT_BATCH, TEXT_SEQ = 4, 64  # real text behind the error figures (and the timed activations)

LIBRARY = {s: "bitsandbytes" for s in BNB + ("adamw8bit",)} | {s: "torchao" for s in TORCHAO}
SIMULATED_NOTE = ("int8_naive / int8_rowwise are reference implementations in plain torch (dequantize, then a "
                  "matmul in --dtype): their bytes and error are the scheme's, their time is not an int8 kernel's")  # fmt: skip
RANDOM_NOTE = ("weights are the GPT's random init (std 0.02), not a trained checkpoint: LLM.int8()'s outlier features "
               "appear in trained models at scale, so the outlier decomposition rarely triggers here")  # fmt: skip


COLUMNS_NOTE = ("bytes_per_param = (codes + scales + code tables) / weights of the quantized Linears (biases apart); "
                "scale_bytes_per_param = the scales, zero points and nested absmax in it; x_fp16 = those bytes / the same "
                "weights in fp16; rel_error = ||y - y_fp32||_F / ||y_fp32||_F of block 0's mlp.fc on real activations, "
                "logits_rel_error the same for the model's logits on real text; time_ms = that layer at `batch` rows, "
                "ref_time_ms = the unquantized layer in {dtype} in the same process, time_ratio = time_ms / ref_time_ms")


class SchemeUnavailable(Exception):
    """The scheme cannot run here (library missing, no kernel for this device/dtype)."""


@dataclass(frozen=True)
class QuantParams:
    scheme: str = param("llm_int8", "quantization scheme (see `bench list --plugin quantization`)", choices=SCHEMES)
    model: str = param("medium", "GPT preset whose block Linears are quantized", choices=PRESET_NAMES)
    dtype: str = param("bf16", "activation/compute dtype, and the unquantized layer timed beside each scheme",
                       choices=("bf16", "fp16", "fp32"))  # fmt: skip
    max_batch: int = param(64, "timed batch sizes (rows of the layer's input): 1, 16, 256, ... up to this")
    threshold: float = param(6.0, "llm_int8: outlier threshold of the mixed-precision decomposition (0 = none)")
    group_size: int = param(128, "ao_int4_wo: weights per scale/zero point")


def batch_sizes(max_batch: int) -> list[int]:
    """1, 16, 256, ... (x16) up to max_batch, and max_batch itself."""
    out, b = [], 1
    while b <= max_batch:
        out.append(b)
        b *= 16
    if out[-1] != max_batch:
        out.append(max_batch)
    return out


# --- plain-torch int8 layers ----------------------------------------------------------------------
def _int8_layers() -> tuple[type, type]:
    import torch
    import torch.nn.functional as F

    class NaiveInt8Linear(torch.nn.Module):
        """weight.to(torch.int8): truncation toward zero, no scale; the forward uses the codes as values."""

        def __init__(self, lin: torch.nn.Linear, dtype: torch.dtype):
            super().__init__()
            self.in_features, self.out_features = lin.in_features, lin.out_features
            self.register_buffer("qweight", lin.weight.detach().to(torch.int8))
            self.bias = None if lin.bias is None else torch.nn.Parameter(lin.bias.detach().to(dtype), requires_grad=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.linear(x, self.qweight.to(x.dtype), self.bias)

    class RowwiseInt8Linear(torch.nn.Module):
        """Symmetric absmax per output row: q = round(127 w / max|w_row|), w ~ q * scale (fp32 scale)."""

        def __init__(self, lin: torch.nn.Linear, dtype: torch.dtype):
            super().__init__()
            self.in_features, self.out_features = lin.in_features, lin.out_features
            w = lin.weight.detach().float()
            scale = (w.abs().amax(dim=1, keepdim=True) / 127.0).clamp_min(torch.finfo(torch.float32).tiny)  # [out, 1]
            self.register_buffer("qweight", (w / scale).round().clamp(-127, 127).to(torch.int8))
            self.register_buffer("scale", scale)
            self.bias = None if lin.bias is None else torch.nn.Parameter(lin.bias.detach().to(dtype), requires_grad=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.linear(x, (self.qweight.float() * self.scale).to(x.dtype), self.bias)

    return NaiveInt8Linear, RowwiseInt8Linear


# --- building a quantized model ---------------------------------------------------------------------
def block_linears(model: Any) -> list[Any]:
    return [getattr(getattr(b, part), name) for b in model.blocks for part, name in LINEARS]


def _swap(model: Any, make: Callable[[Any], Any]) -> None:
    for b in model.blocks:
        for part, name in LINEARS:
            parent = getattr(b, part)
            setattr(parent, name, make(getattr(parent, name)))


def _bnb_layer(scheme: str, lin: Any, dtype: "torch.dtype", device: Any, threshold: float) -> Any:
    import bitsandbytes.nn as bnn

    if scheme == "llm_int8":
        new = bnn.Linear8bitLt(lin.in_features, lin.out_features, bias=lin.bias is not None,
                               has_fp16_weights=False, threshold=threshold)  # fmt: skip
    else:
        new = bnn.Linear4bit(lin.in_features, lin.out_features, bias=lin.bias is not None, compute_dtype=dtype,
                             compress_statistics=scheme.endswith("_dq"), quant_type=scheme[:3])  # fmt: skip
    new.load_state_dict(lin.state_dict())  # fp32 weights: quantized by the move to the device below
    new = new.to(device)
    if new.bias is not None:
        new.bias.data = new.bias.data.to(dtype)
    return new


def _torchao(scheme: str, model: Any, p: QuantParams, device: Any) -> str:
    """Apply the torchao config in place; return which config ran. Candidates are tried in turn; all
    failing -> SchemeUnavailable with each one's message."""
    import torch
    from torchao.quantization import quantize_

    def only_blocks(m: Any, fqn: str) -> bool:
        return isinstance(m, torch.nn.Linear) and fqn.startswith("blocks.")

    cands: list[tuple[str, Callable[[], Any]]] = []
    if scheme == "ao_int8_dyn":
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig

        cands.append(("Int8DynamicActivationInt8WeightConfig()", Int8DynamicActivationInt8WeightConfig))
    else:
        from torchao.quantization import Int4WeightOnlyConfig

        if device.type == "cpu":
            def proto() -> Any:
                from torchao.prototype.quantization.int4.inference_workflow import PrototypeInt4WeightOnlyConfig

                return PrototypeInt4WeightOnlyConfig(group_size=p.group_size)

            cands.append((f"PrototypeInt4WeightOnlyConfig(group_size={p.group_size}) (CPU opaque packing)", proto))
        else:
            cands.append((f"Int4WeightOnlyConfig(group_size={p.group_size}, tile_packed_to_4d)",
                          lambda: Int4WeightOnlyConfig(group_size=p.group_size, int4_packing_format="tile_packed_to_4d")))  # fmt: skip
        cands.append((f"Int4WeightOnlyConfig(group_size={p.group_size})", lambda: Int4WeightOnlyConfig(group_size=p.group_size)))
    errors = []
    for what, make in cands:
        trial = copy.deepcopy(model)
        try:
            quantize_(trial, make(), filter_fn=only_blocks)
            with torch.no_grad():
                trial(torch.zeros(1, 8, dtype=torch.long, device=device))
        except Exception as e:  # noqa: BLE001 -- the library's own reason goes into the row
            errors.append(f"{what}: {type(e).__name__}: {str(e)[:300]}")
            continue
        model.blocks = trial.blocks
        return what
    raise SchemeUnavailable("; ".join(errors))


def build(scheme: str, ref: Any, p: QuantParams, device: Any) -> tuple[Any, str]:
    """A copy of the fp32 reference model with the scheme applied to its block Linears, in --dtype
    elsewhere; returns (model, how)."""
    import torch

    dt = torch_dtype(p.dtype)
    if scheme in REFERENCE:
        return copy.deepcopy(ref).to(torch_dtype(scheme)), f"nn.Linear in {scheme}"
    model = copy.deepcopy(ref).to(dt)
    if scheme in OWN:
        naive, rowwise = _int8_layers()
        cls = naive if scheme == "int8_naive" else rowwise
        ref_lins = iter(block_linears(ref))
        _swap(model, lambda _old: cls(next(ref_lins), dt).to(device))
        return model, cls.__doc__.strip().splitlines()[0]
    lib = LIBRARY[scheme]
    if importlib.util.find_spec(lib) is None:
        raise SchemeUnavailable(f"{lib} is not installed (pip install {lib}, or `pip install -e .[quant]`)")
    if scheme in BNB:
        ref_lins = iter(block_linears(ref))
        try:
            _swap(model, lambda _old: _bnb_layer(scheme, next(ref_lins), dt, device, p.threshold))
            with torch.no_grad():
                model(torch.zeros(1, 8, dtype=torch.long, device=device))
        except Exception as e:  # noqa: BLE001 -- no kernel for this device/dtype: the library says why
            raise SchemeUnavailable(f"bitsandbytes {scheme} cannot run on {device.type}: {type(e).__name__}: {e}"[:1200]) from e
        import bitsandbytes

        how = {"llm_int8": f"bnb.nn.Linear8bitLt(threshold={p.threshold:g}, has_fp16_weights=False)"}.get(
            scheme, f"bnb.nn.Linear4bit(quant_type={scheme[:3]!r}, compress_statistics={scheme.endswith('_dq')}, blocksize 64)")
        return model, f"{how}, bitsandbytes {bitsandbytes.__version__}"
    try:
        how = _torchao(scheme, model, p, device)
    except ImportError as e:
        raise SchemeUnavailable(f"torchao: {type(e).__name__}: {e}") from e
    import torchao

    return model, f"torchao {torchao.__version__} {how}"


# --- the plugin ---------------------------------------------------------------------------------------
class QuantizationPlugin(Plugin):
    name = "quantization"
    description = "LLM.int8, NF4/FP4 (+double quant), torchao int8/int4, 8-bit Adam: bytes with scales, error, speed"
    version = "1"
    Params = QuantParams
    claims = CLAIMS
    metrics = {
        "bytes_per_param": "bytes per parameter of the quantized Linears: codes + scales + tables",
        "x_fp16": "quantized bytes / the same weights' fp16 bytes",
        "time_ratio": "time of the quantized layer / the unquantized layer, same batch",
        "rel_error": "output relative error vs the fp32 reference",
    }
    normalised = ("bytes_per_param", "x_fp16", "time_ratio")
    table_metrics = ("bytes_per_param", "scale_bytes_per_param", "bits_per_param", "x_fp16", "rel_error",
                     "logits_rel_error", "time_ms", "ref_time_ms", "time_ratio", "optim_bytes_per_param")  # fmt: skip

    def grid(self, profile: str) -> list[dict[str, Any]]:
        if profile == "quick":  # 2 CPU cores; the other parameters at their defaults (--scheme X: one case)
            return [{"scheme": s} for s in SCHEMES]
        if profile == "full":
            return [{"scheme": s, "model": m, "max_batch": 256} for m in ("medium", "large") for s in SCHEMES]
        if profile == "gpu":  # LLM.int8 is an fp16 method; the 4-bit and torchao paths run in bf16
            cases = [{"scheme": s, "model": "1b", "max_batch": 4096, "dtype": "bf16"} for s in SCHEMES]
            cases += [{"scheme": s, "model": "1b", "max_batch": 4096, "dtype": "fp16"} for s in ("fp16", "llm_int8")]
            return cases
        return [{}]

    def validate(self, p: QuantParams) -> str | None:
        if p.max_batch < 1:
            return f"--max-batch must be >= 1, got {p.max_batch}"
        if p.group_size < 1:
            return f"--group-size must be >= 1, got {p.group_size}"
        if p.threshold < 0:
            return f"--threshold must be >= 0, got {p.threshold}"
        return None

    def available(self, p: QuantParams) -> str | None:
        lib = LIBRARY.get(p.scheme)
        if lib and importlib.util.find_spec(lib) is None:
            return f"{lib} is not installed (pip install {lib}, or `pip install -e .[quant]`)"
        return None

    def launch(self, p: QuantParams) -> Launch:
        return Launch(timeout_s=900.0)

    def describe(self) -> str:
        return ("schemes: " + ", ".join(SCHEMES) + ". bytes_per_param = (codes + scales + code tables) / weights of "
                "the quantized Linears (biases apart); x_fp16 = those bytes / the same weights in fp16. Claims: "
                "mem.store_int8, quant.int8_half, quant.nf4, quant.int8_speed, quant.error")  # fmt: skip

    # --- one case -------------------------------------------------------------------------------
    def run(self, p: QuantParams, ctx: "Context") -> list[Record]:
        import warnings

        import torch

        from plugins.common.gpt import GPT, config_from
        from plugins.common.text import get_batch

        # bitsandbytes warns on every int8 call that it casts bf16 inputs to fp16; said once in the notes
        warnings.filterwarnings("ignore", message=r".*inputs will be cast from")
        dev = ctx.device
        torch.manual_seed(ctx.seed)
        cfg = config_from(p.model)
        ref = GPT(cfg).to(dev).eval()
        if p.scheme in OPTIMIZERS:
            return [self._optimizer(p, ctx, ref)]
        # real text through the fp32 reference; the input of block 0's mlp.fc is the timed layer's input
        tokens, _ = get_batch("val", TEXT_BATCH, min(TEXT_SEQ, cfg.block_size), torch.Generator().manual_seed(ctx.seed), dev)
        seen: dict[str, torch.Tensor] = {}

        def keep_input(mod: Any, inp: tuple[Any, ...], out: Any) -> None:
            seen.setdefault("x", inp[0].detach())

        hook = ref.blocks[0].mlp.fc.register_forward_hook(keep_input)
        with torch.no_grad():
            ref_logits = ref(tokens)
        hook.remove()
        act = seen["x"].reshape(-1, cfg.d_model)  # [TEXT_BATCH * seq, d] fp32
        ref_fc = ref.blocks[0].mlp.fc
        with torch.no_grad():
            ref_out = ref_fc(act)
        try:
            model, how = build(p.scheme, ref, p, dev)
        except SchemeUnavailable as e:
            return [Record(status="skipped", message=str(e)[:1500])]
        model.eval()
        dt = torch_dtype(p.scheme if p.scheme in REFERENCE else p.dtype)
        lb = linear_bytes(block_linears(model))
        fp16 = linear_bytes([copy.deepcopy(lin).half() for lin in block_linears(ref)])
        qfc = model.blocks[0].mlp.fc
        with torch.no_grad():
            err = rel_error(qfc(act.to(dt)).float(), ref_out)
            logits_err = rel_error(model(tokens).float(), ref_logits)
        base = _byte_metrics(lb, fp16)
        base["rel_error"] = Metric(err, "rel. vs fp32")
        if p.scheme in OWN:
            zeros = sum(int((lin.qweight == 0).sum()) for lin in block_linears(model))
            base["zero_codes_pct"] = Metric(100.0 * zeros / lb.params, "% of int8 codes that are 0", deterministic=True)
        base["device"] = Metric(dev.type if dev.type != "cuda" else f"cuda: {torch.cuda.get_device_name(dev)}", "")
        base["logits_rel_error"] = Metric(logits_err, "rel. vs fp32")
        notes = [f"{p.scheme}: {how}; layers: every Linear of the {p.model} GPT's blocks ({lb.layers} layers, "
                 f"{lb.params} weights); stored as {lb.kinds}", RANDOM_NOTE, COLUMNS_NOTE.format(dtype=p.dtype)]  # fmt: skip
        if p.scheme in OWN:
            notes.append(SIMULATED_NOTE)
        if p.scheme == "llm_int8" and p.dtype != "fp16":
            notes.append(f"llm_int8: Linear8bitLt casts {p.dtype} inputs to fp16 to quantize them (bitsandbytes' own warning)")
        if dev.type == "cpu" and p.scheme in BNB + TORCHAO:
            notes.append(f"{p.scheme} times are this CPU's kernels, not the CUDA ones the papers time")
        # speed: the quantized mlp.fc vs the same layer unquantized in --dtype, per batch size
        ref_dt = copy.deepcopy(ref_fc).to(torch_dtype(p.dtype))
        out = []
        from bench.context import timing_metrics

        for b in batch_sizes(p.max_batch):
            reps = -(-b // act.shape[0])
            xb = act.repeat(reps, 1)[:b].to(dt).contiguous()
            xr = xb.to(torch_dtype(p.dtype))
            with torch.no_grad():
                t = ctx.time(lambda: qfc(xb))
                tr = ctx.time(lambda: ref_dt(xr))
            m = dict(base)
            tm, s = timing_metrics(t)
            m.update(tm)
            m["ref_time_ms"] = Metric(tr.median_s * 1e3, "ms")
            m["time_ratio"] = Metric(t.median_s / tr.median_s, "x")
            s["ref_time_s"] = tr.samples_s
            out.append(Record(metrics=m, samples=s, labels={"batch": b}, notes=notes))
        return out

    def _optimizer(self, p: QuantParams, ctx: "Context", model: Any) -> Record:
        import torch

        from bench.context import timing_metrics
        from plugins.common.text import get_batch

        model.train()
        if p.scheme == "adamw8bit":
            if importlib.util.find_spec("bitsandbytes") is None:
                return Record(status="skipped", message="bitsandbytes is not installed")
            import bitsandbytes as bnb

            opt = bnb.optim.AdamW8bit(model.parameters(), lr=1e-3)
            how = f"bitsandbytes {bnb.__version__} optim.AdamW8bit (block-wise 8-bit m and v; tensors under 4096 elements keep fp32 state)"
        else:
            opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
            how = "torch.optim.AdamW (fp32 m and v)"
        x, y = get_batch("train", TEXT_BATCH, min(TEXT_SEQ, model.cfg.block_size), torch.Generator().manual_seed(ctx.seed), ctx.device)
        _, loss = model(x, y)
        loss.backward()
        try:
            opt.step()
        except Exception as e:  # noqa: BLE001 -- an optimizer kernel missing on this device
            return Record(status="skipped", message=f"{p.scheme} cannot step on {ctx.device.type}: {type(e).__name__}: {e}"[:1500])
        sb = ctx.state_bytes(model, opt)
        n = sum(q.numel() for q in model.parameters())
        by_kind: dict[str, int] = {}
        for st in opt.state.values():
            for v in st.values():
                if torch.is_tensor(v):
                    k = "8bit" if v.element_size() == 1 else "other"
                    by_kind[k] = by_kind.get(k, 0) + int(v.numel() * v.element_size())
        t = ctx.time(opt.step)
        m, s = timing_metrics(t, "step")
        m.update({
            "params": Metric(n, "parameters", deterministic=True),
            "optim_bytes": Metric(sb["optimizer_state"], "bytes (optimizer state after a real step)", deterministic=True),
            "optim_bytes_per_param": Metric(sb["optimizer_state"] / n, "bytes/param", deterministic=True),
            "optim_8bit_bytes_per_param": Metric(by_kind.get("8bit", 0) / n, "bytes/param (1-byte state tensors)", deterministic=True),
            "optim_other_bytes_per_param": Metric(by_kind.get("other", 0) / n,
                                                  "bytes/param (fp32 state: small tensors, absmax, quantile maps, step)",
                                                  deterministic=True),  # fmt: skip
        })  # fmt: skip
        return Record(metrics=m, samples=s, notes=[f"{p.scheme}: {how}; GPT {p.model}, one real step on text"])

    # --- across cases ---------------------------------------------------------------------------
    def summarize(self, rows: list[Row]) -> list[Record]:
        ok = [r for r in rows if r.kind == "case" and r.status == "ok"]

        def first(scheme: str, batch: int | None = 1, need: str = "bytes_per_param") -> Row | None:
            for r in ok:
                if (r.params["scheme"] == scheme and (batch is None or r.labels.get("batch") == batch)
                        and r.value(need) is not None):  # fmt: skip
                    return r
            return None

        out: list[Record] = []
        # mem.store_int8 and quant.int8_half: LLM.int8 (bitsandbytes); else a per-row int8 that ran
        i8 = next((r for r in (first("llm_int8"), first("ao_int8_dyn"), first("int8_rowwise")) if r), None)
        if i8:
            sch = i8.params["scheme"]
            bpp = i8.value("bytes_per_param")
            detail = (f"{sch} on the {i8.params['model']} GPT's block Linears ({i8.value('params')} weights): "
                      f"codes {i8.value('weight_bytes_per_param'):.4f} + scales "
                      f"{i8.value('scale_bytes_per_param'):.4f} + tables {i8.value('table_bytes_per_param'):.4f} "
                      f"= {bpp:.4f} bytes/param; biases apart ({i8.value('bias_bytes')} bytes)")  # fmt: skip
            out.append(_claim("mem.store_int8", Evidence(bpp, "bytes/param", "measured", detail)))
            x = i8.value("x_fp16")
            out.append(_claim("quant.int8_half", Evidence(x, "x of fp16", "measured",
                              f"{i8.value('quant_bytes')} bytes / {i8.value('fp16_bytes')} bytes of the "
                              f"same weights in fp16; {detail}")))  # fmt: skip
        nf4 = first("nf4_dq")
        if nf4:
            bits = nf4.value("bits_per_param")
            nodq = first("nf4")
            extra = f"; without double quantization {nodq.value('bits_per_param'):.4f} bits/param" if nodq else ""
            detail = (f"nf4 + double quantization on the {nf4.params['model']} GPT's block Linears: {bits:.4f} bits/param "
                      f"(codes {8 * nf4.value('weight_bytes_per_param'):.4f} + scales "
                      f"{8 * nf4.value('scale_bytes_per_param'):.4f} + code tables "
                      f"{8 * nf4.value('table_bytes_per_param'):.4f}) / 16{extra}")  # fmt: skip
            out.append(_claim("quant.nf4", Evidence(nf4.value("x_fp16"), "x of fp16", "measured", detail)))
        sp = first("llm_int8", need="time_ratio")
        if sp:
            ratios = [(r.labels["batch"], r.value("time_ratio")) for r in ok if r.params["scheme"] == "llm_int8"
                      and r.params["dtype"] == sp.params["dtype"]]  # fmt: skip
            dev = str(sp.value("device") or "?")
            detail = (f"bitsandbytes Linear8bitLt vs nn.Linear in {sp.params['dtype']} (block 0 mlp.fc of "
                      f"{sp.params['model']}), same process, on {dev}: time ratio by batch "
                      + ", ".join(f"{b}: {x:.2f}x" for b, x in sorted(ratios))
                      + ("; these are bitsandbytes' CPU kernels, not the CUDA ones behind the BLOOM-176B figures"
                         if not dev.startswith("cuda") else ""))  # fmt: skip
            out.append(_claim("quant.int8_speed", Evidence(sp.value("time_ratio"), "x (int8 / 16-bit time, batch 1)",
                                                           "measured", detail)))  # fmt: skip
        naive = first("int8_naive", need="rel_error")
        scaled = next((r for r in (first("llm_int8", need="rel_error"), first("int8_rowwise", need="rel_error")) if r), None)
        if naive and scaled:
            en, es = naive.value("rel_error"), scaled.value("rel_error")
            factor = en / es if es else float("inf")
            # "dramatically": the unscaled error is 10x or more the scaled one, and the scaled one is small (< 5%)
            verdict = "holds" if factor >= 10 and es < 0.05 else "fails"
            zeros = naive.value("zero_codes_pct")
            detail = (f"output rel_error of block 0 mlp.fc vs fp32 on real activations: naive int8 cast (no scale) "
                      f"{en:.4g} ({zeros if zeros is None else f'{zeros:.4g}'}% of its codes are 0: the cast truncates "
                      f"|w| < 1), per-row scaled int8 ({scaled.params['scheme']}) {es:.4g}: {factor:.3g}x; criterion: "
                      f">= 10x and scaled < 5%; logits: {naive.value('logits_rel_error'):.4g} vs "
                      f"{scaled.value('logits_rel_error'):.4g}")  # fmt: skip
            out.append(_claim("quant.error", Evidence(f"{en:.4g} vs {es:.4g}", "rel_error (naive vs per-row)", "measured",
                                                      detail, verdict=verdict)))  # fmt: skip
        a, a8 = first("adamw", None, "optim_bytes_per_param"), first("adamw8bit", None, "optim_bytes_per_param")
        if a and a8:
            x = a8.value("optim_bytes_per_param") / a.value("optim_bytes_per_param")
            rec = Record(metrics={"measured": Metric(x, "x (AdamW8bit / AdamW optimizer-state bytes)", deterministic=True),
                                  "adamw_bytes_per_param": Metric(a.value("optim_bytes_per_param"), "bytes/param"),
                                  "adamw8bit_bytes_per_param": Metric(a8.value("optim_bytes_per_param"), "bytes/param")},
                         labels={"analysis": "8-bit Adam"})  # fmt: skip
            out.append(rec)
        return out

    def report(self, rows: list[Row], out_dir: Any) -> list[Section]:
        from plugins.quantization.report import plot_quantization

        return plot_quantization(rows, out_dir)


def _byte_metrics(lb: LayerBytes, fp16: LayerBytes) -> dict[str, Metric]:
    d = {"deterministic": True}
    return {
        "params": Metric(lb.params, "weights of the quantized Linears (out x in)", **d),
        "bytes_per_param": Metric(lb.per_param(), "bytes/param", **d),
        "weight_bytes_per_param": Metric(lb.per_param("weights"), "bytes/param (codes)", **d),
        "scale_bytes_per_param": Metric(lb.per_param("scales"), "bytes/param", **d),
        "table_bytes_per_param": Metric(lb.per_param("tables"), "bytes/param (code books)", **d),
        "bits_per_param": Metric(8 * lb.per_param(), "bits/param", **d),
        "quant_bytes": Metric(lb.quantized, "bytes (codes + scales + tables)", **d),
        "fp16_bytes": Metric(fp16.bytes["weights"], "bytes (the same weights in fp16)", **d),
        "x_fp16": Metric(lb.quantized / fp16.bytes["weights"], "x fp16", **d),
        "bias_bytes": Metric(lb.bytes["bias"], "bytes (biases, not quantized)", **d),
    }


def _claim(claim_id: str, ev: Evidence) -> Record:
    return claim_record(next(c for c in CLAIMS if c.id == claim_id), ev)
