"""The plugin contract: everything a plugin author touches, in one file.

A plugin is one class, registered through the entry-point group "bench.plugins"
(`[project.entry-points."bench.plugins"] name = "pkg.module:Class"` in its own pyproject.toml):

  name           CLI name, unique across installed plugins (== the entry point's name)
  description    one line for `bench list`
  Params         a frozen dataclass; each field is a CLI flag and a result column, declared with
                 param(default, help, choices). No field may take the name of a `bench run` option
                 (RESERVED_FLAGS): discovery refuses such a plugin.
  table_metrics  the metrics tables and `bench compare` show by default, in order
  metrics        {name: meaning and unit} of the metrics other code relies on (claims' evidence,
                 normalised comparisons); every claim's `metric` must be declared here
  normalised     metric names comparable across devices (bytes per parameter, % of a peak);
                 `bench compare` shows them beside the core's mfu / pct_matmul
  claims         the documented claims this plugin's measurements judge (Claim, below)

  grid(profile)          -> list of partial Params dicts: the cases of a profile (quick, full, gpu)
  available(params)      -> None, or why it cannot run here (no CUDA, no bitsandbytes): a skipped row
  validate(params)       -> None, or why this combination is invalid (exit 2 before anything launches)
  launch(params)         -> Launch: a fresh process (reuse=True: a warm one shared with other cheap
                            cases), or torchrun with N ranks; the case's time limit
  estimate_s(params, device_type) -> expected seconds of one case's work (process start-up excluded),
                            for `bench run --plan`; None when unknown
  run(params, ctx)       -> list[Record]: runs in the child process. ctx (bench.context.Context) is the
                            core: ctx.time(fn), ctx.state_bytes(model, opt), ctx.track_step(fn, model, opt),
                            ctx.peak_above(fn), ctx.count_flops(fn), ctx.throughput(flops, s, dtype),
                            ctx.afford(...) (probe a kernel's cost, pick a size or Skip). A plugin never
                            times or measures memory itself. raise Skip(reason) for a skipped row.
  summarize(rows)        -> list[Record]: cross-case analysis (fits, ratios, claim evidence) over the
                            plugin's rows of a run (list[Row]); also run by `bench summarize FILE`.
  report(rows, out_dir)  -> list[Section]: the plugin's part of `bench report` (plots written into
                            out_dir, tables); the core lays sections out and adds the claims table.
  describe()             -> extra text for `bench list` / `bench run` (e.g. how stages map to torch)

Rows (bench.rows.Row, re-exported here) are what summarize() and report() receive: typed, with one
accessor per fact (row.value(name), row.number(name), row.get(name), row.device, row.ok ...).

Every number says where it came from: source "measured" (this machine, this run), "simulated"
(fake process group / fake tensors) or "formula" (a stated formula). A claim's verdict rests on
one of three kinds of evidence: measured, simulated, or published (arithmetic over numbers printed
in a paper or datasheet, which validates nothing about the machine at hand).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from bench.rows import FAILED, SOURCES, STATUSES, Evidence, Metric, Row

if TYPE_CHECKING:  # pragma: no cover
    from bench.context import Context
    from bench.memory import MemoryReport
    from bench.timing import Timing

__all__ = [
    "FAILED",
    "KINDS",
    "PROFILES",
    "RESERVED_FLAGS",
    "SOURCES",
    "STATUSES",
    "Check",
    "Claim",
    "Context",
    "Evidence",
    "Figure",
    "Judged",
    "Launch",
    "Metric",
    "NoParams",
    "Plugin",
    "Record",
    "Row",
    "Section",
    "Skip",
    "Table",
    "claim_record",
    "judge",
    "memory_metrics",
    "param",
    "timing_metrics",
]

PROFILES = ("quick", "full", "gpu")
Source = Literal["measured", "simulated", "formula"]
Status = Literal["ok", "skipped", "oom", "error", "timeout"]
KINDS = ("measured", "simulated", "published")  # what a verdict rests on
# Options of `bench run` itself: a plugin flag of one of these names would be swallowed by it.
RESERVED_FLAGS = (
    "plugin",
    "all",
    "profile",
    "out",
    "timeout",
    "seed",
    "threads",
    "device",
    "max-time",
    "format",
    "strict",
    "plan",
    "deadline",
    "nnodes",
    "nproc-per-node",
    "rdzv-endpoint",
    "rdzv-id",
    "rdzv-timeout",
    "node-rank",
    "all-nodes-local",
    "help",
    "h",
)


# --- what run() returns -------------------------------------------------------------------------
@dataclass
class Record:
    """One result row's payload as a plugin returns it.

    labels identify the row beyond the case parameters (rank, the dtype of one cast row, a claim);
    compare/regress match rows on plugin + params + labels. samples keep raw data (e.g.
    {"time_s": [...]}) for statistics later.
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


