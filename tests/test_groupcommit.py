"""Group commit of task submissions, against the real embedded PostgreSQL: submissions that
arrive together share a transaction, each is answered only after its group committed, and a
group's failure reaches every request in it."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest
from fastapi import HTTPException
from loadproof.orchestrator.api.routes.tasks import insert_task
from loadproof.orchestrator.db import EmbeddedPostgres, create_schema, make_engine, worker_view
from loadproof.orchestrator.groupcommit import GroupCommit, GroupCommitClosed
from loadproof.orchestrator.resilience import BreakerState, CircuitBreaker
from loadproof.orchestrator.settings import load_settings
from loadproof.orchestrator.state import AppState
from loadproof.orchestrator.telemetry import Telemetry

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


def test_a_refused_row_fails_alone_and_the_next_group_goes_on(
        embedded_pg: EmbeddedPostgres) -> None:
    async def main() -> None:
        conn = await _with_table(embedded_pg, "gc_fail")
        group = GroupCommit(lambda: _yield(conn), flushers=1, max_rows=100)
        duplicate = uuid.uuid4()
        first = [_row() for _ in range(3)]
        # the first group: one row alone; the second: three rows, the last a duplicate key,
        # which fails the group's INSERT: its rows are then written one by one
        await group.insert(first[0])
        bad = [(duplicate, "p", "t", None), first[1], (duplicate, "p", "t", None)]
        results = await asyncio.gather(*(group.insert(row) for row in bad),
                                       return_exceptions=True)
        assert results[:2] == [None, None]
        assert isinstance(results[2], asyncpg.UniqueViolationError)
        await group.insert(first[2])
        ids = {r["id"] for r in await conn.fetch("SELECT id FROM tasks")}
        assert ids == {*(row[0] for row in first), duplicate}
        assert group.rows_refused_total == 1
        await conn.close()

    asyncio.run(main())


def test_a_failed_group_fails_every_request_in_it() -> None:
    async def main() -> None:
        @asynccontextmanager
        async def broken() -> AsyncIterator[Any]:
            raise ConnectionResetError("gone")
            yield

        group = GroupCommit(broken, flushers=1, max_rows=100)
        results = await asyncio.gather(*(group.insert(_row()) for _ in range(4)),
                                       return_exceptions=True)
        assert all(isinstance(r, ConnectionResetError) for r in results)
        # each request its own exception: one raised in every request of a group would gather
        # all their tracebacks, and keep their frames alive
        assert len({id(r) for r in results}) == 4
        assert group.groups_total == 0

    asyncio.run(main())


@asynccontextmanager
async def _yield(conn: asyncpg.Connection) -> AsyncIterator[Any]:
    yield conn


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="flushers"):
        GroupCommit(lambda: _yield(None), flushers=0, max_rows=1)  # type: ignore[arg-type]


# --- through the service's own database context (AppState.db): breaker, deadline, drops ---

async def _service_state(url: str, **overrides: Any) -> AppState:
    """The optimized profile's AppState against ``url`` (its schema created), with
    ``overrides``; its group commit is built as the application builds it."""
    settings = load_settings("optimized", **overrides)
    engine = make_engine(url, settings)
    with contextlib.suppress(OSError):  # the unreachable database of the breaker test
        await create_schema(worker_view(engine))
    breaker = CircuitBreaker(settings.breaker_failure_threshold, settings.breaker_reset_timeout_s)
    state = AppState(settings, engine, engine, Telemetry(), None, breaker,
                     bulkhead=asyncio.Semaphore(settings.db_concurrency))
    state.submits = GroupCommit(state.db, flushers=settings.group_commit_flushers,
                                max_rows=settings.group_commit_max_rows,
                                deadline_s=settings.request_timeout_s)
    return state


async def _own_database(pg: EmbeddedPostgres, name: str) -> str:
    """A fresh database of the embedded server (the session's other tests use its default)."""
    conn = await asyncpg.connect(_dsn(pg))
    await conn.execute(f"DROP DATABASE IF EXISTS {name}")
    await conn.execute(f"CREATE DATABASE {name}")
    await conn.close()
    base, _, query = pg.url.partition("?")
    return f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")


def _submit(state: AppState, persona: str = "persona-1") -> Awaitable[None]:
    return insert_task(state, uuid.uuid4(), persona, "summarize", '{"n": 1}')


def test_a_row_postgresql_refuses_fails_alone_and_is_no_database_failure(
        embedded_pg: EmbeddedPostgres) -> None:
    """A NUL character (which the route refuses with a 422) reaching the group commit anyway:
    the other rows of its group are stored, and the breaker does not count it."""
    async def main() -> None:
        # a breaker that opens at the first failure: a refusal counted as one would fail the
        # rows after it with 503
        state = await _service_state(await _own_database(embedded_pg, "gc_refused"),
                                     breaker_failure_threshold=1)
        assert state.submits is not None and state.breaker is not None
        personas = [f"persona-{i}" for i in range(12)]
        personas[5] = "bad\x00persona"
        personas[9] = "also\x00bad"
        results = await asyncio.gather(*(_submit(state, p) for p in personas),
                                       return_exceptions=True)
        refused = [i for i, r in enumerate(results) if r is not None]
        assert refused == [5, 9], results
        for i in refused:  # the request's fault: a 422 that says what PostgreSQL refused
            error = results[i]
            assert isinstance(error, HTTPException) and error.status_code == 422
            assert isinstance(error.__cause__, asyncpg.DataError)
        async with state.db() as conn:
            stored = await conn.fetchval("SELECT count(*) FROM tasks")
        assert stored == 10 and state.submits.rows_refused_total == 2
        assert state.breaker.consecutive_failures == 0
        assert state.breaker.state is BreakerState.CLOSED
        await state.engine.dispose()

    asyncio.run(main())


def test_a_database_that_does_not_answer_gives_503s_and_opens_the_breaker() -> None:
    async def main() -> None:
        # nothing listens on port 9 of the loopback: each group's connection is refused
        state = await _service_state("postgresql://nobody@127.0.0.1:9/none",
                                     breaker_failure_threshold=2)
        assert state.breaker is not None
        for _ in range(3):
            results = await asyncio.gather(*(_submit(state) for _ in range(5)),
                                           return_exceptions=True)
            assert all(isinstance(r, HTTPException) and r.status_code == 503 for r in results)
        assert state.breaker.state is BreakerState.OPEN
        await state.engine.dispose()

    asyncio.run(main())


def test_rows_past_their_deadline_or_cancelled_are_not_written(
        embedded_pg: EmbeddedPostgres) -> None:
    """One flusher held up by a slow group: a row whose request was cancelled meanwhile is
    left out, and a row that waited past the deadline answers at its deadline (while the
    group ahead is still held) and is not written."""
    async def main() -> None:
        conn = await _with_table(embedded_pg, "gc_deadline")
        release = asyncio.Event()

        @asynccontextmanager
        async def slow_connect() -> AsyncIterator[Any]:
            await release.wait()
            yield conn

        group = GroupCommit(slow_connect, flushers=1, max_rows=100, deadline_s=0.2)
        first = _row()
        held = asyncio.ensure_future(group.insert(first))
        await asyncio.sleep(0.01)  # the flusher took the first row and waits
        cancelled_row, late_row = _row(), _row()
        cancelled = asyncio.ensure_future(group.insert(cancelled_row))
        late = asyncio.ensure_future(group.insert(late_row))
        await asyncio.sleep(0.01)
        cancelled.cancel()
        with pytest.raises(TimeoutError):
            await late
        assert not held.done()  # the group ahead is still held: the deadline alone answered
        release.set()
        await held
        on_time = _row()
        await group.insert(on_time)
        ids = {r["id"] for r in await conn.fetch("SELECT id FROM tasks")}
        assert ids == {first[0], on_time[0]}
        assert group.rows_expired_total == 1
        await conn.close()

    asyncio.run(main())


def test_close_fails_waiting_rows_and_waits_for_the_group_being_written(
        embedded_pg: EmbeddedPostgres) -> None:
    async def main() -> None:
        conn = await _with_table(embedded_pg, "gc_close")

        @asynccontextmanager
        async def slow_connect() -> AsyncIterator[Any]:
            await asyncio.sleep(0.2)
            yield conn

        group = GroupCommit(slow_connect, flushers=1, max_rows=100)
        writing = asyncio.ensure_future(group.insert(_row()))
        await asyncio.sleep(0.01)
        waiting = asyncio.ensure_future(group.insert(_row()))
        await group.close()
        assert writing.done() and writing.exception() is None  # committed before close ended
        with pytest.raises(GroupCommitClosed):
            await waiting
        with pytest.raises(GroupCommitClosed):
            await group.insert(_row())
        assert await conn.fetchval("SELECT count(*) FROM tasks") == 1
        await conn.close()

    asyncio.run(main())


def test_close_cancels_a_group_that_does_not_finish_and_its_requests_learn_why() -> None:
    async def main() -> None:
        @asynccontextmanager
        async def hanging() -> AsyncIterator[Any]:
            await asyncio.sleep(3600)
            yield

        group = GroupCommit(hanging, flushers=1, max_rows=10)
        stuck = asyncio.ensure_future(group.insert(_row()))
        await asyncio.sleep(0.01)
        await asyncio.wait_for(group.close(timeout_s=0.1), 5)
        # the service's 503 "stopping", not a cancellation (which uvicorn would answer 500)
        with pytest.raises(GroupCommitClosed):
            await stuck

    asyncio.run(main())


def test_a_failed_group_keeps_no_request_alive_through_its_error() -> None:
    """Each request gets its own copy of the group's error, and the failed statement's frames
    (which hold the group) are cleared: keeping one request's error keeps no other's data."""
    import gc
    import weakref

    class Payload:
        pass

    async def main() -> tuple[BaseException, list[weakref.ref[Payload]]]:
        class Dead:
            async def execute(self, *args: Any) -> None:
                raise OSError("connection reset")

        @asynccontextmanager
        async def wrapping() -> AsyncIterator[Any]:
            # as AppState.db: the driver's error, raised in the group's statement (whose frame
            # holds the group), becomes the cause of the service's own
            try:
                yield Dead()
            except OSError as exc:
                raise ConnectionError("database unavailable") from exc

        group = GroupCommit(wrapping, flushers=1, max_rows=10)
        refs: list[weakref.ref[Payload]] = []

        async def request() -> BaseException:
            data = Payload()  # stands for the request's body, held by its frame
            refs.append(weakref.ref(data))
            try:
                await group.insert(_row())
            except ConnectionError as exc:
                return exc
            raise AssertionError("the group should have failed")

        errors = await asyncio.gather(*(request() for _ in range(4)))
        return errors[0], refs

    kept, refs = asyncio.run(main())
    gc.collect()
    assert isinstance(kept.__cause__, OSError)
    assert sum(ref() is not None for ref in refs) <= 1
