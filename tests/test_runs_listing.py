"""`loadproof runs`: stored runs newest first, broken ones listed with their problem."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from loadproof.cli import main
from loadproof.store import atomic_write_json, load_run

from .conftest import SAMPLE
from .helpers import make_run

JSON_KEYS = {"run_id", "label", "status", "target", "profile", "plan", "stages_completed",
             "requests", "started_at", "path", "problem"}


def _set(run_dir: Path, **changes: object) -> None:
    manifest = json.loads((run_dir / "manifest.json").read_text())
    manifest.update(changes)
    atomic_write_json(run_dir / "manifest.json", manifest)


def _store(root: Path) -> Path:
    """Two good runs, one still running, and four broken folders."""
    stages = {"s1-10vus": (10, [5.0, 6.0, 7.0], [200, 200, 500]),
              "s2-50vus": (50, [8.0, 9.0], [200, 200])}
    make_run(root, "older", stages)
    _set(root / "older", started_at="2026-01-01T10:00:00.000Z")
    make_run(root, "newer", stages, repeats=2)
    _set(root / "newer", started_at="2026-02-01T10:00:00.000Z", target=None,
         profile={"name": "optimized", "settings": {}})
    make_run(root, "live", {"s1-10vus": stages["s1-10vus"]}, status="running")
    _set(root / "live", started_at="2026-03-01T10:00:00.000Z")
    make_run(root, "lost-file", stages)
    _set(root / "lost-file", started_at="2025-12-01T10:00:00.000Z")
    (root / "lost-file" / "stages" / "r1-s2-50vus" / "requests.parquet").unlink()
    (root / "half").mkdir()
    (root / "half" / "manifest.json").write_text('{"format_version": 1, "run_id": "ha')
    (root / "empty").mkdir()
    (root / "no-keys").mkdir()
    (root / "no-keys" / "manifest.json").write_text('{"label": "x"}')
    (root / "notes.txt").write_text("not a run")
    return root


def test_runs_json_lists_every_run_newest_first(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    runs = _store(tmp_path / "runs")
    assert main(["runs", "--out", str(runs), "--format", "json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert all(set(item) == JSON_KEYS for item in listed)
    by_id = {item["run_id"]: item for item in listed}
    assert set(by_id) == {"run-older", "run-newer", "run-live", "run-lost-file", "half", "empty",
                          "no-keys"}
    dated = [item["run_id"] for item in listed if item["started_at"]]
    assert dated == ["run-live", "run-newer", "run-older", "run-lost-file"]

    newer = by_id["run-newer"]
    assert newer["status"] == "complete" and newer["problem"] is None
    assert newer["profile"] == "optimized" and newer["target"] is None
    assert newer["stages_completed"] == 4 and newer["requests"] == 10  # 2 stages x 2 repeats
    assert newer["plan"]["levels"] == [10, 50] and newer["plan"]["repeat"] == 2
    assert newer["path"] == str(runs / "newer")
    older = by_id["run-older"]
    assert older["target"] == "http://127.0.0.1:1" and older["requests"] == 5
    assert older["stages_completed"] == 2 and older["label"] == "older"

    assert "still marked running" in by_id["run-live"]["problem"]
    assert by_id["run-live"]["status"] == "running"
    assert "r1-s2-50vus" in by_id["run-lost-file"]["problem"]
    assert "missing" in by_id["run-lost-file"]["problem"]
    assert by_id["half"]["status"] == "corrupt" and "not valid JSON" in by_id["half"]["problem"]
    assert "no manifest.json" in by_id["empty"]["problem"]
    assert "'format_version'" in by_id["no-keys"]["problem"]
    assert by_id["no-keys"]["label"] == "x"
    # the listing agrees with what load_run accepts
    for item in listed:
        if item["problem"] is None:
            load_run(item["path"])


def test_runs_table_shows_problems_under_their_run(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    runs = _store(tmp_path / "runs")
    assert main(["runs", "--out", str(runs)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["RUN", "ID", "LABEL"]
    newer = next(line for line in lines if line.startswith("run-newer "))
    assert "profile optimized" in newer and "4/4" in newer
    assert "vus 10,50; 10s each; 2 repeats" in newer
    half = lines.index(next(line for line in lines if line.startswith("half ")))
    assert "corrupt" in lines[half]
    assert lines[half + 1].strip().startswith("problem: manifest.json is not valid JSON")
    assert sum(line.strip().startswith("problem:") for line in lines) == 5


def test_runs_on_a_missing_or_empty_store(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["runs", "--out", str(tmp_path / "nope")]) == 5
    assert "no run store at" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert main(["runs", "--out", str(tmp_path / "file")]) == 5
    assert "is not a folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["runs", "--out", str(tmp_path / "empty"), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert main(["runs", "--out", str(tmp_path / "empty")]) == 0
    assert "no runs in" in capsys.readouterr().err


def test_runs_lists_the_sample_as_a_process_without_data_libraries() -> None:
    code = ("import sys\nfrom loadproof.cli import main\n"
            "code = main(['runs', '--out', sys.argv[1], '--format', 'json'])\n"
            "loaded = [m for m in ('polars', 'pandas', 'pyarrow', 'numpy') if m in sys.modules]\n"
            "print(loaded, file=sys.stderr)\nsys.exit(code)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(SAMPLE)], capture_output=True,
                          text=True, check=True)
    assert proc.stderr.strip() == "[]"
    listed = json.loads(proc.stdout)
    assert sorted(item["label"] for item in listed) == ["baseline", "optimized",
                                                        "probe-baseline", "probe-optimized"]
    assert all(item["status"] == "complete" and item["problem"] is None for item in listed)
    assert all(item["requests"] > 0 and item["profile"] for item in listed)
    starts = [item["started_at"] for item in listed]
    assert starts == sorted(starts, reverse=True)


def test_output_closed_early_is_no_traceback() -> None:
    """`loadproof runs | head -1`: the reader leaves before the listing is written."""
    proc = subprocess.Popen([sys.executable, "-m", "loadproof.cli", "runs", "--out", str(SAMPLE)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # before the child can print: its write finds no reader
    with proc.stderr:
        err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141, err
    assert "Traceback" not in err and "Exception ignored" not in err
