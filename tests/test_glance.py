"""What a person reads fits: terminal tables, `bench list`, `bench claims` and `bench compare`
within COLUMNS (120 and 80) on the committed result files of two real machines; progress with
an ETA; load_frame's file column, integer parameters and baselines. All in process (CliRunner)."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from bench.cli import main
from bench.progress import Progress
from bench.results import load_frame
from bench.tables import short_num

ROOT = Path(__file__).resolve().parents[1]
INTEL = ROOT / "results" / "cpu-intel-xeon-quick.jsonl"
AMD = ROOT / "results" / "cpu-amd-epyc-quick.jsonl"


def bench(cols: int, *args: str) -> list[str]:
    r = CliRunner().invoke(main, list(args), env={"COLUMNS": str(cols)})
    assert r.exit_code == 0, r.output
    return r.output.splitlines()


@pytest.mark.parametrize("cols", [120, 80])
def test_show_fits_the_width_with_units_once_and_a_spread_per_timing(cols):
    lines = bench(cols, "show", str(INTEL), "--plugin", "attention")
    assert max(map(len, lines)) <= cols
    head = "\n".join(lines[:4])
    assert "ms meas" in head and "±" in head  # the unit once in the header; a ± column after the timing
    rows = [ln for ln in lines if ln.startswith("sdpa_flash ")]
    assert rows and not any("ms" in ln for ln in rows)  # no unit repeated in a cell
    # the noisy timings of this file (sdpa_flash at 32 heads: CI95 51%) carry the mark, quiet ones do not
    assert any(re.search(r"\b51 ~", ln) for ln in rows) and any(re.search(r"\b2\.9(\s|$)", ln) for ln in rows)
    assert any("noisy timing" in ln for ln in lines)
    # a skip reason is a reference in the row and once, in full, below the table
    skipped = [ln for ln in lines if "skipped [" in ln]
    n = re.search(r"skipped \[(\d+)\]", skipped[0]).group(1)  # type: ignore[union-attr]
    assert sum(ln.startswith(f"[{n}] ") for ln in lines) == 1


def test_fsdp_rows_fit_120_and_notes_print_once():
    lines = bench(120, "show", str(INTEL), "--plugin", "fsdp", "--detail")
    assert max(map(len, lines)) <= 120
    text = "\n".join(lines)
    assert text.count("FSDP2 shards with torch.chunk") == 1  # a note of many rows and both tables: once
    assert "26.3M" in text  # one number format: 3 significant figures with k/M/G


def test_list_is_one_line_per_plugin_and_fits():
    lines = bench(120, "list")
    assert max(map(len, lines)) <= 120
    for name in ("attention", "ddp", "fsdp", "gpuplan", "inference", "precision", "quantization", "scaling"):
        assert sum(ln.split()[:1] == [name] for ln in lines) == 1, name
    one = bench(80, "list", "--plugin", "fsdp")
    assert max(map(len, one)) <= 80 and any(ln.startswith("--stage") for ln in one)


def test_claims_one_line_each_failures_first_counts_match():
    lines = bench(120, "claims", str(INTEL))
    assert len(lines) < 100 and max(map(len, lines)) <= 120
    agg_at = next(i for i, ln in enumerate(lines) if ln.startswith("aggregates of their parts"))
    table = [ln for ln in lines[:agg_at] if re.match(r"^[a-z][a-z0-9_.]+\s{2,}", ln) and not ln.startswith("id ")]
    verdicts = [ln.split()[1] for ln in table]
    first_other = next(i for i, v in enumerate(verdicts) if v != "fails")
    assert set(verdicts[:first_other]) == {"fails"} and "fails" not in verdicts[first_other:]
    total = int(re.search(r"cpu-intel-xeon: (\d+) claims", "\n".join(lines)).group(1))  # type: ignore[union-attr]
    assert len(table) == total and len({ln.split()[0] for ln in table}) == total  # one line per counted claim
    fails = re.search(r"(\d+) fails", "\n".join(lines)).group(1)  # type: ignore[union-attr]
    assert int(fails) == first_other
    assert "zero.comm.stage1" in "\n".join(lines[lines.index(table[0]) : first_other + lines.index(table[0])])
    detail = bench(120, "claims", str(INTEL), "--detail")
    assert any(ln.startswith("zero.comm.stage1: fails (measured): ") for ln in detail)


def test_compare_pairs_the_two_machines_and_answers_bf16_matmul_in_one_line():
    lines = bench(120, "compare", str(AMD), str(INTEL))
    assert max(map(len, lines)) <= 120 and len(lines) < 400
    (bf16,) = [ln for ln in lines if ln.startswith("matmul bf16 1024")]
    # AMD 0.862 TFLOP/s, Intel 0.413 (Intel's at a probe-chosen n=512: a label since issue 24, not a metric)
    assert re.search(r"tflops \[TFLOP/s\]\s+0\.862\s+0\.413\s+0\.479\b", bf16), bf16
    text = " ".join(ln.strip() for ln in lines)  # headlines wrap at the width
    m = re.search(r"precision: B (\S+)x as fast as A .*? over (\d+) paired rows", text)
    assert m and int(m.group(2)) >= 5
    assert "only in A (the nearest case elsewhere differs in" in text  # what did not pair, and why
    assert re.search(r"quantization: B \S+x as fast as A", text)  # paired although --max-batch differed


def test_progress_estimate_eta_and_quiet():
    out = io.StringIO()
    p = Progress(out, total=3, estimates=[10.0, 10.0, 10.0], live=False)
    assert p.total_estimate() == 30.0
    p.start(1, 3, "toy", "n=16")
    p.end("ok", "", 20.0)  # twice the estimate: the rest is scaled by 2
    assert "[1/3] toy: n=16" in out.getvalue() and "2 left, about 0:40 to go" in out.getvalue()
    quiet = io.StringIO()
    q = Progress(quiet, total=1, estimates=[1.0], quiet=True)
    q.start(1, 1, "toy", "n=16")
    q.end("ok", "", 1.0)
    assert quiet.getvalue() == ""


def test_load_frame_names_files_keeps_integers_and_leaves_baselines_out():
    df = load_frame(ROOT / "results")
    files = set(df["file"])
    assert str(INTEL) in {str(ROOT / f) if not Path(f).is_absolute() else f for f in files} or any(
        f.endswith("cpu-intel-xeon-quick.jsonl") for f in files
    )
    assert not any("baseline" in f for f in files)
    assert str(df["param.stage"].dtype) == "Int64" and str(df["param.size"].dtype) == "Int64"
    with_base = load_frame(ROOT / "results", baselines=True)
    assert any("baseline" in f for f in set(with_base["file"]))


def test_short_numbers():
    assert [short_num(v) for v in (26325200, 393216, 1332.4, 0.0128, 2.78e-5, 3.4e38, 12)] == [
        "26.3M",
        "393k",
        "1332",
        "0.0128",
        "2.78e-05",
        "3.4e+38",
        "12",
    ]
