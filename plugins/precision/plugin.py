"""The precision plugin: number formats for training and inference -- what they store, what they round
to, how fast they multiply, how they train, and what training keeps in memory.

One case measures one topic (--what) for one format or for every format (--dtype all: one row per
format, labelled `format`):
  storage      exact bytes of a real model's parameters in each format (storage.py)
  cast         3.141592 stored in each format: exact value, bits, layout, range; fp16/bf16 probes (cast.py)
  matmul       n x n matmul: time, TFLOP/s, % of the dense peak, error vs fp64 (matmul.py)
  block        a transformer block forward + backward: the same (block.py)
  train        one GPT, seed and batches trained in each format: loss curve, overflows (train.py)
  trainmem     a training step's memory per parameter by category; the 1B GPT at the notes' scale
               (trainmem.py, scale.py)
  activations  bytes per layer kept for backward: formula vs MemTracker (activations.py)
Formats whose kernels are slow here run within a per-format budget (budget.py); tf32 without CUDA,
fp8 training and an fp8 block without CUDA/torchao are `skipped` rows with the reason.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from bench.contract import Launch, Plugin, Record, Row, Section
from plugins.precision import budget as B
from plugins.precision.claims import CLAIMS
from plugins.precision.params import TF32_SKIP, WHATS, PrecisionParams, resolve

if TYPE_CHECKING:  # pragma: no cover
    from bench.context import Context

# exact bytes, casts, MemTracker on tiny real models and on fake tensors (no memory): nothing here can crash,
# hang or exhaust memory, so these share the run's warm worker (and its imports of the fake-tensor machinery)
WARM = ("storage", "cast", "activations", "trainmem")
TIMEOUT_S = {"train": 600.0, "trainmem": 300.0, "activations": 120.0}


class PrecisionPlugin(Plugin):
    name = "precision"
    description = "fp32/tf32/fp16/bf16/fp8: storage bytes, exact casts, matmul/block speed, training loss and memory"
    version = "3"
    Params = PrecisionParams
    claims = CLAIMS
    metrics = {
        "bytes_per_param": "bytes per parameter of the stored model (numel x element_size / params)",
        "value": "the exact decimal of 3.141592 stored in a format",
        "max": "torch.finfo(format).max",
        "bf16_vs_fp32_pct": "|final loss bf16 / fp32 - 1| in %, same model, text and seed",
        "total_bytes_per_param": "peak bytes of one fp32 AdamW training step per parameter (the larger phase)",
        "mismatches": "fp16 probe: values whose cast differs from an unscaled round-to-nearest-even",
        "differ_from_truncation": "bf16 probe: values whose cast differs from truncating the fp32 bits",
        "act_dev_pct": "largest |measured / the project's torch model - 1| of activation bytes per layer, in %",
        "act_paper_dev_pct": "largest |measured / Korthikanti's sbh(34 + 5as/h) as printed - 1| per layer, in %",
        "layout": "sign/exponent/fraction bits of a format",
        "ratio": "activations: measured / formula bytes per layer",
    }
    normalised = ("bytes_per_param", "total_bytes_per_param", "ratio")
    table_metrics = (
        "bytes_per_param",
        "value",
        "bits",
        "layout",
        "max",
        "time_ms",
        "tflops",
        "mfu",
        "rel_error",
        "final_loss",
        "overflow_steps",
        "state_bytes_per_param",
        "total_bytes_per_param",
        "formula_bytes",
        "measured_bytes",
        "ratio",
    )

    def grid(self, profile: str) -> list[dict[str, Any]]:
        # quick: one case per topic, every other parameter at its default, so `--what X` gives one case
        if profile == "quick":
            return [{"what": w} for w in WHATS]
        if profile == "full":
            return [
                {"what": "storage"},
                *({"what": "storage", "model": m} for m in ("medium", "large")),
                {"what": "cast"},
                {"what": "activations"},
                *({"what": "matmul", "size": n} for n in (512, 1024, 2048)),
                *({"what": "block", "model": m, "seq": 128} for m in ("small", "medium")),
                {"what": "train", "batch": 16, "steps": 400, "scaler": "both"},
                {"what": "trainmem", "seq": 128, "batch": 16, "optim": "all"},
                {"what": "trainmem", "scale_batch": 2},
            ]
        if profile == "gpu":  # one H100/H200: ~60 s with start-up (`bench run --plan`); most valuable first
            return [
                {"what": "matmul", "dtype": "bf16", "size": 8192},  # the device's bf16 dense TFLOP/s vs its datasheet
                {"what": "activations"},  # formula vs MemTracker per layer with the CUDA kernels
                {"what": "trainmem", "dtype": "fp32"},  # the 1B GPT measured for real beside its simulation
                {"what": "matmul", "dtype": "fp8_e4m3", "size": 8192},
                {"what": "storage"},
                {"what": "cast"},
                {"what": "matmul", "dtype": "tf32", "size": 8192},
            ]
        return [{}]

    def validate(self, p: PrecisionParams) -> str | None:
        for f in ("size", "seq", "steps", "scale_batch", "scale_seq"):
            if getattr(p, f) < 1:
                return f"--{f.replace('_', '-')} must be >= 1, got {getattr(p, f)}"
        if p.batch < 0:
            return f"--batch must be >= 0 (0: the topic's default), got {p.batch}"
        if not p.lr > 0:
            return f"--lr must be > 0, got {p.lr}"
        r = resolve(p)
        from plugins.common.gpt import PRESETS

        if r.what in ("block", "train", "trainmem") and r.seq > PRESETS[r.model].block_size:
            return f"--seq {r.seq} is longer than the {r.model} preset's block_size {PRESETS[r.model].block_size}"
        if r.what == "trainmem" and r.scale_seq > PRESETS["1b"].block_size:
            return f"--scale-seq {r.scale_seq} is longer than the 1b preset's block_size {PRESETS['1b'].block_size}"
        return None

    def available(self, p: PrecisionParams) -> str | None:
        import torch

        if p.dtype == "tf32" and p.what in ("matmul", "block", "train", "trainmem") and not torch.cuda.is_available():
            return TF32_SKIP
        if p.what == "trainmem" and p.optim == "adamw8bit" and importlib.util.find_spec("bitsandbytes") is None:
            return "bitsandbytes is not installed (pip install bitsandbytes, or `pip install -e .[quant]`)"
        return None

    def launch(self, p: PrecisionParams) -> Launch:
        r = resolve(p)
        # one thread where the work is Python bookkeeping (MemTracker, fake tensors) or a model too small to split
        # (tiny/small GPT steps): a second thread only spin-waits, and on a shared machine it makes a 17 ms training
        # step take 0.5 s (measured here under load); matmul and block keep every core
        one = r.what in WARM or (r.what == "train" and r.model in ("tiny", "small"))
        threads = 1 if one else None
        if p.what in WARM and not (p.what == "trainmem" and self._real_big_step(p)):
            return Launch(reuse=True, timeout_s=TIMEOUT_S.get(p.what, 60.0), threads=threads)
        if p.what == "matmul":  # one product per format, probed and budgeted: cannot hang or exhaust memory
            return Launch(reuse=True, timeout_s=TIMEOUT_S.get(p.what, 120.0))
        return Launch(timeout_s=TIMEOUT_S.get(p.what, 120.0), threads=threads)

    @staticmethod
    def _real_big_step(p: PrecisionParams) -> bool:
        """trainmem with real memory at stake: the 1B GPT measured on CUDA, or a large preset measured."""
        import torch

        return torch.cuda.is_available() or p.model in ("large", "1b")

    def estimate_s(self, p: PrecisionParams, device_type: str) -> float:
        return B.estimate_s(p, device_type)

    def describe(self) -> str:
        return (
            "--what: storage = exact bytes of a GPT's parameters per format; cast = 3.141592 stored in each "
            "format (exact value, bits, layout, finfo range) + fp16 scale and bf16 rounding probes; matmul, block = "
            "time, TFLOP/s, % of the dense peak, error vs fp64, each format within its own budget; train = one GPT, "
            "seed and batches in fp32/tf32/bf16/fp16: loss curve, final loss, overflows; trainmem = weights + grads + "
            "optimizer at rest and each phase's peak per parameter, and the 1B GPT at the notes' scale (simulated); "
            "activations = bytes per layer, formula (Korthikanti et al. 2022, adapted) vs MemTracker. "
            "--dtype all: one row per format."
        )

    # The parameters each topic reads (PrecisionParams' help): rows of one topic pair across runs on
    # these and the labels (format, preset), whatever the others were (a matmul's optimizer, lr, steps).
    CASE_PARAMS: ClassVar[dict[str, tuple[str, ...]]] = {
        "storage": ("model",),
        "cast": (),
        "activations": ("model", "batch", "seq"),
        "trainmem": ("model", "batch", "seq", "optim", "scale_batch", "scale_seq"),
        "matmul": ("size",),
        "block": ("model", "batch", "seq"),
        "train": ("model", "batch", "seq", "steps", "lr", "scaler"),
    }

    def case_keys(self, kind: str, params: Mapping[str, Any], labels: Mapping[str, Any]) -> Sequence[str] | None:
        what = params.get("what")
        if kind != "case" or what not in self.CASE_PARAMS:
            return None
        # `n`: the size a format's time budget chose (a probe's outcome, not the case's definition)
        return ["what", *self.CASE_PARAMS[str(what)], *(k for k in labels if k != "n")]

    def run(self, p: PrecisionParams, ctx: Context) -> list[Record]:
        from plugins.precision import activations, block, cast, matmul, storage, train, trainmem

        p = resolve(p)
        topic = {
            "storage": storage.run_storage,
            "cast": cast.run_cast,
            "matmul": matmul.run_matmul,
            "block": block.run_block,
            "train": train.run_train,
            "trainmem": trainmem.run_trainmem,
            "activations": activations.run_activations,
        }[p.what]
        out = topic(p, ctx)
        if p.what in ("block", "train"):
            for r in out:
                r.labels.setdefault("preset", p.model)
        return out

    def summarize(self, rows: list[Row]) -> list[Record]:
        from plugins.precision.summary import summarize

        return summarize(rows)

    def report(self, rows: list[Row], out_dir: Path) -> list[Section]:
        from plugins.precision.report import sections

        return sections(rows, out_dir)
