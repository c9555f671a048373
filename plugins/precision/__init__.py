"""Number formats for training and inference: what they store, what they round to, how fast they
multiply, how they train, and what training costs in memory (claims mem.store_fp32/16bit,
mem.train_24x, prec.*).

One case measures one topic (--what) for one format or for every format (--dtype all; one row per
format, labelled `format`):
  storage   exact bytes of a real model's parameters (plugins/common/gpt.py) cast to each format:
            numel x element_size (ctx.state_bytes); the 1b preset is built on the meta device
            (exact shapes and dtypes, no memory).
  cast      3.141592 (the notes' pi to six places, not math.pi) stored in each format: the exact
            decimal value of what is stored, its bits, the sign/exponent/fraction layout (from
            torch.finfo) and the range (finfo max, smallest normal, eps; int8: iinfo).
  matmul    n x n @ n x n: time (ctx.time), TFLOP/s and % of the dtype's dense peak (ctx.throughput),
            output error vs float64. fp8: torch._scaled_mm with per-tensor absmax scales.
  block     one pre-norm transformer block (gpt.Block) forward + backward: the same measurements.
  train     the same small GPT, same init and same batches of real text (plugins/common/text.py),
            trained in fp32, tf32 (CUDA), bf16 autocast, fp16 autocast with and without a
            GradScaler: loss curve (samples["loss"]), final loss, overflow/skipped steps, divergence.
  trainmem  a real training step's memory per parameter: parameters + gradients + optimizer state
            at rest (ctx.state_bytes), and the peak with activations/temporaries (ctx.track_step)
            over a batch sweep, to find the batch x seq where the total reaches the notes' 24
            bytes/param. fp32 = fp32 weights + torch AdamW; bf16/fp16 = 16-bit weights and grads,
            fp32 master weights in the optimizer (ZeRO paper sec. 3.1 accounting, 2+2+12
            bytes/param); --optim adamw8bit = bitsandbytes AdamW8bit.
Formats that cannot compute here (tf32 without CUDA; fp8 training) are `skipped` rows with the reason;
fp16 and fp8 matmuls are capped in size on a CPU, where they have no fast kernels.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import importlib.util
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator

from bench.contract import Evidence, Launch, Metric, Plugin, Record, Row, Section, claim_record, param
from plugins.precision.claims import CLAIMS
from plugins.common.numerics import (
    FORMATS,
    PI6,
    PRESET_NAMES,
    bit_fields,
    bits_hex,
    cast,
    cast_value,
    exact_decimal,
    layout,
    rel_error,
    torch_dtype,
)

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from bench.context import Context

WHATS = ("storage", "cast", "matmul", "block", "train", "trainmem")
DTYPES = ("all",) + FORMATS
OPTIMS = ("all", "adamw", "adamw8bit")
SCALERS = ("both", "on", "off")
META_PRESETS = ("large", "1b")  # storage builds these on the meta device
CPU_CAP = {"fp16": 512, "fp8_e4m3": 1024, "fp8_e5m2": 1024}  # matmul n on a CPU (no fast kernels)
EVAL_BATCHES = 8  # validation batches behind final_loss
TARGET_BPP = 24.0  # the notes: weights 4 + Adam 8 + grads 4 + activations/temporaries 8 bytes/param
# prec.ranges: the figures the notes state (shared/claims.md), compared at the digits they give
STATED_MAX = {"fp32": ("3.4e38", 2), "fp16": ("65504", 0), "bf16": ("3.39e38", 3)}

TF32_SKIP = "tf32 is a tensor-core mode of NVIDIA GPUs (Ampere or later): no CUDA device here"
FP8_TRAIN_SKIP = "fp8 training is not run by this plugin (fp8 is measured as casts, matmul and, on CUDA, the block)"


@dataclass(frozen=True)
class PrecisionParams:
    what: str = param("cast", "what to measure (see `bench list --plugin precision`)", choices=WHATS)
    dtype: str = param("all", "format; all = one row per format", choices=DTYPES)
    model: str = param("auto", "GPT preset (plugins/common/gpt.py); auto: storage small + 1b, block and trainmem "
                       "small, train tiny", choices=("auto",) + PRESET_NAMES)  # fmt: skip
    size: int = param(1024, "matmul: n of the n x n @ n x n product")
    batch: int = param(0, "block/train: sequences per batch; trainmem: largest batch of the sweep 1, 2, 4, ...; "
                       "0: block 8, train 8, trainmem 32")  # fmt: skip
    seq: int = param(64, "block/train/trainmem: tokens per sequence")
    steps: int = param(150, "train: optimizer steps")
    lr: float = param(3e-3, "train: AdamW learning rate (betas 0.9/0.95, weight decay 0.1, clip 1.0)")
    scaler: str = param("both", "train, fp16: with a GradScaler (on), without (off), or both", choices=SCALERS)
    optim: str = param("all", "trainmem: torch AdamW, bitsandbytes AdamW8bit, or both", choices=OPTIMS)


AUTO_MODEL = {"block": "small", "train": "tiny", "trainmem": "small", "matmul": "small", "cast": "small"}
AUTO_STORAGE = ("small", "1b")
AUTO_BATCH = {"block": 8, "train": 8, "trainmem": 32}


def resolve(p: PrecisionParams) -> PrecisionParams:
    """model auto and batch 0 replaced by the topic's defaults (storage keeps auto: two presets)."""
    model = p.model if p.model != "auto" or p.what == "storage" else AUTO_MODEL[p.what]
    batch = p.batch or AUTO_BATCH.get(p.what, 1)
    return dataclasses.replace(p, model=model, batch=batch)


def _num(v: float) -> float | int:
    """Integral range limits as ints, so tables print 65504, not 6.55e+04."""
    return int(v) if float(v).is_integer() and abs(v) < 1e15 else v


def _is_cuda(ctx: "Context") -> bool:
    return ctx.device.type == "cuda"


def _formats(p: PrecisionParams) -> list[str]:
    return list(FORMATS) if p.dtype == "all" else [p.dtype]


