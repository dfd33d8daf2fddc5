"""Task submission and lookup."""

from __future__ import annotations

import json
import math
import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import Response
from pydantic import AfterValidator, BaseModel, Field, field_validator
from pydantic_core import PydanticCustomError

from ...groupcommit import ROW_REFUSED, GroupCommitClosed
from ...state import AppState
from ..deps import StateDep

router = APIRouter()

INSERT_TASK = ("INSERT INTO tasks (id, persona_id, task_type, payload) "
               "VALUES ($1, $2, $3, $4::jsonb)")
SELECT_TASK = (
    "SELECT t.id, t.persona_id, t.task_type, t.status, t.error, t.created_at, t.finished_at, "
    "r.output, r.tokens FROM tasks t LEFT JOIN task_results r ON r.task_id = t.id WHERE t.id = $1"
)
LIST_TASKS = (
    "SELECT id, persona_id, task_type, status, created_at FROM tasks "
    "WHERE ($1::text IS NULL OR persona_id = $1) ORDER BY created_at DESC LIMIT $2"
)


async def insert_task(state: AppState, task_id: uuid.UUID, persona_id: str, task_type: str,
                      payload: str | None) -> None:
    """Store a submitted task: in the next group commit when the profile has it, else in a
    transaction of its own. Returns once it is committed."""
    if state.submits is not None:
        try:
            await state.submits.insert((task_id, persona_id, task_type, payload))
        except TimeoutError:
            # waited past the request deadline for its group to start
            raise HTTPException(503, "database timed out", headers={"Retry-After": "1"}) from None
        except GroupCommitClosed:
            raise HTTPException(503, "service stopping", headers={"Retry-After": "1"}) from None
        except ROW_REFUSED as exc:
            raise _refused(exc) from exc
        return
    try:
        async with state.db() as conn:
            await conn.execute(INSERT_TASK, task_id, persona_id, task_type, payload)
    except ROW_REFUSED as exc:
        raise _refused(exc) from exc


def _refused(exc: BaseException) -> HTTPException:
    """A value ``TaskIn`` let through and PostgreSQL refused: the request's fault, said with
    the SQLSTATE only (PostgreSQL's message may quote other rows' keys)."""
    return HTTPException(422, "the database refused a value of the task (SQLSTATE "
                              f"{getattr(exc, 'sqlstate', None) or 'unknown'})")


def _unstorable(text: str) -> str | None:
    """Why PostgreSQL cannot store ``text`` (None when it can): a NUL character, or a lone
    surrogate (a "\\ud800" escape in JSON), which has no UTF-8 form."""
    if "\x00" in text:
        return "the NUL character (\\u0000)"
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError:
            return "a lone surrogate (\\ud800-\\udfff)"
    return None


def _storable_query(value: str | None) -> str | None:
    why = _unstorable(value) if value is not None else None
    if why is not None:
        raise _refuse("the text", why)
    return value


def _refuse(where: str, why: str) -> PydanticCustomError:
    return PydanticCustomError("unstorable", "{where} holds {why}, which PostgreSQL cannot store",
                               {"where": where, "why": why})


class TaskIn(BaseModel):
    """A submission. Values PostgreSQL would refuse are refused here, with a 422: refused by the
    database, one such row would fail every request of its group commit."""

    persona_id: str = Field(min_length=1, max_length=64)
    task_type: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
    payload: dict[str, Any] | None = None

    @field_validator("persona_id")
    @classmethod
    def _storable_text(cls, value: str) -> str:
        why = _unstorable(value)
        if why is not None:
            raise _refuse("the text", why)
        return value

    @field_validator("payload")
    @classmethod
    def _storable_json(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        # iterative: the nesting is as deep as the JSON parser allowed
        stack: list[Any] = [value]
        while stack:
            item = stack.pop()
            if isinstance(item, str):
                why = _unstorable(item)
                if why is not None:
                    raise _refuse("a string", why)
            elif isinstance(item, float):
                if not math.isfinite(item):  # NaN, Infinity, or a number like 1e999
                    raise _refuse("a number", "NaN or an infinity")
            elif isinstance(item, dict):
                stack.extend(item)
                stack.extend(item.values())
            elif isinstance(item, list):
                stack.extend(item)
        return value


class TaskAccepted(BaseModel):
    task_id: uuid.UUID
    status: str


class TaskResult(BaseModel):
    output: str
    tokens: int


class TaskOut(BaseModel):
    task_id: uuid.UUID
    persona_id: str
    task_type: str
    status: str
    error: str | None = None
    created_at: datetime
    finished_at: datetime | None = None
    result: TaskResult | None = None


class TaskSummary(BaseModel):
    task_id: uuid.UUID
    persona_id: str
    task_type: str
    status: str
    created_at: datetime


@router.post("/task", status_code=201, response_model=TaskAccepted,
             response_class=Response)
async def submit_task(task: TaskIn, state: StateDep) -> Response:
    """Queue a task for the agent workers."""
    task_id = uuid.uuid4()
    payload = json.dumps(task.payload) if task.payload is not None else None
    await insert_task(state, task_id, task.persona_id, task.task_type, payload)
    # The acknowledgement is written by hand: it is the hottest response of the service.
    body = b'{"task_id":"%s","status":"queued"}' % str(task_id).encode()
    return Response(body, status_code=201, media_type="application/json")


@router.get("/task/{task_id}", response_model=TaskOut)
async def get_task(task_id: uuid.UUID, state: StateDep) -> TaskOut:
    """A task's status and, once done, its result."""
    async with state.db() as conn:
        row = await conn.fetchrow(SELECT_TASK, task_id)
    if row is None:
        raise HTTPException(404, f"task {task_id} not found")
    result = (TaskResult(output=row["output"], tokens=row["tokens"])
              if row["output"] is not None else None)
    return TaskOut(task_id=row["id"], persona_id=row["persona_id"], task_type=row["task_type"],
                   status=row["status"], error=row["error"], created_at=row["created_at"],
                   finished_at=row["finished_at"], result=result)


@router.get("/tasks", response_model=list[TaskSummary])
async def list_tasks(state: StateDep,
                     persona_id: Annotated[str | None, Query(max_length=64),
                                           AfterValidator(_storable_query)] = None,
                     limit: Annotated[int, Query(ge=1)] = 20) -> list[TaskSummary]:
    """Newest tasks first, optionally for one persona; the limit is capped."""
    capped = min(limit, state.settings.list_limit_max)
    async with state.db() as conn:
        rows = await conn.fetch(LIST_TASKS, persona_id, capped)
    return [TaskSummary(task_id=r["id"], persona_id=r["persona_id"], task_type=r["task_type"],
                        status=r["status"], created_at=r["created_at"]) for r in rows]
