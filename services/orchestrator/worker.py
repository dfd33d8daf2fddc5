"""Background workers: claim queued tasks with FOR UPDATE SKIP LOCKED and do the agent's
database-side work (persona lookup, a result row) in one transaction per batch."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from .telemetry import Telemetry

log = logging.getLogger(__name__)

CLAIM = ("SELECT id, persona_id, task_type, payload FROM tasks WHERE status = 'queued' "
         "ORDER BY created_at LIMIT $1 FOR UPDATE SKIP LOCKED")
PERSONAS = "SELECT id, name FROM personas WHERE id = ANY($1::text[])"
INSERT_RESULT = "INSERT INTO task_results (task_id, output, tokens) VALUES ($1, $2, $3)"
FINISH = ("UPDATE tasks AS t SET status = f.status, error = f.error, started_at = now(), "
          "finished_at = now() FROM unnest($1::uuid[], $2::text[], $3::text[]) "
          "AS f(id, status, error) WHERE t.id = f.id")


def agent_output(persona_name: str, task_type: str, payload: object) -> tuple[str, int]:
    """The deterministic stand-in for a model call: text and a token count."""
    body = json.dumps(payload, sort_keys=True) if payload is not None else ""
    output = f"{persona_name} completed {task_type} ({len(body)} bytes of input)"
    return output, len(output.split()) + len(body) // 4


async def process_batch(engine: AsyncEngine, batch: int, telemetry: Telemetry) -> int:
    """Claim and finish up to ``batch`` tasks in one transaction; return how many were claimed.

    Statements run on the asyncpg connection checked out of the pool, like the API's."""
    async with engine.connect() as sa_conn:
        conn = (await sa_conn.get_raw_connection()).driver_connection
        try:
            claimed = await _claim_and_finish(conn, batch)
        except BaseException:
            await sa_conn.invalidate()  # its state after a failure mid-transaction is unknown
            raise
    if not claimed:
        return 0
    done = sum(1 for ok in claimed if ok)
    telemetry.tasks_processed.labels("done").inc(done)
    telemetry.tasks_processed.labels("failed").inc(len(claimed) - done)
    return len(claimed)


async def _claim_and_finish(conn: Any, batch: int) -> list[bool]:
    async with conn.transaction():
        claimed = await conn.fetch(CLAIM, batch)
        if not claimed:
            return []
        ids = list({row["persona_id"] for row in claimed})
        names = {row["id"]: row["name"] for row in await conn.fetch(PERSONAS, ids)}
        results = []
        finish_ids: list[Any] = []
        statuses: list[str] = []
        errors: list[str | None] = []
        outcome: list[bool] = []
        for row in claimed:
            name = names.get(row["persona_id"])
            finish_ids.append(row["id"])
            if name is None:
                statuses.append("failed")
                errors.append(f"unknown persona {row['persona_id']!r}")
                outcome.append(False)
                continue
            payload = row["payload"]
            if isinstance(payload, str):  # without a jsonb codec asyncpg hands over text
                payload = json.loads(payload)
            output, tokens = agent_output(name, row["task_type"], payload)
            results.append((row["id"], output, tokens))
            statuses.append("done")
            errors.append(None)
            outcome.append(True)
        if results:
            await conn.executemany(INSERT_RESULT, results)
        await conn.execute(FINISH, finish_ids, statuses, errors)
    return outcome
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
            log.warning("worker: %s: %s", exc.__class__.__name__, exc)
            claimed = 0
            backoff = min(backoff * 2, 1.0)
        if claimed == 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=backoff)