@contextlib.contextmanager
def tf32_mode(on: bool) -> Iterator[None]:
    """TF32 tensor-core matmuls on (tf32) or off (true fp32), restored afterwards."""
    import torch

    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = on
    torch.backends.cudnn.allow_tf32 = on
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def _guarded(labels: dict[str, Any], fn: Callable[[], Record]) -> Record:
    """One format's row; a failure becomes an error row for that format, not a lost case."""
    from bench.worker import is_oom

    try:
        rec = fn()
    except Exception as e:  # noqa: BLE001 -- reported in the row
        rec = Record(status="oom" if is_oom(e) else "error", message=f"{type(e).__name__}: {e}"[:1500])
    rec.labels = {**labels, **rec.labels}
    return rec


class PrecisionPlugin(Plugin):
    name = "precision"
    description = "fp32/tf32/fp16/bf16/fp8: storage bytes, exact casts, matmul/block speed, training loss and memory"
    version = "1"
    Params = PrecisionParams
    claims = CLAIMS
    metrics = {
        "bytes_per_param": "bytes per parameter of the stored model (numel x element_size / params)",
        "value": "the exact decimal of 3.141592 stored in a format",
        "max": "torch.finfo(format).max",
        "bf16_vs_fp32_pct": "|final loss bf16 / fp32 - 1| in %, same model, text and seed",
        "total_bytes_per_param": "peak bytes of one fp32 AdamW training step per parameter (MemTracker)",
    }
    table_metrics = ("bytes_per_param", "value", "bits", "layout", "max", "time_ms", "tflops", "mfu", "rel_error",
                     "final_loss", "overflow_steps", "state_bytes_per_param", "total_bytes_per_param")  # fmt: skip

    # --- grids ----------------------------------------------------------------------------------
    def grid(self, profile: str) -> list[dict[str, Any]]:
        # quick: every other parameter at its default, so `--what train` (etc.) picks exactly one case
        if profile == "quick":  # 2 CPU cores: ~2.5 minutes when the machine is not shared
            return [{"what": w} for w in WHATS]
        if profile == "full":
            return [
                {"what": "storage"},
                *({"what": "storage", "model": m} for m in ("medium", "large")),
                {"what": "cast"},
                *({"what": "matmul", "size": n} for n in (512, 1024, 2048)),
                *({"what": "block", "model": m, "seq": 128} for m in ("small", "medium")),
                {"what": "train", "batch": 16, "steps": 400},  # tiny: fp16 has no fast CPU kernel
                {"what": "trainmem", "seq": 128, "batch": 64},
                {"what": "trainmem", "model": "medium", "seq": 128, "batch": 64, "dtype": "fp32", "optim": "adamw"},
            ]
        if profile == "gpu":  # one H100/H200
            return [
                {"what": "storage"},
                {"what": "storage", "model": "large"},
                {"what": "cast"},
                *({"what": "matmul", "size": n} for n in (2048, 4096, 8192)),
                *({"what": "block", "model": m, "seq": 1024} for m in ("large", "1b")),
                {"what": "train", "model": "small", "batch": 32, "seq": 256, "steps": 1000, "lr": 1e-3},
                {"what": "trainmem", "model": "medium", "seq": 512, "batch": 256},
                {"what": "trainmem", "model": "large", "seq": 1024, "batch": 64, "dtype": "fp32", "optim": "adamw"},
            ]
        return [{}]

    def validate(self, p: PrecisionParams) -> str | None:
        for f in ("size", "seq", "steps"):
            if getattr(p, f) < 1:
                return f"--{f} must be >= 1, got {getattr(p, f)}"
        if p.batch < 0:
            return f"--batch must be >= 0 (0: the topic's default), got {p.batch}"
        p = resolve(p)
        if not p.lr > 0:
            return f"--lr must be > 0, got {p.lr}"
        if p.what in ("block", "train", "trainmem"):
            from plugins.common.gpt import PRESETS

            if p.seq > PRESETS[p.model].block_size:
                return f"--seq {p.seq} is longer than the {p.model} preset's block_size {PRESETS[p.model].block_size}"
        return None

    def available(self, p: PrecisionParams) -> str | None:
        import torch

        if p.dtype == "tf32" and p.what in ("matmul", "block", "train", "trainmem") and not torch.cuda.is_available():
            return TF32_SKIP
        if p.what == "trainmem" and p.optim == "adamw8bit" and importlib.util.find_spec("bitsandbytes") is None:
            return "bitsandbytes is not installed (pip install bitsandbytes, or `pip install -e .[quant]`)"
        return None

    def launch(self, p: PrecisionParams) -> Launch:
        return Launch(timeout_s={"train": 1800.0, "trainmem": 1200.0}.get(p.what, 600.0))

    def describe(self) -> str:
        return ("--what: storage = exact bytes of a GPT's parameters per format; cast = 3.141592 stored in each "
                "format (exact value, bits, layout, finfo range); matmul, block = time, TFLOP/s, % of the dense peak, "
                "error vs fp64; train = one GPT, seed and batches in fp32/tf32/bf16/fp16 (+/- GradScaler): loss curve, "
                "final loss, overflows; trainmem = weights + grads + optimizer bytes/param at rest and the step's peak "
                "over batch x seq (where it reaches 24). --dtype all: one row per format. Claims: mem.store_fp32, "
                "mem.store_16bit, mem.train_24x, prec.pi_*, prec.ranges, prec.bf16_training")  # fmt: skip

    # --- one case -------------------------------------------------------------------------------
    def run(self, p: PrecisionParams, ctx: "Context") -> list[Record]:
        p = resolve(p)
        out = {
            "storage": self._storage,
            "cast": self._cast,
            "matmul": self._matmul,
            "block": self._block,
            "train": self._train,
            "trainmem": self._trainmem,
        }[p.what](p, ctx)
        if p.what not in ("cast", "matmul", "storage"):
            for r in out:
                r.labels.setdefault("preset", p.model)
        return out

    # (a) storage
    def _storage(self, p: PrecisionParams, ctx: "Context") -> list[Record]:
        out = []
        for preset in AUTO_STORAGE if p.model == "auto" else (p.model,):
            out += self._storage_of(preset, p, ctx)
        return out

    def _storage_of(self, preset: str, p: PrecisionParams, ctx: "Context") -> list[Record]:
        import torch

        from plugins.common.gpt import GPT, config_from

        meta = preset in META_PRESETS
        torch.manual_seed(ctx.seed)
        with torch.device("meta") if meta else contextlib.nullcontext():
            model = GPT(config_from(preset))
        n = model.num_params()
        where = "meta device (exact shapes and dtypes, no memory)" if meta else "cpu (materialized)"
        out = []
        for fmt in _formats(p):
            model = model.to(torch_dtype(fmt))  # tf32 is stored as fp32
            sb = ctx.state_bytes(model)
            b = sb["parameters"]
            m = {
                "params": Metric(n, "parameters (tied embedding counted once)", deterministic=True),
                "bytes": Metric(b, "bytes (numel x element_size)", deterministic=True),
                "gb": Metric(b / 1e9, "GB (1e9 bytes)", deterministic=True),
                "bytes_per_param": Metric(b / n, "bytes/param", deterministic=True),
            }
            notes = [f"storage: GPT {preset} built on the {where}; bytes = sum of numel x element_size (ctx.state_bytes)"]
            if fmt == "tf32":
                notes.append("tf32 is not a storage type: tensors stay fp32; only tensor-core matmul inputs keep 10 fraction bits")
            out.append(Record(metrics=m, labels={"format": fmt, "preset": preset}, notes=notes))
        return out

    # (b) casts
    def _cast(self, p: PrecisionParams, ctx: "Context") -> list[Record]:
        import torch

        out = []
        for fmt in _formats(p) + (["int8"] if p.dtype == "all" else []):
            t = cast(PI6, fmt)
            lay = layout(fmt)
            v = cast_value(t)
            m: dict[str, Metric] = {
                "value": Metric(exact_decimal(v), "exact decimal", deterministic=True),
                "bits": Metric(bits_hex(t), "hex", deterministic=True),
                "layout": Metric(lay.text(), "", deterministic=True),
                "fields": Metric(bit_fields(t, lay), "sign exponent fraction" if lay.exponent else "bits", deterministic=True),
                "abs_error": Metric(abs(v - PI6), "|stored - 3.141592|", deterministic=True),
            }
            if fmt == "int8":
                ii = torch.iinfo(torch.int8)
                m["max"] = Metric(ii.max, "finfo/iinfo", deterministic=True)
                m["min"] = Metric(ii.min, "finfo/iinfo", deterministic=True)
                notes = ["int8 row: the naive cast (tensor.to(torch.int8)) truncates toward zero and has no scale"]
            else:
                fi = torch.finfo(torch_dtype(fmt))
                m["max"] = Metric(_num(fi.max), "finfo/iinfo", deterministic=True)
                m["min"] = Metric(_num(fi.min), "finfo/iinfo", deterministic=True)
                m["smallest_normal"] = Metric(fi.smallest_normal, "torch.finfo smallest_normal", deterministic=True)
                m["eps"] = Metric(fi.eps if fmt != "tf32" else 2.0**-lay.fraction, "2^-fraction bits", deterministic=True)
                notes = ["cast: 3.141592 (float64) -> format, one rounding to nearest even; value = the exact decimal of what is "
                         "stored, bits = its bit pattern, layout = sign/exponent/fraction bits, max = torch.finfo max"]  # fmt: skip
                if fmt == "tf32":
                    notes.append("tf32 cast emulated: fp32 rounded to nearest even at 10 fraction bits (range = fp32's)")
            out.append(Record(metrics=m, labels={"format": fmt}, notes=notes))
        return out

    # (c) matmul
    def _matmul(self, p: PrecisionParams, ctx: "Context") -> list[Record]:
        import torch

        dev = ctx.device
        g = torch.Generator().manual_seed(ctx.seed)
        out = []
        for fmt in _formats(p):
            if fmt == "tf32" and not _is_cuda(ctx):
                out.append(Record(status="skipped", message=TF32_SKIP, labels={"format": fmt}))
                continue
            n = min(p.size, CPU_CAP[fmt]) if dev.type == "cpu" and fmt in CPU_CAP else p.size
            a, b = (torch.randn(n, n, generator=g).to(dev) for _ in range(2))
            out.append(_guarded({"format": fmt}, lambda: _matmul_row(fmt, a, b, n, p, ctx)))
        return out

    # (c) transformer block
    def _block(self, p: PrecisionParams, ctx: "Context") -> list[Record]:
        out = []
        for fmt in _formats(p):
            if fmt == "tf32" and not _is_cuda(ctx):
                out.append(Record(status="skipped", message=TF32_SKIP, labels={"format": fmt}))
                continue
            if fmt.startswith("fp8") and not _is_cuda(ctx):
                out.append(Record(status="skipped", labels={"format": fmt}, message=(
                    "fp8 block forward/backward needs torchao.float8 training on CUDA (compute capability >= 8.9); "
                    "a CPU has no fp8 autograd path: see the cast and matmul rows")))  # fmt: skip
                continue
            if fmt == "fp8_e5m2":
                out.append(Record(status="skipped", labels={"format": fmt}, message=(
                    "see the fp8_e4m3 row: torchao's float8 training recipe picks the fp8 formats of the block's "
                    "matmuls itself")))  # fmt: skip
                continue
            out.append(_guarded({"format": fmt}, lambda: _block_row(fmt, p, ctx)))
        return out

    # (d) training
    def _train(self, p: PrecisionParams, ctx: "Context") -> list[Record]:
        modes: list[tuple[str, bool | None]] = []
        for fmt in _formats(p):
            if fmt == "fp16":
                modes += [("fp16", s) for s in ((True, False) if p.scaler == "both" else (p.scaler == "on",))]
            elif fmt.startswith("fp8"):
                if p.dtype != "all":  # in `all`, fp8 training is left out quietly
                    modes.append((fmt, None))
            else:
                modes.append((fmt, None))
        out = []
        for fmt, scaler in modes:
            labels: dict[str, Any] = {"format": fmt} | ({"scaler": "on" if scaler else "off"} if fmt == "fp16" else {})
            if fmt == "tf32" and not _is_cuda(ctx):
                out.append(Record(status="skipped", message=TF32_SKIP, labels=labels))
            elif fmt.startswith("fp8"):
                out.append(Record(status="skipped", message=FP8_TRAIN_SKIP, labels=labels))
            else:
                out.append(_guarded(labels, lambda: _train_row(fmt, bool(scaler), p, ctx)))
        return out

    # (e) training memory
    def _trainmem(self, p: PrecisionParams, ctx: "Context") -> list[Record]:
        fmts = ["fp32", "bf16"] if p.dtype == "all" else [p.dtype]
        optims = ["adamw", "adamw8bit"] if p.optim == "all" else [p.optim]
        out = []
        for fmt in fmts:
            for opt in optims:
                labels = {"format": fmt, "optim": opt}
                if fmt == "tf32" and not _is_cuda(ctx):
                    out.append(Record(status="skipped", message=TF32_SKIP, labels=labels))
                elif fmt.startswith("fp8"):
                    out.append(Record(status="skipped", message=FP8_TRAIN_SKIP, labels=labels))
                elif opt == "adamw8bit" and importlib.util.find_spec("bitsandbytes") is None:
                    out.append(Record(status="skipped", message="bitsandbytes is not installed", labels=labels))
                else:
                    out.append(_guarded(labels, lambda: _trainmem_row(fmt, opt, p, ctx)))
        return out

    # --- across cases ---------------------------------------------------------------------------
    def summarize(self, rows: list[Row]) -> list[Record]:
        ok = [r for r in rows if r.kind == "case" and r.status == "ok"]

        def pick(what: str, **labels: Any) -> list[Row]:
            return [r for r in ok if r.params.get("what") == what
                    and all(r.labels.get(k) == v for k, v in labels.items())]  # fmt: skip

        out: list[Record] = []
        out += _storage_claims(pick("storage"))
        out += _cast_claims(pick("cast"))
        out += _training_claims(pick("train"))
        out += _trainmem_claims(pick("trainmem", format="fp32", optim="adamw"))
        return out

    def report(self, rows: list[Row], out_dir: Any) -> list[Section]:
        from plugins.precision.report import plot_precision

        return plot_precision(rows, out_dir)


