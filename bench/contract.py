"""The plugin contract: everything a plugin author needs, in one file.

A plugin is one class with:
  name         -- CLI name, unique across installed plugins
  description  -- one line for `bench list`
  Params       -- a frozen dataclass; each field is a CLI flag and a result column.
                  Field metadata: help (str), choices (tuple of allowed values).
  grid(profile)           -> list of partial Params dicts: the cases of a profile
  available(params)       -> None, or the reason it cannot run here (no CUDA, ...)
  validate(params)        -> None, or why this combination is invalid (checked before launch)
  launch(params)          -> Launch: a fresh process, or torchrun with N ranks; time limit
  run(params, ctx)        -> list[Record]: runs in the child process; uses ctx (the core) to
                             time, measure memory and count FLOPs. Never times anything itself.
  summarize(rows)         -> list[Record]: optional cross-case analysis (fits, ratios),
                             runs in the parent over the rows of the run.

Sources: every metric says where it came from: measured, simulated, or formula.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

if TYPE_CHECKING:  # pragma: no cover
    from bench.context import Context

PROFILES = ("quick", "full", "gpu")
Source = Literal["measured", "simulated", "formula"]
Status = Literal["ok", "skipped", "oom", "error", "timeout"]
STATUSES: tuple[str, ...] = ("ok", "skipped", "oom", "error", "timeout")
SOURCES: tuple[str, ...] = ("measured", "simulated", "formula")


@dataclass
class Metric:
    """One number with its unit and provenance.

    better: "lower" | "higher" | None -- the direction regress uses (None: inferred from
        the name/unit: times, bytes, losses, errors lower; throughput, TFLOP/s, MFU higher).
    deterministic: True for figures that must not change run to run on the same machine and
        software (bytes, FLOP counts, fixed-seed losses); regress compares them exactly or
        within a stated tolerance instead of with statistics.
    """

    value: float | int | str | bool | None
    unit: str = ""
    source: Source = "measured"
    better: str | None = None
    deterministic: bool = False

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"value": self.value, "unit": self.unit, "source": self.source}
        if self.better:
            d["better"] = self.better
        if self.deterministic:
            d["deterministic"] = True
        return d


@dataclass
class Evidence:
    """What a record contributes to a documented claim (ids of shared/claims.md; registry in
    bench/claims.json).

    value is what was measured (or simulated); the registry's check compares it with the
    registry's expected value, or with `expected` when the plugin computed the formula for
    the exact configuration it ran (dtypes, world size). For checks the registry declares as
    type "plugin", the plugin sets verdict ("holds"/"fails") and `detail` says what was
    compared with which numbers.
    """

    value: float | int | str | bool | None
    unit: str = ""
    source: Source = "measured"
    detail: str = ""
    expected: float | int | str | None = None  # the formula's value for this exact config, when the plugin computes it
    verdict: str | None = None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Record:
    """One result row's payload as a plugin returns it.

    labels identify the row beyond the case parameters (rank, the dtype of one cast row,
    a sub-measurement name); compare/regress match rows on plugin + params + labels.
    samples keep raw data (e.g. {"time_s": [...]}) for statistics later.
    """

    metrics: dict[str, Metric] = field(default_factory=dict)
    labels: dict[str, Any] = field(default_factory=dict)
    samples: dict[str, list[float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    evidence: dict[str, Evidence] = field(default_factory=dict)
    status: Status = "ok"
    message: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "message": self.message,
            "labels": dict(self.labels),
            "metrics": {k: m.to_json() for k, m in self.metrics.items()},
            "samples": {k: [float(x) for x in v] for k, v in self.samples.items()},
            "notes": list(self.notes),
            "evidence": {k: e.to_json() for k, e in self.evidence.items()},
        }


@dataclass(frozen=True)
class Launch:
    """How the core starts a case. kind: "process" (one fresh interpreter) or
    "torchrun" (torch.distributed.run with nproc ranks on this host)."""

    kind: Literal["process", "torchrun"] = "process"
    nproc: int = 1
    timeout_s: float = 300.0


def choices_of(f: dataclasses.Field) -> tuple[Any, ...] | None:
    c = f.metadata.get("choices")
    return tuple(c) if c is not None else None


def help_of(f: dataclasses.Field) -> str:
    return str(f.metadata.get("help", ""))


def param(default: Any, help: str = "", choices: tuple[Any, ...] | None = None) -> Any:
    """A Params field: `stage: int = param(3, "ZeRO stage", choices=(0, 1, 2, 3))`."""
    md: dict[str, Any] = {"help": help}
    if choices is not None:
        md["choices"] = tuple(choices)
    return field(default=default, metadata=md)


class Plugin:
    """Base class with the optional hooks' defaults. Subclass once; no deeper."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    Params: ClassVar[type] = object

    def grid(self, profile: str) -> list[dict[str, Any]]:
        return [{}]

    def available(self, params: Any) -> str | None:
        return None

    def validate(self, params: Any) -> str | None:
        return None

    def launch(self, params: Any) -> Launch:
        return Launch()

    def run(self, params: Any, ctx: "Context") -> list[Record]:  # pragma: no cover
        raise NotImplementedError

    def summarize(self, rows: list[dict[str, Any]]) -> list[Record]:
        return []

    def describe(self) -> str:
        """Extra text `bench list` / `bench run` print (e.g. how stages map to torch)."""
        return ""


def params_fields(plugin: Plugin) -> list[dataclasses.Field]:
    return list(dataclasses.fields(plugin.Params))
