"""A real A/A experiment on the reference service: the arms are measured alone (never two
embedded databases at once), in ABBA order, with their conditions recorded."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import psutil
import pytest
from loadproof.pipeline import arm_order, run_pipeline
from loadproof.progress import Progress
from loadproof.store import load_run

EXPERIMENT = """\
title: A/A on the reference service
arms:
  first: {profile: baseline}
  second: {profile: baseline}
stages: [10]
stage_duration: 2s
warmup: 1s
repeat: 3
"""


def _postmasters(marker: str) -> int:
    """PostgreSQL postmasters whose data folder lies under ``marker`` (this test's own)."""
    count = 0
    for proc in psutil.process_iter(["name", "cmdline", "ppid"]):
        try:
            cmdline = " ".join(proc.info["cmdline"] or [])
        except psutil.Error:
            continue
        if proc.info["name"] == "postgres" and "-D" in cmdline and marker in cmdline:
            count += 1
    return count


def test_arm_order_alternates() -> None:
    assert [arm_order(r, 2) for r in (1, 2, 3, 4)] == [[0, 1], [1, 0], [0, 1], [1, 0]]


@pytest.mark.slow
def test_aa_pipeline_is_isolated_and_claims_nothing(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    brief_quiet_wait: float) -> None:
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(private_tmp))  # the services' databases live in here
    experiment = tmp_path / "aa.yaml"
    experiment.write_text(EXPERIMENT)
    seen: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            seen.append(_postmasters(str(private_tmp)))
            stop.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        out = run_pipeline(experiment, reports_dir=tmp_path / "reports",
                           runs_dir=tmp_path / "runs", progress=Progress(quiet=True))
    finally:
        stop.set()
        sampler.join(5)
    assert max(seen) == 1, "the sampler saw an embedded database running"
    assert seen.count(1) > 10
    assert _postmasters(str(private_tmp)) == 0  # nothing left running
    runs = {r.label: r for r in (load_run(p) for p in (tmp_path / "runs").iterdir())}
    orders = [s["order"] for s in runs["first"].manifest["schedule"]]
    assert orders == [["first", "second"], ["second", "first"], ["first", "second"]]
    for run in runs.values():
        for record in run.stages:
            conditions = record["conditions"]
            assert conditions["k6_cpu_cores"] > 0 and conditions["target_cpu_cores"] > 0
            assert conditions["other_includes"] == []
        for schedule in run.manifest["schedule"]:
            assert schedule["service_stopped"]["left_running"] == []
            assert 0 < schedule["quiet_before"]["waited_s"] <= brief_quiet_wait + 5
    # the comparison ran on replicated, isolated arms: verdicts come from 3 repeats each, and
    # whether this one A/A makes a claim is left to the simulated calibration (test_aa.py),
    # which fixes its seed; a real one would fail by chance in up to 5% of CI runs
    comparison = json.loads((out / "comparison.json").read_text())
    p95 = comparison["stages"][0]["metrics"]["latency_p95_ms"]
    assert p95["repeats"] == [3, 3] and p95["interval"] == "between repeats"