# --- rows -----------------------------------------------------------------------------------------
def _timing_block(ctx: "Context", fn: Callable[[], Any], flops: float, dtype: Any, with_matmul: bool,
                  ) -> tuple[dict[str, Metric], dict[str, list[float]]]:  # fmt: skip
    from bench.contract import timing_metrics

    t = ctx.time(fn)
    m, s = timing_metrics(t)
    m.update(ctx.throughput(flops, t.median_s, dtype, with_matmul=with_matmul))
    return m, s


def _with_matmul(fmt: str, ctx: "Context") -> bool:
    """Whether to also report % of the core's measured matmul for this format: not for fp8 (the core
    measures no fp8 matmul) nor for fp16 on a CPU (~3 GFLOP/s there: minutes to measure)."""
    if fmt.startswith("fp8"):
        return False
    return _is_cuda(ctx) or fmt in ("fp32", "bf16")


def _throughput_dtype(fmt: str) -> Any:
    return "tf32" if fmt == "tf32" else torch_dtype(fmt)


def _matmul_row(fmt: str, a32: "torch.Tensor", b32: "torch.Tensor", n: int, p: PrecisionParams,
                ctx: "Context") -> Record:  # fmt: skip
    notes = ["matmul: n x n @ n x n, inputs standard normal (fixed seed); rel_error = ||C - C_fp64||_F / ||C_fp64||_F; "
             "tflops from FlopCounterMode's count / median time; mfu = % of the dtype's dense peak (GPUs in bench/flops.py)"]  # fmt: skip
    if n != p.size:
        notes.append(f"{fmt} matmul capped at n={n} on a CPU (no fast kernel; the row's n says which size ran)")
    with tf32_mode(False):
        flops = ctx.count_flops(lambda: a32 @ b32)  # the same math in every format
    ref = a32.double() @ b32.double()
    if fmt.startswith("fp8"):
        fn, used = _fp8_matmul(fmt, a32, b32, ctx)
        if used != fmt:
            notes.append(f"{fmt}: {used}")
        notes.append("fp8: torch._scaled_mm, per-tensor scales absmax/finfo.max, output bf16")
    else:
        dt = torch_dtype(fmt)
        a, b = a32.to(dt), b32.to(dt)

        def fn() -> Any:
            return a @ b

    with tf32_mode(fmt == "tf32"):
        err = rel_error(fn(), ref)
        m, s = _timing_block(ctx, fn, flops, _throughput_dtype(fmt), _with_matmul(fmt, ctx))
    m["n"] = Metric(n, "matrix size", deterministic=True)
    m["flops"] = Metric(flops, "FLOP (FlopCounterMode, 2 per multiply-add)", deterministic=True)
    m["rel_error"] = Metric(err, "rel. vs fp64")
    return Record(metrics=m, samples=s, notes=notes)


