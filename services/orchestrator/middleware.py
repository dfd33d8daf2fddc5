"""Pure ASGI middleware: body size limit, load shedding, latency and in-flight metrics."""

from __future__ import annotations

import json
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .resilience import TokenBucket
from .telemetry import Telemetry


async def _send_json(send: Send, status: int, body: dict[str, Any],
                     headers: list[tuple[bytes, bytes]] | None = None) -> None:
    payload = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(payload)).encode()), *(headers or [])]})
    await send({"type": "http.response.body", "body": payload})


class BodyTooLarge(Exception):
    pass


class ServiceMiddleware:
    def __init__(self, app: ASGIApp, telemetry: Telemetry, max_body_bytes: int,
                 limiter: TokenBucket | None) -> None:
        self.app = app
        self.telemetry = telemetry
        self.max_body_bytes = max_body_bytes
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status_holder = {"status": 500}
        self.telemetry.in_flight.inc()
        try:
            await self._handle(scope, receive, send, status_holder)
        finally:
            self.telemetry.in_flight.dec()
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            self.telemetry.latency.labels(path, scope["method"], str(status_holder["status"])) \
                .observe(time.perf_counter() - started)

    async def _handle(self, scope: Scope, receive: Receive, send: Send,
                      status_holder: dict[str, int]) -> None:
        path: str = scope["path"]
        if self.limiter is not None and not path.startswith(("/health", "/metrics")):
            wait_s = self.limiter.try_acquire()
            if wait_s > 0:
                self.telemetry.rate_limited.inc()
                status_holder["status"] = 429
                retry_after = str(max(1, int(wait_s + 0.999)))
                await _send_json(send, 429, {"detail": "rate limited"},
                                 [(b"retry-after", retry_after.encode())])
                return

        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.max_body_bytes:
                    status_holder["status"] = 413
                    await _send_json(send, 413, {"detail": f"body over {self.max_body_bytes} bytes"})
                    return

        received = 0
        limit = self.max_body_bytes

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge()
            return message

        response_started = False

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
                status_holder["status"] = message["status"]
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not response_started:
                status_holder["status"] = 413
                await _send_json(send, 413, {"detail": f"body over {limit} bytes"})
