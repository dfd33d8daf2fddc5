"""The optimized profile's fast path: the two hottest routes, ``POST /task`` and
``GET /task/{task_id}``, answered as plain ASGI, without FastAPI's router, dependency
injection and exception layers, which took about a fifth of the service's CPU per request
(sampled with py-spy at 500 req/s). Everything else goes on to the FastAPI application.

The answers are the FastAPI routes' own: the same models validate the body and shape the
result, client mistakes get the same 422 bodies (``loc`` begins with ``body`` or ``path``),
an unknown task 404, a database failure the 503 of :meth:`AppState.db`, anything else the
service's 500 body."""

from __future__ import annotations

import json
import logging
import uuid
from types import SimpleNamespace
from typing import Any

from fastapi import FastAPI, HTTPException
from pydantic import TypeAdapter, ValidationError
from starlette.types import Message, Receive, Scope, Send

from .api.errors import render, validation_body
from .api.routes.tasks import SELECT_TASK, TaskIn, TaskOut, TaskResult, insert_task
from .middleware import BodyTooLarge
from .state import AppState

log = logging.getLogger(__name__)
# ServiceMiddleware labels its latency histogram with scope["route"].path, as FastAPI sets it
SUBMIT_ROUTE = SimpleNamespace(path="/task")
GET_ROUTE = SimpleNamespace(path="/task/{task_id}")
_JSON = (b"content-type", b"application/json")
# the path parameter, validated as FastAPI validates it (pydantic's UUID, not uuid.UUID's
# parser, which takes forms pydantic refuses)
_TASK_ID: TypeAdapter[uuid.UUID] = TypeAdapter(uuid.UUID)
_NO_BODY = object()
# A body with more brackets than this goes to FastAPI: near the JSON parser's nesting limit
# (about 950 levels) the two paths' stacks differ in depth, and so would their answers
MAX_BRACKETS = 500


def _unreadable() -> HTTPException:
    """FastAPI's answer to a body it could not read (not UTF-8, the client gone). A new one
    each time: an exception raised again gathers every raise's traceback, and with it every
    request's frames and bodies."""
    return HTTPException(400, "There was an error parsing the body")


async def _answer(send: Send, status: int, body: bytes,
                  headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [_JSON, (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


def _errors(exc: ValidationError, *where: str) -> list[dict[str, Any]]:
    """FastAPI's errors for a validation error at ``where`` (("body",) or ("path", name))."""
    return [{**error, "loc": [*where, *error["loc"]]} for error in exc.errors(include_url=False)]


def _json_body(scope: Scope) -> bool:
    """The request's body is plain ``application/json`` (parameters aside), the only kind the
    fast path reads; FastAPI answers every other (``+json`` types, none, malformed)."""
    for name, value in scope["headers"]:
        if name == b"content-type":
            return value.split(b";", 1)[0].strip().lower() == b"application/json"
    return False


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives ``body`` (already read) again, then the server's own
    (which tells when the client goes)."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


class FastPath:
    """Serve ``POST /task`` and ``GET /task/{task_id}`` directly; pass the rest to ``app``."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path, method = scope["path"], scope["method"]
            if path == "/task" and method == "POST" and _json_body(scope):
                scope["route"] = SUBMIT_ROUTE
                body = await self._guard(self._submit(receive, send), send)
                if body is not None:
                    await self.app(scope, _replay(body, receive), send)
                return
            if method == "GET" and path.startswith("/task/") and path.count("/") == 2 \
                    and len(path) > len("/task/"):
                scope["route"] = GET_ROUTE
                await self._guard(self._get(path[len("/task/"):], send), send)
                return
        await self.app(scope, receive, send)

    @property
    def _state(self) -> AppState:
        state: AppState = self.app.state.orchestrator
        return state

    async def _guard(self, handler: Any, send: Send) -> Any:
        """Run ``handler`` and return its result; turn HTTPException and unexpected errors
        into the service's answers (none has started when these are raised). A body over the
        size limit goes on to the middleware, which answers 413."""
        try:
            return await handler
        except BodyTooLarge:
            raise
        except HTTPException as exc:
            headers = [(k.lower().encode(), v.encode()) for k, v in (exc.headers or {}).items()]
            await _answer(send, exc.status_code, render({"detail": exc.detail}), headers)
        except Exception as exc:
            # as uvicorn logs what escapes the FastAPI application's 500 handler
            log.exception("unhandled error in the fast path")
            await _answer(send, 500, render({"detail": "internal server error",
                                             "error": exc.__class__.__name__}))
        return None

    async def _submit(self, receive: Receive, send: Send) -> bytes | None:
        """Answer a submission; or return its body, read, for FastAPI to answer."""
        chunks = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _unreadable()  # as FastAPI: recorded as 400, not as the service's fault
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        raw = b"".join(chunks)
        if raw.count(b"[") + raw.count(b"{") > MAX_BRACKETS:
            return raw
        try:
            # parsed, then validated as Python data, as FastAPI does (its messages differ from
            # a validation of the JSON text)
            parsed = json.loads(raw) if raw else _NO_BODY
        except json.JSONDecodeError as exc:
            await _answer(send, 422, validation_body([{
                "type": "json_invalid", "loc": ["body", exc.pos], "msg": "JSON decode error",
                "input": {}, "ctx": {"error": exc.msg}}]))
            return None
        except (ValueError, RecursionError):  # not UTF-8 (nor UTF-16/32), nesting too deep
            raise _unreadable() from None
        if parsed is _NO_BODY:
            await _answer(send, 422, validation_body([{
                "type": "missing", "loc": ["body"], "msg": "Field required", "input": None}]))
            return None
        try:
            task = TaskIn.model_validate(parsed, from_attributes=True)
        except ValidationError as exc:
            await _answer(send, 422, validation_body(_errors(exc, "body")))
            return None
        task_id = uuid.uuid4()
        payload = json.dumps(task.payload) if task.payload is not None else None
        await insert_task(self._state, task_id, task.persona_id, task.task_type, payload)
        await _answer(send, 201, b'{"task_id":"%s","status":"queued"}' % str(task_id).encode())
        return None

    async def _get(self, raw_id: str, send: Send) -> None:
        try:
            task_id = _TASK_ID.validate_python(raw_id)
        except ValidationError as exc:
            await _answer(send, 422, validation_body(_errors(exc, "path", "task_id")))
            return
        async with self._state.db() as conn:
            row = await conn.fetchrow(SELECT_TASK, task_id)
        if row is None:
            raise HTTPException(404, f"task {task_id} not found")
        result = (TaskResult(output=row["output"], tokens=row["tokens"])
                  if row["output"] is not None else None)
        out = TaskOut(task_id=row["id"], persona_id=row["persona_id"],
                      task_type=row["task_type"], status=row["status"], error=row["error"],
                      created_at=row["created_at"], finished_at=row["finished_at"], result=result)
        await _answer(send, 200, out.model_dump_json().encode())