def _fp8_matmul(fmt: str, a32: "torch.Tensor", b32: "torch.Tensor", ctx: "Context") -> tuple[Callable[[], Any], str]:
    """torch._scaled_mm(A8, B8) with per-tensor scales (absmax / finfo.max, as Transformer Engine's
    current scaling); B column-major as cuBLASLt wants. e5m2 x e5m2 has no cuBLASLt kernel: on CUDA
    it falls back to e4m3 x e5m2 (the forward/gradient pairing) and says so."""
    import torch

    def quant(x: "torch.Tensor", dt: "torch.dtype", col_major: bool) -> tuple["torch.Tensor", "torch.Tensor"]:
        scale = (x.abs().max() / torch.finfo(dt).max).float().reshape(())
        q = (x.t().contiguous() / scale).to(dt).t() if col_major else (x / scale).to(dt)
        return q, scale

    dt = torch_dtype(fmt)
    for da, used in ((dt, fmt), (torch.float8_e4m3fn, "ran as e4m3 x e5m2: no e5m2 x e5m2 kernel here")):
        a8, sa = quant(a32, da, False)
        b8, sb = quant(b32, dt, True)

        def fn(a8: Any = a8, b8: Any = b8, sa: Any = sa, sb: Any = sb) -> Any:
            return torch._scaled_mm(a8, b8, scale_a=sa, scale_b=sb, out_dtype=torch.bfloat16)

        try:
            fn()
            return fn, used
        except RuntimeError:
            if da == torch.float8_e4m3fn:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def _block_row(fmt: str, p: PrecisionParams, ctx: "Context") -> Record:
    import torch

    from plugins.common.gpt import Block, config_from

    cfg = config_from(p.model)
    dev = ctx.device
    torch.manual_seed(ctx.seed)
    ref_block = Block(cfg).to(dev)
    g = torch.Generator().manual_seed(ctx.seed)
    x32 = torch.randn(p.batch, p.seq, cfg.d_model, generator=g).to(dev)
    go32 = torch.randn(p.batch, p.seq, cfg.d_model, generator=g).to(dev)
    notes = [f"block: gpt.Block of the {p.model} preset (d={cfg.d_model}, {cfg.n_head} heads), input [{p.batch}, {p.seq}, "
             f"{cfg.d_model}], forward + backward; FLOPs counted once on the fp32 block (the same math in every format); "
             "rel_error = output vs the float64 block"]  # fmt: skip

    def fwd_bwd(block: Any, x: Any, go: Any) -> Callable[[], Any]:
        def step() -> Any:
            for q in block.parameters():
                q.grad = None
            x.grad = None
            y = block(x)
            y.backward(go)
            return y

        return step

    with tf32_mode(False):
        x = x32.clone().requires_grad_(True)
        flops = ctx.count_flops(fwd_bwd(ref_block, x, go32))
        with torch.no_grad():
            ref = copy.deepcopy(ref_block).double()(x32.double())
    if fmt.startswith("fp8"):
        from torchao.float8 import convert_to_float8_training  # CUDA only (checked by the caller)

        block = convert_to_float8_training(copy.deepcopy(ref_block).to(torch.bfloat16))
        dt = torch.bfloat16
        notes.append("fp8: torchao.float8.convert_to_float8_training on a bf16 block (Linear matmuls in fp8, rest bf16)")
    else:
        dt = torch_dtype(fmt)
        block = copy.deepcopy(ref_block).to(dt)
    x = x32.to(dt).requires_grad_(True)
    go = go32.to(dt)
    step = fwd_bwd(block, x, go)
    with tf32_mode(fmt == "tf32"):
        with torch.no_grad():
            err = rel_error(block(x32.to(dt)), ref)
        m, s = _timing_block(ctx, step, flops, _throughput_dtype(fmt), _with_matmul(fmt, ctx))
    m["flops"] = Metric(flops, "FLOP (FlopCounterMode, forward + backward)", deterministic=True)
    m["rel_error"] = Metric(err, "rel. vs fp64")
    m["tokens_per_s"] = Metric(p.batch * p.seq / float(m["time_ms"].value) * 1e3, "tokens/s (forward + backward)")
    return Record(metrics=m, samples=s, notes=notes)


