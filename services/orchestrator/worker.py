"""Background workers: claim queued tasks with FOR UPDATE SKIP LOCKED and do the agent's
database-side work (persona lookup, a result row) in one transaction per batch."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from .telemetry import Telemetry

log = logging.getLogger(__name__)

CLAIM = text(
    "SELECT id, persona_id, task_type, payload FROM tasks WHERE status = 'queued' "
    "ORDER BY created_at LIMIT :batch FOR UPDATE SKIP LOCKED"
)
PERSONAS = text("SELECT id, name FROM personas WHERE id = ANY(:ids)")
INSERT_RESULT = text(
    "INSERT INTO task_results (task_id, output, tokens) VALUES (:task_id, :output, :tokens)"
)
FINISH = text(
    "UPDATE tasks SET status = :status, error = :error, started_at = now(), finished_at = now() "
    "WHERE id = :id"
)


def agent_output(persona_name: str, task_type: str, payload: object) -> tuple[str, int]:
    """The deterministic stand-in for a model call: text and a token count."""
    body = json.dumps(payload, sort_keys=True) if payload is not None else ""
    output = f"{persona_name} completed {task_type} ({len(body)} bytes of input)"
    return output, len(output.split()) + len(body) // 4


async def process_batch(engine: AsyncEngine, batch: int, telemetry: Telemetry) -> int:
    """Claim and finish up to ``batch`` tasks; return how many were claimed."""
    async with engine.begin() as conn:
        claimed = (await conn.execute(CLAIM, {"batch": batch})).all()
        if not claimed:
            return 0
        ids = list({row.persona_id for row in claimed})
        names = {row.id: row.name for row in await conn.execute(PERSONAS, {"ids": ids})}
        results, finishes = [], []
        for row in claimed:
            name = names.get(row.persona_id)
            if name is None:
                finishes.append({"id": row.id, "status": "failed",
                                 "error": f"unknown persona {row.persona_id!r}"})
                continue
            output, tokens = agent_output(name, row.task_type, row.payload)
            results.append({"task_id": row.id, "output": output, "tokens": tokens})
            finishes.append({"id": row.id, "status": "done", "error": None})
        if results:
            await conn.execute(INSERT_RESULT, results)
        await conn.execute(FINISH, finishes)
    done = len(results)
    telemetry.tasks_processed.labels("done").inc(done)
    telemetry.tasks_processed.labels("failed").inc(len(claimed) - done)
    return len(claimed)


async def worker_loop(engine: AsyncEngine, batch: int, idle_sleep_s: float,
                      telemetry: Telemetry, stopping: asyncio.Event) -> None:
    backoff = idle_sleep_s
    while not stopping.is_set():
        try:
            claimed = await process_batch(engine, batch, telemetry)
            backoff = idle_sleep_s
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the database may be down; keep trying, slower
            log.warning("worker: %s", exc.__class__.__name__)
            claimed = 0
            backoff = min(backoff * 2, 1.0)
        if claimed == 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=backoff)
