"""The FastAPI application factory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.types import ASGIApp

from .api.errors import validation_body
from .api.routes import health, tasks
from .db import create_schema, make_engine, worker_view
from .fastpath import FastPath
from .groupcommit import GroupCommit
from .middleware import ServiceMiddleware
from .resilience import AdaptiveLimit, BreakerState, CircuitBreaker, TokenBucket
from .settings import Settings
from .state import AppState, breaker_transition_recorder
from .telemetry import Telemetry
from .worker import worker_loop


def create_app(settings: Settings, database_url: str, *, process_index: int = 0) -> FastAPI:
    """Build the service for ``settings`` against the database at ``database_url``; with
    several service processes, only the first (``process_index`` 0) requeues tasks a crash
    left running, since the others' start may come after its workers took tasks."""
    telemetry = Telemetry()
    limiter = (TokenBucket(settings.rate_limit_rps, settings.rate_limit_burst)
               if settings.rate_limit_enabled else None)
    admission = None
    if settings.admission_enabled:
        admission = AdaptiveLimit(slots=settings.db_concurrency,
                                  min_limit=settings.admission_min_limit,
                                  max_limit=settings.admission_max_limit,
                                  target_s=settings.admission_target_s,
                                  window_s=settings.admission_window_s,
                                  max_wait_s=settings.admission_max_wait_s,
                                  min_samples=settings.admission_min_samples,
                                  standing_windows=settings.admission_standing_windows)
    breaker = None
    if settings.breaker_enabled:
        breaker = CircuitBreaker(settings.breaker_failure_threshold,
                                 settings.breaker_reset_timeout_s,
                                 on_transition=breaker_transition_recorder(telemetry))
        telemetry.breaker_state.labels(BreakerState.CLOSED.value).set(1)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(database_url, settings)
        worker_engine = (make_engine(database_url, settings, pool_size=settings.worker_pool_size,
                                     max_overflow=0)
                         if settings.separate_worker_pool else engine)
        await create_schema(worker_view(engine), requeue=process_index == 0)
        state = AppState(settings, engine, worker_engine, telemetry, limiter, breaker,
                         admission=admission)
        if settings.db_concurrency:
            state.bulkhead = asyncio.Semaphore(settings.db_concurrency)
        if settings.group_commit:
            state.submits = GroupCommit(state.db, flushers=settings.group_commit_flushers,
                                        max_rows=settings.group_commit_max_rows,
                                        deadline_s=settings.request_timeout_s)
        app.state.orchestrator = state
        for _ in range(settings.workers):
            state.worker_tasks.append(asyncio.create_task(
                worker_loop(worker_engine, settings.worker_batch, settings.worker_idle_sleep_s,
                            telemetry, state.stopping)))
        if settings.gc_tuning:
            import gc

            gc.collect()
            gc.freeze()
            gc.set_threshold(50_000, 20, 100)
        try:
            yield
        finally:
            state.stopping.set()
            if state.submits is not None:
                await state.submits.close()
            await asyncio.gather(*state.worker_tasks, return_exceptions=True)
            if worker_engine is not engine:
                await worker_engine.dispose()
            await engine.dispose()

    app = FastAPI(title="orchestrator", version="1.0", lifespan=lifespan)
    app.include_router(tasks.router)
    app.include_router(health.router)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        return Response(validation_body(exc.errors()), status_code=422,
                        media_type="application/json")

    @app.exception_handler(Exception)
    async def unhandled(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": "internal server error",
                             "error": exc.__class__.__name__}, status_code=500)

    app.state.telemetry, app.state.limiter, app.state.admission = telemetry, limiter, admission
    return app


def service_app(settings: Settings, database_url: str, *, process_index: int = 0) -> ASGIApp:
    """What the server runs: admission control, the body limit and the request metrics in
    front of everything (a refused request costs no more than the 429), then the fast path
    of the hottest routes when the profile has it, then the FastAPI application."""
    app = create_app(settings, database_url, process_index=process_index)
    inner: ASGIApp = FastPath(app) if settings.fast_path else app
    return ServiceMiddleware(inner, telemetry=app.state.telemetry,
                             max_body_bytes=settings.max_body_bytes, limiter=app.state.limiter,
                             admission=app.state.admission)