def _train_row(fmt: str, scaler_on: bool, p: PrecisionParams, ctx: "Context") -> Record:
    import torch

    from plugins.common.gpt import GPT, config_from
    from plugins.common.text import get_batch

    dev = ctx.device
    cfg = config_from(p.model)
    torch.manual_seed(ctx.seed)
    model = GPT(cfg).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=p.lr, betas=(0.9, 0.95), weight_decay=0.1)
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(fmt)
    scaler = torch.amp.GradScaler(dev.type) if fmt == "fp16" and scaler_on else None
    params = list(model.parameters())
    n_el = sum(q.numel() for q in params)
    gen = torch.Generator().manual_seed(ctx.seed)  # the same batches for every format
    losses: list[float] = []
    scales: list[float] = []
    overflow = skipped = 0
    zero_pct: list[float] = []

    def step(x: Any, y: Any, record: bool = True) -> tuple[float, bool, bool]:
        with torch.autocast(dev.type, dtype=amp or torch.bfloat16, enabled=amp is not None):
            _, loss = model(x, y)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
        else:
            loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(params, 1.0)
        if record:  # one device sync per step
            zeros = torch.stack([(q.grad == 0).sum() for q in params if q.grad is not None]).sum()
            zero_pct.append(100.0 * float(zeros) / n_el)
        bad = not math.isfinite(float(gn))
        was_skipped = False
        if scaler is not None:
            before = scaler.get_scale()
            scaler.step(opt)
            scaler.update()
            was_skipped = scaler.get_scale() < before  # the scaler skips the step and halves the scale
            if record:
                scales.append(before)
        else:
            opt.step()  # without a scaler a non-finite gradient goes into the weights
        opt.zero_grad(set_to_none=True)
        return float(loss.detach()), bad, was_skipped

    with tf32_mode(fmt == "tf32"):
        for _ in range(p.steps):
            x, y = get_batch("train", p.batch, p.seq, gen, dev)
            loss, bad, sk = step(x, y)
            losses.append(loss)
            overflow += bad
            skipped += sk
    # final loss: the trained weights on fixed validation batches, evaluated in fp32 for every format
    gv = torch.Generator().manual_seed(ctx.seed + 1)
    with torch.no_grad(), tf32_mode(False):
        vals = [float(model(*get_batch("val", p.batch, p.seq, gv, dev))[1]) for _ in range(EVAL_BATCHES)]
    final = sum(vals) / len(vals)
    last = losses[-10:]
    train_last = sum(last) / len(last)
    nonfinite_loss = sum(not math.isfinite(v) for v in losses)
    diverged = not math.isfinite(final) or nonfinite_loss > 0 or not train_last < losses[0]
    final_scale = scaler.get_scale() if scaler is not None else None
    # speed: more steps of the same loop on the last batch (after the loss curve is recorded)
    xb, yb = get_batch("train", p.batch, p.seq, torch.Generator().manual_seed(ctx.seed), dev)
    from bench.contract import timing_metrics

    with tf32_mode(fmt == "tf32"):
        t = ctx.time(lambda: step(xb, yb, record=False))
    tm, ts = timing_metrics(t, "step")
    m: dict[str, Metric] = {
        "final_loss": Metric(final, "nats/token", deterministic=True),
        "train_loss": Metric(train_last, "nats/token (mean of the last 10 training steps)", deterministic=True),
        "first_loss": Metric(losses[0], "nats/token (step 1)", deterministic=True),
        "steps": Metric(p.steps, "optimizer steps", deterministic=True),
        "overflow_steps": Metric(overflow, "steps", deterministic=True),
        "skipped_steps": Metric(skipped, "steps the GradScaler skipped", deterministic=True),
        "nonfinite_loss_steps": Metric(nonfinite_loss, "steps with a non-finite loss", deterministic=True),
        "diverged": Metric(diverged, "non-finite loss, or last-10 train loss not below step 1", deterministic=True),
        "zero_grad_pct": Metric(sum(zero_pct) / len(zero_pct), "% of gradient elements exactly 0 (mean over steps)",
                                deterministic=True),  # fmt: skip
        "params": Metric(n_el, "parameters", deterministic=True),
        **tm,
        "tokens_per_s": Metric(p.batch * p.seq / t.median_s, "tokens/s (training step)"),
    }
    samples = {"loss": losses, **ts}
    if scales:
        samples["scale"] = scales
        m["final_scale"] = Metric(final_scale, "GradScaler scale after the last training step", deterministic=True)
    how = {"fp32": "fp32 weights and compute", "tf32": "fp32 weights, TF32 matmuls", "bf16": "torch.autocast bf16 (fp32 weights)",
           "fp16": f"torch.autocast fp16 (fp32 weights), GradScaler {'on' if scaler_on else 'off'}"}[fmt]  # fmt: skip
    notes = [f"train: GPT {p.model} ({n_el} params), seed {ctx.seed}, {p.steps} steps x {p.batch} x {p.seq} tokens of "
             f"real text (plugins/common/text.py), AdamW lr {p.lr:g} betas 0.9/0.95 wd 0.1, clip 1.0; same init and "
             f"batches for every format; final_loss = fp32 eval on {EVAL_BATCHES} fixed validation batches; overflow_steps = "
             "steps with a non-finite gradient norm (the GradScaler skips them; without one they reach the weights)"]  # fmt: skip
    notes.append(f"train {fmt}{' scaler ' + ('on' if scaler_on else 'off') if fmt == 'fp16' else ''}: {how}")
    return Record(metrics=m, samples=samples, notes=notes)


