"""Reports from stored runs (the shipped samples), through the CLI as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from loadproof.achievements import validate

from .conftest import SAMPLE


def loadproof(*args: str, cwd: Path | None = None, timeout: int = 240) \
        -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "loadproof.cli", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd)


def test_report_from_stored_runs(tmp_path: Path) -> None:
    out = tmp_path / "report"
    result = loadproof("report", str(SAMPLE / "baseline"), str(SAMPLE / "optimized"), "--out",
                       str(out), "--reports-dir", str(tmp_path / "reports"), "--title", "Sample")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == str(out)
    for name in ("report.html", "report.pdf", "report.md", "achievement.json", "report.ipynb"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "report.pdf").read_bytes()[:5] == b"%PDF-"
    html = (out / "report.html").read_text()
    assert "data:image/png;base64" in html
    assert "nb.load_report" not in html  # code is hidden
    markdown = (out / "report.md").read_text()
    achievement = json.loads((out / "achievement.json").read_text())
    validate(achievement)
    # the figures each output prints are the comparison's, traceable to the run files
    comparison = json.loads(loadproof("compare", str(SAMPLE / "baseline"),
                                      str(SAMPLE / "optimized"), "--format", "json").stdout)
    head = next(s for s in comparison["stages"] if s["key"] == comparison["headline_stage"])
    p95 = head["metrics"]["latency_p95_ms"]
    measured = achievement["measurements"]["latency_improvement"]
    assert measured["ratio"] == p95["ratio"] and measured["verdict"] == p95["claim"]
    assert measured["files"] and all(Path(f).is_file() for f in measured["files"])
    for value in (p95["baseline"], p95["candidate"]):
        shown = f"{value:.1f} ms" if value < 100 else f"{value:.0f} ms"
        assert shown in markdown and shown in html, shown
    first = comparison["baseline"]["stages"][0]
    assert f"{first['requests']:,} requests" in markdown
    feed = json.loads((tmp_path / "reports" / "feed.json").read_text())
    assert feed["items"][0]["id"] == f"loadproof:{achievement['comparison_id']}"


def test_report_for_missing_runs_names_them(tmp_path: Path) -> None:
    result = loadproof("report", str(tmp_path / "nope-a"), str(tmp_path / "nope-b"),
                       "--reports-dir", str(tmp_path))
    assert result.returncode == 5
    assert "nope-a" in result.stderr and "nope-b" in result.stderr
    assert "Traceback" not in result.stderr


def test_compare_table_and_json() -> None:
    table = loadproof("compare", str(SAMPLE / "baseline"), str(SAMPLE / "optimized"))
    assert table.returncode == 0, table.stderr
    assert "p95 latency" in table.stdout and "capacity" in table.stdout
    data = json.loads(loadproof("compare", str(SAMPLE / "baseline"), str(SAMPLE / "optimized"),
                                "--format", "json").stdout)
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
