"""The precision plugin's parameters, the per-topic defaults they resolve to, and small helpers every
topic uses (formats of a case, TF32 switch, one guarded row per format). No torch at import."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from bench.contract import Record, Skip, param
from plugins.common.numerics import FORMATS, PRESET_NAMES

WHATS = (
    "storage",
    "cast",
    "activations",
    "trainmem",
    "matmul",
    "block",
    "train",
)  # quick grid order: warm-worker cases first
DTYPES = ("all", *FORMATS)
OPTIMS = ("all", "adamw", "adamw8bit")
SCALERS = ("both", "on", "off")
META_PRESETS = ("large", "1b")  # storage builds these on the meta device (exact shapes, no memory)

TF32_SKIP = "tf32 is a tensor-core mode of NVIDIA GPUs (Ampere or later): no CUDA device here"
FP8_TRAIN_SKIP = "fp8 training is not run by this plugin (fp8 is measured as casts, matmul and, on CUDA, the block)"


@dataclass(frozen=True)
class PrecisionParams:
    what: str = param("cast", "what to measure (see `bench list --plugin precision`)", choices=WHATS)
    dtype: str = param(
        "all",
        "format; all = one row per format (the quick profile's train and trainmem: only the formats their claims "
        "compare, fp32 + bf16 and fp32)",
        choices=DTYPES,
    )
    model: str = param(
        "auto",
        "GPT preset (plugins/common/gpt.py); auto: storage small + 1b, block and trainmem small, train tiny",
        choices=("auto", *PRESET_NAMES),
    )
    size: int = param(1024, "matmul: n of the n x n @ n x n product (capped where the format is slow here)")
    batch: int = param(0, "block/train/trainmem: sequences per batch; 0: block 8, train 8, trainmem 8")
    seq: int = param(64, "block/train/trainmem: tokens per sequence")
    steps: int = param(100, "train: optimizer steps")
    lr: float = param(3e-3, "train: AdamW learning rate (betas 0.9/0.95, weight decay 0.1, clip 1.0)")
    scaler: str = param("on", "train, fp16: with a GradScaler (on), without (off), or both", choices=SCALERS)
    optim: str = param("adamw", "trainmem: torch AdamW, bitsandbytes AdamW8bit, or both", choices=OPTIMS)
    scale_batch: int = param(
        1, "trainmem: the smallest batch (sequences) of the 1B GPT judged for mem.train_24x; x1, x2, x4 are run"
    )
    scale_seq: int = param(2048, "trainmem: tokens per sequence of the 1B GPT judged for mem.train_24x")


AUTO_MODEL = {"block": "small", "train": "tiny", "trainmem": "small", "matmul": "small", "cast": "small"}
AUTO_BATCH = {"block": 8, "train": 8, "trainmem": 8}
SCALE_PRESET = "1b"  # mem.train_24x: the notes' "1B parameters"
SCALE_SWEEP = (1, 2, 4)  # mem.train_24x: multiples of --scale-batch run (the notes give no batch)


def scale_sweep(cuda: bool) -> tuple[int, ...]:
    """The sweep's multiples on a device. On CUDA only the first: the 1B GPT is measured there for real
    beside its simulation, and the other points' simulations (fake tensors, tracked on the CPU whatever
    the device) would repeat the CPU run's exactly, at ~11 s each, past the GPU script's precision share."""
    return SCALE_SWEEP[:1] if cuda else SCALE_SWEEP


def resolve(p: PrecisionParams) -> PrecisionParams:
    """model auto and batch 0 replaced by the topic's defaults (storage keeps auto: two presets)."""
    model = p.model if p.model != "auto" or p.what in ("storage", "activations") else AUTO_MODEL[p.what]
    batch = p.batch or AUTO_BATCH.get(p.what, 1)
    return dataclasses.replace(p, model=model, batch=batch)


def params_of(values: dict[str, Any]) -> PrecisionParams:
    """Params from a row's params dict (rows written by older versions may lack or add fields)."""
    known = {f.name for f in dataclasses.fields(PrecisionParams)}
    return PrecisionParams(**{k: v for k, v in values.items() if k in known})


def formats_of(p: PrecisionParams) -> list[str]:
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


def guarded(labels: dict[str, Any], fn: Callable[[], Record]) -> Record:
    """One format's row: Skip -> a skipped row, any other failure -> an error (or oom) row for that
    format only; the case's other formats keep their rows."""
    from bench.worker import is_oom

    try:
        rec = fn()
    except Skip as e:
        rec = Record(status="skipped", message=str(e))
    except Exception as e:  # reported in the row
        rec = Record(status="oom" if is_oom(e) else "error", message=f"{type(e).__name__}: {e}"[:1500])
    rec.labels = {**labels, **rec.labels}
    return rec


def skipped(labels: dict[str, Any], why: str) -> Record:
    return Record(status="skipped", message=why, labels=dict(labels))
