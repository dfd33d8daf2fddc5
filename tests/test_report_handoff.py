"""What `loadproof report` makes once and hands to the notebook: per-endpoint rows from one
ordered copy per stage, chart inputs binned where they are read (wider bins on long runs), and
both carried in comparison.json to the kernel, which uses them only while the runs' request
files are unchanged."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import psutil
import pytest
from loadproof import aggregate
from loadproof.compare import Comparison
from loadproof.endpoints import _stage_arms, endpoint_rows
from loadproof.handoff import read_comparison
from loadproof.metrics import outcomes
from loadproof.report import make_report
from loadproof.stats import percentile
from loadproof.store import Run, load_run

from .conftest import SAMPLE


def _requests(seed: int, n: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    names = np.array(["GET /a", "POST /b", "GET /c/{id}", None], dtype=object)
    status = rng.choice([200, 200, 200, 201, 302, 429, 500, 0], n)
    expected = rng.choice(np.array([True, False, None], dtype=object), n, p=[0.8, 0.1, 0.1])
    return pl.DataFrame({
        "duration_ms": np.round(rng.lognormal(3, 1, n), 1),  # rounded: ties, as k6's ms
        "status": status.astype(np.int32), "expected": expected.tolist(),
        # repeat 2 of "GET /c/{id}" stays below min_successes
        "repeat": rng.choice([1, 2, 3], n, p=[0.45, 0.1, 0.45]).astype(np.int32),
        "name": rng.choice(names, n, p=[0.5, 0.3, 0.15, 0.05]).tolist(),
    }, schema_overrides={"expected": pl.Boolean, "name": pl.String})


@pytest.mark.parametrize("seed,n", [(1, 400), (2, 5_000)])
def test_endpoint_figures_are_each_names_nearest_ranks(seed: int, n: int) -> None:
    frame = _requests(seed, n)
    read, arms = _stage_arms(frame.lazy(), 30)
    assert read == n
    named = frame.filter(pl.col("name").is_not_null())
    assert sorted(arms) == sorted(named["name"].unique().to_list())
    for name, arm in arms.items():
        rows = named.filter(pl.col("name") == name)
        ok, _, _ = outcomes(rows)
        ms = rows["duration_ms"].to_numpy()
        assert (arm.requests, arm.successes) == (rows.height, int(ok.sum()))
        ordered = np.sort(ms[ok])
        enough = len(ordered) >= 30
        assert (arm.p50_ms, arm.p95_ms, arm.p99_ms) == tuple(
            percentile(ordered, q) if enough else None for q in (0.5, 0.95, 0.99))
        repeats = rows["repeat"].to_numpy()
        expected = []
        for repeat in sorted(set(repeats.tolist())):
            mine = np.sort(ms[ok & (repeats == repeat)])
            if len(mine) >= 30 and percentile(mine, 0.95):
                expected.append(percentile(mine, 0.95))
        assert arm.p95_per_repeat == expected


@pytest.mark.parametrize("width", [1, 7])
def test_binned_quantiles_are_polars_quantiles_per_bin(width: int) -> None:
    rng = np.random.default_rng(width)
    # rows nearly in time order, as a run's are, with a few out of place and empty bins
    bins = np.sort(rng.integers(0, 300, 20_000))
    bins[rng.integers(0, len(bins), 200)] = rng.integers(0, 300, 200)
    bins[(bins > 100) & (bins < 120)] = 99
    ms = np.round(rng.lognormal(3, 1, len(bins)), 1)
    mine = aggregate._binned_quantiles(bins // width, ms, width)
    theirs = (pl.DataFrame({"second": (bins // width * width).astype(np.float64), "ms": ms})
              .group_by("second")
              .agg(pl.col("ms").quantile(0.50).alias("p50_ms"),
                   pl.col("ms").quantile(0.95).alias("p95_ms"),
                   pl.col("ms").quantile(0.99).alias("p99_ms"))
              .sort("second"))
    assert mine.equals(theirs)


def test_a_long_run_is_drawn_in_wider_bins() -> None:
    run = load_run(SAMPLE / "baseline")
    per_second, spans = aggregate.quantiles_per_second(run)
    last = max(high for _, _, high in spans)
    binned, _, width = aggregate.quantiles_over_time(run, max_bins=10)
    assert width == math.ceil((last + 1) / 10) > 1
    assert binned.height <= 10
    assert (binned["second"] % width == 0).all()
    # exactly the quantiles of the answers in each bin
    t = _answered_seconds(run)
    first = binned.row(0, named=True)
    inside = np.sort(t.filter((pl.col("t") >= first["second"])
                              & (pl.col("t") < first["second"] + width))["ms"].to_numpy())
    assert first["p95_ms"] == inside[math.floor((len(inside) - 1) * 0.95 + 0.5)]
    assert per_second.height > binned.height


def _answered_seconds(run: Run) -> pl.DataFrame:
    scan = pl.scan_parquet(aggregate._files(run))
    start = scan.select(pl.col("timestamp").min()).collect().item()
    ok = pl.col("status").is_between(200, 399)
    return scan.filter(ok).select(
        ((pl.col("timestamp") - start).dt.total_milliseconds() // 1000).alias("t"),
        pl.col("duration_ms").alias("ms")).collect()


def _report_of_copies(tmp_path: Path) -> tuple[Path, Path, dict[str, Any]]:
    """A Markdown report of copies of the samples: (the runs' folder, the report's folder,
    its comparison.json)."""
    runs = tmp_path / "runs"
    for name in ("baseline", "optimized"):
        shutil.copytree(SAMPLE / name, runs / name)
    out = make_report(runs / "baseline", runs / "optimized", out_dir=tmp_path / "report",
                      reports_dir=tmp_path / "reports", formats="md", runs_dir=runs)
    return runs, out, json.loads((out / "comparison.json").read_text())


def test_the_notebook_uses_what_the_report_handed_it_while_the_files_are_unchanged(
        tmp_path: Path) -> None:
    runs, out, handed = _report_of_copies(tmp_path)
    assert handed["endpoints"] and handed["chart_inputs"]
    aggregate._MEMO.clear()
    comparison = read_comparison(out / "comparison.json")
    assert comparison.endpoints is not None
    assert endpoint_rows(comparison) == endpoint_rows(
        read_comparison_without_rows(out / "comparison.json"))
    base = comparison.baseline
    kept = aggregate.quantiles_over_time(base)
    assert len(aggregate._MEMO) == len(handed["chart_inputs"])  # nothing made again
    aggregate._MEMO.clear()
    assert aggregate.quantiles_over_time(base)[0].equals(kept[0])
    # a request file written again since is read again
    aggregate._MEMO.clear()
    read_comparison(out / "comparison.json")
    before = set(aggregate._MEMO)
    stage_file = next((runs / "baseline").glob("stages/*/requests.parquet"))
    stage_file.write_bytes(stage_file.read_bytes())
    later = stage_file.stat().st_mtime_ns + 1_000_000_000  # a coarse clock may not move
    os.utime(stage_file, ns=(later, later))
    aggregate.quantiles_over_time(base)
    made = set(aggregate._MEMO) - before
    assert len(made) == 1 and next(iter(made))[0] == "over_time"


def test_the_report_hands_over_only_its_own_runs_chart_inputs(tmp_path: Path) -> None:
    """What other runs this process aggregated before (a notebook, a test) stays out of the
    comparison's file."""
    other = load_run(SAMPLE / "optimized")
    aggregate._MEMO.clear()
    aggregate.quantiles_over_time(other)
    runs, out, handed = _report_of_copies(tmp_path)
    paths = {part for item in handed["chart_inputs"] for part in item["key"]
             if isinstance(part, str) and part.endswith(".parquet")}
    assert paths and all(str(runs) in path for path in paths)
    assert {item["key"][0] for item in handed["chart_inputs"]} == {"over_time", "histogram"}


