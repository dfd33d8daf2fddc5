"""The optimized profile's fast path answers exactly as the FastAPI routes it stands in for:
the same statuses, bodies and headers for good requests and for client mistakes, on two real
services (embedded PostgreSQL) side by side, one with the fast path and one without."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
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
    # values PostgreSQL cannot store: refused before they reach a group commit
    {"persona_id": "p\u0000", "task_type": "x"},
    {"persona_id": "p", "task_type": "x", "payload": {"k": ["ok", {"z\u0000": 1}]}},
]
# JSON text json.dumps would not write (NaN, overflowing numbers, lone surrogates, null),
# with FastAPI's status for it: 400 for a body it cannot read (not UTF-8, nested beyond what
# the parser takes), else 422
RAW_BODIES = [(b"{not json", 422), (b"", 422), (b"null", 422),
              (b'{"persona_id": "p", "task_type": "x", "payload": {"n": NaN}}', 422),
              (b'{"persona_id": "p", "task_type": "x", "payload": {"n": 1e999}}', 422),
              (b'{"persona_id": "p\\ud800", "task_type": "x"}', 422),
              (b'{"persona_id": "p", "task_type": "x", "payload": {"s": "\\udfff"}}', 422),
              (b'{"persona_id": "\xff\xfe\xfa", "task_type": "x"}', 400),
              (b"[" * 100_000, 400),
              # deep, but parsed: its 422 echoes it back
              (b'{"task_type": "x", "payload": {"a": ' + b"[" * 600 + b"]" * 600 + b"}}", 422)]
TASK_IDS = ["not-a-uuid", "12345678-1234-5678-1234-56781234567", "{12345678-1234-5678-1234-5678123456}",
            "urn:uuid:12345678-1234-5678-1234-567812345678", "1234567812345678123456781234567Z"]


def _answer(response: httpx.Response) -> tuple[int, bytes, list[tuple[str, str]]]:
    """Status, body bytes and headers but the date (which may tick between the two)."""
    return (response.status_code, response.content,
            sorted((k, v) for k, v in response.headers.items() if k != "date"))


def _chunks(size: int) -> Iterator[bytes]:
    """A body sent chunked (no content-length), ``size`` bytes in 64 KiB chunks."""
    for start in range(0, size, 65_536):
        yield b"x" * min(65_536, size - start)


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
        def both(method: str, path: str, **kw: Any) -> tuple[Any, Any]:
            return (_answer(client.request(method, f"{fast.url}{path}", **kw)),
                    _answer(client.request(method, f"{slow.url}{path}", **kw)))

        for body in BAD_BODIES:
            a, b = both("POST", "/task", json=body)
            assert a == b and a[0] == 422, body
        for raw, status in RAW_BODIES:
            a, b = both("POST", "/task", content=raw,
                        headers={"content-type": "application/json"})
            assert a == b and a[0] == status, (raw[:80], a)
        for kind in ("application/vnd.api+json", "Application/JSON; charset=utf-8",
                     "text/plain", "application/x/y+json"):
            for content in (b'{"persona_id": "p"}', b"\xff"):
                a, b = both("POST", "/task", content=content, headers={"content-type": kind})
                assert a == b and a[0] in (400, 422), (kind, content, a)
        # a NUL in the persona of the list: refused as in a submission, not a 500
        a, b = both("GET", "/tasks?persona_id=p%00")
        assert a == b and a[0] == 422
        for path in [*TASK_IDS, str(uuid.uuid4())]:
            a, b = both("GET", f"/task/{path}")
            assert a == b and a[0] in (404, 422), path
        # over the body limit: declared, or only found out while reading a chunked body
        json_type = {"content-type": "application/json"}
        a, b = both("POST", "/task", headers=json_type, content=b"x" * 1_100_000)
        assert a == b and a[0] == 413
        a, b = (_answer(client.post(f"{svc.url}/task", headers=json_type,
                                    content=_chunks(1_100_000))) for svc in (fast, slow))
        assert a == b and a[0] == 413

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