class Skip(Exception):
    """Raised in run(): the case becomes a `skipped` row with this reason (say what was measured,
    e.g. "fp8 _scaled_mm: one 256^3 call took 2.1 s; budget 5 s for the case")."""


@dataclass(frozen=True)
class Launch:
    """How the core starts a case.

    kind: "process" (one fresh interpreter) or "torchrun" (torch.distributed.run with nproc ranks
        per node; across nodes when `bench run --nnodes` says so).
    reuse: a "process" case that cannot crash, hang or exhaust memory (exact bytes, casts,
        formulas) may run in a warm worker shared with other such cases (no interpreter start-up
        each); its time limit still holds, and a failure costs only that case.
    threads: torch threads per process the case wants (e.g. 1 for models too small to split
        across cores); None: cores / ranks. The user's `bench run --threads` always wins.
    """

    kind: Literal["process", "torchrun"] = "process"
    nproc: int = 1
    timeout_s: float = 300.0
    reuse: bool = False
    threads: int | None = None


def param(default: Any, help: str = "", choices: Sequence[Any] | None = None) -> Any:
    """A Params field: `stage: int = param(3, "ZeRO stage", choices=(0, 1, 2, 3))`."""
    md: dict[str, Any] = {"help": help}
    if choices is not None:
        md["choices"] = tuple(choices)
    return field(default=default, metadata=md)


def choices_of(f: dataclasses.Field[Any]) -> tuple[Any, ...] | None:
    c = f.metadata.get("choices")
    return tuple(c) if c is not None else None


def help_of(f: dataclasses.Field[Any]) -> str:
    return str(f.metadata.get("help", ""))


@dataclass(frozen=True)
class NoParams:
    """The Params of a plugin without parameters."""


# --- claims --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Figure:
    """One number a verdict stands on. source: measured | simulated | formula | published."""

    value: Any
    unit: str = ""
    source: str = "measured"
    detail: str = ""


@dataclass(frozen=True)
class Judged:
    """What a formula check returns: the verdict computed from printed numbers, the arithmetic in
    words (every number compared), and the figures it produced."""

    verdict: Literal["holds", "fails", "reported"]
    reason: str
    figures: tuple[Figure, ...] = ()


ERROR_IN = ("notes", "notes figure", "paper")  # whose error a known_error is (Claim.error_in)
CHECK_TYPES = ("exact", "rel", "abs", "range", "max", "plugin", "report", "formula", "parts")


@dataclass(frozen=True)
class Check:
    """How evidence is judged.

    exact    value == expected (strings compared as written; floats by their exact binary value)
    rel      |value / expected - 1| <= tol (expected: the evidence's own, else `value`)
    abs      |value - expected| <= tol
    range    lo <= value <= hi
    max      |value| <= value
    plugin   the plugin's verdict in the evidence ("holds"/"fails"), with its detail
    report   shown, never judged
    formula  `formula()` judges printed numbers (a Judged); evidence from rows, if any, joins it
    parts    holds when every part with a verdict holds, fails when one fails
    """

    type: str
    value: Any = None
    tol: float | None = None
    lo: float | None = None
    hi: float | None = None
    parts: tuple[str, ...] = ()
    formula: Callable[[], Judged] | None = None

    def problem(self) -> str | None:
        """Why this check cannot be evaluated, or None."""
        need = {"rel": ("tol",), "abs": ("value", "tol"), "range": ("lo", "hi"), "max": ("value",), "exact": ("value",)}
        if self.type not in CHECK_TYPES:
            return f"unknown check type {self.type!r} (one of {', '.join(CHECK_TYPES)})"
        missing = [k for k in need.get(self.type, ()) if getattr(self, k) is None]
        if missing:
            return f"check {self.type} needs {', '.join(missing)}"
        if self.type == "formula" and not callable(self.formula):
            return "check formula needs a formula()"
        if self.type == "parts" and not self.parts:
            return "check parts needs parts"
        return None