def read_comparison_without_rows(path: Path) -> Comparison:
    """The same comparison with its endpoint rows made from the requests."""
    comparison = read_comparison(path)
    comparison.endpoints = None
    return comparison


def _kernels() -> list[str]:
    return [" ".join(p.cmdline()) for p in psutil.Process().children(recursive=True)
            if "ipykernel" in " ".join(p.cmdline())]


def test_a_report_that_fails_after_its_kernel_started_leaves_no_kernel(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(OSError):
        make_report(SAMPLE / "baseline", SAMPLE / "optimized", out_dir=blocker / "report",
                    reports_dir=tmp_path / "reports", formats="html")
    assert _kernels() == []
    assert not list(Path(tempfile.gettempdir()).glob("loadproof-kernel-*.log")) or all(
        p.stat().st_mtime < blocker.stat().st_mtime
        for p in Path(tempfile.gettempdir()).glob("loadproof-kernel-*.log"))


def test_the_comparisons_process_hands_its_error_back_as_it_was(tmp_path: Path) -> None:
    broken = tmp_path / "baseline"
    shutil.copytree(SAMPLE / "baseline", broken)
    next(broken.glob("stages/*/requests.parquet")).write_text("not parquet")
    out = subprocess.run([sys.executable, "-m", "loadproof.cli", "report", str(broken),
                          str(SAMPLE / "optimized"), "--out", str(tmp_path / "report"),
                          "--reports-dir", str(tmp_path / "reports"), "--formats", "md"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 5, out.stderr  # RunStoreError's code, from the child
    assert "cannot read request data" in out.stderr and "Traceback" not in out.stderr
    assert _kernels() == []


def test_a_run_compared_with_itself_is_handed_over_once() -> None:
    from loadproof.compare import compare_runs
    from loadproof.report import chart_inputs

    run = load_run(SAMPLE / "baseline")
    aggregate._MEMO.clear()
    keys = [tuple(item["key"]) for item in chart_inputs(compare_runs(run, run))]
    assert keys and len(keys) == len(set(keys)), keys