# --- training memory ------------------------------------------------------------------------------
@dataclass
class _TrainSetup:
    model: Any
    opt: Any
    master: Any  # nn.ParameterList of fp32 master weights (16-bit formats) or None
    step: Callable[[Any, Any], None]


def _make_optimizer(kind: str, params: Any) -> Any:
    import torch

    if kind == "adamw8bit":
        import bitsandbytes as bnb

        return bnb.optim.AdamW8bit(params, lr=1e-3)
    return torch.optim.AdamW(params, lr=1e-3)


def _train_setup(fmt: str, optim: str, p: PrecisionParams, ctx: "Context") -> _TrainSetup:
    """fp32/tf32: fp32 weights + optimizer. bf16/fp16: 16-bit weights and gradients; the optimizer
    updates fp32 master weights, then copies them back (ZeRO paper sec. 3.1: 2 + 2 + 12 bytes/param)."""
    import torch

    from plugins.common.gpt import GPT, config_from

    torch.manual_seed(ctx.seed)
    model = GPT(config_from(p.model)).to(ctx.device)
    if fmt in ("fp32", "tf32"):
        opt = _make_optimizer(optim, model.parameters())

        def step(x: Any, y: Any) -> None:
            opt.zero_grad(set_to_none=True)
            _, loss = model(x, y)
            loss.backward()
            opt.step()

        return _TrainSetup(model, opt, None, step)
    model = model.to(torch_dtype(fmt))
    master = torch.nn.ParameterList([torch.nn.Parameter(q.detach().float().clone()) for q in model.parameters()])
    opt = _make_optimizer(optim, master.parameters())

    def mp_step(x: Any, y: Any) -> None:
        model.zero_grad(set_to_none=True)
        _, loss = model(x, y)
        loss.backward()
        for mq, q in zip(master, model.parameters()):
            mq.grad = q.grad.float()  # fp32 gradient for the update only: freed right after
        opt.step()
        with torch.no_grad():
            for mq, q in zip(master, model.parameters()):
                q.copy_(mq)
                mq.grad = None

    return _TrainSetup(model, opt, master, mp_step)


@dataclass
class _Point:
    batch: int
    seq: int
    total: float  # bytes/param at the step's peak
    at_peak: dict[str, int]

    @property
    def tokens(self) -> int:
        return self.batch * self.seq


def _step_counter_bytes(opt: Any) -> int:
    """Bytes of the optimizers' per-tensor step counters (0-d tensors), reported apart from m and v."""
    import torch

    return sum(int(v.numel() * v.element_size()) for st in opt.state.values() for k, v in st.items()
               if k == "step" and torch.is_tensor(v))  # fmt: skip


