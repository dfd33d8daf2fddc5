"""The reference service, as a real process on loopback with a real embedded PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import psutil
import pytest
from loadproof.orchestrator.db import EmbeddedPostgres
from loadproof.orchestrator.server import ServiceProcess
from loadproof.orchestrator.settings import ProfileError, load_settings


@pytest.fixture(scope="module")
def service() -> Iterator[ServiceProcess]:
    with ServiceProcess("optimized") as svc:
        yield svc


def post(url: str, body: object, **kw: object) -> httpx.Response:
    return httpx.post(f"{url}/task", json=body, timeout=10, **kw)  # type: ignore[arg-type]


@pytest.mark.slow
def test_task_lifecycle(service: ServiceProcess) -> None:
    created = post(service.url, {"persona_id": "persona-3", "task_type": "summarize",
                                 "payload": {"text": "hi"}})
    assert created.status_code == 201
    task_id = created.json()["task_id"]
    assert created.json()["status"] == "queued"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        task = httpx.get(f"{service.url}/task/{task_id}").json()
        if task["status"] == "done":
            break
        time.sleep(0.05)
    assert task["status"] == "done" and task["result"]["tokens"] > 0
    listed = httpx.get(f"{service.url}/tasks", params={"persona_id": "persona-3"}).json()
    assert task_id in [t["task_id"] for t in listed]


@pytest.mark.slow
def test_unknown_persona_fails_the_task_not_the_request(service: ServiceProcess) -> None:
    task_id = post(service.url, {"persona_id": "nobody", "task_type": "x"}).json()["task_id"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        task = httpx.get(f"{service.url}/task/{task_id}").json()
        if task["status"] != "queued":
            break
        time.sleep(0.05)
    assert task["status"] == "failed" and "unknown persona" in task["error"]


@pytest.mark.parametrize(("body", "field"), [
    ({"task_type": "x"}, "persona_id"),
    ({"persona_id": "p"}, "task_type"),
    ({"persona_id": "", "task_type": "x"}, "persona_id"),
    ({"persona_id": "p", "task_type": "has space"}, "task_type"),
    ({"persona_id": "p", "task_type": "x", "payload": [1, 2]}, "payload"),
])
@pytest.mark.slow
def test_invalid_body_names_the_field(service: ServiceProcess, body: dict, field: str) -> None:
    response = post(service.url, body)
    assert response.status_code == 422
    assert field in [d["loc"][-1] for d in response.json()["detail"]]


@pytest.mark.slow
def test_client_mistakes_never_give_500(service: ServiceProcess) -> None:
    url = service.url
    malformed = httpx.post(f"{url}/task", content=b"{not json",
                           headers={"content-type": "application/json"})
    assert malformed.status_code == 422
    big = httpx.post(f"{url}/task", content=b"x" * 1_100_000,
                     headers={"content-type": "application/json"})
    assert big.status_code == 413
    assert httpx.get(f"{url}/task/{uuid.uuid4()}").status_code == 404
    assert httpx.get(f"{url}/task/not-a-uuid").status_code == 422
    assert httpx.get(f"{url}/tasks", params={"limit": 0}).status_code == 422
    assert len(httpx.get(f"{url}/tasks", params={"limit": 100000}).json()) <= 100


@pytest.mark.slow
def test_health_and_metrics(service: ServiceProcess) -> None:
    assert httpx.get(f"{service.url}/health/live").json() == {"status": "live"}
    ready = httpx.get(f"{service.url}/health/ready").json()
    assert ready["status"] == "ready" and ready["components"]["pool"]["size"] == 10
    assert ready["components"]["breaker"]["state"] == "closed"
    text = httpx.get(f"{service.url}/metrics").text
    for name in ("http_request_duration_seconds_bucket", "http_requests_in_flight",
                 "db_pool_size", "db_pool_checked_out", "db_pool_overflow",
                 "rate_limited_total", "breaker_state", "task_queue_depth"):
        assert name in text, name
    assert 'route="/task"' in text


@pytest.mark.slow
def test_rate_limiter_sheds_with_429_and_retry_after() -> None:
    with ServiceProcess("optimized", overrides={"rate_limit_enabled": True, "rate_limit_rps": 1,
                                                "rate_limit_burst": 5}) as svc:
        statuses = [post(svc.url, {"persona_id": "persona-1", "task_type": "x"})
                    for _ in range(30)]
    limited = [r for r in statuses if r.status_code == 429]
    assert limited and all(int(r.headers["retry-after"]) >= 1 for r in limited)
    assert {r.status_code for r in statuses} <= {201, 429}


def test_profiles_and_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    opt = load_settings("optimized")
    assert (opt.pool_size, opt.max_overflow, opt.pool_timeout_s, opt.pool_recycle_s,
            opt.pool_pre_ping) == (10, 20, 30.0, 3600, True)
    assert opt.admission_enabled and opt.breaker_enabled and opt.separate_worker_pool
    assert not opt.rate_limit_enabled  # the hard cap is a switch, off by default
    assert opt.group_commit and opt.fast_path and opt.processes == 1
    base0 = load_settings("baseline")
    assert not (base0.group_commit or base0.fast_path or base0.admission_enabled)
    base = load_settings("baseline")
    assert (base.pool_size, base.max_overflow, base.rate_limit_enabled, base.breaker_enabled,
            base.request_timeout_s, base.separate_worker_pool) == (5, 0, False, False, 0, False)
    monkeypatch.setenv("ORCHESTRATOR_POOL_SIZE", "7")
    assert load_settings("baseline").pool_size == 7
    assert load_settings("baseline", pool_size=9).pool_size == 9
    with pytest.raises(ProfileError, match="unknown profile 'fast'"):
        load_settings("fast")
    monkeypatch.delenv("ORCHESTRATOR_POOL_SIZE")
    bad = tmp_path / "bad.toml"
    bad.write_text("pool_size = -1\n")
    with pytest.raises(ProfileError, match="pool_size"):
        load_settings(str(bad))


def _pg_processes(data_dir: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if proc.info["name"] == "postgres" and str(data_dir) in cmdline:
            found.append(proc)
    return found


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_shuts_down_cleanly(tmp_path: Path, sig: signal.Signals) -> None:
    data_dir = tmp_path / "pg"
    env = dict(os.environ, ORCHESTRATOR_DATA_DIR=str(data_dir))
    proc = subprocess.Popen([sys.executable, "-m", "loadproof.cli", "serve", "--profile",
                             "baseline", "--port", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    assert line.startswith("http://127.0.0.1:")
    assert httpx.get(f"{line}/health/ready", timeout=5).status_code == 200
    assert _pg_processes(data_dir)
    proc.send_signal(sig)
    proc.communicate(timeout=30)  # waits, and closes the pipes
    assert proc.returncode == 0
    time.sleep(0.5)
    assert _pg_processes(data_dir) == []


async def _count_existing(dsn: str, ids: list[str]) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM tasks WHERE id = ANY($1::uuid[])",
                                       ids))
    finally:
        await conn.close()


@pytest.mark.slow
def test_database_outage_breaker_readiness_recovery_no_lost_tasks(tmp_path: Path) -> None:
    pg = EmbeddedPostgres(tmp_path / "pg")
    url = pg.start()
    acked: list[str] = []
    stop = threading.Event()

    def load() -> None:  # bounded: at most 20 s and 20,000 requests, loopback only
        with httpx.Client(timeout=5) as client:
            deadline = time.monotonic() + 20
            for _ in range(20_000):
                if stop.is_set() or time.monotonic() > deadline:
                    return
                try:
                    r = client.post(f"{svc.url}/task",
                                    json={"persona_id": "persona-2", "task_type": "x"})
                except httpx.HTTPError:
                    continue
                if r.status_code == 201:
                    acked.append(r.json()["task_id"])
                time.sleep(0.002)

    svc = ServiceProcess("optimized", database_url=url,
                         overrides={"breaker_reset_timeout_s": 0.5, "rate_limit_enabled": False})
    svc.start()
    try:
        loader = threading.Thread(target=load)
        loader.start()
        time.sleep(1.0)
        pg.stop()  # the database goes away mid-load
        started = time.monotonic()
        ready = httpx.get(f"{svc.url}/health/ready", timeout=5)
        assert time.monotonic() - started < 1.0
        assert ready.status_code == 503 and ready.json()["failing"] == ["database"]
        # the breaker opens after consecutive failures, then answers 503 fast
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            r = post(svc.url, {"persona_id": "persona-2", "task_type": "x"})
            if r.status_code == 503 and "circuit open" in r.text:
                break
        else:
            pytest.fail("breaker never opened")
        timings = []
        for _ in range(15):
            t0 = time.perf_counter()
            r = post(svc.url, {"persona_id": "persona-2", "task_type": "x"})
            timings.append(time.perf_counter() - t0)
            if r.status_code != 503:
                break
        # fast: a tenth of the 5 s request deadline a closed breaker would wait on the database
        # (a bare request takes 40-90 ms on a busy 2-core machine, so 50 ms was a timing race)
        assert statistics.median(timings) < 0.5
        pg.restart()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if post(svc.url, {"persona_id": "persona-2", "task_type": "x"}).status_code == 201:
                break
            time.sleep(0.2)
        else:
            pytest.fail("service did not recover after the database returned")
        assert httpx.get(f"{svc.url}/health/ready").status_code == 200
        stop.set()
        loader.join(30)
        assert acked
        dsn = url.replace("postgresql+asyncpg://", "postgresql://")
        assert asyncio.run(_count_existing(dsn, acked)) == len(acked)
    finally:
        stop.set()
        svc.stop()
        pg.cleanup()
