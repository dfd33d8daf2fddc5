"""Pure ASGI middleware: admission control (429), body size limit, latency and in-flight
metrics."""

from __future__ import annotations

import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .api.errors import render
from .resilience import AdaptiveLimit, TokenBucket
from .telemetry import Telemetry


async def _send_json(send: Send, status: int, body: dict[str, Any],
                     headers: list[tuple[bytes, bytes]] | None = None) -> None:
    payload = render(body)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(payload)).encode()), *(headers or [])]})
    await send({"type": "http.response.body", "body": payload})


_SHED_BODIES = {reason: render({"detail": f"overloaded ({reason})"})
                for reason in ("rate", "concurrency")}


async def _send_shed(send: Send, reason: str, retry_after: str) -> None:
    """The 429 answer: built from constants, as it must stay cheap when most requests get it."""
    body = _SHED_BODIES[reason]
    await send({"type": "http.response.start", "status": 429,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"retry-after", retry_after.encode())]})
    await send({"type": "http.response.body", "body": body})


class BodyTooLarge(Exception):
    pass


def _sheddable(path: str) -> bool:
    """Health checks and metrics are always answered: they are how overload is seen."""
    return not path.startswith(("/health", "/metrics"))


class ServiceMiddleware:
    def __init__(self, app: ASGIApp, telemetry: Telemetry, max_body_bytes: int,
                 limiter: TokenBucket | None, admission: AdaptiveLimit | None = None) -> None:
        self.app = app
        self.telemetry = telemetry
        self.max_body_bytes = max_body_bytes
        self.limiter = limiter
        self.admission = admission

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status_holder = {"status": 500}
        admitted = False
        self.telemetry.in_flight.inc()
        try:
            if _sheddable(scope["path"]):
                shed = self._shed()
                if shed is not None:
                    reason, retry_after = shed
                    status_holder["status"] = 429
                    self.telemetry.rate_limited.inc()
                    self.telemetry.admission_shed.labels(reason).inc()
                    await _send_shed(send, reason, retry_after)
                    return
                admitted = self.admission is not None
            await self._handle(scope, receive, send, status_holder)
        finally:
            elapsed = time.perf_counter() - started
            status = status_holder["status"]
            if admitted:
                assert self.admission is not None
                self.admission.release()
                if status == 429:
                    # admitted, then dropped at the bulkhead behind a standing queue: counted
                    # here, once per request (a dropped group commit fails each of its rows)
                    self.admission.dropped_total += 1
                    self.telemetry.rate_limited.inc()
                    self.telemetry.admission_shed.labels("queue").inc()
                if status < 400 or status == 429:
                    # the admitted request's time in the service is what admission control
                    # watches: a queue anywhere in the process (the event loop, the bulkhead,
                    # a group commit) shows in it. Only requests that went through it count:
                    # a quick 404, 422 or 503 (circuit open) says nothing of the queue and
                    # would hide it. A drop (429) shows its wait, but is no completion
                    self.admission.observe(elapsed, completed=status != 429)
            self.telemetry.in_flight.dec()
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            self.telemetry.latency.labels(path, scope["method"], str(status_holder["status"])) \
                .observe(elapsed)

    def _shed(self) -> tuple[str, str] | None:
        """Why this request is refused and its Retry-After, or None to admit it (taking a slot
        of the adaptive limit, which the caller gives back)."""
        if self.limiter is not None:
            wait_s = self.limiter.try_acquire()
            if wait_s > 0:
                return "rate", str(max(1, int(wait_s + 0.999)))
        if self.admission is not None and not self.admission.try_acquire():
            # the limit frees within a request's latency; 1 s is the smallest whole value
            return "concurrency", "1"
        return None

    async def _handle(self, scope: Scope, receive: Receive, send: Send,
                      status_holder: dict[str, int]) -> None:
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
        too_large = False

        async def limited_receive() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    too_large = True
                    raise BodyTooLarge()
            return message

        response_started = False

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if too_large:
                # the application caught BodyTooLarge and answers (FastAPI: 400, "error
                # parsing the body"): the answer is the 413 instead
                if message["type"] == "http.response.start" and not response_started:
                    response_started = True
                    await self._too_large(send, status_holder)
                return
            if message["type"] == "http.response.start":
                response_started = True
                status_holder["status"] = message["status"]
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not response_started:
                await self._too_large(send, status_holder)

    async def _too_large(self, send: Send, status_holder: dict[str, int]) -> None:
        status_holder["status"] = 413
        await _send_json(send, 413, {"detail": f"body over {self.max_body_bytes} bytes"})