def _trainmem_row(fmt: str, optim: str, p: PrecisionParams, ctx: "Context") -> Record:
    import torch

    from bench.memory import param_count
    from plugins.common.text import get_batch

    s = _train_setup(fmt, optim, p, ctx)
    n = param_count(s.model)
    tracked = s.model
    if s.master is not None:  # so that MemTracker files the fp32 master weights under parameters too
        tracked = torch.nn.Module()
        tracked.model, tracked.master = s.model, s.master
    gen = torch.Generator().manual_seed(ctx.seed)
    with tf32_mode(fmt == "tf32"):
        s.step(*get_batch("train", 1, p.seq, gen, ctx.device))  # creates the optimizer state
    # at rest, after a real step (gradients still allocated, as the notes count them)
    sb = ctx.state_bytes(s.model, s.opt)
    master = ctx.state_bytes(s.master)["parameters"] if s.master is not None else 0
    counters = _step_counter_bytes(s.opt)
    states = sb["parameters"] + sb["gradients"] + master + sb["optimizer_state"]
    m: dict[str, Metric] = {
        "params": Metric(n, "parameters", deterministic=True),
        "params_bytes_per_param": Metric(sb["parameters"] / n, "bytes/param (weights)", deterministic=True),
        "grads_bytes_per_param": Metric(sb["gradients"] / n, "bytes/param (gradients)", deterministic=True),
        "master_bytes_per_param": Metric(master / n, "bytes/param (fp32 master weights)", deterministic=True),
        "optim_bytes_per_param": Metric(sb["optimizer_state"] / n, "bytes/param (optimizer state incl. step counters)",
                                        deterministic=True),  # fmt: skip
        "step_counter_bytes": Metric(counters, "bytes (optimizer step counters, in optim above)", deterministic=True),
        "state_bytes_per_param": Metric(states / n, "bytes/param",
                                        deterministic=True),  # fmt: skip
        "state_bytes_per_param_excl_counters": Metric((states - counters) / n, "bytes/param (as above, without step counters)",
                                                      deterministic=True),  # fmt: skip
    }
    # The peak of one step (MemTracker) at growing batch x seq until the total reaches 24 bytes/param:
    # batch 1, 2, 4, ... up to --batch at --seq; if batch 1 is already above, seq/2, seq/4, ... at batch 1.
    pts: list[_Point] = []

    def measure(b: int, sq: int) -> _Point:
        x, y = get_batch("train", b, sq, gen, ctx.device)
        with tf32_mode(fmt == "tf32"):
            rep = ctx.track_step(lambda: s.step(x, y), tracked, s.opt)
        pt = _Point(b, sq, rep.peak_bytes / n, dict(rep.at_peak))
        pts.append(pt)
        return pt

    b = 1
    while b <= p.batch and measure(b, p.seq).total < TARGET_BPP:
        b *= 2
    sq = p.seq
    while pts[0].total >= TARGET_BPP and sq > 1 and min(pt.total for pt in pts) >= TARGET_BPP:
        sq //= 2
        measure(1, sq)
    pts.sort(key=lambda pt: pt.tokens)
    cross = next((i for i, pt in enumerate(pts) if pt.total >= TARGET_BPP), None)
    tokens24 = None
    if cross is not None and cross > 0:
        lo, hi = pts[cross - 1], pts[cross]
        tokens24 = lo.tokens + (TARGET_BPP - lo.total) * (hi.tokens - lo.tokens) / (hi.total - lo.total)
        # one more point: the smallest config that the line between the bracketing points puts at >= 24
        if hi.batch > lo.batch:
            bb, sq = min(hi.batch, max(lo.batch + 1, math.ceil(tokens24 / p.seq))), p.seq
        else:
            bb, sq = 1, min(hi.seq, max(lo.seq + 1, math.ceil(tokens24)))
        if (bb, sq) != (hi.batch, hi.seq):
            measure(bb, sq)
            pts.sort(key=lambda pt: pt.tokens)
            cross = next(i for i, pt in enumerate(pts) if pt.total >= TARGET_BPP)
    show = pts[cross] if cross is not None else pts[-1]
    act = show.at_peak.get("activations", 0) + show.at_peak.get("temporaries", 0)
    m["batch"] = Metric(show.batch, "sequences (the reported config)", deterministic=True)
    m["seq"] = Metric(show.seq, "tokens per sequence (the reported config)", deterministic=True)
    m["total_bytes_per_param"] = Metric(show.total, "bytes/param")
    m["multiplier"] = Metric(show.total / (sb["parameters"] / n), "x the weights' bytes")
    m["act_bytes_per_param"] = Metric(act / n, "bytes/param (activations + temporaries at the peak)")
    for c in ("parameters", "gradients", "optimizer_state"):
        m[f"peak_{c}_bytes_per_param"] = Metric(show.at_peak.get(c, 0) / n, f"bytes/param ({c} at the peak)")
    if tokens24 is not None:
        m["tokens_24"] = Metric(tokens24, "tokens (batch x seq)")
    sweep = ", ".join(f"{pt.batch}x{pt.seq}: {pt.total:.2f}" for pt in pts)
    notes = [f"trainmem: GPT {p.model}, {n} params; state_bytes_per_param = weights + grads + master + optimizer at rest "
             "(ctx.state_bytes after a real step, gradients kept); total_bytes_per_param = the peak of one step "
             "(ctx.track_step, torch MemTracker: zero_grad(set_to_none) + forward + backward + step) at the reported "
             f"batch x seq; tokens_24 = batch x seq where the total reaches {TARGET_BPP:g} bytes/param (linear between the "
             "two measured points around it)"]  # fmt: skip
    if s.master is not None:
        notes.append(f"trainmem {fmt}: {fmt} weights and gradients, fp32 master weights updated by the optimizer; the "
                     "fp32 copy of the gradients exists only during the optimizer step (a transient 4 bytes/param)")
    m["sweep"] = Metric(sweep, "batch x seq: total bytes/param at the peak")
    samples = {"tokens": [float(pt.tokens) for pt in pts], "total_bytes_per_param": [pt.total for pt in pts]}
    return Record(metrics=m, samples=samples, notes=notes)


# --- summaries and claim evidence ----------------------------------------------------------------------
def _claim_record(claim_id: str, ev: Evidence, labels: dict[str, Any] | None = None) -> Record:
    """A summary row for one claim: the value, the verdict `bench claims` gives it, the detail."""
    from plugins.precision.claims import CLAIMS

    return claim_record(next(c for c in CLAIMS if c.id == claim_id), ev, labels)


def _storage_claims(rows: list[Row]) -> list[Record]:
    by: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by.setdefault(r.labels.get("format"), []).append(r)
    # a materialized model first: its bytes are real tensors, not meta shapes
    for lst in by.values():
        lst.sort(key=lambda r: r.labels.get("preset") in META_PRESETS)
    if not by:
        return []

    def line(fmt: str) -> str:
        return "; ".join(f"GPT {r.labels.get('preset')}: {r.value('bytes')} bytes / {r.value('params')} params "
                         f"= {r.value('bytes_per_param'):g} bytes/param" for r in by.get(fmt, []))  # fmt: skip

    out = []
    for claim_id, fmt in (("mem.store_fp32", "fp32"), ("mem.store_16bit", "bf16"), ("mem.store_16bit", "fp16")):
        if fmt not in by:
            continue
        r = by[fmt][0]
        ev = Evidence(r.value("bytes_per_param"), "bytes/param", "measured",
                      f"{fmt}: {line(fmt)} (numel x element_size)")  # fmt: skip
        out.append(_claim_record(claim_id, ev, {"format": fmt}))
    return out


