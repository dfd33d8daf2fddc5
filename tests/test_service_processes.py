"""The reference service as several processes on one socket (the ``processes`` setting): one
URL, every process's requests counted once in /metrics, nothing left running after a stop or
after one process dies."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

BODY = {"persona_id": "persona-1", "task_type": "summarize", "payload": {"text": "hi"}}


def _serve(tmp_path: Path) -> subprocess.Popen[str]:
    env = dict(os.environ, ORCHESTRATOR_DATA_DIR=str(tmp_path / "pg"))
    return subprocess.Popen([sys.executable, "-m", "loadproof.cli", "serve", "--profile",
                             "optimized", "--set", "processes=2", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _postgres(data_dir: Path) -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["name", "cmdline"])
            if p.info["name"] == "postgres" and str(data_dir) in " ".join(p.info["cmdline"] or [])]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    proc = _serve(tmp_path)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), proc.stderr.read() if proc.stderr else ""
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)


def _count(text: str) -> float:
    return sum(float(m.group(1)) for m in re.finditer(
        r'^http_request_duration_seconds_count\{[^}]*route="/task"[^}]*status="201"[^}]*\} (\S+)$',
        text, re.M))


@pytest.mark.slow
def test_two_processes_serve_one_url_and_metrics_count_every_request(
        served: tuple[subprocess.Popen[str], str], tmp_path: Path) -> None:
    proc, url = served
    children = psutil.Process(proc.pid).children()
    assert len(children) == 2
    for _ in range(40):  # a new connection each: the kernel hands them to either process
        assert httpx.post(f"{url}/task", json=BODY, timeout=10).status_code == 201
    # a scrape is answered by one process, and adds up both
    counts = {_count(httpx.get(f"{url}/metrics", timeout=10).text) for _ in range(8)}
    assert counts == {40.0}
    pids = set(re.findall(r'^breaker_state\{pid="(\d+)"', httpx.get(f"{url}/metrics").text,
                          re.M))
    assert pids == {str(c.pid) for c in children}
    assert httpx.get(f"{url}/health/ready", timeout=5).json()["status"] == "ready"
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    assert proc.returncode == 0
    time.sleep(0.5)
    assert not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children)
    assert _postgres(tmp_path / "pg") == []


@pytest.mark.slow
def test_one_process_dying_stops_the_service(served: tuple[subprocess.Popen[str], str],
                                             tmp_path: Path) -> None:
    proc, _ = served
    first, second = psutil.Process(proc.pid).children()
    first.kill()
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert f"service process {first.pid} exited" in stderr
    time.sleep(0.5)
    assert not (second.is_running() and second.status() != psutil.STATUS_ZOMBIE)
    assert _postgres(tmp_path / "pg") == []


@pytest.mark.slow
def test_killing_the_supervisor_ends_every_service_process(
        served: tuple[subprocess.Popen[str], str], tmp_path: Path) -> None:
    proc, url = served
    children = psutil.Process(proc.pid).children()
    assert len(children) == 2
    proc.kill()  # no cleanup of its own: the kernel's parent-death signal ends the others
    proc.wait(10)
    try:
        _, alive = psutil.wait_procs(children, timeout=15)
        assert alive == []
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{url}/health/live", timeout=2)
    finally:
        # the embedded PostgreSQL the killed supervisor started has no parent to end it (as
        # after a kill -9 of a one-process service): stop it here, so the test leaves nothing
        for postmaster in _postgres(tmp_path / "pg"):
            with contextlib.suppress(psutil.NoSuchProcess):
                postmaster.terminate()
        psutil.wait_procs(_postgres(tmp_path / "pg"), timeout=15)
    assert _postgres(tmp_path / "pg") == []
