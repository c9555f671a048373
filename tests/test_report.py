"""`bench report`: markdown + self-contained HTML with PNG plots and the claims table; plots skip
gracefully without their plugin's rows; the HTML opens in headless Chromium with every image
loaded and no broken links."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import bench_cli, run_bench
from test_claims import all_evidence_rows, row

from bench import report
from bench.cli import main
from bench.results import append_rows
from bench.rows import Row

# one pytest-xdist worker runs this file: its module fixtures (real runs) are computed once
pytestmark = pytest.mark.xdist_group("report")

CHROMIUM = Path("/usr/bin/chromium")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def plugin_rows(device: str = "cpu-test") -> list[Row]:
    """Case rows shaped like the plugins' (names from the brief), with known exponents."""
    rows = []
    for impl, k in (("naive", 2.0), ("flash", 1.0)):
        for seq in (128, 256, 512, 1024):
            rows.append(
                row(
                    "attention",
                    {"seq": seq, "impl": impl, "dtype": "fp32", "heads": 8},
                    device=device,
                    metrics={"time_ms": (0.01 * seq**1.5, "ms"), "extra_mib": (1e-4 * seq**k, "MiB")},
                )
            )
    for heads in (4, 16):  # a head-count sweep at seq 256 (with the heads=8 point above)
        rows.append(
            row(
                "attention",
                {"seq": 256, "impl": "naive", "dtype": "fp32", "heads": heads},
                device=device,
                metrics={
                    "time_ms": (0.01 * 256**1.5 * heads / 8, "ms"),
                    "extra_mib": (1e-4 * 256**2 * heads / 8, "MiB"),
                },
            )
        )
    for dtype, final in (("fp32", 2.50), ("bf16", 2.52), ("fp16", 2.55)):
        loss = [5.0 - (5.0 - final) * (1 - 0.9**i) for i in range(30)]
        rows.append(
            row(
                "precision",
                {"what": "train", "dtype": "all", "scaler": "both"},
                labels={"format": dtype},
                device=device,
                metrics={"final_loss": (loss[-1], "nats")},
                samples={"loss": loss},
            )
        )
    for scheme, bpp, err in (
        ("fp16", 2.0, 1e-4),
        ("int8_naive", 1.0, 0.4),
        ("int8_rowwise", 1.03, 0.01),
        ("nf4", 0.516, 0.08),
    ):
        for batch in (1, 16, 64):  # the plugin's per-batch rows repeat the case's bytes and error
            rows.append(
                row(
                    "quantization",
                    {"scheme": scheme, "model": "medium"},
                    labels={"batch": batch},
                    device=device,
                    metrics={
                        "bytes_per_param": (bpp, "bytes/param"),
                        "rel_error": (err, ""),
                        "time_ratio": (1.0 + batch**-0.5 * (scheme != "fp16"), "x"),
                    },
                )
            )
    shapes = {"s1": 1e5, "s2": 4e5, "s3": 1.6e6}
    for shape, n in shapes.items():  # fixed data: loss ~ N^-0.08
        rows.append(
            row(
                "scaling",
                {"what": "train", "shapes": "s1+s2+s3", "tokens": 2_000_000, "compute": 0.0},
                device=device,
                labels={"shape": shape, "N": n, "D": 2e6},
                metrics={"params": (n, "params"), "tokens": (2e6, "tokens"), "final_loss": (9.0 * n**-0.08, "nats")},
            )
        )
    for shape, n in shapes.items():  # an isoFLOP profile, C = 6 N D: its minimum is the middle shape
        d = 1e13 / (6 * n)
        rows.append(
            row(
                "scaling",
                {"what": "train", "shapes": "s1+s2+s3", "budget": "C=1e+13"},
                device=device,
                labels={"shape": shape, "N": n, "D": d},
                metrics={
                    "params": (n, "params"),
                    "params_total": (n * 1.25, "params"),
                    "tokens": (d, "tokens"),
                    "final_loss": (3.0 + 0.1 * abs(math.log(n / 4e5)), "nats"),
                },
            )
        )
    rows.append(
        row(
            "scaling",
            {"what": "train", "shapes": "s2", "tokens": 8_000_000, "compute": 0.0},
            device=device,
            labels={"shape": "s2", "N": 4e5, "D": 8e6},
            metrics={
                "params": (4e5, "params"),
                "tokens": (8e6, "tokens"),
                "final_loss": (9.0 * 4e5**-0.08 * 0.9, "nats"),
            },
        )
    )
    rows.append(
        row(
            "scaling",
            {"what": "flops", "shapes": "s1"},
            device=device,
            labels={"shape": "s1"},
            metrics={"params": (1e5, "params"), "ratio_6n": (1.04, "x")},
        )
    )
    psi = 1.0e6
    for stage, plugin in ((0, "ddp"), (1, "ddp"), (2, "fsdp"), (3, "fsdp")):
        for ws in (2, 4):
            per = {0: (4, 4, 8), 1: (4, 4, 8 / ws), 2: (4 / ws, 4 / ws, 8 / ws), 3: (4 / ws, 4 / ws, 8 / ws)}[stage]
            for rank in range(ws):
                rows.append(
                    row(
                        plugin,
                        {"stage": stage, "world_size": ws},
                        labels={"rank": rank},
                        device=device,
                        metrics={
                            "params_bytes": (per[0] * psi, "bytes"),
                            "grads_bytes": (per[1] * psi, "bytes"),
                            "optim_bytes": (per[2] * psi * (1 + 0.01 * rank), "bytes"),
                            "model_state_bytes": (sum(per) * psi, "bytes"),
                            "formula_bytes": (sum(per) * psi, "bytes", "formula"),
                            "peak_activations_mib": (3.0, "MiB"),
                        },
                    )
                )
    rows.append(
        row(
            "fsdp",
            {"stage": 3, "world_size": 64, "simulate": True},
            device=device,
            metrics={
                "params_bytes": (4 * 7.5e9 / 64, "bytes", "simulated"),
                "grads_bytes": (4 * 7.5e9 / 64, "bytes", "simulated"),
                "optim_bytes": (8 * 7.5e9 / 64, "bytes", "simulated"),
                "formula_bytes": (16 * 7.5e9 / 64, "bytes", "formula"),
            },
        )
    )
    return rows


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[tuple[str, str]] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for k, v in attrs:
            if k in ("src", "href") and v is not None:
                self.refs.append((tag, v))
            if k == "id" and v:
                self.ids.add(v)


