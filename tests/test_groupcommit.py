"""Group commit of task submissions, against the real embedded PostgreSQL: submissions that
arrive together share a transaction, each is answered only after its group committed, and a
group's failure reaches every request in it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest
from loadproof.orchestrator.db import EmbeddedPostgres
from loadproof.orchestrator.groupcommit import GroupCommit

pytestmark = pytest.mark.slow

TABLE = """CREATE TABLE IF NOT EXISTS tasks (id UUID PRIMARY KEY, persona_id TEXT NOT NULL,
           task_type TEXT NOT NULL, payload JSONB, status TEXT NOT NULL DEFAULT 'queued',
           created_at TIMESTAMPTZ NOT NULL DEFAULT now())"""


def _dsn(pg: EmbeddedPostgres) -> str:
    return pg.url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def _with_table(pg: EmbeddedPostgres, name: str) -> asyncpg.Connection:
    conn = await asyncpg.connect(_dsn(pg))
    await conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name}")
    await conn.execute(f"SET search_path TO {name}")
    await conn.execute(TABLE)
    return conn


def _row(persona: str = "persona-1", payload: str | None = '{"a": 1}') -> tuple[Any, ...]:
    return (uuid.uuid4(), persona, "summarize", payload)


def test_rows_that_arrive_together_share_one_commit_and_each_is_stored(
        embedded_pg: EmbeddedPostgres) -> None:
    async def main() -> None:
        conn = await _with_table(embedded_pg, "gc_together")
        transactions: list[int] = []

        @asynccontextmanager
        async def connect() -> AsyncIterator[Any]:
            transactions.append(1)
            yield conn

        group = GroupCommit(connect, flushers=1, max_rows=50)
        rows = [_row(payload=None if i % 3 == 0 else f'{{"i": {i}}}') for i in range(120)]
        await asyncio.gather(*(group.insert(row) for row in rows))
        stored = {r["id"]: r for r in await conn.fetch("SELECT * FROM tasks")}
        assert set(stored) == {row[0] for row in rows}
        assert stored[rows[1][0]]["payload"] == '{"i": 1}' and stored[rows[0][0]]["payload"] is None
        # 120 rows at once, at most 50 a group, one group writing at a time: 50, 50 and 20
        assert group.rows_total == 120 and len(transactions) == group.groups_total == 3
        await conn.close()

    asyncio.run(main())


def test_a_request_is_answered_only_after_its_group_committed(
        embedded_pg: EmbeddedPostgres) -> None:
    async def main() -> None:
        conn = await _with_table(embedded_pg, "gc_durable")
        other = await asyncpg.connect(_dsn(embedded_pg))
        seen_by_other: list[int] = []

        @asynccontextmanager
        async def connect() -> AsyncIterator[Any]:
            async with conn.transaction():
                yield conn
                await asyncio.sleep(0.05)  # commit comes later than the INSERT
            seen_by_other.append(await other.fetchval(
                "SELECT count(*) FROM gc_durable.tasks"))

        group = GroupCommit(connect, flushers=2, max_rows=10)
        rows = [_row() for _ in range(25)]
        for row in rows:
            await group.insert(row)
            # answered: another connection already sees it
            assert await other.fetchval("SELECT count(*) FROM gc_durable.tasks WHERE id = $1",
                                        row[0]) == 1
        assert seen_by_other == list(range(1, 26))
        await conn.close()
        await other.close()

    asyncio.run(main())


def test_a_failed_group_fails_every_request_in_it_and_the_next_group_goes_on(
        embedded_pg: EmbeddedPostgres) -> None:
    async def main() -> None:
        conn = await _with_table(embedded_pg, "gc_fail")
        group = GroupCommit(lambda: _yield(conn), flushers=1, max_rows=100)
        duplicate = uuid.uuid4()
        first = [_row() for _ in range(3)]
        # the first group: one row alone; the second: three rows, one of them a duplicate key
        await group.insert(first[0])
        bad = [(duplicate, "p", "t", None), first[1], (duplicate, "p", "t", None)]
        results = await asyncio.gather(*(group.insert(row) for row in bad),
                                       return_exceptions=True)
        assert all(isinstance(r, asyncpg.UniqueViolationError) for r in results)
        await group.insert(first[2])
        ids = {r["id"] for r in await conn.fetch("SELECT id FROM tasks")}
        assert ids == {first[0][0], first[2][0]}  # nothing of the failed group was stored
        await conn.close()

    asyncio.run(main())


@asynccontextmanager
async def _yield(conn: asyncpg.Connection) -> AsyncIterator[Any]:
    yield conn


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="flushers"):
        GroupCommit(lambda: _yield(None), flushers=0, max_rows=1)  # type: ignore[arg-type]