def _cast_claims(rows: list[Row]) -> list[Record]:
    by = {r.labels.get("format"): r for r in rows}
    out = []
    for claim_id, fmt in (("prec.pi_fp32", "fp32"), ("prec.pi_fp16", "fp16"), ("prec.pi_bf16", "bf16"),
                          ("prec.pi_int8", "int8")):  # fmt: skip
        r = by.get(fmt)
        if r is None:
            continue
        val = r.value("value")
        ev = Evidence(val, "", "measured", f"3.141592 cast to {fmt}: stored {val}, bits {r.value('bits')} "
                      f"({r.value('fields')}), layout {r.value('layout')}; max {r.value('max'):g}")  # fmt: skip
        out.append(_claim_record(claim_id, ev, {"format": fmt}))
    if all(f in by for f in STATED_MAX):
        got = {f: float(by[f].value("max")) for f in STATED_MAX}
        checks = []
        for f, (stated, digits) in STATED_MAX.items():
            # compare at the digits the notes give: 3.4028e38 -> "3.4e38" (2 significant digits)
            shown = f"{got[f]:.{digits - 1}e}" if digits else f"{got[f]:.0f}"
            same = float(shown) == float(stated)
            checks.append((f, shown, stated, same))
        verdict = "holds" if all(c[3] for c in checks) else "fails"
        detail = "; ".join(f"{f}: torch.finfo max {got[f]:.6g} -> {shown} vs stated {stated} ({'match' if ok else 'MISMATCH'})"
                           for f, shown, stated, ok in checks)  # fmt: skip
        value = " / ".join(f"{got[f]:.5g}" for f in STATED_MAX)
        out.append(_claim_record("prec.ranges", Evidence(value, "max (fp32 / fp16 / bf16)", "measured", detail, verdict=verdict)))
    return out


def _training_claims(rows: list[Row]) -> list[Record]:
    """prec.bf16_training from fp32 and bf16 runs of the same model/steps/batch/seq/lr/seed."""
    groups: dict[tuple, dict[str, dict[str, Any]]] = {}
    for r in rows:
        pr = dataclasses.asdict(resolve(PrecisionParams(**r.params)))
        key = (pr["model"], pr["steps"], pr["batch"], pr["seq"], pr["lr"])
        lab = r.labels
        name = lab.get("format") + ("+scaler" if lab.get("scaler") == "on" else "")
        groups.setdefault(key, {})[name] = r
    out = []
    for (model, steps, batch, seq, lr), g in groups.items():
        if "fp32" not in g or "bf16" not in g:
            continue
        f32, b16 = g["fp32"].value("final_loss"), g["bf16"].value("final_loss")
        if f32 is None or b16 is None:
            continue
        pct = 100.0 * abs(b16 / f32 - 1.0)

        def desc(name: str) -> str:
            r = g[name]
            return (f"{name} {r.value('final_loss'):.4f} (overflow steps {r.value('overflow_steps')}, "
                    f"skipped {r.value('skipped_steps')}, diverged {r.value('diverged')})")  # fmt: skip

        others = [desc(k) for k in ("fp16+scaler", "fp16", "tf32") if k in g]
        detail = (f"GPT {model}, {steps} steps x {batch} x {seq} tokens, lr {lr:g}, same seed and batches; final loss "
                  f"(fp32 eval, fixed val batches): fp32 {f32:.4f}, bf16 {b16:.4f}: |bf16/fp32 - 1| = {pct:.3f}%"
                  + (f"; {'; '.join(others)}" if others else ""))  # fmt: skip
        ev = Evidence(pct, "%", "measured", detail)
        rec = _claim_record("prec.bf16_training", ev)
        for name, r in sorted(g.items()):
            rec.metrics[f"final_loss_{name.replace('+', '_')}"] = Metric(r.value("final_loss"), "nats/token",
                                                                         deterministic=True)  # fmt: skip
        out.append(rec)
    return out


def _trainmem_claims(rows: list[Row]) -> list[Record]:
    """mem.train_24x from the fp32 AdamW trainmem row: model states exactly 16 bytes/param (without the
    0-d step counters, reported apart) and the batch x seq where the measured total reaches 24."""
    out = []
    for r in rows:
        n = r.value("params")
        parts = {k: r.value(f"{k}_bytes_per_param") for k in ("params", "grads", "optim", "master")}
        counters = r.value("step_counter_bytes") or 0
        states_x = r.value("state_bytes_per_param_excl_counters")
        exact16 = states_x is not None and states_x * n == 16 * n
        total = r.value("total_bytes_per_param")
        tokens = r.value("tokens_24")
        batch, seq = r.value("batch"), r.value("seq")
        sweep = r.value("sweep") or ""
        reached = tokens is not None
        verdict = "holds" if exact16 and reached else "fails"
        where = (f"the total reaches 24 bytes/param at batch x seq ~ {tokens:.0f} tokens; "
                 f"measured {total:.2f} bytes/param at {batch} x {seq} ({total / parts['params']:.2f}x the weights)"
                 if reached else f"the sweep did not bracket 24 bytes/param (largest {batch} x {seq}: {total:.2f})")  # fmt: skip
        detail = (f"fp32 AdamW, GPT {r.labels.get('preset')} ({n} params), at rest after a real step: weights "
                  f"{parts['params']:.4f} + grads {parts['grads']:.4f} + Adam m,v "
                  f"{parts['optim'] - counters / n:.4f} = {states_x:.4f} bytes/param "
                  f"({'exactly 16' if exact16 else 'NOT 16'}; plus {counters} bytes of step counters); {where}; "
                  f"peak totals by batch x seq (bytes/param): {sweep}; at the peak gradients are "
                  f"{r.value('peak_gradients_bytes_per_param'):.2f} and activations+temporaries "
                  f"{r.value('act_bytes_per_param'):.2f} bytes/param")  # fmt: skip
        out.append(_claim_record("mem.train_24x", Evidence(total, "bytes/param", "measured", detail, verdict=verdict)))
    return out