def _check_links(html_path: Path) -> int:
    """Every src/href resolves: data URIs, in-page anchors that exist, or files beside the page."""
    p = _Refs()
    p.feed(html_path.read_text())
    for _tag, ref in p.refs:
        if ref.startswith("data:image/png;base64,"):
            continue
        if ref.startswith("#"):
            assert ref[1:] in p.ids, f"broken anchor {ref}"
            continue
        assert "://" not in ref and not ref.startswith("//"), f"external link {ref}"
        assert (html_path.parent / ref).exists(), f"broken link {ref}"
    return sum(1 for tag, _ in p.refs if tag == "img")


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("report")
    rows = plugin_rows() + all_evidence_rows(device="cpu-test", cuda=False)
    return report.build(rows, out, ["synthetic"])


def test_report_writes_md_html_and_pngs(built):
    html_path, md_path = built["html"], built["md"]
    assert html_path.exists() and md_path.exists()
    names = sorted(p.name for p in built["pngs"])
    assert names == [
        "attention.png",
        "attention_heads.png",
        "memory_measured.png",
        "memory_simulated.png",
        "precision_loss.png",
        "quantization.png",
        "scaling.png",
    ]
    for p in built["pngs"]:
        assert p.read_bytes()[:8] == PNG_MAGIC and p.stat().st_size > 5000
    # every plugin with case rows draws; one with summary rows only (claim evidence) is listed as such
    drawn = {r.plugin for r in plugin_rows()}
    assert not [s for s in built["skipped"] if s.split(":")[0] in drawn], built["skipped"]
    md = md_path.read_text()
    for ref in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md):  # markdown images are files beside it
        assert (md_path.parent / ref).exists(), ref
    assert _check_links(html_path) == len(names)
    html = html_path.read_text()
    assert "<table>" in html and 'id="claims"' in html and "compute.pf_day.a100" in html
    assert 'class="v-fails"' in html and 'class="v-holds"' in html


