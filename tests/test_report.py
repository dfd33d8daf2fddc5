"""Reports from stored runs (the shipped samples), through the CLI as a user runs it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import pytest
from loadproof.achievements import validate

from .conftest import SAMPLE


def loadproof(*args: str, cwd: Path | None = None, timeout: int = 240) \
        -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "loadproof.cli", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd)


# sample_report (tests/conftest.py): `loadproof report` on the samples, probes included, made
# once per session and shared with the other tests that read its files


@pytest.fixture(scope="module")
def sample_comparison_json() -> dict[str, Any]:
    """`loadproof compare --format json` on the sample runs, run once for the tests that
    read it."""
    result = loadproof("compare", str(SAMPLE / "baseline"), str(SAMPLE / "optimized"),
                       "--format", "json")
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def test_report_from_stored_runs(sample_report: tuple[Path, Path, str],
                                 sample_comparison_json: dict[str, Any]) -> None:
    tmp_path, out, log = sample_report
    assert log.endswith("exit 0"), log[-3000:]
    assert log.split("\n")[-3].strip() == str(out) or str(out) in log
    for name in ("report.html", "report.pdf", "report.md", "achievement.json", "report.ipynb"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "report.pdf").read_bytes()[:5] == b"%PDF-"
    html = (out / "report.html").read_text()
    assert "data:image/svg+xml;base64" in html and "<img src=\"data:image/png" not in html
    assert "nb.load_report" not in html  # code is hidden
    markdown = (out / "report.md").read_text()
    achievement = json.loads((out / "achievement.json").read_text())
    validate(achievement)
    # the figures each output prints are the comparison's, traceable to the run files
    comparison = sample_comparison_json
    head = next(s for s in comparison["stages"] if s["key"] == comparison["headline_stage"])
    p95 = head["metrics"]["latency_p95_ms"]
    measured = achievement["measurements"]["latency_improvement"]
    assert measured["ratio"] == p95["ratio"] and measured["verdict"] == p95["claim"]
    assert measured["files"] and all(Path(f).is_file() for f in measured["files"])
    for value in (p95["baseline"], p95["candidate"]):
        shown = f"{value:.1f} ms" if value < 100 else f"{value:.0f} ms"
        assert shown in markdown and shown in html, shown
    first = comparison["baseline"]["stages"][0]
    assert f"| {first['requests']:,} |" in markdown and f">{first['requests']:,}<" in html
    feed = json.loads((tmp_path / "reports" / "feed.json").read_text())
    assert feed["items"][0]["id"] == f"loadproof:{achievement['comparison_id']}"


def test_report_for_missing_runs_names_them(tmp_path: Path) -> None:
    result = loadproof("report", str(tmp_path / "nope-a"), str(tmp_path / "nope-b"),
                       "--reports-dir", str(tmp_path))
    assert result.returncode == 5
    assert "nope-a" in result.stderr and "nope-b" in result.stderr
    assert "Traceback" not in result.stderr


def test_compare_table_and_json(sample_comparison_json: dict[str, Any]) -> None:
    table = loadproof("compare", str(SAMPLE / "baseline"), str(SAMPLE / "optimized"))
    assert table.returncode == 0, table.stderr
    assert "p95 latency" in table.stdout and "capacity" in table.stdout
    data = sample_comparison_json
    stage = data["stages"][0]["metrics"]["latency_p95_ms"]
    assert {"baseline", "candidate", "ratio", "ci95", "verdict", "reasons"} <= set(stage)
    assert data["baseline"]["stages"][0]["requests"] > 0


def test_achievement_command_writes_file_and_feed(tmp_path: Path) -> None:
    result = loadproof("achievement", str(SAMPLE / "probe-baseline"),
                       str(SAMPLE / "probe-optimized"), "--reports-dir", str(tmp_path),
                       "--slo-p95-ms", "50", "--unit-cost", "200")
    assert result.returncode == 0, result.stderr
    record = json.loads(Path(result.stdout.strip()).read_text())
    validate(record)
    assert (tmp_path / "feed.json").is_file()


def test_user_mistakes_are_clear_errors(tmp_path: Path) -> None:
    bad_slo = loadproof("compare", str(SAMPLE / "baseline"), str(SAMPLE / "optimized"),
                        "--slo-success", "99")
    assert bad_slo.returncode == 2 and "--slo-success" in bad_slo.stderr
    other = tmp_path / "notes.txt"
    other.write_text("not k6\n")
    imported = loadproof("import", str(other), "--label", "x", "--out", str(tmp_path / "runs"))
    assert imported.returncode == 5 and "notes.txt" in imported.stderr
    assert "Expected one of" in imported.stderr
    for result in (bad_slo, imported):
        assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr
    bad_stage = loadproof("run", "--target", "http://127.0.0.1:9", "--label", "x",
                          "--stages", "0,10")
    assert bad_stage.returncode == 2 and "above 0" in bad_stage.stderr


TITLE = "Orchestrator optimization (sample)"  # data/sample/experiment.yaml


def _pdf_info(pdf: bytes) -> bytes:
    """The PDF's document information (WeasyPrint compresses it into an object stream)."""
    for match in re.finditer(rb"stream\r?\n(.*?)endstream", pdf, re.S):
        try:
            data = zlib.decompress(match.group(1))
        except zlib.error:
            continue
        if b"/Producer" in data:
            return data
    return pdf


