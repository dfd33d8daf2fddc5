"""Notebooks are thin, stored without outputs, and run from papermill on the shipped samples."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from loadproof.errors import ReportError
from loadproof.report import NOTEBOOKS_DIR, execute_notebook

from .conftest import SAMPLE

NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))


def test_the_three_notebooks_exist() -> None:
    assert [p.stem for p in NOTEBOOKS] == ["compare", "load_test", "report"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_stored_without_outputs_and_thin(path: Path) -> None:
    book = nbformat.read(path, as_version=4)
    code = [c for c in book.cells if c.cell_type == "code"]
    assert all(c.outputs == [] and c.execution_count is None for c in code)
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1
    for statement in ast.parse(params[0].source).body:
        # literal defaults only: papermill does not recompute derived values
        assert isinstance(statement, ast.Assign)
        ast.literal_eval(statement.value)


def test_samples_are_real_recorded_runs() -> None:
    for name in ("baseline", "optimized", "probe-baseline", "probe-optimized"):
        manifest = json.loads((SAMPLE / name / "manifest.json").read_text())
        assert manifest["status"] == "complete" and manifest["k6"]["version"] == "v1.1.0"
        assert manifest["profile"]["name"] in ("baseline", "optimized")


def test_compare_notebook_runs_from_papermill_cli(tmp_path: Path) -> None:
    out = tmp_path / "compare.ipynb"
    result = subprocess.run([sys.executable, "-m", "papermill", str(NOTEBOOKS_DIR / "compare.ipynb"),
                             str(out), "-p", "slo_p95_ms", "300", "--no-progress-bar"],
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    # a bare papermill gives the kernel no CurveZMQ keys; on loopback it stays quiet anyway
    # (loadproof.kernel), and no migration notice either
    assert "without encryption" not in result.stderr, result.stderr
    assert "migrating" not in result.stderr.lower(), result.stderr
    executed = nbformat.read(out, as_version=4)
    html = json.dumps([c.get("outputs") for c in executed.cells], ensure_ascii=False)
    # the papermill parameter reached the comparison: the capacity row states that SLO
    assert "Capacity (p95 ≤ 300 ms, success ≥ 99%)" in html


def test_unknown_parameter_fails_before_anything_runs(tmp_path: Path) -> None:
    out = tmp_path / "load_test.ipynb"
    with pytest.raises(ReportError, match=r"cell .*unknown parameter\(s\) stagez") as info:
        execute_notebook("load_test", out, {"stagez": "10,20", "run_now": True})
    assert info.value.path == out and out.is_file()  # the executed copy is kept


def test_wrong_type_is_named(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="repeat='two' should be int"):
        execute_notebook("load_test", tmp_path / "o.ipynb", {"repeat": "two"})


def test_load_test_notebook_explores_a_sample_without_load(tmp_path: Path) -> None:
    out = tmp_path / "load_test.ipynb"
    execute_notebook("load_test", out, {"existing_run": str(SAMPLE / "optimized")})
    executed = nbformat.read(out, as_version=4)
    outputs = json.dumps([c.get("outputs") for c in executed.cells if c.cell_type == "code"])
    assert "data:image/svg+xml;base64" in outputs and "s4-150vus" in outputs  # its charts


def test_an_experiment_file_is_a_papermill_parameter_file(tmp_path: Path) -> None:
    out = tmp_path / "compare.ipynb"
    result = subprocess.run([sys.executable, "-m", "papermill", str(NOTEBOOKS_DIR / "compare.ipynb"),
                             str(out), "-f", str(SAMPLE / "experiment.yaml"),
                             "--no-progress-bar"], capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