def test_report_tables_carry_the_fits(built):
    md = built["md"].read_text()
    # fitted slopes of the synthetic attention sweep: naive memory ~ n^2, flash ~ n, time ~ n^1.5
    md = re.sub(r" +", " ", md)  # tabulate pads cells
    assert re.search(r"\| impl=naive \| extra_mib \| 2\.000", md), md
    assert re.search(r"\| impl=flash \| extra_mib \| 1\.000", md)
    assert re.search(r"\| impl=naive \| time_ms \| 1\.500", md)
    assert "Fixed: dtype=fp32, heads=8." in md  # the lone heads=4/16 points are not lines of the seq plot
    assert re.search(r"\| all \| extra_mib \| 1\.000", md)  # memory ~ H at fixed n
    assert "Fixed: seq=256, impl=naive, dtype=fp32." in md
    assert re.search(r"\| L\(N\) \| at D=2M tokens \(N = non-embedding params\) \| 3 \| 1\.20 \| 0\.0800", md), md
    assert re.search(r"\| L\(D\) \| at N=400k \(s2\) \| 3 \| 0\.60 \| 0\.07\d+", md)  # s2 at 3 data sizes
    # the isoFLOP minimum: s2, D = 1e13 / (6 * 4e5), tokens/param over all params (1.25 N)
    assert re.search(r"\| 1e\+13 \| 3: 125k-2M \| 500k \| 3\.33M \| 6\.7 \| - \| [\d.-]+ \| yes \|", md), md
    # memory table: the rank with the most optimizer bytes, in MiB, with the ZeRO formula
    assert "ddp stage 1, world_size=4" in md and "fsdp stage 3, world_size=2" in md
    assert "| fsdp stage 3 |" in md and "Fixed: world_size=64, simulate=yes" in md  # the lone simulated bar
    # 4e6 B = 3.815 MiB; the rank with the most optimizer bytes (rank 1: 8.08e6 B); + 3 MiB activations;
    # the formula tick: 16e6 B = 15.26 MiB
    assert re.search(r"\| ddp stage 0, world_size=2 \| 3\.815 \| 3\.815 \| 7\.706 \| 3 \| 18\.34 \| 15\.26", md), md
    # precision: each curve against fp32 (the same settings), last point of a 3-step moving average
    fp32 = [5.0 - 2.5 * (1 - 0.9**i) for i in range(27, 30)]
    bf16 = [5.0 - 2.48 * (1 - 0.9**i) for i in range(27, 30)]
    want = sum(100 * (b / f - 1) for b, f in zip(bf16, fp32)) / 3
    assert re.search(rf"\| format=bf16 \| 30 \| 5 \| [\d.]+ \| [\d.]+ \| \+{want:.2f} \|", md), md
    # quantization: one bar per scheme, and the time ratio per batch
    assert md.count("| scheme=int8_rowwise |") == 2
    assert re.search(r"\| scheme=nf4 \| 2 \| 1\.25 \| 1\.125 \|", md), md
    assert "## Claims" in md and "| compute.pf_day.a100" in md