def test_report_metadata_and_first_screen(sample_report: tuple[Path, Path, str]) -> None:
    _, out, log = sample_report
    assert log.endswith("exit 0"), log[-3000:]
    html = (out / "report.html").read_text()
    assert f"<title>{TITLE}</title>" in html and f"<h1>{TITLE}</h1>" in html
    assert "Notebook" not in re.search(r"<title>.*?</title>", html, re.S).group(0)  # type: ignore[union-attr]
    info = _pdf_info((out / "report.pdf").read_bytes())
    assert b"/Title (Orchestrator optimization \\(sample\\))" in info
    subject = re.search(rb"/Subject\s*(<[0-9a-fA-F]+>|\((?:[^)\\\\]|\\\\.)*\))", info)
    assert subject is not None
    raw = subject.group(1)
    text = (bytes.fromhex(raw[1:-1].decode()).decode("utf-16") if raw.startswith(b"<")
            else raw[1:-1].decode("latin-1"))
    assert "tail reshaped, not faster" in text  # the first screen's sentence as the subject
    lead = re.search(r"<p class=[\"']lead[\"']>(.*?)</p>", html, re.S)
    assert lead is not None
    sentence = re.sub(r"<[^>]+>", "", lead.group(1))
    comparison = json.loads((out / "comparison.json").read_text())
    head = next(s for s in comparison["stages"] if s["key"] == comparison["headline_stage"])
    dist = head["distribution"]
    assert dist["verdict"] == "tail reshaped, not faster"
    for value in (dist["mean_baseline_ms"], dist["mean_candidate_ms"]):
        assert f"{value:.1f} ms" in sentence
    assert "10 users" in sentence  # the slower light load is named beside the headline
    assert "probe" in sentence and "fell" in sentence  # and the probe's lower capacity
    # tiles only for claims: one repeat per arm claims nothing, so no tile at all
    assert not re.search(r"class=[\"']tile[\"']", html) and "not claimed:" not in html
    # the windows end with each run's own last stage, so the arms do not overlap
    windows = re.findall(r"(\d{4}-\d\d-\d\dT[\d:.]+Z) → (\d{4}-\d\d-\d\dT[\d:.]+Z)", html)
    assert len(windows) == 2 and windows[0][1] < windows[1][0]
    # every chart is vector, captioned, and described
    assert html.count("<figcaption>") == html.count("<figure>") >= 5


def test_markdown_carries_what_the_html_does(sample_report: tuple[Path, Path, str]) -> None:
    _, out, log = sample_report
    assert log.endswith("exit 0"), log[-3000:]
    markdown = (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    for heading in ("Results by stage", "Per endpoint", "Capacity", "Caveats",
                    "Interview talking points", "Measurement integrity",
                    "Methodology and provenance", "Glossary"):
        assert f"## {heading}" in markdown and f">{heading}<" in html, heading
    probe = json.loads(loadproof("compare", str(SAMPLE / "probe-baseline"),
                                 str(SAMPLE / "probe-optimized"), "--format", "json").stdout)
    cap = probe["capacity"]
    ratio = f"{cap['ratio_low']:.2f}x–{cap['ratio_high']:.2f}x"
    assert f"Capacity ratio {ratio}" in markdown and f"capacity ratio {ratio}" in html
    assert "GET /task/{id}" in markdown and "GET /task/{id}" in html
    assert "tail reshaped, not faster" in markdown


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs a headless Chromium")
def test_phone_width_cuts_no_table(sample_report: tuple[Path, Path, str],
                                   tmp_path: Path) -> None:
    """At 390 px nothing is wider than the screen but a table in its own scrolling box."""
    _, out, log = sample_report
    assert log.endswith("exit 0"), log[-3000:]
    probe = """<script>window.addEventListener("load", () => {
      const width = window.innerWidth, cut = [];
      document.querySelectorAll("table, img, pre, .lp p").forEach(el => {
        const box = el.getBoundingClientRect();
        if (box.right > width + 1 && !el.closest(".scroll")) cut.push(el.tagName);
      });
      parent.postMessage(JSON.stringify(
        {width, page: document.documentElement.scrollWidth, cut}), "*");
    });</script>"""
    page = tmp_path / "phone.html"
    page.write_text((out / "report.html").read_text().replace("</body>", probe + "</body>"))
    # a browser window is at least 500 px wide: the report is laid out in a 390 px frame
    frame = tmp_path / "frame.html"
    frame.write_text(f'<html><body><iframe src="{page.as_uri()}" style="width:390px;'
                     'height:2000px;border:0"></iframe><script>addEventListener("message", '
                     'e => document.body.setAttribute("data-phone", e.data));</script>'
                     "</body></html>")
    result = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu",
                             "--allow-file-access-from-files", "--virtual-time-budget=20000",
                             "--dump-dom", frame.as_uri()],
                            capture_output=True, text=True, timeout=120)
    found = re.search(r'data-phone="([^"]*)"', result.stdout)
    assert found is not None, result.stderr[-2000:]
    state = json.loads(found.group(1).replace("&quot;", '"'))
    assert state["width"] <= 400 and state["page"] <= state["width"], state
    assert state["cut"] == [], state
