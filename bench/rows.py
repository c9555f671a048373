"""Row: one result row, typed. Every command (show, compare, regress, claims, report) and every
plugin's summarize() read rows through this one type and its accessors.

On disk a row is one JSON object per line (schema `bench.row/1`, bench/results.py writes and reads
them); `Row.from_json` checks every field's type and names file:line when one is wrong, so a
crafted or foreign row is refused on read, not half-used later.

Accessors (one per fact):
  row.value(name)    a metric's value (None when absent)
  row.number(name)   a metric's value as a finite float (None when absent, not numeric or NaN/inf)
  row.metric(name)   the whole Metric (value, unit, source, better, deterministic)
  row.get(name)      a label, else a parameter, of that name (the row's own refinement first)
  row.device         the device label of the machine that measured it (fingerprint "label")
  row.machine_id     hash of what decides speed (timings gate only within one machine_id)
  row.is_cuda        measured on a CUDA device
  row.ok             status == "ok"; row.failed: oom / error / timeout
  row.key            identity for matching across runs: plugin + kind + params + labels
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from bench.errors import ResultsError

SCHEMA = "bench.row/1"
STATUSES: tuple[str, ...] = ("ok", "skipped", "oom", "error", "timeout")
FAILED: tuple[str, ...] = ("oom", "error", "timeout")
SOURCES: tuple[str, ...] = ("measured", "simulated", "formula")
# evidence may also be extrapolated: a formula carried beyond the points measured (e.g. a limit as Nd grows)
EVIDENCE_SOURCES: tuple[str, ...] = (*SOURCES, "extrapolated")
KINDS: tuple[str, ...] = ("case", "summary")


@dataclass
class Metric:
    """One number with its unit and provenance.

    source: measured (on this machine, this run) | simulated (fake process group / fake tensors)
        | formula (computed from a stated formula).
    better: "lower" | "higher" | None -- the direction regress uses (None: inferred from the name
        and unit: times, bytes, losses, errors lower; throughput, TFLOP/s, MFU higher).
    deterministic: True for figures that must not change run to run on the same machine and
        software (bytes, FLOP counts, fixed-seed losses); regress compares them exactly or within
        a stated tolerance instead of with statistics.
    portable: for deterministic metrics: False when the figure is exact on one machine but depends
        on the CPU/GPU's kernels elsewhere (a loss after many training steps, an overflow count): the
        CI gate compares those only against a baseline from the same machine class; True when it is
        exact on every machine (torch.finfo figures, a formula's float); None (unstated): the gate
        decides from the value (integers, strings, byte/FLOP counts are portable; other measured
        floats are treated as machine-bound).
    """

    value: float | int | str | bool | None
    unit: str = ""
    source: str = "measured"
    better: str | None = None
    deterministic: bool = False
    portable: bool | None = None

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"value": self.value, "unit": self.unit, "source": self.source}
        if self.better:
            d["better"] = self.better
        if self.deterministic:
            d["deterministic"] = True
            if self.portable is not None:
                d["portable"] = self.portable
        return d

    @classmethod
    def from_json(cls, d: Any, where: str = "") -> Metric:
        if not isinstance(d, dict) or "value" not in d:
            raise ResultsError(f"{where}a metric must be an object with a 'value', got {_short(d)}")
        v = d["value"]
        if not (v is None or isinstance(v, (int, float, str, bool))):
            raise ResultsError(f"{where}a metric value must be a number, string, boolean or null, got {_short(v)}")
        unit, src, better = d.get("unit", ""), d.get("source", "measured"), d.get("better")
        if not isinstance(unit, str) or src not in SOURCES or better not in (None, "lower", "higher"):
            raise ResultsError(
                f"{where}bad unit/source/better in metric {_short(d)} (source: one of {', '.join(SOURCES)})"
            )
        portable = d.get("portable")
        if portable not in (None, True, False):
            raise ResultsError(f"{where}'portable' must be true, false or absent, got {_short(portable)}")
        return cls(v, unit, src, better, bool(d.get("deterministic", False)), portable)


@dataclass
class Evidence:
    """What a row contributes to a documented claim (the claim's id is the key in row.evidence).

    value is what was measured (or simulated); the claim's check compares it with the claim's
    expected value, or with `expected` when the plugin computed the formula for the exact
    configuration it ran (dtypes, world size). For checks of type "plugin" the plugin sets the
    verdict ("holds"/"fails") and `detail` says what was compared with which numbers.
    """

    value: float | int | str | bool | None
    unit: str = ""
    source: str = "measured"
    detail: str = ""
    expected: float | int | str | None = None
    verdict: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "unit": self.unit,
            "source": self.source,
            "detail": self.detail,
            "expected": self.expected,
            "verdict": self.verdict,
        }

    @classmethod
    def from_json(cls, d: Any, where: str = "") -> Evidence:
        if not isinstance(d, dict):
            raise ResultsError(f"{where}evidence must be an object, got {_short(d)}")
        if d.get("source", "measured") not in EVIDENCE_SOURCES or d.get("verdict") not in (None, "holds", "fails"):
            raise ResultsError(f"{where}bad source/verdict in evidence {_short(d)}")
        return cls(
            d.get("value"),
            str(d.get("unit") or ""),
            d.get("source") or "measured",
            str(d.get("detail") or ""),
            d.get("expected"),
            d.get("verdict"),
        )


@dataclass
class Row:
    """One result row: a case's measurements (per rank where it matters) or a plugin's summary."""

    run_id: str
    plugin: str
    params: dict[str, Any]
    status: str = "ok"
    metrics: dict[str, Metric] = field(default_factory=dict)
    labels: dict[str, Any] = field(default_factory=dict)
    samples: dict[str, list[float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    evidence: dict[str, Evidence] = field(default_factory=dict)
    message: str = ""
    kind: str = "case"  # case | summary
    case_id: str = ""
    plugin_version: str = "1"
    profile: str = ""
    started_at: str = ""
    duration_s: float = 0.0
    fingerprint: dict[str, Any] = field(default_factory=dict)
    schema: str = SCHEMA
    file: str = ""  # where it was read from ("" when built in memory)
    extra: dict[str, Any] = field(default_factory=dict)  # fields of a newer writer, kept on round trip

    # --- accessors ---------------------------------------------------------------------------
    def metric(self, name: str) -> Metric | None:
        return self.metrics.get(name)

    def value(self, name: str) -> Any:
        m = self.metrics.get(name)
        return m.value if m is not None else None

    def number(self, name: str) -> float | None:
        v = self.value(name)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return None
        return float(v) if math.isfinite(v) else None

    def get(self, name: str, default: Any = None) -> Any:
        """A label, else a parameter, of this name (labels refine the case: format=fp16, rank=1)."""
        if self.labels.get(name) is not None:
            return self.labels[name]
        if self.params.get(name) is not None:
            return self.params[name]
        return default

    @property
    def device(self) -> str:
        return str(self.fingerprint.get("label") or "unknown device")

    @property
    def machine_id(self) -> str | None:
        return self.fingerprint.get("machine_id")

    @property
    def is_cuda(self) -> bool:
        fp = self.fingerprint
        if fp.get("device_type"):
            return bool(fp["device_type"] == "cuda")
        return bool(fp.get("cuda")) and bool(fp.get("devices"))

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def failed(self) -> bool:
        return self.status in FAILED

    @property
    def is_case(self) -> bool:
        return self.kind == "case"

    @property
    def key(self) -> str:
        return json.dumps(
            {"plugin": self.plugin, "kind": self.kind, "params": self.params, "labels": self.labels},
            sort_keys=True,
            default=str,
        )

    # --- (de)serialisation -------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "schema": self.schema,
            "run_id": self.run_id,
            "case_id": self.case_id,
            "plugin": self.plugin,
            "plugin_version": self.plugin_version,
            "profile": self.profile,
            "kind": self.kind,
            "params": self.params,
            "labels": self.labels,
            "status": self.status,
            "message": self.message,
            "metrics": {k: m.to_json() for k, m in self.metrics.items()},
            "samples": self.samples,
            "notes": self.notes,
            "evidence": {k: e.to_json() for k, e in self.evidence.items()},
            "started_at": self.started_at,
            "duration_s": self.duration_s,
            "fingerprint": self.fingerprint,
        }
        d.update(self.extra)
        return d

    @classmethod
    def from_json(cls, d: Any, where: str = "", file: str = "") -> Row:
        """A row from its JSON object; every field's type checked (where: "file:line: " for messages)."""
        if not isinstance(d, dict) or d.get("schema") is None:
            raise ResultsError(f"{where}not a bench result row (no 'schema' field)")
        if d["schema"] != SCHEMA:
            raise ResultsError(f"{where}schema {_short(d['schema'])} is not supported (this bench reads {SCHEMA})")
        missing = [k for k in ("run_id", "plugin", "params", "status", "metrics") if k not in d]
        if missing:
            raise ResultsError(f"{where}row lacks {', '.join(missing)}")
        want: dict[str, type | tuple[type, ...]] = {
            "run_id": str,
            "plugin": str,
            "params": dict,
            "status": str,
            "metrics": dict,
            "labels": dict,
            "samples": dict,
            "notes": list,
            "evidence": dict,
            "message": str,
            "kind": str,
            "case_id": str,
            "plugin_version": str,
            "profile": str,
            "started_at": str,
            "duration_s": (int, float),
            "fingerprint": dict,
        }
        required = ("run_id", "plugin", "params", "status", "metrics")
        for k, t in want.items():
            if k in d and (d[k] is not None or k in required) and not isinstance(d[k], t):
                tn = t.__name__ if isinstance(t, type) else "number"
                raise ResultsError(f"{where}field '{k}' must be {_article(tn)}, got {_short(d[k])}")
        if d["status"] not in STATUSES:
            raise ResultsError(f"{where}status {_short(d['status'])} is not one of {', '.join(STATUSES)}")
        if d.get("kind", "case") not in KINDS:
            raise ResultsError(f"{where}kind {_short(d.get('kind'))} is not one of {', '.join(KINDS)}")
        samples: dict[str, list[float]] = {}
        for k, xs in (d.get("samples") or {}).items():
            if not isinstance(xs, list) or not all(x is None or _is_num(x) for x in xs):
                raise ResultsError(f"{where}samples '{k}' must be a list of numbers, got {_short(xs)}")
            samples[k] = [float("nan") if x is None else float(x) for x in xs]
        if not all(isinstance(n, str) for n in d.get("notes") or []):
            raise ResultsError(f"{where}notes must be a list of strings")
        metrics = {str(k): Metric.from_json(m, f"{where}metric '{k}': ") for k, m in d["metrics"].items()}
        evidence = {
            str(k): Evidence.from_json(e, f"{where}evidence '{k}': ") for k, e in (d.get("evidence") or {}).items()
        }
        known = set(want) | {"schema"}
        return cls(
            run_id=d["run_id"],
            plugin=d["plugin"],
            params=d["params"],
            status=d["status"],
            metrics=metrics,
            labels=d.get("labels") or {},
            samples=samples,
            notes=list(d.get("notes") or []),
            evidence=evidence,
            message=d.get("message") or "",
            kind=d.get("kind") or "case",
            case_id=d.get("case_id") or "",
            plugin_version=d.get("plugin_version") or "1",
            profile=d.get("profile") or "",
            started_at=d.get("started_at") or "",
            duration_s=float(d.get("duration_s") or 0.0),
            fingerprint=d.get("fingerprint") or {},
            file=file,
            extra={k: v for k, v in d.items() if k not in known and not k.startswith("_")},
        )


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _short(v: Any) -> str:
    text = json.dumps(v, default=str) if not isinstance(v, str) else repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _article(name: str) -> str:
    return {"dict": "an object", "list": "a list", "str": "a string", "number": "a number"}.get(name, f"a {name}")