def test_report_skips_plots_without_rows(tmp_path):
    only = [
        row("toy", {"n": 32}, metrics={"time_ms": (0.1, "ms")}),
        row("attention", {"seq": 128}, status="skipped", message="needs CUDA"),
    ]
    got = report.build(only, tmp_path, ["x"])
    assert got["pngs"] == []
    text = " ".join(got["skipped"])
    assert "attention: 1 rows (skipped) but none with what its report draws" in text
    assert "toy: rows of a plugin that is not installed here" in text
    assert _check_links(got["html"]) == 0
    assert "Plots skipped" in got["md"].read_text()
    # rows with odd or missing metrics do not break a plot
    odd = [
        row("attention", {"seq": "long", "impl": "x"}, metrics={"time_ms": ("fast", "")}),
        row("quantization", {"scheme": "nf4"}, metrics={"rel_error": (None, "")}),
        row("precision", {"dtype": "bf16"}, samples={"loss": [1.0]}),
        row("scaling", {"preset": "a"}, metrics={"final_loss": (2.0, "")}),
    ]
    got = report.build(odd, tmp_path / "odd", ["x"])
    assert got["pngs"] == [] and len(got["skipped"]) == 4, got["skipped"]


def test_report_cli(tmp_path):
    f = tmp_path / "r.jsonl"
    append_rows(f, plugin_rows("cpu-a")[:8] + plugin_rows("gpu-b")[:8])
    res = CliRunner().invoke(main, ["report", str(f), "-o", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "out" / "report.html").exists() and (tmp_path / "out" / "attention.png").exists()
    md = (tmp_path / "out" / "report.md").read_text()
    assert "device=cpu-a, impl=naive" in md and "device=gpu-b, impl=flash" in md, md  # one series per device
    res = CliRunner().invoke(main, ["report", str(tmp_path / "missing.jsonl"), "-o", str(tmp_path / "o2")])
    assert res.exit_code == 2 and "missing.jsonl" in res.output


def test_a_third_party_plugin_contributes_its_claim_and_plot(thirdparty, tmp_path):
    """The fixture package (installed beside bench, nothing in bench/ names it) adds one claim and
    one plot: `bench claims` and `bench report` show them."""
    out = tmp_path / "toy.jsonl"
    r = run_bench(
        "run",
        "--plugin",
        "toy",
        "--n",
        "16,32",
        "--max-time",
        "0.2",
        "--out",
        str(out),
        "--format",
        "none",
        pythonpath=[thirdparty],
    )
    assert r.returncode == 0, r.stderr
    c = bench_cli("claims", str(out), "--format", "markdown", pythonpath=[thirdparty])
    # markdown escapes brackets
    assert "toy.matmul_flops" in c.stdout and "holds (measured): 2 of 2 hold: \\[holds\\]" in c.stdout, c.stdout
    rep = bench_cli("report", str(out), "-o", str(tmp_path / "rep"), pythonpath=[thirdparty])
    assert rep.returncode == 0, rep.stderr
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "## Toy: matmul time vs n" in md and (tmp_path / "rep" / "toy_matmul.png").read_bytes()[:8] == PNG_MAGIC
    assert "toy.matmul_flops" in md


@pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (apt-get install -y chromium)"
)
def test_html_renders_in_headless_chromium(built, tmp_path):
    """Open the report in headless Chromium; a script appended to a copy records, after load,
    every image's complete/naturalWidth into the DOM, which --dump-dom prints."""
    page = built["html"].parent / "check.html"
    probe = (
        "<script>window.addEventListener('load',()=>{document.body.setAttribute('data-imgs',"
        "JSON.stringify([...document.images].map(i=>[i.complete,i.naturalWidth,i.naturalHeight])));"
        "document.body.setAttribute('data-title',document.title);});</script>"
    )
    page.write_text(built["html"].read_text().replace("</body>", probe + "</body>"))
    cmd = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=10000",
        "--dump-dom",
        page.as_uri(),
    ]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr[-2000:]
    m = re.search(r'data-imgs="([^"]*)"', p.stdout)
    assert m, f"the page did not finish loading: {p.stdout[:500]} {p.stderr[-1000:]}"
    imgs = json.loads(m.group(1).replace("&quot;", '"'))
    assert len(imgs) == len(built["pngs"]) == 7
    for complete, w, h in imgs:
        assert complete and w > 100 and h > 100, imgs
    assert 'data-title="bench report"' in p.stdout
    shutil.rmtree(tmp_path / "profile", ignore_errors=True)
