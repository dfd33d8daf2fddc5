"""Shared fixtures: real k6, a real embedded PostgreSQL, real servers on loopback."""

from __future__ import annotations

import fcntl
import functools
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from loadproof import conditions
from loadproof.orchestrator.db import EmbeddedPostgres

DATA = Path(__file__).parent / "data"
PROJECT = Path(__file__).parent.parent
SAMPLE = PROJECT / "data" / "sample"


@pytest.fixture(scope="session")
def embedded_pg() -> Iterator[EmbeddedPostgres]:
    """A real PostgreSQL server (pgserver), for the tests that stop and restart it."""
    pg = EmbeddedPostgres()
    pg.start()
    try:
        yield pg
    finally:
        pg.cleanup()


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    path = tmp_path / "runs"
    path.mkdir()
    return path


def _make_sample_report(folder: Path) -> tuple[Path, Path, str]:
    out = folder / "report"
    result = subprocess.run(
        [sys.executable, "-m", "loadproof.cli", "report", str(SAMPLE / "baseline"),
         str(SAMPLE / "optimized"), "--out", str(out), "--reports-dir", str(folder / "reports"),
         "--probe-baseline", str(SAMPLE / "probe-baseline"),
         "--probe-candidate", str(SAMPLE / "probe-optimized")],
        capture_output=True, text=True, timeout=240)
    return folder, out, result.stdout + "\n" + result.stderr + f"\nexit {result.returncode}"


@pytest.fixture(scope="session")
def sample_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """The shipped sample runs' report, probes included, made ONCE per test run through the
    CLI as a user runs it (``loadproof report``, every format; no --title, so the title comes
    from the experiment file beside the runs). Executing the report notebook is the costly
    part of the fast tests, so every test that only READS these outputs shares them (tests/
    test_report.py, test_report_alt_text.py, test_site.py): copy before changing anything.

    Returns (its folder, the report folder, the command's stdout + stderr ending in
    ``exit <code>``); the reports folder (feed, portfolio page) is ``<folder>/reports``.
    Under pytest-xdist (``make test`` runs the fast tests on two workers) each worker is a
    session of its own: the first worker to ask makes the report in the run's shared
    temporary folder, under a lock, and the others wait for it and read it."""
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        return _make_sample_report(tmp_path_factory.mktemp("sample-report"))
    shared = tmp_path_factory.getbasetemp().parent / "sample-report"  # this run's, not older
    with open(f"{shared}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        log = shared / "log.txt"
        if not log.is_file():
            shutil.rmtree(shared, ignore_errors=True)  # a worker that died while making it
            shared.mkdir()
            log.write_text(_make_sample_report(shared)[2])
        return shared, shared / "report", log.read_text()


QUIET_WAIT_TEST_S = 2.0


@pytest.fixture
def brief_quiet_wait(monkeypatch: pytest.MonkeyPatch) -> float:
    """Before each arm the pipeline waits until the machine is quiet, for at most
    conditions.QUIET_TIMEOUT_S (15 s). A shared test machine is seldom quiet, so every arm
    waited the whole bound: most of the pipeline tests' time. They check what the pipeline
    runs and records, not how long it waits, so here the bound is QUIET_WAIT_TEST_S; the wait
    still runs and is recorded in each run's schedule (``quiet_before``)."""
    monkeypatch.setattr(conditions, "wait_quiet",
                        functools.partial(conditions.wait_quiet, timeout_s=QUIET_WAIT_TEST_S))
    return QUIET_WAIT_TEST_S