@dataclass(frozen=True)
class Claim:
    """A documented claim, judged by `bench claims` from the evidence plugins attach to rows.

    id: dotted, unique across plugins (a part of a claim: "<parent>.<part>" with parent set).
    metric: the metric (declared in Plugin.metrics) whose value is the evidence.
    needs: what would measure it where nothing did ("run `bench run --plugin X`", "needs CUDA").
    plugins: the plugins whose rows may carry its evidence (default: the declaring plugin).
    known_error: the words in error when the claim is a known error (expected verdict: fails);
    error_in: whose error it is, which the table says: "notes" (the notes' text, with line and quote),
        "notes figure" (an image of the notes; its words are not in the text), "paper" (a discrepancy
        inside the cited paper, not the notes').
    requires: "cuda" -> evidence only counts from CUDA rows.
    line, quote: for a claim taken from the course notes (shared/seed/week1-notes.md), the line and
        its exact words; the claim judges that statement, not a paraphrase.
    construction: why the harness's own code fixes the outcome (the check cannot come out otherwise);
        its holds/fails is then of kind "by construction", counted apart from measured.
    """

    id: str
    claim: str
    source: str
    expected: str
    tolerance: str
    check: Check
    needs: str
    metric: str = ""
    unit: str = ""
    parent: str | None = None
    known_error: str | None = None
    requires: str | None = None
    plugins: tuple[str, ...] = ()
    error_in: str = "notes"
    line: int | None = None
    quote: str = ""
    construction: str = ""

    def problem(self, declared: dict[str, str]) -> str | None:
        if not re.fullmatch(r"[a-z0-9_]+(\.[a-z0-9_]+)+", self.id):
            return f"claim id {self.id!r} is not dotted lower-case words"
        for k in ("claim", "source", "expected", "tolerance", "needs"):
            if not getattr(self, k):
                return f"claim {self.id} lacks {k}"
        why = self.check.problem()
        if why:
            return f"claim {self.id}: {why}"
        judged_from_rows = self.check.type not in ("formula", "parts")
        if judged_from_rows and not self.metric:
            return f"claim {self.id}: which metric carries its evidence? (metric=...)"
        if self.metric and self.metric not in declared:
            return f"claim {self.id}: evidence metric {self.metric!r} is not declared in the plugin's metrics"
        if self.parent and not self.id.startswith(self.parent + "."):
            return f"claim {self.id}: a part's id must start with its parent {self.parent!r}"
        if self.error_in not in ERROR_IN:
            return f"claim {self.id}: error_in {self.error_in!r} is not one of {', '.join(ERROR_IN)}"
        if (self.line is None) != (not self.quote):
            return f"claim {self.id}: a quote of the notes needs its line, and a line its quote"
        return None


def claim_record(claim: Claim, ev: Evidence, labels: dict[str, Any] | None = None, notes: Sequence[str] = ()) -> Record:
    """A summary row carrying one claim's evidence: the evidence value under the claim's metric,
    labelled with the claim id, and the verdict `bench claims` gives it (the plugin's own, or the
    claim's check applied to the value)."""
    # a metric's source is measured | simulated | formula: an extrapolated figure is a formula's
    src = ev.source if ev.source in SOURCES else "formula"
    m = {claim.metric or "evidence": Metric(ev.value, ev.unit, src)}
    m["verdict"] = Metric(ev.verdict or judge(claim, ev), "bench claims check")
    return Record(
        metrics=m,
        labels={"claim": claim.id, **(labels or {})},
        evidence={claim.id: ev},
        notes=[f"{claim.id}: {ev.detail}", *list(notes)] if ev.detail else list(notes),
    )


def judge(claim: Claim, ev: Evidence) -> str:
    """The verdict `bench claims` will give this one piece of evidence (for a plugin's own display)."""
    from bench.checks import judge as _judge

    return _judge(claim, ev)


# --- report --------------------------------------------------------------------------------------
Table = tuple[str, list[str], list[list[str]]]  # (title, header, body): cells are already formatted


