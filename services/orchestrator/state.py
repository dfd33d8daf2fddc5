"""The per-application state: engines, guards, workers, telemetry."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import sqlalchemy.exc
from fastapi import HTTPException
from sqlalchemy.ext.asyncio import AsyncEngine

from .groupcommit import ROW_REFUSED, GroupCommit
from .resilience import AdaptiveLimit, BreakerState, CircuitBreaker, CircuitOpen, TokenBucket
from .settings import Settings
from .telemetry import Telemetry

# Failures that mean "the database is not answering", as opposed to a bad request.
DB_FAILURES: tuple[type[BaseException], ...] = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.TimeoutError,  # pool checkout timed out
    sqlalchemy.exc.DBAPIError,
    asyncpg.PostgresError,  # our statements are fixed: a server error means the database
    asyncpg.InterfaceError,
    OSError,
    TimeoutError,
)


@dataclass
class AppState:
    settings: Settings
    engine: AsyncEngine
    worker_engine: AsyncEngine
    telemetry: Telemetry
    limiter: TokenBucket | None
    breaker: CircuitBreaker | None
    bulkhead: asyncio.Semaphore | None = None
    admission: AdaptiveLimit | None = None
    submits: GroupCommit | None = None
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    worker_tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @asynccontextmanager
    async def _bulkhead(self) -> AsyncIterator[None]:
        """A slot of the database bulkhead (none configured: go straight on); the wait for it
        is the queueing delay in front of the database, recorded for /metrics."""
        bulkhead = self.bulkhead
        if bulkhead is None:
            yield
            return
        if bulkhead.locked():
            waiting = self.telemetry.bulkhead_waiting
            waiting.inc()
            started = time.perf_counter()
            try:
                acquired = await self._wait_for_slot(bulkhead)
            finally:  # a wait cut short by the request deadline counts too
                waiting.dec()
                self.telemetry.bulkhead_wait.observe(time.perf_counter() - started)
            if not acquired:
                # counted by the middleware, once per request answered 429
                raise HTTPException(429, "overloaded (queue)", headers={"Retry-After": "1"})
        else:
            await bulkhead.acquire()
            self.telemetry.bulkhead_wait.observe(0.0)
        try:
            yield
        finally:
            bulkhead.release()

    async def _wait_for_slot(self, bulkhead: asyncio.Semaphore) -> bool:
        """Wait for a bulkhead slot: True once taken. With admission control, a request that
        has waited its ``max_wait_s`` while a queue stands is dropped instead (False), as CoDel
        drops at the head of a standing queue: a slot served that late would only make the
        requests behind it late too. In a burst (no standing queue) it waits on, within the
        request deadline."""
        admission = self.admission
        if admission is None:
            await bulkhead.acquire()
            return True
        try:
            async with asyncio.timeout(admission.max_wait_s):
                await bulkhead.acquire()
            return True
        except TimeoutError:
            if admission.standing:
                return False
        await bulkhead.acquire()
        return True

    @asynccontextmanager
    async def db(self) -> AsyncIterator[Any]:
        """An asyncpg connection checked out of the API pool (SQLAlchemy's QueuePool, with the
        profile's size, overflow, timeout, recycling and pre-ping), behind the breaker and the
        request deadline. Statements run on the driver directly: each one is its own
        transaction, which saves the BEGIN/COMMIT round trips and SQLAlchemy's compile step."""
        breaker = self.breaker
        if breaker is not None:
            try:
                breaker.before_call()
            except CircuitOpen:
                raise HTTPException(503, "database unavailable (circuit open)",
                                    headers={"Retry-After": "1"}) from None
        timeout = self.settings.request_timeout_s or None
        try:
            async with asyncio.timeout(timeout), self._bulkhead(), self.engine.connect() as conn:
                raw = await conn.get_raw_connection()
                try:
                    yield raw.driver_connection
                except ROW_REFUSED:
                    raise  # the database answered: the connection is sound
                except DB_FAILURES:
                    # statements bypass SQLAlchemy, so tell the pool this connection is
                    # unusable (dead server, or cancelled mid-protocol by a deadline)
                    await conn.invalidate()
                    raise
        except HTTPException:
            if breaker is not None:
                breaker.release_probe()
            raise
        except ROW_REFUSED:
            # PostgreSQL refused a value or a constraint: the fault is the statement's, not the
            # database's; no breaker failure and no 503, but no success either (that would
            # close a breaker opened meanwhile): as a client error, it frees a probe's slot.
            # Group commit retries the group's rows one by one; the routes answer 422
            if breaker is not None:
                breaker.release_probe()
            raise
        except DB_FAILURES as exc:
            if breaker is None and not timeout:
                raise  # the naive service lets it surface as a 500
            if breaker is not None:
                breaker.record_failure()
            reason = "timed out" if isinstance(exc, TimeoutError) else "unavailable"
            raise HTTPException(503, f"database {reason}", headers={"Retry-After": "1"}) from exc
        if breaker is not None:
            breaker.record_success()


def breaker_transition_recorder(telemetry: Telemetry) -> Callable[[BreakerState, BreakerState], None]:
    def record(old: BreakerState, new: BreakerState) -> None:
        telemetry.breaker_transitions.labels(old.value, new.value).inc()
        for state in BreakerState:
            telemetry.breaker_state.labels(state.value).set(1 if state is new else 0)

    return record
