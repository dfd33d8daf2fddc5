"""The fast path keeps nothing of a request it refused: in process (no database is used on
the way to a 400), bodies that are not UTF-8, sent over and over."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from typing import Any

from loadproof.orchestrator.app import create_app
from loadproof.orchestrator.fastpath import FastPath
from loadproof.orchestrator.settings import load_settings


async def _post(app: Any, body: bytes) -> int:
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    scope = {"type": "http", "method": "POST", "path": "/task",
             "headers": [(b"content-type", b"application/json")]}
    await app(scope, receive, send)
    return statuses[0]


def test_refused_bodies_are_not_kept() -> None:
    # nothing connects before the application's lifespan starts, and a 400 needs no database
    fast = FastPath(create_app(load_settings("optimized"), "postgresql://127.0.0.1:9/unused"))
    def body() -> bytes:  # a new one each time, as a server reads it
        return b'{"persona_id": "\xff' + b"x" * 200_000 + b'", "task_type": "x"}'

    async def main() -> int:
        await _post(fast, body())  # warm up imports and caches
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        statuses = {await _post(fast, body()) for _ in range(50)}
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        assert statuses == {400}
        return grown

    grown = asyncio.run(main())
    # 50 bodies of 200 kB: kept, they would be 10 MB at least
    assert grown < 2_000_000, grown