@dataclass
class Section:
    """A part of `bench report`: a plot (a PNG the plugin wrote into out_dir), what it shows, tables."""

    title: str
    anchor: str
    png: str | None = None  # file name inside out_dir
    caption: str = ""
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# --- the plugin ----------------------------------------------------------------------------------
class Plugin:
    """Base class with the optional hooks' defaults. Subclass once; no deeper."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    Params: ClassVar[type] = NoParams
    table_metrics: ClassVar[tuple[str, ...]] = ()
    metrics: ClassVar[dict[str, str]] = {}
    normalised: ClassVar[tuple[str, ...]] = ()
    claims: ClassVar[tuple[Claim, ...]] = ()

    def grid(self, profile: str) -> list[dict[str, Any]]:
        return [{}]

    def available(self, params: Any) -> str | None:
        return None

    def validate(self, params: Any) -> str | None:
        return None

    def launch(self, params: Any) -> Launch:
        return Launch()

    def estimate_s(self, params: Any, device_type: str) -> float | None:
        return None

    def run(self, params: Any, ctx: Context) -> list[Record]:  # pragma: no cover
        raise NotImplementedError

    def summarize(self, rows: list[Row]) -> list[Record]:
        return []

    def report(self, rows: list[Row], out_dir: Path) -> list[Section]:
        return []

    def describe(self) -> str:
        return ""

    def case_keys(self, kind: str, params: Mapping[str, Any], labels: Mapping[str, Any]) -> Sequence[str] | None:
        """The parameters and labels that define this row's case when runs are compared (`bench
        compare` pairs rows on them); None: all of them. Leave out what does not change the
        measurement of this kind of case (a matmul's optimizer, a probe-chosen size), so runs made
        with other settings, or by older versions, still pair."""
        return None


def params_fields(plugin: Plugin) -> list[dataclasses.Field[Any]]:
    return list(dataclasses.fields(plugin.Params))


def plugin_problem(plugin: Plugin) -> str | None:
    """Why an installed plugin breaks the contract (discovery shows it as one line), or None."""
    P = plugin.Params
    if not (isinstance(P, type) and dataclasses.is_dataclass(P)):
        return "Params is not a dataclass"
    if not P.__dataclass_params__.frozen:  # type: ignore[attr-defined]
        return "Params is not a frozen dataclass (@dataclass(frozen=True))"
    for f in dataclasses.fields(P):
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            return f"parameter {f.name} has no default"
        flag = f.name.replace("_", "-")
        if flag in RESERVED_FLAGS:
            return f"parameter --{flag} would be taken by `bench run --{flag}`: rename it"
    declared = dict(plugin.metrics)
    for c in plugin.claims:
        why = c.problem(declared)
        if why:
            return why
    ids = [c.id for c in plugin.claims]
    dup = {i for i in ids if ids.count(i) > 1}
    if dup:
        return f"claims declared twice: {', '.join(sorted(dup))}"
    for c in plugin.claims:
        if c.check.type == "parts":
            unknown = [p for p in c.check.parts if p not in ids]
            if unknown:
                return f"claim {c.id}: parts {', '.join(unknown)} are not claims of this plugin"
    return None


# --- helpers a plugin uses in run() --------------------------------------------------------------
def timing_metrics(t: Timing, prefix: str = "time") -> tuple[dict[str, Metric], dict[str, list[float]]]:
    """Standard metrics and raw samples for one Timing: median in ms, CI, noise, stop reason, the
    block size (calls per sample), and the energy of the timed window where NVML has it."""
    noise = 100 * t.noise_iqr if t.noise_iqr == t.noise_iqr else None
    m = {
        f"{prefix}_ms": Metric(t.median_s * 1e3, "ms"),
        f"{prefix}_ci95_pct": Metric(100 * t.rel_ci, "% of median (95% CI half-width)"),
        f"{prefix}_noise_pct": Metric(noise, "% of median (IQR)"),
        f"{prefix}_samples": Metric(len(t.samples_s), "count"),
        f"{prefix}_block": Metric(t.inner, "calls per sample (blocked timing)"),
        f"{prefix}_stop": Metric(t.stop_reason, ""),
        "threads": Metric(t.threads, "threads"),
    }
    if t.energy_j is not None:
        m[f"{prefix}_energy_j"] = Metric(t.energy_j, "J per call (NVML total energy over the timed window)")
    else:
        m[f"{prefix}_energy_j"] = Metric(None, f"J per call (not available: {t.energy_why})")
    return m, {f"{prefix}_s": t.samples_s}


def memory_metrics(rep: MemoryReport, prefix: str = "peak") -> dict[str, Metric]:
    """Peak and its breakdown in MiB (bytes / 2**20), with the method in the unit."""
    mib = 2**20
    out = {f"{prefix}_mib": Metric(rep.peak_bytes / mib, f"MiB ({rep.method})")}
    for c, v in rep.at_peak.items():
        if v:
            out[f"{prefix}_{c}_mib"] = Metric(v / mib, f"MiB at peak ({rep.method})")
    if rep.cuda_max_allocated is not None:
        out["cuda_max_allocated_mib"] = Metric(rep.cuda_max_allocated / mib, "MiB (torch.cuda.max_memory_allocated)")
        out["cuda_max_reserved_mib"] = Metric(
            (rep.cuda_max_reserved or 0) / mib, "MiB (torch.cuda.max_memory_reserved)"
        )
    if rep.nvml_used is not None:
        out["nvml_used_mib"] = Metric(rep.nvml_used / mib, "MiB (NVML device used, incl. context/other processes)")
    return out


def __getattr__(name: str) -> Any:
    # Context lives with the measurement code (it imports torch); importing it here lazily keeps
    # `bench list` and every reader command free of a torch import.
    if name == "Context":
        from bench.context import Context

        return Context
    raise AttributeError(name)
