"""The optimized profile's fast path answers exactly as the FastAPI routes it stands in for:
the same statuses, bodies and headers for good requests and for client mistakes, on two real
services (embedded PostgreSQL) side by side, one with the fast path and one without."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import pytest
from loadproof.orchestrator.server import ServiceProcess

pytestmark = pytest.mark.slow

BAD_BODIES: list[Any] = [
    {"task_type": "x"},
    {"persona_id": "", "task_type": "x"},
    {"persona_id": "p", "task_type": "has space"},
    {"persona_id": "p", "task_type": "x", "payload": [1, 2]},
    [1, 2],
]


def _answer(response: httpx.Response) -> tuple[int, Any, str | None]:
    return response.status_code, response.json(), response.headers.get("content-type")


def _finished(client: httpx.Client, url: str, task_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while True:
        task: dict[str, Any] = client.get(f"{url}/task/{task_id}").json()
        if task["status"] != "queued" or time.monotonic() > deadline:
            return task
        time.sleep(0.05)


def test_fast_path_answers_as_the_fastapi_routes() -> None:
    with ServiceProcess("optimized", overrides={"fast_path": True, "processes": 1}) as fast, \
            ServiceProcess("optimized", overrides={"fast_path": False, "processes": 1}) as slow, \
            httpx.Client(timeout=10) as client:
        for body in BAD_BODIES:
            a = _answer(client.post(f"{fast.url}/task", json=body))
            b = _answer(client.post(f"{slow.url}/task", json=body))
            assert a == b and a[0] == 422, body
        for raw in (b"{not json", b""):
            a = _answer(client.post(f"{fast.url}/task", content=raw,
                                    headers={"content-type": "application/json"}))
            b = _answer(client.post(f"{slow.url}/task", content=raw,
                                    headers={"content-type": "application/json"}))
            assert a[0] == b[0] == 422 and a[1]["detail"][0]["loc"][0] == "body", raw
        for path in ("not-a-uuid", str(uuid.uuid4())):
            a = _answer(client.get(f"{fast.url}/task/{path}"))
            b = _answer(client.get(f"{slow.url}/task/{path}"))
            assert a[0] == b[0] and a[0] in (404, 422), path
            if a[0] == 404:
                assert a[1] == b[1] == {"detail": f"task {path} not found"}
            else:
                assert [d["loc"] for d in a[1]["detail"]] == [d["loc"] for d in b[1]["detail"]]
        big = b"x" * 1_100_000
        assert client.post(f"{fast.url}/task", content=big).status_code == 413

        # a task's whole life, on each: the same shapes, known persona or not
        for persona in ("persona-3", "nobody"):
            body = {"persona_id": persona, "task_type": "summarize", "payload": {"n": 1}}
            posted = [client.post(f"{svc.url}/task", json=body) for svc in (fast, slow)]
            assert [p.status_code for p in posted] == [201, 201]
            assert [set(p.json()) for p in posted] == [{"task_id", "status"}] * 2
            done = [_finished(client, svc.url, p.json()["task_id"])
                    for svc, p in zip((fast, slow), posted, strict=True)]
            for task in done:
                task.pop("task_id"), task.pop("created_at"), task.pop("finished_at")
            assert done[0] == done[1] and done[0]["status"] in ("done", "failed")
        metrics = client.get(f"{fast.url}/metrics").text
    # the fast path's requests are labelled with the routes' own templates
    assert 'method="POST",route="/task",status="201"' in metrics
    assert 'method="GET",route="/task/{task_id}",status="200"' in metrics
